from __future__ import annotations

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operators' console inside the admin: the usage dashboard, endpoint health and playground, YAML
    import and export. No models: it reads the usage rollups, the ledger and the shared counters."""

    name = "console"
    verbose_name = "Console"
