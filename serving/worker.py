"""One serving worker: uvicorn (uvloop, httptools) running gateway_project.asgi on a listening
socket inherited from the start_server supervisor.

The supervisor binds the port once and starts N of these; the kernel spreads connections over
them. uvicorn's own multi-worker mode would add a parent process and a multiprocessing resource
tracker (about 40 MiB together) to do what the supervisor already does.

    python -m serving.worker --fd N --supervisor-pid P
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
import time
import weakref
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from serving.edge import EdgeLimits, error_body, error_response, raise_descriptor_limit

ASGI_APP = "gateway_project.asgi:application"
# On SIGTERM a worker stops accepting, lets in-flight requests finish for this long, then closes them.
GRACEFUL_SHUTDOWN_SECONDS = 10
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# For the supervisor's tests only: a worker started while this file exists exits at once with code 3
# (a worker that cannot start, whose restarts the supervisor must space out).
FAIL_AT_START_IF_EXISTS = "GATEWAY_TEST_WORKER_FAILS_IF_EXISTS"

logger = logging.getLogger("serving.worker")  # not __main__: the worker runs as `python -m serving.worker`


class CoalescingTransport:
    """A client connection's transport whose writes within one event-loop step leave as one.

    uvicorn writes a response's status line and headers as soon as the application sends
    `http.response.start`, and the body on the next message: two system calls and two packets for
    every answer. An SSE stream whose upstream delivered several events at once is sent one
    `write` per event. Writes are gathered and flushed at the end of the loop step that made them,
    so nothing waits for more data: the next step sends what the last one wrote. A complete response
    is sent at once (CoalescingHttpToolsProtocol.on_response_complete): when a burst of upstream
    answers is handled in one step, each client gets its answer as soon as it is rendered, not after
    the whole burst."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.writelines(pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a CoalescingTransport."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()


# A connection's phases: its head is arriving, its body is, or it waits for the answer or the next request.
_HEAD, _BODY, _ANSWERING = "head", "body", "answering"

class GatewayHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """The workers' protocol: uvicorn's httptools protocol, coalescing its writes, with the edge's limits
    (serving.edge) that uvicorn lacks: a head size limit (431) and deadline (408), a body idle timeout
    (408), a per-worker connection cap, and JSON for every error it answers itself (uvicorn's are
    text/plain).

    Only as much of a head as the limit allows is given to the parser: httptools gathers a header's value
    by concatenating every piece it is fed, so a 128 MiB header cost 23 s of CPU before the limit."""

    limits: ClassVar[EdgeLimits | None] = None  # read from the settings at the first connection

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if GatewayHttpToolsProtocol.limits is None:
            GatewayHttpToolsProtocol.limits = EdgeLimits.from_settings()
        self._limits = GatewayHttpToolsProtocol.limits
        # Bytes of a request head still accepted; None from the end of a head to the end of its body.
        self._head_left: int | None = self._limits.max_header_bytes
        # One timer per connection, checked lazily (re-armed only when it fires early), so that a request
        # costs a few attribute writes and no timer: the phase, and since when it has waited.
        self._phase = _HEAD
        self._waiting_since = self.loop.time()
        self._deadline: asyncio.TimerHandle | None = None

    # The connection cap.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        connections = _open_connections(self.server_state)
        if len(connections) >= self._limits.max_connections and not _close_an_idle_connection(connections):
            self.app = _answer_no_room  # every connection is busy with a request: this one is answered 503
        connections[self] = None
        self._arm(self._limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        _open_connections(self.server_state).pop(self, None)
        self._disarm()
        super().connection_lost(exc)

    def is_idle(self) -> bool:
        """Waiting for a request's head (a fresh or kept-alive connection, or one still sending its head),
        with no answer under way: closing it loses no work."""
        return self._head_left is not None and (self.cycle is None or self.cycle.response_complete)

    # The head's size.
    def data_received(self, data: bytes) -> None:
        while self._head_left is not None and len(data) > self._head_left:
            # Give the parser only what the head may still take: the head must end within it.
            head, data = data[:self._head_left], data[self._head_left:]
            self._head_left = 0
            if head:
                super().data_received(head)
            if self.transport.is_closing():
                return
            if self._head_left == 0:  # still in the same head
                self._refuse(431, f"The request head is larger than {self._limits.max_header_bytes} bytes "
                                  "(GATEWAY_MAX_HEADER_BYTES).", "request_header_fields_too_large")
                return
        if self._head_left is not None:
            self._head_left -= len(data)
        HttpToolsProtocol.data_received(self, data)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "Bad Request: the request is not valid HTTP.", "bad_request")

    # The head's and the body's deadlines.
    # (The parser's callbacks call the base class directly, not through super(): they run for every request.)
    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        if self._phase != _HEAD:  # a kept-alive connection's next request (the first is timed from the connection)
            self._wait(_HEAD, self._limits.header_timeout)

    def on_headers_complete(self) -> None:
        HttpToolsProtocol.on_headers_complete(self)
        self._head_left = None
        self._wait(_BODY, self._limits.body_timeout)

    def on_body(self, body: bytes) -> None:
        HttpToolsProtocol.on_body(self, body)
        self._waiting_since = self.loop.time()

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        self._phase = _ANSWERING  # the application's time, then uvicorn's keep-alive timeout
        self._head_left = self._limits.max_header_bytes

    def _wait(self, phase: str, timeout: float) -> None:
        """Enter a phase that must progress within `timeout`; the pending timer does unless it is due later."""
        self._phase = phase
        now = self._waiting_since = self.loop.time()
        if self._deadline is None or self._deadline.when() > now + timeout:
            self._arm(timeout)

    def _arm(self, delay: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(delay, self._check_deadline)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _check_deadline(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self._phase == _ANSWERING:
            return  # the next request's head arms it again
        now = self.loop.time()
        if self._phase == _HEAD:
            left = self._limits.header_timeout - (now - self._waiting_since)
            if left <= 0:
                self._head_timed_out()
                return
        else:
            if self.flow.read_paused:  # we stopped reading (the application has not taken what it has): not the client
                self._waiting_since = now
            left = self._limits.body_timeout - (now - self._waiting_since)
            if left <= 0:
                self._refuse(408, f"The request body paused for more than {self._limits.body_timeout:g} s "
                                  "(GATEWAY_BODY_TIMEOUT_SECONDS).", "request_timeout")
                return
        self._arm(left)

    def _head_timed_out(self) -> None:
        if self._head_left == self._limits.max_header_bytes:
            self.transport.close()  # nothing was asked: a plain close, as for an idle kept-alive connection
            return
        self._refuse(408, f"The request head did not arrive within {self._limits.header_timeout:g} s "
                          "(GATEWAY_HEADER_TIMEOUT_SECONDS).", "request_timeout")

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer an error ourselves (unless an answer has begun) and close the connection; the
        application, if it is waiting for the body, sees the client go."""
        self._disarm()
        cycle = self.cycle
        if cycle is None or not (cycle.response_started or cycle.response_complete):
            path = getattr(self, "url", b"").split(b"?", 1)[0].decode("latin-1")
            self.transport.write(error_response(path, status, message, code))
        _refusals.count(status)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


_connections: weakref.WeakKeyDictionary[ServerState, dict[GatewayHttpToolsProtocol, None]] = \
    weakref.WeakKeyDictionary()


def _open_connections(state: ServerState) -> dict[GatewayHttpToolsProtocol, None]:
    """A server's connections, oldest first."""
    connections = _connections.get(state)
    if connections is None:
        connections = _connections[state] = {}
    return connections


def _close_an_idle_connection(connections: dict[GatewayHttpToolsProtocol, None]) -> bool:
    """Close the oldest idle connection to make room for a new one; False if every one is busy."""
    for connection in connections:
        if connection.is_idle():
            del connections[connection]
            connection.transport.close()
            _refusals.count(0)
            return True
    return False


async def _answer_no_room(scope: Any, receive: Any, send: Any) -> None:
    body = error_body(scope["path"], 503, "The server is at its connection limit (GATEWAY_MAX_CONNECTIONS); "
                                          "retry shortly.", "too_many_connections")
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                            (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class _Refusals:
    """What the edge refused, logged at most once per interval (a client can make thousands a second)."""

    INTERVAL_SECONDS = 10.0
    NAMES = {0: "idle connections closed for room", 400: "malformed requests", 408: "slow requests",
             431: "oversized heads"}

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.logged_at = 0.0

    def count(self, status: int) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        now = time.monotonic()
        if now - self.logged_at >= self.INTERVAL_SECONDS:
            self.logged_at = now
            counts, self.counts = self.counts, {}
            logger.warning("HTTP edge: %s", ", ".join(f"{n} {self.NAMES.get(s, str(s))}"
                                                        for s, n in sorted(counts.items())))


_refusals = _Refusals()


def _check_config_now(signum: int, frame: object) -> None:
    """SIGUSR1 from the supervisor: the config file was just applied. The next request rebuilds the
    endpoint table (in a helper thread) instead of waiting for the poller."""
    runtime = sys.modules.get("serving.runtime")  # loaded with the application; no import here
    if runtime is not None:
        runtime.invalidate()


def stop_with_supervisor(supervisor_pid: int) -> None:
    """Ask the kernel for SIGTERM (the orderly stop) when the supervisor dies without stopping us
    (SIGKILL, the OOM killer), then exit if it has already died: it may have gone between starting us
    and this call, and we would then be a child of init that nobody stops.

    Done here rather than in the supervisor between fork and exec (`preexec_fn`), which is not safe
    in a process with threads. The death signal follows the thread that started us: the supervisor
    starts workers from its main thread, which lives as long as it does."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            print(f"worker {os.getpid()}: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}",
                  file=sys.stderr)
    if os.getppid() != supervisor_pid:
        sys.exit(f"worker {os.getpid()}: the supervisor (pid {supervisor_pid}) is gone; exiting")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.worker",
                                     description="Run by `manage.py start_server`; not meant to be called directly.")
    parser.add_argument("--fd", type=int, required=True, help="the listening socket's file descriptor")
    parser.add_argument("--supervisor-pid", type=int, help="exit when this process (our parent) does")
    args = parser.parse_args(argv)
    if args.supervisor_pid is not None:
        stop_with_supervisor(args.supervisor_pid)
    failing = os.environ.get(FAIL_AT_START_IF_EXISTS)
    if failing and os.path.exists(failing):
        sys.exit(3)
    listener = socket.socket(fileno=args.fd)  # family and type read from the descriptor
    signal.signal(signal.SIGUSR1, _check_config_now)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})  # blocked since the supervisor's fork
    raise_descriptor_limit()
    config = uvicorn.Config(ASGI_APP, loop="uvloop", http=GatewayHttpToolsProtocol, ws="none", lifespan="on",
                            access_log=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    main()
