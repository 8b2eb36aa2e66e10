"""The usage ledger's writer: records buffered per process, written in batches off the request path.

An invocation appends one `Entry` (a tuple) to this process's buffer: no database work, no lock
held while anything is written. A writer thread takes the buffer every GATEWAY_USAGE_FLUSH_SECONDS
(or as soon as a batch is full) and writes it in one transaction: the raw records (COPY on PostgreSQL,
a multi-row insert on SQLite) and the per-minute, per-hour and per-day rollups they add to (one upsert
per group). A slow or unavailable database never slows an invocation: the batch goes back to the
buffer and is tried again, the buffer holds GATEWAY_USAGE_BUFFER records, and what does not fit is
counted and logged. What is buffered is written when the process stops (close()).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from django.conf import settings
from django.db import DataError, IntegrityError, close_old_connections, connection, transaction

from usage import rollups

logger = logging.getLogger(__name__)


class Entry(NamedTuple):
    """One invocation, in the order of UsageRecord's columns (rollups.RECORD_COLUMNS)."""

    time: float  # epoch seconds
    request_id: str
    family: str
    consumer: str
    key_prefix: str
    name: str
    route: str
    endpoint: str
    provider: str
    model: str
    stream: bool
    status: int
    error_kind: str
    error_code: str
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    latency_ms: float
    ttfb_ms: float | None
    cost_picousd: int
    retries: int
    fallbacks: int


_WARN_EVERY_SECONDS = 10.0
_MAX_BACKOFF_SECONDS = 30.0


_ledgers: weakref.WeakSet[Ledger] = weakref.WeakSet()


class Ledger:
    def __init__(self, capacity: int, batch: int, flush_seconds: float) -> None:
        self.capacity = capacity
        self.batch = batch
        self.flush_seconds = flush_seconds
        self.dropped = 0  # records refused because the buffer was full
        self.written = 0
        self._buffer: deque[Entry] = deque()
        self._lock = threading.Lock()  # writers of the buffer's ends; appends are atomic on their own
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None  # this process's writer (forgotten in a forked child)
        self._last_warning = 0.0
        self._failures = 0
        _ledgers.add(self)

    def __len__(self) -> int:
        return len(self._buffer)

    # -- the request path ----------------------------------------------------------------------------
    def record(self, entry: Entry) -> None:
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            self._warn(f"usage buffer full ({self.capacity} records): {self.dropped} record(s) dropped so far; "
                       "is the database reachable?")
            return
        self._buffer.append(entry)
        if self._thread is None and self.flush_seconds > 0:
            self._start()
        if len(self._buffer) >= self.batch:
            self._wake.set()

    # -- the writer ------------------------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="usage-ledger", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds if not self._failures else
                            min(_MAX_BACKOFF_SECONDS, self.flush_seconds * 2 ** self._failures))
            self._wake.clear()
            self.flush()
            if connection.vendor != "sqlite":
                # A connection past CONN_MAX_AGE, or broken, is dropped as at the end of a request. This
                # thread keeps its SQLite one: opening it again costs more than a second's batch.
                close_old_connections()

    def flush(self) -> int:
        """Write what is buffered, a batch at a time; the number written. On a database error the batch
        goes back to the front of the buffer (as much of it as fits) and the error is logged."""
        total = 0
        while self._buffer:
            with self._lock:
                batch = [self._buffer.popleft() for _ in range(min(self.batch, len(self._buffer)))]
            try:
                write(batch)
            except (DataError, IntegrityError):
                # Not the database being away: some record it refuses. Write them one by one and keep the rest.
                written = self._write_each(batch)
                total += written
                self.written += written
                continue
            except Exception as exc:
                self._failures += 1
                self._put_back(batch)
                self._warn(f"usage records could not be written ({type(exc).__name__}: {exc}); "
                           f"{len(self._buffer)} buffered, retrying")
                try:
                    connection.close()
                except Exception:
                    pass
                return total
            self._failures = 0
            total += len(batch)
            self.written += len(batch)
        return total

    def _write_each(self, batch: list[Entry]) -> int:
        written = 0
        for entry in batch:
            try:
                write([entry])
            except (DataError, IntegrityError) as exc:
                self.dropped += 1
                logger.error("usage record %s refused by the database and dropped: %s", entry.request_id, exc)
            else:
                written += 1
        return written

    def _put_back(self, batch: list[Entry]) -> None:
        with self._lock:
            room = self.capacity - len(self._buffer)
            keep = batch[:max(0, room)]
            self.dropped += len(batch) - len(keep)
            self._buffer.extendleft(reversed(keep))

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer and write what is buffered (the process is stopping)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self._buffer and time.monotonic() < deadline:
            if not self.flush():
                time.sleep(0.2)
        if self._buffer:
            logger.error("%d usage record(s) could not be written before the process stopped", len(self._buffer))

    def discard(self) -> None:
        """Forget what is buffered (tests)."""
        with self._lock:
            self._buffer.clear()
        self.dropped = 0

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_SECONDS:  # one line per interval, not one per request
            self._last_warning = now
            logger.warning(message)


def write(entries: Sequence[Entry]) -> None:
    """One transaction: the records, and what they add to every rollup."""
    with transaction.atomic():
        rollups.insert_records(entries)
        rollups.add_to_rollups(entries)


_ledger: Ledger | None = None


def _forget_writers_after_fork() -> None:
    """In a forked child the parents' writer threads do not run: the next record starts one of its own."""
    for ledger in list(_ledgers):
        ledger._thread = None


os.register_at_fork(after_in_child=_forget_writers_after_fork)


def get() -> Ledger:
    global _ledger
    if _ledger is None:
        _ledger = Ledger(settings.GATEWAY_USAGE_BUFFER, settings.GATEWAY_USAGE_BATCH,
                         settings.GATEWAY_USAGE_FLUSH_SECONDS)
    return _ledger


def record(entry: Entry) -> None:
    if settings.GATEWAY_USAGE_LEDGER:
        get().record(entry)


def records(entries: Iterable[Entry]) -> None:
    for entry in entries:
        record(entry)
