from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from consumers import keys
from consumers.services import KeyError_, create_key


class Command(BaseCommand):
    help = ("Make a gateway key for a consumer. The key is printed once, alone on the last line: store it now, "
            "the gateway keeps only its hash.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("consumer", help="The consumer's name")
        parser.add_argument("--name", default="", help="A label for the key (who or what uses it)")
        parser.add_argument("--expires-in", help="Lifetime, e.g. 30d, 12h, 90m, 2w (default: no expiry)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            expires_in = keys.parse_duration(options["expires_in"]) if options["expires_in"] else None
        except ValueError as exc:
            raise CommandError(f"--expires-in: {exc}") from None
        try:
            issued = create_key(options["consumer"], name=options["name"], expires_in=expires_in, created_by="cli")
        except KeyError_ as exc:
            raise CommandError(str(exc)) from None
        record = issued.record
        expiry = f"expires {record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else "never expires"
        self.stdout.write(f"Key {record.prefix} for consumer {record.consumer.name!r} ({expiry}). "
                          "It is shown once; the gateway keeps only its hash:")
        self.stdout.write(issued.key)
