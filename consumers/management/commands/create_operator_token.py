from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from consumers import keys
from consumers.services import KeyError_, create_operator_token


class Command(BaseCommand):
    help = ("Make a management API token for a staff user (`Authorization: Bearer <token>` on /api/manage/). "
            "It is printed once, alone on the last line.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="An active staff user")
        parser.add_argument("--name", default="", help="A label for the token")
        parser.add_argument("--expires-in", help="Lifetime, e.g. 30d, 12h (default: no expiry)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            expires_in = keys.parse_duration(options["expires_in"]) if options["expires_in"] else None
        except ValueError as exc:
            raise CommandError(f"--expires-in: {exc}") from None
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"There is no user named {options['username']!r}.")
        try:
            token, record = create_operator_token(user, name=options["name"], expires_in=expires_in)
        except KeyError_ as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Operator token {record.prefix} for {user}. It is shown once; the gateway keeps only "
                          "its hash:")
        self.stdout.write(token)
