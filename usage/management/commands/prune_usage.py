from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from usage.services import prune


class Command(BaseCommand):
    help = ("Delete usage records older than GATEWAY_USAGE_RETENTION_DAYS (and per-minute rollups older than two "
            "days, per-hour ones older than the retention); per-day rollups are kept. start_server runs it daily; "
            "a cron job may too.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=settings.GATEWAY_USAGE_RETENTION_DAYS,
                            help="Keep this many days of raw records (default: GATEWAY_USAGE_RETENTION_DAYS)")

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = prune(options["days"])
        self.stdout.write(", ".join(f"{count} {what}" for what, count in deleted.items()) + " deleted")
