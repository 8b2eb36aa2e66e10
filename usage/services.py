"""Keeping the ledger to its retention."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from usage.models import UsageHour, UsageMinute, UsageRecord

MINUTE_ROLLUPS_DAYS = 2  # the dashboard reads minutes for the last hour only
_CHUNK = 50_000


def prune(days: int) -> dict[str, int]:
    """Delete raw records older than `days`, minute rollups older than two days and hour rollups older than
    `days` (at least a week); day rollups and the totals (a row per hour or day) are kept for the long
    reports. In chunks: a month of records is millions of rows, and one huge DELETE would hold its locks
    for long."""
    now = timezone.now()
    return {
        "usage records": _delete_before(UsageRecord, "time", now - timedelta(days=days)),
        "minute rollups": _delete_before(UsageMinute, "bucket", now - timedelta(days=MINUTE_ROLLUPS_DAYS)),
        "hour rollups": _delete_before(UsageHour, "bucket", now - timedelta(days=max(days, 7))),
    }


def _delete_before(model: type[UsageRecord] | type[UsageMinute] | type[UsageHour], field: str,
                   cutoff: object) -> int:
    total = 0
    while True:
        with transaction.atomic():
            ids = list(model.objects.filter(**{f"{field}__lt": cutoff}).values_list("pk", flat=True)[:_CHUNK])
            if not ids:
                return total
            total += model.objects.filter(pk__in=ids).delete()[0]
