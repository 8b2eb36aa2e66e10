"""One serving worker: uvicorn (uvloop, httptools) running gateway_project.asgi on a listening
socket inherited from the start_server supervisor.

The supervisor binds the port once and starts N of these; the kernel spreads connections over
them. uvicorn's own multi-worker mode would add a parent process and a multiprocessing resource
tracker (about 40 MiB together) to do what the supervisor already does.

    python -m endpoints_app.worker --fd N
"""
from __future__ import annotations

import argparse
import socket

import uvicorn

ASGI_APP = "gateway_project.asgi:application"
# On SIGTERM a worker stops accepting, lets in-flight requests finish for this long, then closes them.
GRACEFUL_SHUTDOWN_SECONDS = 10


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m endpoints_app.worker",
                                     description="Run by `manage.py start_server`; not meant to be called directly.")
    parser.add_argument("--fd", type=int, required=True, help="the listening socket's file descriptor")
    args = parser.parse_args(argv)
    listener = socket.socket(fileno=args.fd)  # family and type read from the descriptor
    config = uvicorn.Config(ASGI_APP, loop="uvloop", http="httptools", ws="none", lifespan="on",
                            access_log=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    main()
