"""A client that talks HTTP/1.1 over a bare socket, as an attacker does: half-sent heads, bodies larger than
they should be, bytes that are not HTTP. Shared by the edge tests (tests/hardening/test_edge_*.py)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.serving.conftest import Server, Servers, config_text, mock_endpoint, server_env


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the request's first byte to the end of the answer

    def json(self) -> Any:
        return orjson.loads(self.body)


def parse(data: bytes, seconds: float) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return Answer(int(lines[0].split()[1]), headers, body, seconds)


def dechunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body, data = body + data[:size], data[size + 2:]
    return body


def read_all(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything until the server closes (or resets) the connection."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def exchange(port: int, request: bytes, timeout: float = 10) -> Answer:
    """Send `request`, read until the server closes."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return parse(read_all(sock, timeout), time.monotonic() - started)


def start_gateway(servers: Servers, folder: Path, workers: int = 1, **env: str) -> Server:
    """A start_server (one worker unless told) serving mock endpoints (`chat`, and `slow`: a stream of 1,000
    events 0.1 s apart), with `env` on top of a production environment (DEBUG off)."""
    config = folder / "config.yaml"
    slow = {"stream_chunks": 1000, "chunk_delay_ms": 100}
    config.write_text(config_text(mock_endpoint("chat"), mock_endpoint("slow", config=slow)))
    return servers.start(server_env(f"sqlite:///{folder}/gateway.sqlite3", **env), config, workers=workers)
