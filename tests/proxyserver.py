"""A small HTTP proxy on 127.0.0.1 for the tests, in threads: it forwards absolute-form requests
(`POST http://host:port/path HTTP/1.1`) and opens CONNECT tunnels, optionally demanding Basic
credentials, or refuses everything with a given status. It records what it was asked."""

from __future__ import annotations

import base64
import socket
import threading
from types import TracebackType
from urllib.parse import urlsplit


def _read_head(conn: socket.socket) -> tuple[bytes, bytes]:
    """One request head and what followed it in the same reads; (b"", b"") once the client has gone."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b"", b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Proxy:
    """`seen` holds each request line the proxy received, `authorizations` each Proxy-Authorization value
    (None when absent). With `credentials`, a request without them is answered 407; with `refuse`, every
    request is answered with that status."""

    def __init__(self, credentials: tuple[str, str] | None = None, refuse: int | None = None) -> None:
        self.expected = None
        if credentials is not None:
            self.expected = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        self.refuse = refuse
        self.seen: list[str] = []
        self.authorizations: list[str | None] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(32)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, user: str | None = None, password: str | None = None) -> str:
        return f"http://{user}:{password}@{self.address}" if user else f"http://{self.address}"

    def __enter__(self) -> Proxy:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stopped.set()
        self._thread.join(timeout=2)
        self._listener.close()
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._sockets.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                head, rest = _read_head(conn)
                if not head:
                    return
                lines = head.decode("latin-1").split("\r\n")
                headers = {name.strip().lower(): value.strip() for name, _, value in
                           (line.partition(":") for line in lines[1:])}
                self.seen.append(lines[0])
                self.authorizations.append(headers.get("proxy-authorization"))
                method, target, _ = lines[0].split(" ", 2)
                body = rest
                length = int(headers.get("content-length", "0"))
                while len(body) < length:
                    body += conn.recv(65536)
                status = self._refusal(headers)
                if status:
                    conn.sendall(f"HTTP/1.1 {status} Refused\r\nProxy-Authenticate: Basic realm=\"tests\"\r\n"
                                 "Content-Length: 9\r\n\r\nrefused.\n".encode())
                    continue
                if method == "CONNECT":
                    host, _, port = target.rpartition(":")
                    upstream = socket.create_connection((host, int(port)), timeout=5)
                    self._sockets.append(upstream)
                    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                else:
                    parts = urlsplit(target)
                    upstream = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=5)
                    self._sockets.append(upstream)
                    path = parts.path + (f"?{parts.query}" if parts.query else "")
                    forwarded = [f"{method} {path} HTTP/1.1"] + [
                        line for line in lines[1:]
                        if line.partition(":")[0].strip().lower() not in {"proxy-authorization", "connection"}
                    ] + ["Connection: close"]
                    upstream.sendall("\r\n".join(forwarded).encode("latin-1") + b"\r\n\r\n" + body)
                # Relay both ways until the upstream is done; this client connection ends with it.
                threading.Thread(target=_pipe, args=(conn, upstream), daemon=True).start()
                _pipe(upstream, conn)
                return
        except OSError:
            pass
        finally:
            conn.close()

    def _refusal(self, headers: dict[str, str]) -> int | None:
        if self.refuse is not None:
            return self.refuse
        if self.expected is not None and headers.get("proxy-authorization") != self.expected:
            return 407
        return None
