"""Counters in shared memory: how the workers of one start_server share their counts without Redis.

The supervisor creates a file in its private directory (create()); every worker maps it (mmap) and runs
the gateway's counter commands on it directly, under an exclusive lock (flock between processes, a
thread lock within one): no process in between, no message to send. The commands and their replies are
serving.store.Store's (Redis's), which this class is: only where the keys live differs.

The file is a hash table of fixed-size slots: the key's 64-bit hash (BLAKE2b), its expiry (monotonic
milliseconds, one clock for every process of the machine) and its value, a signed 64-bit integer:
the gateway's counts are integers (a SET of anything else is an error reply). When every slot a key may
take holds a live key (the table is full), the command is an error reply, which the limits treat as
counters that cannot count (GATEWAY_RATE_LIMIT_FAIL_OPEN).

This module imports no Django: the supervisor creates the file.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import mmap
import os
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from serving.resp import RespError
from serving.store import Command, Store, _int

_MAGIC = b"GWCOUNT1"
_HEADER = 16  # the magic, then the number of slots
_SLOT = struct.Struct("<QqQ")  # key hash, expiry (monotonic ms; 0: none), value (two's complement)
SLOTS = 65536  # 1.5 MiB
_PROBES = 64
_EMPTY, _DELETED = 0, 1
_SIGN = 1 << 63
_WORD = 1 << 64


def create(path: str, slots: int = SLOTS) -> None:
    """Make an empty counters file (readable by this user only); FileExistsError if there is one."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, _HEADER + slots * _SLOT.size)
        os.pwrite(fd, _MAGIC + struct.pack("<Q", slots), 0)
    finally:
        os.close(fd)


def _native_flock() -> Callable[[int, int], int] | None:
    """libc's flock(2) called with the GIL held (ctypes.PyDLL), or None where it cannot be found."""
    try:
        function = ctypes.PyDLL(None).flock
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int)
    function.restype = ctypes.c_int
    return function


_held_flock = _native_flock()


def _lock(fd: int) -> None:
    """Take the file's lock. Free (nearly always: a worker holds it for microseconds), it is taken without
    letting go of the GIL: fcntl.flock lets go of it around every call, and taking it back from the
    worker's other threads cost about 8 us of CPU per call in a serving worker.
    Held by another process (or another store in this one), it is waited for as fcntl.flock waits, without
    the GIL, so that the holder can always finish."""
    if _held_flock is None or _held_flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB) != 0:
        fcntl.flock(fd, fcntl.LOCK_EX)


def _unlock(fd: int) -> None:
    if _held_flock is None or _held_flock(fd, fcntl.LOCK_UN) != 0:
        fcntl.flock(fd, fcntl.LOCK_UN)  # raises what went wrong


@functools.lru_cache(maxsize=4096)
def _hash(key: bytes) -> int:
    value = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    return value if value > _DELETED else value + 2


class SharedStore(Store):
    """A server's counters file, mapped in this process: a Store whose keys live in shared memory."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, 0)
        if self._map[:8] != _MAGIC:
            raise ValueError(f"{path} is not a counters file")
        self._slots = struct.unpack_from("<Q", self._map, 8)[0]
        self._end = _HEADER + self._slots * _SLOT.size

    def __len__(self) -> int:
        now = self._now()
        count = 0
        for offset in range(_HEADER, self._end, _SLOT.size):
            stored, expires, _ = _SLOT.unpack_from(self._map, offset)
            count += self._live(stored, expires, now)
        return count

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    def run(self, commands: Sequence[Command]) -> list[Any]:
        with self._lock:
            _lock(self._fd)
            try:
                return self._run(commands)
            finally:
                _unlock(self._fd)

    # -- the slots ---------------------------------------------------------------------------------
    def _now(self) -> int:
        return int(self._clock() * 1000)

    @staticmethod
    def _live(stored: int, expires: int, now: int) -> bool:
        return stored > _DELETED and not (expires and expires <= now)

    def _find(self, key: bytes, clock: float | None = None) -> tuple[int, int, bool]:
        """(the key's hash, its slot, whether it holds the key, live), at the time `clock` (now if not given).
        When it does not hold the key, the slot is where to put it: the first one on its way that is free,
        deleted or expired, or -1 if there is none."""
        key_hash = _hash(key)
        now = int((self._clock() if clock is None else clock) * 1000)
        offset = _HEADER + (key_hash % self._slots) * _SLOT.size
        free = -1
        for _ in range(_PROBES):
            stored, expires, _ = _SLOT.unpack_from(self._map, offset)
            if stored == key_hash:
                return key_hash, offset, not (expires and expires <= now)
            if stored == _EMPTY:
                return key_hash, offset if free < 0 else free, False
            if free < 0 and not self._live(stored, expires, now):
                free = offset
            offset += _SLOT.size
            if offset >= self._end:
                offset = _HEADER
        return key_hash, free, False

    def _value(self, offset: int) -> tuple[int, int]:
        _, expires, word = _SLOT.unpack_from(self._map, offset)
        return expires, word - _WORD if word >= _SIGN else word

    # -- the storage primitives of Store ---------------------------------------------------------------
    def _read(self, key: bytes, clock: float | None = None) -> bytes | None:
        _, offset, live = self._find(key, clock)
        return str(self._value(offset)[1]).encode() if live else None

    def _get(self, key: bytes) -> bytes | None:
        return self._read(key)

    def _expiry(self, key: bytes) -> float | None:
        _, offset, live = self._find(key)
        expires = self._value(offset)[0] if live else 0
        return expires / 1000 if expires else None

    def _set(self, key: bytes, value: bytes, expires: float | None, *, keep_ttl: bool = False) -> None:
        try:
            number = _int(value)
        except RespError:
            raise RespError("ERR the shared counters hold integers only") from None
        key_hash, offset, live = self._find(key)
        if offset < 0:
            raise RespError("ERR the shared counters table is full")
        kept = self._value(offset)[0] if keep_ttl and live else 0
        at = int(expires * 1000) if expires is not None else kept
        _SLOT.pack_into(self._map, offset, key_hash, at, number % _WORD)

    def _set_new(self, key: bytes, value: int, expires: float) -> bool:
        key_hash, offset, live = self._find(key)
        if live:
            return False
        if offset < 0:
            raise RespError("ERR the shared counters table is full")
        _SLOT.pack_into(self._map, offset, key_hash, int(expires * 1000), value % _WORD)
        return True

    def _incrby(self, key: bytes, amount: int) -> int:
        key_hash, offset, live = self._find(key)
        if offset < 0:
            raise RespError("ERR the shared counters table is full")
        expires, number = self._value(offset) if live else (0, 0)
        number += amount
        if not -_SIGN <= number < _SIGN:
            raise RespError("ERR increment or decrement would overflow")
        _SLOT.pack_into(self._map, offset, key_hash, expires, number % _WORD)
        return number

    def _add_window(self, key: bytes, start: int, expires: float, amount: int,
                    clock: float | None = None) -> tuple[Any, Any]:
        key_hash, offset, live = self._find(key, clock)  # one lookup for both commands
        if offset < 0:
            full = RespError("ERR the shared counters table is full")
            return full, full
        if live:
            at, number = self._value(offset)
        else:
            at, number = int(expires * 1000), start
        number += amount
        if not -_SIGN <= number < _SIGN:
            if not live:  # SET NX creates the window even when the increment fails
                _SLOT.pack_into(self._map, offset, key_hash, at, start % _WORD)
            return ("OK" if not live else None), RespError("ERR increment or decrement would overflow")
        _SLOT.pack_into(self._map, offset, key_hash, at, number % _WORD)
        return ("OK" if not live else None), number

    def _set_expiry(self, key: bytes, at: float) -> None:
        key_hash, offset, live = self._find(key)
        if live:
            _SLOT.pack_into(self._map, offset, key_hash, int(at * 1000), self._value(offset)[1] % _WORD)

    def _delete(self, key: bytes) -> bool:
        _, offset, live = self._find(key)
        if live:
            _SLOT.pack_into(self._map, offset, _DELETED, 0, 0)
        return live

    def _clear(self) -> None:
        self._map[_HEADER:self._end] = bytes(self._end - _HEADER)
