"""One line per invocation on the logger `gateway.access`, from its usage record's data.

Text by default (`key=value` pairs after the usual time, level and logger name); with
GATEWAY_LOG_FORMAT=json, one JSON object a line and nothing else on it. What a line holds: the request
id, the consumer, the name called, the route, the endpoint that served it, the status, the tokens, the
latency, the retries and fallbacks, and for an error its kind and code. Never a key (not even its
prefix), a prompt or a completion. Nothing is formatted unless the logger is enabled for INFO
(GATEWAY_ACCESS_LOG=false turns it off).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import orjson
from django.conf import settings

if TYPE_CHECKING:
    from usage.ledger import Entry

logger = logging.getLogger("gateway.access")


def fields(entry: Entry, endpoint: str) -> dict[str, object]:
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(entry.time)) + f".{int(entry.time % 1 * 1000):03d}Z",
        "request_id": entry.request_id, "family": entry.family, "consumer": entry.consumer,
        "endpoint": endpoint, "route": entry.route, "destination": entry.endpoint, "status": entry.status,
        "stream": entry.stream, "input_tokens": entry.prompt_tokens, "output_tokens": entry.completion_tokens,
        "latency_ms": round(entry.latency_ms, 1),
        "ttfb_ms": round(entry.ttfb_ms, 1) if entry.ttfb_ms is not None else None,
        "retries": entry.retries, "fallbacks": entry.fallbacks, "error": entry.error_kind,
        "error_code": entry.error_code,
    }


def log(entry: Entry, endpoint: str) -> None:
    """`endpoint`: the name called, or `unknown` when the config has no such name (a client's free text
    is not logged: the usage record keeps it)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    if settings.GATEWAY_LOG_FORMAT == "json":
        logger.info(orjson.dumps(fields(entry, endpoint)).decode())  # no arguments: not %-formatted again
        return
    # A request id is restricted to [A-Za-z0-9._:-] and names come from the config, so a value never holds a
    # space or an equals sign; an empty one reads `-`.
    logger.info(
        "request_id=%s family=%s consumer=%s endpoint=%s route=%s destination=%s status=%s stream=%s "
        "input_tokens=%s output_tokens=%s latency_ms=%.1f ttfb_ms=%s retries=%s fallbacks=%s error=%s error_code=%s",
        entry.request_id, entry.family, entry.consumer or "-", endpoint or "-", entry.route or "-",
        entry.endpoint or "-", entry.status, "true" if entry.stream else "false",
        "-" if entry.prompt_tokens is None else entry.prompt_tokens,
        "-" if entry.completion_tokens is None else entry.completion_tokens, entry.latency_ms,
        "-" if entry.ttfb_ms is None else f"{entry.ttfb_ms:.1f}", entry.retries, entry.fallbacks,
        entry.error_kind or "-", entry.error_code or "-")
