"""The HTTP edge: what one client may cost a worker before it is refused, and the JSON it is refused with.

nginx and Envoy bound every client by default; uvicorn does not. A worker (serving.worker's protocol,
serving.app's body reading) applies these limits, each a setting:

- a request's head (request line and headers) is at most GATEWAY_MAX_HEADER_BYTES (431 beyond) and must
  arrive within GATEWAY_HEADER_TIMEOUT_SECONDS of its first byte, or of the connection (408);
- a body may pause at most GATEWAY_BODY_TIMEOUT_SECONDS between two reads (408);
- a body is at most DATA_UPLOAD_MAX_MEMORY_SIZE (GATEWAY_MAX_REQUEST_BYTES) on every route (413): a
  declared Content-Length is refused before any of it is read, a chunked body as soon as it passes;
- a worker holds at most GATEWAY_MAX_CONNECTIONS client connections. A new one past the cap closes the
  oldest connection that is idle or still sending its head (as nginx reuses idle connections); if every
  connection is busy with a request, the new one is answered 503.

Errors found below the application (the protocol's: a malformed request, a head too large or too slow, no
room) are rendered here, in the route's shape as endpoints_app.errors renders them: OpenAI's envelope under
/v1/, MLflow's `{"detail": ...}` elsewhere. No client ever gets a text/plain or HTML error.
"""

from __future__ import annotations

import http
import logging
import resource
from dataclasses import dataclass

import orjson

logger = logging.getLogger(__name__)

# Descriptors a worker keeps for itself (the listening socket, the database, Redis, log files, libraries),
# and per client connection one more may be open to its upstream.
RESERVED_DESCRIPTORS = 64
DESCRIPTORS_PER_CONNECTION = 2


@dataclass(frozen=True)
class EdgeLimits:
    max_header_bytes: int
    header_timeout: float
    body_timeout: float
    max_connections: int
    max_body_bytes: int

    @classmethod
    def from_settings(cls) -> EdgeLimits:
        from django.conf import settings

        return cls(
            max_header_bytes=settings.GATEWAY_MAX_HEADER_BYTES,
            header_timeout=settings.GATEWAY_HEADER_TIMEOUT_SECONDS,
            body_timeout=settings.GATEWAY_BODY_TIMEOUT_SECONDS,
            max_connections=connection_cap(settings.GATEWAY_MAX_CONNECTIONS),
            max_body_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
        )


def raise_descriptor_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (as Go's runtime does at start) and
    return it: the soft limit is often 1,024, too few for a server holding streams."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(wanted: int) -> int:
    """GATEWAY_MAX_CONNECTIONS, lowered if this process's descriptors could not hold that many connections
    and their upstream connections: past the descriptor limit accept() fails and every client is refused."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    room = max(1, (soft - RESERVED_DESCRIPTORS) // DESCRIPTORS_PER_CONNECTION)
    if room < wanted:
        logger.warning("GATEWAY_MAX_CONNECTIONS=%s lowered to %s: this worker may open %s files (ulimit -n)",
                       wanted, room, soft)
    return min(wanted, room)


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The request's Content-Length, or None without one (a chunked body, or none). httptools has already
    refused a request whose Content-Length is not a number."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def error_body(path: str, status: int, message: str, code: str) -> bytes:
    """An error in the route's shape: OpenAI's envelope under /v1/ (a client status is an
    invalid_request_error, a server one a server_error), MLflow's `{"detail": ...}` elsewhere."""
    if path.startswith("/v1/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})
    return orjson.dumps({"detail": message})


def error_response(path: str, status: int, message: str, code: str,
                   headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, for the protocol to write itself."""
    body = error_body(path, status, message, code)
    head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode("ascii"),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join(head) + b"\r\n" + body


def too_large_message(limit: int) -> str:
    return f"The request body is larger than {limit} bytes (GATEWAY_MAX_REQUEST_BYTES)."
