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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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


def log_batch(batch: Sequence[tuple[Entry, str, Any]]) -> None:
    """A line for each (usage record, endpoint label, ...) of a batch (observability.reports), written
    together: the records reach the handlers one by one as usual, and a HoldingStreamHandler writes the
    lines it held in one go when the batch ends. The endpoint label is the name called, or `unknown` when
    the config has no such name (a client's free text is not logged: the usage record keeps it)."""
    if not batch or not logger.isEnabledFor(logging.INFO):
        return
    if settings.GATEWAY_LOG_FORMAT == "json":
        for entry, endpoint, _ in batch:
            _emit(orjson.dumps(fields(entry, endpoint)).decode())
    else:
        for entry, endpoint, _ in batch:
            _emit(_text(entry, endpoint))
    for handler in _holding_handlers():
        handler.flush()


def _text(entry: Entry, endpoint: str) -> str:
    # A request id is restricted to [A-Za-z0-9._:-] and names come from the config, so a value never holds a
    # space or an equals sign; an empty one reads `-`.
    prompt, completion, ttfb = entry.prompt_tokens, entry.completion_tokens, entry.ttfb_ms
    return (f"request_id={entry.request_id} family={entry.family} consumer={entry.consumer or '-'} "
            f"endpoint={endpoint or '-'} route={entry.route or '-'} destination={entry.endpoint or '-'} "
            f"status={entry.status} stream={'true' if entry.stream else 'false'} "
            f"input_tokens={'-' if prompt is None else prompt} "
            f"output_tokens={'-' if completion is None else completion} "
            f"latency_ms={entry.latency_ms:.1f} ttfb_ms={'-' if ttfb is None else f'{ttfb:.1f}'} "
            f"retries={entry.retries} fallbacks={entry.fallbacks} error={entry.error_kind or '-'} "
            f"error_code={entry.error_code or '-'}")


def _emit(line: str) -> None:
    """logger.info(line) without looking up the caller's frame (a quarter of logging's own cost): the
    record goes through the logger's filters and handlers as usual, marked to be held by a
    HoldingStreamHandler until the batch ends."""
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, line, (), None)
    record.held = True
    logger.handle(record)


def _holding_handlers() -> list[HoldingStreamHandler]:
    found = []
    current: logging.Logger | None = logger
    while current is not None:
        found += [h for h in current.handlers if isinstance(h, HoldingStreamHandler)]
        current = current.parent if current.propagate else None
    return found


class HoldingStreamHandler(logging.StreamHandler[Any]):
    """logging's StreamHandler (settings.LOGGING's console and access handlers), except that the lines of
    records marked `held` (access lines) wait in memory until flush(): a batch of access lines is one write,
    not one per request. Any other record writes the held lines first, then its own, so that lines stay in
    the order they were logged."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._held: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "held", False):
            try:
                self._held.append(self.format(record))
            except Exception:
                self.handleError(record)
            return
        if self._held:
            self.flush()
        super().emit(record)

    def flush(self) -> None:
        self.acquire()
        try:
            lines, self._held = self._held, []
            if self.stream is not None:
                if lines:
                    self.stream.write(self.terminator.join(lines) + self.terminator)
                if hasattr(self.stream, "flush"):
                    self.stream.flush()
        except (OSError, ValueError):  # a stream closed under us (the process ending): as emit() does, a line
            pass  # that cannot be written never fails the caller
        finally:
            self.release()


class Formatter(logging.Formatter):
    """logging's Formatter (settings.LOGGING's formatters), with the time of day formatted once a second
    rather than for every line (a third of what formatting an access line cost)."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None or self.datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        msec_format = self.default_msec_format
        return self._text if msec_format is None else msec_format % (self._text, record.msecs)
