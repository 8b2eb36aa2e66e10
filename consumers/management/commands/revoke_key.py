from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from consumers.services import KeyError_, revoke_key


class Command(BaseCommand):
    help = ("Revoke a gateway key by its prefix (gwk_1a2b3c4d). Every worker of every instance refuses it within "
            "GATEWAY_CONFIG_POLL_SECONDS.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="The key's prefix, as the admin and the API list it")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            record = revoke_key(options["prefix"])
        except KeyError_ as exc:
            raise CommandError(str(exc)) from None
        assert record.revoked_at is not None
        self.stdout.write(f"Revoked key {record.prefix} of consumer {record.consumer.name!r} "
                          f"at {record.revoked_at:%Y-%m-%d %H:%M:%S} UTC.")
