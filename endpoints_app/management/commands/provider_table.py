"""`manage.py provider_table [--write README.md]`: the provider table generated from the registry."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from providers.table import END_MARKER, START_MARKER, MarkersMissing, render_table, replace_section


class Command(BaseCommand):
    help = (
        "Print the Markdown table of providers (types, streaming, tools, config keys), or with --write, "
        f"replace the text between {START_MARKER} and {END_MARKER} in a file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--write", metavar="FILE", help="Update the table between the markers in FILE")

    def handle(self, *args: Any, **options: Any) -> None:
        table = render_table()
        target = options.get("write")
        if not target:
            self.stdout.write(table, ending="")
            return
        path = Path(target)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"{path} cannot be read: {exc.strerror}") from None
        try:
            updated = replace_section(text, table)
        except MarkersMissing as exc:
            raise CommandError(f"{path}: {exc}; add them where the provider table belongs") from None
        if updated == text:
            self.stdout.write(f"{path}: the provider table is already up to date")
            return
        path.write_text(updated, encoding="utf-8")
        self.stdout.write(f"{path}: provider table updated")
