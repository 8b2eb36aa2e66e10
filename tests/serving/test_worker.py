"""The serving worker's write coalescing (serving.worker), on a real socket pair."""
from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from serving.worker import CoalescingHttpToolsProtocol, CoalescingTransport


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


def test_a_complete_response_leaves_at_once_not_at_the_end_of_the_loop_step() -> None:
    """uvicorn's protocol over the coalescing transport: once the application has sent its last body
    message, the client has the answer even while the same loop step goes on (a burst of upstream
    answers handled in one step must not hold the first client's answer until the last is rendered)."""
    client_has_answer = threading.Event()
    seen_by_app: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello"})
        # Block this loop step until the client has read the whole answer (or give up).
        seen_by_app.append(client_has_answer.wait(5))

    def client(port: int, answers: list[bytes]) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            data = b""
            while not data.endswith(b"hello"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            answers.append(data)
            client_has_answer.set()

    async def main() -> list[bytes]:
        config = uvicorn.Config(app, lifespan="off", access_log=False, http=CoalescingHttpToolsProtocol)
        config.load()
        state = ServerState()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: CoalescingHttpToolsProtocol(config=config, server_state=state, app_state={}), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        answers: list[bytes] = []
        thread = threading.Thread(target=client, args=(port, answers))
        thread.start()
        while not seen_by_app:
            await asyncio.sleep(0.01)
        thread.join(5)
        server.close()
        for task in state.tasks:
            task.cancel()
        return answers

    answers = asyncio.run(main())
    assert seen_by_app == [True]
    assert answers and answers[0].startswith(b"HTTP/1.1 200 OK") and answers[0].endswith(b"\r\n\r\nhello")
