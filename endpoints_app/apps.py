from __future__ import annotations

from django.apps import AppConfig


class EndpointsAppConfig(AppConfig):
    name = "endpoints_app"
    verbose_name = "AI Gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from endpoints_app import signals  # noqa: F401  (connects the config-change signals)
