"""The serving worker's write coalescing (endpoints_app.worker), on a real socket pair."""
from __future__ import annotations

import asyncio
import socket
from typing import Any

from endpoints_app.worker import CoalescingTransport


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


async def _writes_seen_by_the_socket(actions: list[str]) -> tuple[list[list[bytes]], bytes]:
    """Run `actions` on a CoalescingTransport over a socket pair; return the writelines batches it made
    and what the other end received."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(_Recorder, ours)
    batches: list[list[bytes]] = []
    real_writelines = transport.writelines

    def counting_writelines(data: Any) -> None:
        batches.append(list(data))
        real_writelines(data)

    transport.writelines = counting_writelines  # type: ignore[method-assign,assignment]
    coalescing = CoalescingTransport(transport, loop)
    for action in actions:
        if action == "step":
            await asyncio.sleep(0)
        elif action == "close":
            coalescing.close()
        else:
            coalescing.write(action.encode())
    await asyncio.sleep(0.01)
    theirs.setblocking(False)
    received = b""
    try:
        while chunk := theirs.recv(65536):
            received += chunk
    except BlockingIOError:
        pass
    theirs.close()
    return batches, received


def test_writes_in_one_loop_step_leave_in_one_batch_and_later_ones_in_the_next() -> None:
    batches, received = asyncio.run(_writes_seen_by_the_socket(["head ", "body", "step", "next"]))
    assert batches == [[b"head ", b"body"], [b"next"]]
    assert received == b"head bodynext"


def test_closing_sends_what_is_pending_first() -> None:
    batches, received = asyncio.run(_writes_seen_by_the_socket(["head ", "body", "close"]))
    assert batches == [[b"head ", b"body"]]
    assert received == b"head body"
