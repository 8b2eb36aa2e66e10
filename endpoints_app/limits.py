"""Rate-limit periods as MLflow writes them: `minute`, `5 minutes`, `hours`, ... (limits library words)."""
from __future__ import annotations

import re

# Seconds per granularity, as the `limits` library counts them (month = 30 days, year = 360 days).
GRANULARITIES = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "month": 30 * 86400, "year": 360 * 86400}
_PERIOD = re.compile(r"^\s*(?:(\d+)\s+)?(second|minute|hour|day|month|year)s?\s*$", re.IGNORECASE)


def parse_period(text: object) -> tuple[int, str]:
    """`"5 minutes"` → (5, "minute"). Raises ValueError with a message that names the accepted words."""
    match = _PERIOD.match(text) if isinstance(text, str) else None
    if not match or (match.group(1) is not None and int(match.group(1)) < 1):
        raise ValueError(
            f"renewal_period {text!r} is not a period: use second, minute, hour, day, month or year, "
            "optionally plural and with a count, e.g. '5 minutes'"
        )
    return int(match.group(1) or 1), match.group(2).lower()


def period_seconds(text: str) -> int:
    multiples, granularity = parse_period(text)
    return multiples * GRANULARITIES[granularity]


def describe(calls: int, text: str) -> str:
    """MLflow's wording in the 429 body: '2 per 1 minute'."""
    multiples, granularity = parse_period(text)
    return f"{calls} per {multiples} {granularity}"
