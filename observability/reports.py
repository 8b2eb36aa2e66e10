"""The metrics and the access line of each finished invocation, handed over in batches.

`invoke.finish` runs on the worker's event loop for every request; what it reports here is kept in a list
and worked off by one timer callback on that loop at most FLUSH_SECONDS later: the metrics of the whole
batch added up first (one addition to each memory-mapped value per label combination and batch, instead
of one per request: each is a lock, a process-id check and a write), then the batch's access lines,
written together (one `write` for the batch instead of one per request). Measured with bench/run.py's
chat load: the access log cost a tenth of the gateway's CPU per request when each line was written alone.

So a line reaches the log, and a count /metrics, at most FLUSH_SECONDS after the answer (nginx's
`access_log ... flush=` makes the same trade). A scrape works off the pending batch of the worker it
reaches before it reads; the batch is also worked off when the worker stops (lifespan shutdown).
Without a running event loop (a management command, a test calling finish directly) a report is worked
off at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from observability import accesslog, metrics

if TYPE_CHECKING:
    from usage.ledger import Entry

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.1

_pending: list[tuple[Entry, str, float | None]] = []
_timer: asyncio.TimerHandle | None = None
_timer_loop: asyncio.AbstractEventLoop | None = None


def report(entry: Entry, endpoint: str, upstream_seconds: float | None) -> None:
    """One finished invocation; `endpoint` is its metrics.endpoint_label."""
    global _timer, _timer_loop
    _pending.append((entry, endpoint, upstream_seconds))
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        flush()
        return
    if _timer is not None and _timer_loop is loop:
        return
    # The first report since the last batch (or the first on this loop: a timer of a loop that has gone,
    # in tests, would never fire).
    if _timer is not None:
        _timer.cancel()
    _timer, _timer_loop = loop.call_later(FLUSH_SECONDS, flush), loop


def flush() -> None:
    """Work off what is pending now (the timer, a scrape, the worker stopping)."""
    global _timer
    if _timer is not None:
        _timer.cancel()
        _timer = None
    if not _pending:
        return
    batch = _pending[:]
    _pending.clear()
    try:
        metrics.record_batch(batch)
    except Exception:  # never lose the access lines to a metrics failure, nor fail the timer silently
        logger.exception("metrics of %d invocation(s) could not be recorded", len(batch))
    accesslog.log_batch(batch)


def pending() -> int:
    return len(_pending)
