"""A consumer or key changed: every worker of every instance rebuilds its key table (the config
version moves), so a revocation takes effect within GATEWAY_CONFIG_POLL_SECONDS."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save, pre_save

from consumers.models import Consumer, GatewayKey
from endpoints_app.signals import append_at_the_end, config_changed

for _model in (Consumer, GatewayKey):
    post_save.connect(config_changed, sender=_model, dispatch_uid=f"config-changed-save-{_model.__name__}")
    post_delete.connect(config_changed, sender=_model, dispatch_uid=f"config-changed-delete-{_model.__name__}")
pre_save.connect(append_at_the_end, sender=Consumer, dispatch_uid="append-Consumer")
