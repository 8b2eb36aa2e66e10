from __future__ import annotations

import csv
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from usage.reports import GROUPS, SUMS, ReportError, parse_time, report, totals

COLUMNS = (*SUMS[:-1], "cost_usd")


class Command(BaseCommand):
    help = ("Who used what and what it cost: requests, errors, tokens and USD per consumer, endpoint, model or day, "
            "read from the usage rollups.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", default="24h", help="24h, 7d, 2w, 90m, a date (2026-12-01) or an ISO time "
                                                           "(default: 24h)")
        parser.add_argument("--until", help="The same forms (default: now)")
        parser.add_argument("--by", choices=GROUPS, default="consumer", help="How to group (default: consumer)")
        parser.add_argument("--consumer", help="Only this consumer")
        parser.add_argument("--endpoint", help="Only this endpoint")
        parser.add_argument("--format", choices=("table", "json", "csv"), default="table")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        try:
            since = parse_time(options["since"], now)
            until = parse_time(options["until"], now) if options["until"] else now
            rows = report(since, until, options["by"], consumer=options["consumer"], endpoint=options["endpoint"])
        except ReportError as exc:
            raise CommandError(str(exc)) from None
        by = options["by"]
        if options["format"] == "json":
            self.stdout.write(json.dumps(rows, indent=2))
        elif options["format"] == "csv":
            writer = csv.writer(self.stdout)
            writer.writerow([by, *COLUMNS])
            for row in rows:
                writer.writerow([row[by], *(row[c] if c != "cost_usd" else f"{row[c]:.12f}" for c in COLUMNS)])
        else:
            self._table(by, rows, since, until)

    def _table(self, by: str, rows: list[dict[str, Any]], since: Any, until: Any) -> None:
        header = [by, "requests", "errors", "prompt", "completion", "total", "cost (USD)"]
        lines = [[str(row[by] or "(none)"), *(f"{row[c]:,}" for c in SUMS[:-1]), f"{row['cost_usd']:.6f}"]
                 for row in rows]
        all_rows = totals(rows)
        lines.append(["total", *(f"{all_rows[c]:,}" for c in SUMS[:-1]), f"{all_rows['cost_usd']:.6f}"])
        widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
        self.stdout.write(f"Usage from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC, by {by}")
        for index, line in enumerate([header, *lines]):
            if index == len(lines):
                self.stdout.write("  ".join("-" * w for w in widths))
            self.stdout.write("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                                        enumerate(zip(line, widths, strict=True))))
