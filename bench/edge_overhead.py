"""What the HTTP edge's limits (serving.worker.GatewayHttpToolsProtocol: head size and deadline, body idle
timer, connection registry) add to each request, against the protocol without them
(CoalescingHttpToolsProtocol), on an in-memory transport so that only the protocol's own work is timed.

    python bench/edge_overhead.py [--requests 50000] [--rounds 5]

Each round serves N kept-alive GET requests and N small POSTs through each protocol, and through an empty
subclass (the control: its difference from the plain class is the noise); it prints the best round's
microseconds of CPU per request for each.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
os.environ.setdefault("DEBUG", "true")

import django

django.setup()

import uvicorn  # noqa: E402
import uvloop  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from serving.worker import CoalescingHttpToolsProtocol, GatewayHttpToolsProtocol  # noqa: E402

GET = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
BODY = b'{"model":"chat","messages":[{"role":"user","content":"hi!"}]}'
POST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer gwk_0123456789\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)


class MemoryTransport:
    """Enough of a transport for uvicorn's protocol; writes are dropped."""

    def __init__(self) -> None:
        self.closing = False

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        pass


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["method"] == "POST":
        await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def serve(protocol_class: type[CoalescingHttpToolsProtocol], request: bytes, count: int) -> float:
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_level="error")
    config.load()
    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state={})
    transport = MemoryTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    started = time.process_time()
    for _ in range(count):
        protocol.data_received(request)
        while state.tasks:
            await asyncio.sleep(0)
    elapsed = time.process_time() - started
    assert not transport.closing and state.total_requests == count, "a request was refused"
    protocol.connection_lost(None)
    return elapsed / count * 1e6


class SubclassOnly(CoalescingHttpToolsProtocol):
    """The control: a subclass that adds nothing. What it costs over the plain class is the bench's noise."""


PROTOCOLS: dict[str, type[CoalescingHttpToolsProtocol]] = {
    "without the edge": CoalescingHttpToolsProtocol,
    "with the edge": GatewayHttpToolsProtocol,
    "control (empty subclass)": SubclassOnly,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for name, request in (("GET", GET), ("POST", POST)):
        times: dict[str, list[float]] = {label: [] for label in PROTOCOLS}
        for round_ in range(args.rounds):  # alternate the order; the best round of each is the least disturbed
            for label in (list(PROTOCOLS) if round_ % 2 == 0 else list(PROTOCOLS)[::-1]):
                times[label].append(uvloop.run(serve(PROTOCOLS[label], request, args.requests)))
        best = {label: min(values) for label, values in times.items()}
        print(f"{name} (us of CPU a request, best of {args.rounds} rounds): "
              + ", ".join(f"{label} {value:.2f}" for label, value in best.items())
              + f"; the edge adds {best['with the edge'] - best['without the edge']:+.2f}")

if __name__ == "__main__":
    main()
