"""Any change to endpoints or routes marks this process's table stale and bumps the version."""
from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from endpoints_app.models import Endpoint, TrafficDestination, TrafficRoute


def _changed(sender: Any, **kwargs: Any) -> None:
    from endpoints_app import runtime, services

    if kwargs.get("raw"):
        return
    services.bump_config_version()
    transaction.on_commit(runtime.invalidate)


for _model in (Endpoint, TrafficRoute, TrafficDestination):
    post_save.connect(_changed, sender=_model, dispatch_uid=f"config-changed-save-{_model.__name__}")
    post_delete.connect(_changed, sender=_model, dispatch_uid=f"config-changed-delete-{_model.__name__}")
