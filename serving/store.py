"""The counter store: the part of Redis the gateway uses, for a gateway without REDIS_URL.

Rate limits, budgets and circuit state are Redis commands (serving.counters). With REDIS_URL they go
to Redis through the one Redis client (serving.resp), shared by every instance. Without it the same
commands run on a Store: start_server's workers share one in shared memory (serving.sharedstore, a
Store whose keys live in a mapped file), so that `calls: 3` means 3 with any number of workers; a
process on its own (`manage.py runserver`, the tests) keeps one in its memory.

The commands are Redis's, with Redis's replies, for the subset the gateway sends: PING, GET, MGET,
SET (EX, PX, NX, XX), INCR, INCRBY, INCRBYFLOAT, DECRBY, DEL, EXISTS, EXPIRE (NX, XX), TTL, PTTL,
FLUSHDB, and SELECT/AUTH (accepted, meaningless here). Keys expire on the monotonic clock.

This module imports no Django.
"""

from __future__ import annotations

import decimal
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from serving.resp import RespError

Reply = Any  # int | bytes | str ("OK", a status) | None | list | RespError
Command = Sequence[bytes | str | int | float]

_SWEEP_EVERY = 1024  # writes between two sweeps of expired keys
_SWEEP_ABOVE = 4096  # keys below which no sweep is needed
_INTEGER = re.compile(rb"-?[1-9][0-9]{0,18}|0")  # as Redis reads one: no sign on 0, no leading zeros or spaces
_FLOAT = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INFINITY = re.compile(rb"[+-]?inf(?:inity)?", re.IGNORECASE)
_DECIMALS = decimal.Context(prec=60, Emax=5000, Emin=-5000)  # a long double's range; sums of decimals are exact
_PRINTED_PLACES = decimal.Decimal("1e-17")  # Redis prints INCRBYFLOAT results with "%.17Lf", zeros trimmed


def _bytes(value: bytes | str | int | float) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


def _int(value: bytes | str | int | float) -> int:
    if type(value) is int and -(2**63) <= value < 2**63:
        return value
    text = _bytes(value)
    if not _INTEGER.fullmatch(text) or not -(2**63) <= int(text) < 2**63:
        raise RespError("ERR value is not an integer or out of range")
    return int(text)


def _decimal(value: bytes | str | int | float) -> decimal.Decimal:
    text = _bytes(value)
    if _INFINITY.fullmatch(text):
        raise RespError("ERR increment would produce NaN or Infinity")
    if not _FLOAT.fullmatch(text):
        raise RespError("ERR value is not a valid float")
    return decimal.Decimal(text.decode())


def _format_decimal(number: decimal.Decimal) -> bytes:
    """As Redis prints INCRBYFLOAT results: no exponent, at most 17 decimals, no trailing zeros."""
    if number.adjusted() < 40:
        number = number.quantize(_PRINTED_PLACES, context=_DECIMALS)
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return b"0" if text in ("", "-0") else text.encode()


def _wrong_arguments(name: str) -> RespError:
    return RespError(f"ERR wrong number of arguments for '{name.lower()}' command")


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
            return self._run(commands)

    def _run(self, commands: Sequence[Command]) -> list[Reply]:
        """The commands' replies, in order. What every call sends is read here without Store's dispatch: a
        GET, and a window's pair (serving.counters.add_to_window: `SET key <int> EX <seconds> NX` then
        `INCRBY key <int>`) as one step, its key looked up once."""
        replies: list[Reply] = []
        clock = self._clock()  # one reading for the whole pipeline
        index, count = 0, len(commands)
        while index < count:
            command = commands[index]
            name = command[0]
            if name == "GET" and len(command) == 2:
                replies.append(self._read(_bytes(command[1]), clock))
                index += 1
                continue
            if name == "SET" and index + 1 < count:
                pair = _window_pair(command, commands[index + 1])
                if pair is not None:
                    start, seconds, amount = pair
                    replies += self._add_window(_bytes(command[1]), start, clock + seconds, amount, clock)
                    index += 2
                    continue
            replies.append(self._one(command))
            index += 1
        return replies

    def _one(self, command: Command) -> Reply:
        if not command:
            return RespError("ERR empty command")
        fast = _FAST.get(command[0]) if type(command[0]) is str else None
        if fast is not None:  # the shapes the gateway sends on every request, without parsing
            reply = fast(self, command)
            if reply is not _PARSE:
                return reply
        name = _bytes(command[0]).decode("latin-1")
        entry = _COMMANDS.get(name.upper())
        if entry is None:
            shown = ""
            for arg in command[1:]:  # as Redis shows them: up to about 128 characters
                if len(shown) >= 128:
                    break
                shown += f"'{_bytes(arg).decode('latin-1')[: 128 - len(shown)]}' "
            return RespError(f"ERR unknown command '{name}', with args beginning with: {shown}")
        handler, arity = entry
        if (arity >= 0 and len(command) != arity) or len(command) < -arity:
            return _wrong_arguments(name)
        try:
            return handler(self, list(command[1:]))
        except RespError as error:
            return error

    # -- storage (what a store elsewhere, serving.sharedstore, overrides) -------------------------
    def _expiry(self, key: bytes) -> float | None:
        """The expiry time of a key that exists, None if it has none."""
        return self._expires.get(key)

    def _set_expiry(self, key: bytes, at: float) -> None:
        self._expires[key] = at

    def _clear(self) -> None:
        self._values.clear()
        self._expires.clear()

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

    # -- commands (arguments after the name; their number is checked against _COMMANDS) ------------
    def _ping(self, args: list[Any]) -> Reply:
        if len(args) > 1:
            raise _wrong_arguments("ping")
        return _bytes(args[0]) if args else "PONG"

    def _accept(self, args: list[Any]) -> Reply:
        return "OK"

    def _get_command(self, args: list[Any]) -> Reply:
        return self._get(_bytes(args[0]))

    def _mget(self, args: list[Any]) -> Reply:
        return [self._get(_bytes(key)) for key in args]

    def _set_command(self, args: list[Any]) -> Reply:
        key, value = _bytes(args[0]), _bytes(args[1])
        options = [_bytes(a).decode("latin-1").upper() for a in args[2:]]
        condition = unit = ""
        amount: Any = None
        index = 0
        while index < len(options):  # as Redis: NX or XX, EX or PX, each at most once (repeats allowed)
            option = options[index]
            if option in ("NX", "XX") and condition in ("", option):
                condition = option
                index += 1
            elif option in ("EX", "PX") and unit in ("", option) and index + 1 < len(options):
                unit, amount = option, args[2 + index + 1]
                index += 2
            else:
                raise RespError("ERR syntax error")
        expires: float | None = None
        if unit:
            number = _int(amount)
            if number <= 0:
                raise RespError("ERR invalid expire time in 'set' command")
            expires = self._clock() + (number if unit == "EX" else number / 1000)
        exists = self._get(key) is not None
        if (condition == "NX" and exists) or (condition == "XX" and not exists):
            return None
        self._set(key, value, expires)
        return "OK"

    def _set_new(self, key: bytes, value: int, expires: float) -> bool:
        """SET key value EX … NX with an integer value: False (nothing set) if the key exists."""
        if self._get(key) is not None:
            return False
        self._set(key, str(value).encode(), expires)
        return True

    def _read(self, key: bytes, clock: float) -> bytes | None:
        """GET, at the time `clock` (the pipeline's reading; a store elsewhere reads its slots with it)."""
        return self._get(key)

    def _add_window(self, key: bytes, start: int, expires: float, amount: int,
                    clock: float | None = None) -> tuple[Reply, Reply]:
        """SET key start EX … NX, then INCRBY key amount: both replies. `clock`: the pipeline's reading, for a
        store that looks its slots up with it (this one reads its own clock)."""
        created: bool | RespError
        try:
            created = self._set_new(key, start, expires)
        except RespError as error:
            created = error
        try:
            number: Reply = self._incrby(key, amount)
        except RespError as error:
            number = error
        return ("OK" if created is True else None if created is False else created), number

    def _incrby(self, key: bytes, amount: int) -> int:
        current = self._get(key)
        number = (_int(current) if current is not None else 0) + amount
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
        """Added exactly in decimal: where Redis's long double shows its rounding (1000 + 0.1 gives
        1000.09999999999999998 there), the store answers 1000.1; sums of short decimals agree."""
        key = _bytes(args[0])
        current = self._get(key)
        base = _decimal(current) if current is not None else decimal.Decimal(0)
        number = _DECIMALS.add(base, _decimal(args[1]))
        if number.adjusted() > _DECIMALS.Emax - 100:
            raise RespError("ERR increment would produce NaN or Infinity")
        text = _format_decimal(number)
        self._set(key, text, None, keep_ttl=True)
        return text

    def _del(self, args: list[Any]) -> Reply:
        return sum(1 for key in args if self._get(_bytes(key)) is not None and self._delete(_bytes(key)))

    def _exists(self, args: list[Any]) -> Reply:
        return sum(1 for key in args if self._get(_bytes(key)) is not None)

    def _expire(self, args: list[Any]) -> Reply:
        key, seconds = _bytes(args[0]), _int(args[1])
        flags = {_bytes(a).decode("latin-1").upper() for a in args[2:]}
        if flags - {"NX", "XX"}:
            raise RespError(f"ERR Unsupported option {sorted(flags - {'NX', 'XX'})[0]}")
        if flags == {"NX", "XX"}:
            raise RespError("ERR NX and XX, GT or LT options at the same time are not compatible")
        if self._get(key) is None:
            return 0
        expiry = self._expiry(key)
        if ("NX" in flags and expiry is not None) or ("XX" in flags and expiry is None):
            return 0
        if seconds <= 0:
            self._delete(key)
        else:
            self._set_expiry(key, self._clock() + seconds)
        return 1

    def _pttl(self, args: list[Any]) -> Reply:
        key = _bytes(args[0])
        if self._get(key) is None:
            return -2
        expires = self._expiry(key)
        return -1 if expires is None else max(0, round((expires - self._clock()) * 1000))

    def _ttl(self, args: list[Any]) -> Reply:
        milliseconds = self._pttl(args)
        return milliseconds if milliseconds < 0 else (milliseconds + 500) // 1000

    def _flushdb(self, args: list[Any]) -> Reply:
        if len(args) > 1 or any(_bytes(a).upper() not in (b"ASYNC", b"SYNC") for a in args):
            raise RespError("ERR syntax error")
        self._clear()
        return "OK"


_PARSE = object()  # a fast handler's answer when the command is not the shape it reads
_LONG = 2**63


def _fast_set(store: Store, command: Command) -> Reply:
    """`SET key <int> EX <seconds> NX`: how every counting window starts (serving.ratelimit)."""
    if len(command) != 6 or command[3] != "EX" or command[5] != "NX":
        return _PARSE
    value, seconds = command[2], command[4]
    if type(value) is not int or type(seconds) is not int or not -_LONG <= value < _LONG or not 0 < seconds < _LONG:
        return _PARSE
    try:
        return "OK" if store._set_new(_bytes(command[1]), value, store._clock() + seconds) else None
    except RespError as error:
        return error


def _window_pair(command: Command, following: Command) -> tuple[int, int, int] | None:
    """(start, seconds, amount) when the two commands are a window's `SET key <int> EX <seconds> NX` +
    `INCRBY key <int>`, else None."""
    if (len(command) != 6 or command[3] != "EX" or command[5] != "NX" or len(following) != 3
            or following[0] != "INCRBY" or following[1] != command[1]):
        return None
    value, seconds, amount = command[2], command[4], following[2]
    if (type(value) is not int or type(seconds) is not int or type(amount) is not int
            or not -_LONG <= value < _LONG or not 0 < seconds < _LONG or not -_LONG <= amount < _LONG):
        return None
    return value, seconds, amount


def _fast_incrby(store: Store, command: Command) -> Reply:
    if len(command) != 3 or type(command[2]) is not int or not -_LONG <= command[2] < _LONG:
        return _PARSE
    try:
        return store._incrby(_bytes(command[1]), command[2])
    except RespError as error:
        return error


_FAST: dict[Any, Callable[[Store, Command], Reply]] = {"SET": _fast_set, "INCRBY": _fast_incrby}  # GET: in _run

# Each command's handler and its arity as Redis counts it (the name included): n exactly, -n at least n.
_COMMANDS: dict[str, tuple[Callable[[Store, list[Any]], Reply], int]] = {
    "PING": (Store._ping, -1),
    "AUTH": (Store._accept, -2),
    "SELECT": (Store._accept, 2),
    "GET": (Store._get_command, 2),
    "MGET": (Store._mget, -2),
    "SET": (Store._set_command, -3),
    "INCR": (Store._incr, 2),
    "INCRBY": (Store._incrby_command, 3),
    "DECRBY": (Store._decrby, 3),
    "INCRBYFLOAT": (Store._incrbyfloat, 3),
    "DEL": (Store._del, -2),
    "EXISTS": (Store._exists, -2),
    "EXPIRE": (Store._expire, -3),
    "TTL": (Store._ttl, 2),
    "PTTL": (Store._pttl, 2),
    "FLUSHDB": (Store._flushdb, -1),
}
