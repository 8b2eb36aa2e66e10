"""Any change to what the in-memory table holds (endpoints, routes, consumers, keys) marks this
process's table stale and bumps the version, which every other process polls; rows made outside a
YAML file are appended after the existing ones."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Max
from django.db.models.signals import post_delete, post_save, pre_save

from endpoints_app.models import Endpoint, Source, TrafficDestination, TrafficRoute


def config_changed(sender: Any, **kwargs: Any) -> None:
    from endpoints_app import services
    from serving import runtime

    if kwargs.get("raw"):
        return
    services.bump_config_version()
    # Now, so this thread reads its own write; and again at commit, so that no other thread keeps a
    # table it rebuilt from the database before the commit.
    runtime.invalidate()
    transaction.on_commit(runtime.invalidate)


def append_at_the_end(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    # YAML imports set positions from the file; the admin appends (listings keep config order).
    if raw or not instance._state.adding or instance.source != Source.ADMIN:
        return
    last = sender.objects.aggregate(last=Max("position"))["last"]
    instance.position = 0 if last is None else last + 1


for _model in (Endpoint, TrafficRoute, TrafficDestination):
    post_save.connect(config_changed, sender=_model, dispatch_uid=f"config-changed-save-{_model.__name__}")
    post_delete.connect(config_changed, sender=_model, dispatch_uid=f"config-changed-delete-{_model.__name__}")
for _model in (Endpoint, TrafficRoute):
    pre_save.connect(append_at_the_end, sender=_model, dispatch_uid=f"append-{_model.__name__}")
