from __future__ import annotations

import warnings
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from endpoints_app.services import import_config
from endpoints_app.validation import ConfigError


class Command(BaseCommand):
    help = "Load endpoints and traffic routes from an MLflow Deployments Server YAML file (all or nothing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The YAML config file")
        parser.add_argument("--dry-run", action="store_true", help="Validate and report, change nothing")
        parser.add_argument("--prune", action="store_true",
                            help="Delete endpoints and routes loaded from YAML that the file no longer has "
                                 "(those created in the admin are kept)")

    def handle(self, *args: Any, **options: Any) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # reported below, once, as a warning line
            try:
                report = import_config(options["path"], dry_run=options["dry_run"], prune=options["prune"])
            except ConfigError as exc:
                raise CommandError(f"Invalid configuration, nothing was changed:\n{exc}") from None
        for warning in report.warnings:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        prefix = "[dry run] would have " if report.dry_run else ""
        for label, names in (("created", report.created), ("updated", report.updated),
                             ("left unchanged" if report.dry_run else "unchanged", report.unchanged),
                             ("deleted", report.deleted)):
            for name in names:
                self.stdout.write(f"{prefix}{label}: {name}")
        self.stdout.write(
            f"{prefix or ''}{len(report.created)} created, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged, {len(report.deleted)} deleted"
            + (" (dry run: nothing was changed)" if report.dry_run else "")
        )
