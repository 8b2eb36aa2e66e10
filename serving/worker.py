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
import os
import signal
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ASGI_APP = "gateway_project.asgi:application"
# On SIGTERM a worker stops accepting, lets in-flight requests finish for this long, then closes them.
GRACEFUL_SHUTDOWN_SECONDS = 10
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# For the supervisor's tests only: a worker started while this file exists exits at once with code 3
# (a worker that cannot start, whose restarts the supervisor must space out).
FAIL_AT_START_IF_EXISTS = "GATEWAY_TEST_WORKER_FAILS_IF_EXISTS"


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
    config = uvicorn.Config(ASGI_APP, loop="uvloop", http=CoalescingHttpToolsProtocol, ws="none", lifespan="on",
                            access_log=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    main()
