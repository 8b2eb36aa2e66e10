from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from endpoints_app.services import export_config


class Command(BaseCommand):
    help = ("Write every endpoint and traffic route as MLflow Deployments Server YAML. Key references "
            "($ENV, files) are written as references; literal keys as a placeholder unless --reveal-secrets.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", "-o", help="Write to this file (default: standard output)")
        parser.add_argument("--reveal-secrets", action="store_true",
                            help="Write literal API keys in clear (for moving a config; keep the file safe)")

    def handle(self, *args: Any, **options: Any) -> None:
        text = export_config(reveal_secrets=options["reveal_secrets"])
        output = options.get("output")
        if not output:
            self.stdout.write(text, ending="")
            return
        try:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise CommandError(f"Cannot write {output}: {exc.strerror}") from None
        self.stderr.write(f"wrote {output}")
