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
        _emit(orjson.dumps(fields(entry, endpoint)).decode())
        return
    # A request id is restricted to [A-Za-z0-9._:-] and names come from the config, so a value never holds a
    # space or an equals sign; an empty one reads `-`.
    prompt, completion, ttfb = entry.prompt_tokens, entry.completion_tokens, entry.ttfb_ms
    _emit(f"request_id={entry.request_id} family={entry.family} consumer={entry.consumer or '-'} "
          f"endpoint={endpoint or '-'} route={entry.route or '-'} destination={entry.endpoint or '-'} "
          f"status={entry.status} stream={'true' if entry.stream else 'false'} "
          f"input_tokens={'-' if prompt is None else prompt} output_tokens={'-' if completion is None else completion} "
          f"latency_ms={entry.latency_ms:.1f} ttfb_ms={'-' if ttfb is None else f'{ttfb:.1f}'} "
          f"retries={entry.retries} fallbacks={entry.fallbacks} error={entry.error_kind or '-'} "
          f"error_code={entry.error_code or '-'}")


def _emit(line: str) -> None:
    """logger.info(line) without looking up the caller's frame (a quarter of logging's own cost): the
    record goes through the logger's filters and handlers as usual."""
    logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, line, (), None))
