from __future__ import annotations

from django.apps import AppConfig


class ConsumersConfig(AppConfig):
    name = "consumers"
    verbose_name = "Consumers and keys"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from consumers import signals  # noqa: F401  (a change reaches every worker's key table)
