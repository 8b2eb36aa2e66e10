"""The embedded counter store: the part of Redis the gateway uses, for a server without REDIS_URL.

Rate limits (and every other count that must hold across a server's workers) are Redis commands sent
through the one Redis client (serving.resp). With REDIS_URL they go to Redis, shared by every
instance. Without it, start_server's supervisor runs this store and serves it on a Unix socket in
RESP, so the workers of one server share exact counts through the same client and the same commands
(`calls: 3` means 3 with any number of workers). A process on its own (`manage.py runserver`, the
tests) executes the commands on an in-process Store directly.

The commands are Redis's, with Redis's replies, for the subset the gateway sends: PING, GET, MGET,
SET (EX, PX, NX, XX), INCR, INCRBY, INCRBYFLOAT, DECRBY, DEL, EXISTS, EXPIRE (NX), TTL, PTTL,
FLUSHDB, and SELECT/AUTH (accepted, meaningless here). Keys expire on the monotonic clock.

This module imports no Django: the supervisor runs it.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from serving.resp import RespError, encode_reply, parse_reply

Reply = Any  # int | bytes | str ("OK", a status) | None | list | RespError
Command = Sequence[bytes | str | int | float]

_SWEEP_EVERY = 1024  # writes between two sweeps of expired keys
_SWEEP_ABOVE = 4096  # keys below which no sweep is needed


def _bytes(value: bytes | str | int | float) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


def _int(value: bytes | str | int | float) -> int:
    try:
        return int(_bytes(value))
    except ValueError:
        raise RespError("ERR value is not an integer or out of range") from None


def _float(value: bytes | str | int | float) -> float:
    try:
        number = float(_bytes(value))
    except ValueError:
        raise RespError("ERR value is not a valid float") from None
    if math.isnan(number) or math.isinf(number):
        raise RespError("ERR increment would produce NaN or Infinity")
    return number


def _format_float(number: float) -> bytes:
    """As Redis prints INCRBYFLOAT results: no exponent, no trailing zeros."""
    text = f"{number:.17f}".rstrip("0").rstrip(".")
    return (text if text not in ("", "-0") else "0").encode()


class Store:
    """Keys, values and expiry times, with Redis's command semantics. Thread-safe (one lock)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[bytes, bytes] = {}
        self._expires: dict[bytes, float] = {}
        self._lock = threading.Lock()
        self._writes = 0

    def __len__(self) -> int:
        return len(self._values)

    async def execute(self, commands: Sequence[Command]) -> list[Reply]:
        """Run commands in order (a pipeline): their replies, errors as RespError values. The same
        call as serving.resp.AsyncRedis.execute, so the two are interchangeable."""
        return self.run(commands)

    def run(self, commands: Sequence[Command]) -> list[Reply]:
        with self._lock:
            return [self._one(command) for command in commands]

    def _one(self, command: Command) -> Reply:
        if not command:
            return RespError("ERR empty command")
        name = _bytes(command[0]).decode("latin-1").upper()
        handler = _COMMANDS.get(name)
        if handler is None:
            return RespError(f"ERR unknown command '{name}'")
        try:
            return handler(self, list(command[1:]))
        except RespError as error:
            return error
        except IndexError:
            return RespError(f"ERR wrong number of arguments for '{name.lower()}' command")

    # -- storage -------------------------------------------------------------------------------
    def _get(self, key: bytes) -> bytes | None:
        expires = self._expires.get(key)
        if expires is not None and expires <= self._clock():
            self._delete(key)
            return None
        return self._values.get(key)

    def _set(self, key: bytes, value: bytes, expires: float | None, *, keep_ttl: bool = False) -> None:
        self._values[key] = value
        if expires is not None:
            self._expires[key] = expires
        elif not keep_ttl:
            self._expires.pop(key, None)
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0 and len(self._values) > _SWEEP_ABOVE:
            self._sweep()

    def _delete(self, key: bytes) -> bool:
        self._expires.pop(key, None)
        return self._values.pop(key, None) is not None

    def _sweep(self) -> None:
        now = self._clock()
        for key in [k for k, at in self._expires.items() if at <= now]:
            self._delete(key)

    # -- commands --------------------------------------------------------------------------------
    def _ping(self, args: list[Any]) -> Reply:
        return _bytes(args[0]) if args else "PONG"

    def _accept(self, args: list[Any]) -> Reply:
        return "OK"

    def _get_command(self, args: list[Any]) -> Reply:
        return self._get(_bytes(args[0]))

    def _mget(self, args: list[Any]) -> Reply:
        if not args:
            raise IndexError
        return [self._get(_bytes(key)) for key in args]

    def _set_command(self, args: list[Any]) -> Reply:
        key, value = _bytes(args[0]), _bytes(args[1])
        expires: float | None = None
        condition = ""
        options = [_bytes(a).decode("latin-1").upper() for a in args[2:]]
        index = 0
        while index < len(options):
            option = options[index]
            if option in ("EX", "PX"):
                amount = _int(args[2 + index + 1])
                if amount <= 0:
                    raise RespError("ERR invalid expire time in 'set' command")
                expires = self._clock() + (amount if option == "EX" else amount / 1000)
                index += 2
            elif option in ("NX", "XX") and not condition:
                condition = option
                index += 1
            else:
                raise RespError("ERR syntax error")
        exists = self._get(key) is not None
        if (condition == "NX" and exists) or (condition == "XX" and not exists):
            return None
        self._set(key, value, expires)
        return "OK"

    def _incrby(self, key: bytes, amount: int) -> int:
        current = self._get(key)
        number = _int(current) if current is not None else 0
        number += amount
        if not -(2**63) <= number < 2**63:
            raise RespError("ERR increment or decrement would overflow")
        self._set(key, str(number).encode(), None, keep_ttl=True)
        return number

    def _incr(self, args: list[Any]) -> Reply:
        return self._incrby(_bytes(args[0]), 1)

    def _incrby_command(self, args: list[Any]) -> Reply:
        return self._incrby(_bytes(args[0]), _int(args[1]))

    def _decrby(self, args: list[Any]) -> Reply:
        return self._incrby(_bytes(args[0]), -_int(args[1]))

    def _incrbyfloat(self, args: list[Any]) -> Reply:
        key = _bytes(args[0])
        current = self._get(key)
        number = (_float(current) if current is not None else 0.0) + _float(args[1])
        if math.isnan(number) or math.isinf(number):
            raise RespError("ERR increment would produce NaN or Infinity")
        text = _format_float(number)
        self._set(key, text, None, keep_ttl=True)
        return text

    def _del(self, args: list[Any]) -> Reply:
        if not args:
            raise IndexError
        return sum(1 for key in args if self._get(_bytes(key)) is not None and self._delete(_bytes(key)))

    def _exists(self, args: list[Any]) -> Reply:
        if not args:
            raise IndexError
        return sum(1 for key in args if self._get(_bytes(key)) is not None)

    def _expire(self, args: list[Any]) -> Reply:
        key, seconds = _bytes(args[0]), _int(args[1])
        flags = {_bytes(a).decode("latin-1").upper() for a in args[2:]}
        if flags - {"NX"}:
            raise RespError("ERR Unsupported option")
        if self._get(key) is None:
            return 0
        if "NX" in flags and key in self._expires:
            return 0
        if seconds <= 0:
            self._delete(key)
        else:
            self._expires[key] = self._clock() + seconds
        return 1

    def _pttl(self, args: list[Any]) -> Reply:
        key = _bytes(args[0])
        if self._get(key) is None:
            return -2
        expires = self._expires.get(key)
        return -1 if expires is None else max(0, round((expires - self._clock()) * 1000))

    def _ttl(self, args: list[Any]) -> Reply:
        milliseconds = self._pttl(args)
        return milliseconds if milliseconds < 0 else (milliseconds + 500) // 1000

    def _flushdb(self, args: list[Any]) -> Reply:
        self._values.clear()
        self._expires.clear()
        return "OK"


_COMMANDS: dict[str, Callable[[Store, list[Any]], Reply]] = {
    "PING": Store._ping,
    "AUTH": Store._accept,
    "SELECT": Store._accept,
    "GET": Store._get_command,
    "MGET": Store._mget,
    "SET": Store._set_command,
    "INCR": Store._incr,
    "INCRBY": Store._incrby_command,
    "DECRBY": Store._decrby,
    "INCRBYFLOAT": Store._incrbyfloat,
    "DEL": Store._del,
    "EXISTS": Store._exists,
    "EXPIRE": Store._expire,
    "TTL": Store._ttl,
    "PTTL": Store._pttl,
    "FLUSHDB": Store._flushdb,
}


# -- serving the store on a Unix socket ------------------------------------------------------------------
class _StoreProtocol(asyncio.Protocol):
    """One worker's connection: RESP command arrays in, replies out, in order, one write per read."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        commands: list[Command] = []
        position = 0
        while position < len(self.buffer):
            try:
                command, after = parse_reply(self.buffer, position)
            except (ValueError, RespError, ConnectionError):
                command, after = None, -1
            if after == position:
                break  # incomplete: wait for the rest
            if after < 0 or not isinstance(command, list) or not all(isinstance(a, bytes) for a in command):
                self.transport.write(encode_reply(RespError("ERR Protocol error: expected an array of bulk strings")))
                self.transport.close()
                return
            commands.append(command)
            position = after
        del self.buffer[:position]
        if commands:
            self.transport.write(b"".join(encode_reply(reply) for reply in self.store.run(commands)))


class StoreServer:
    """The store served on a Unix socket by a thread with its own event loop (the supervisor's)."""

    def __init__(self, path: str, store: Store | None = None) -> None:
        self.path = path
        self.store = store or Store()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._run, name="counter-store", daemon=True)

    def start(self) -> None:
        """Listen (the socket is readable by this user only); raises OSError if it cannot."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            old_mask = os.umask(0o077)
            try:
                self._server = self._loop.run_until_complete(
                    self._loop.create_unix_server(lambda: _StoreProtocol(self.store), self.path))
            finally:
                os.umask(old_mask)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        self._loop.run_until_complete(self._server.wait_closed())
        self._loop.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        try:
            os.unlink(self.path)
        except OSError:
            pass
