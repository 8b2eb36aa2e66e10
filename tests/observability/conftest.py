"""A local OTLP/HTTP receiver (it decodes what an exporter sends, as a collector would) and an
OpenAI-speaking upstream that records the headers it receives."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.fixtures import payload, raw
from tests.serving.conftest import module_servers, servers  # noqa: F401  (fixtures)


def attribute_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class OTLPReceiver:
    """POST /v1/traces (protobuf): keeps every span it receives, with its resource's attributes."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.received = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                spans = []
                for resource_spans in request.resource_spans:
                    resource = {a.key: attribute_value(a.value) for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            spans.append({
                                "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(), "kind": span.kind,
                                "status": span.status.code, "resource": resource,
                                "attributes": {a.key: attribute_value(a.value) for a in span.attributes},
                            })
                with receiver.received:
                    receiver.spans += spans
                    receiver.received.notify_all()
                data = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, trace_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """The first span received of that trace."""
        with self.received:
            found = self.received.wait_for(lambda: [s for s in self.spans if s["trace_id"] == trace_id], timeout)
        if not found:
            pytest.fail(f"no span of trace {trace_id} within {timeout}s (received: {self.spans})")
        return next(s for s in self.spans if s["trace_id"] == trace_id)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RecordingUpstream:
    """OpenAI's chat completions under /ok/v1 (JSON, or SSE for "stream": true), a 500 under /fail/v1;
    remembers each request's headers and body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                upstream.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if self.path.startswith("/fail/"):
                    self.answer(500, "application/json", b'{"error": {"message": "boom", "type": "server_error"}}')
                elif body.get("stream"):
                    self.answer(200, "text/event-stream", raw("openai", "chat_stream.txt").encode())
                else:
                    self.answer(200, "application/json", orjson.dumps(payload("openai", "chat_response.json")))

            def answer(self, status: int, content_type: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def base(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{kind}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def otlp_receiver() -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream()
    yield server
    server.close()
