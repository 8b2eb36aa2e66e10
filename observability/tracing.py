"""OpenTelemetry traces: one span per invocation, exported over OTLP; off by default.

Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or
OTEL_TRACES_EXPORTER is set (OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true turn it off). Only
then is the OpenTelemetry SDK imported: the default path pays one test of a module global. The
standard variables are the SDK's own: OTEL_SERVICE_NAME (default here: django-ai-gateway),
OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout, compression, certificates),
OTEL_TRACES_SAMPLER[_ARG], OTEL_BSP_* (the batch processor). OTEL_TRACES_EXPORTER is `otlp` (OTLP over
HTTP, protobuf) or `console`.

The span (kind SERVER, named "<operation> <model>") follows the GenAI semantic conventions:
gen_ai.operation.name (chat, text_completion, embeddings), gen_ai.system and gen_ai.provider.name (the
provider), gen_ai.request.model, gen_ai.response.model (when the answer names it),
gen_ai.usage.input_tokens, gen_ai.usage.output_tokens, error.type; and the gateway's own: gateway.endpoint,
gateway.route, gateway.destination, gateway.consumer, gateway.family, gateway.request_id,
gateway.retries, gateway.fallbacks, gateway.stream, http.response.status_code. A client's W3C
`traceparent` makes it the child of the client's span, and the upstream call carries a `traceparent`
naming this span (with tracing off, a valid client `traceparent` is passed upstream unchanged).
Prompts and completions are recorded (gen_ai.input.messages, gen_ai.output.messages) only with
GATEWAY_TRACE_CONTENT=true. Spans leave in batches (BatchSpanProcessor), flushed when a worker stops.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from django.conf import settings

from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS

if TYPE_CHECKING:
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from usage.ledger import Entry

logger = logging.getLogger(__name__)

SERVICE_NAME = "django-ai-gateway"
OPERATIONS = {CHAT: "chat", COMPLETIONS: "text_completion", EMBEDDINGS: "embeddings"}
TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")


def wanted() -> bool:
    """Whether the environment asks for traces."""
    environ = os.environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


@dataclass
class Tracing:
    provider: TracerProvider
    tracer: Tracer
    propagator: TextMapPropagator


_tracing: Tracing | None = None
_checked = False


def get() -> Tracing | None:
    """The process's tracer, set up on first use; None when tracing is off."""
    global _tracing, _checked
    if not _checked:
        _checked = True
        if wanted():
            _tracing = _setup()
    return _tracing


def _setup() -> Tracing:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    exporter: SpanExporter
    if kind == "console":
        exporter = ConsoleSpanExporter()
    else:
        if kind != "otlp":
            logger.warning("OTEL_TRACES_EXPORTER=%s is not supported here (otlp, console): exporting over OTLP", kind)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, timeout... from OTEL_EXPORTER_OTLP_*
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider, provider.get_tracer("django-ai-gateway"), TraceContextTextMapPropagator())


def reset() -> None:
    """Shut the tracer down and read the environment again on next use (tests)."""
    global _tracing, _checked
    shutdown()
    _tracing, _checked = None, False


def shutdown() -> None:
    """Export the spans still buffered (a worker stopping)."""
    if _tracing is not None:
        _tracing.provider.shutdown()


def start(traceparent: str | None) -> tuple[Span | None, str | None]:
    """The invocation's span (None when tracing is off) and the `traceparent` its upstream calls carry."""
    if traceparent is not None and not TRACEPARENT.match(traceparent):
        traceparent = None  # not a W3C traceparent we understand: ignored, never passed on
    tracing = _tracing if _checked else get()
    if tracing is None:
        return None, traceparent
    from opentelemetry.trace import SpanKind

    parent = tracing.propagator.extract({"traceparent": traceparent}) if traceparent else None
    span = tracing.tracer.start_span("gateway", context=parent, kind=SpanKind.SERVER)
    context = span.get_span_context()
    if not context.is_valid:
        return span, traceparent
    return span, f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def record_input(span: Span, payload: dict[str, Any]) -> None:
    """With GATEWAY_TRACE_CONTENT: the prompt (messages, prompt or input) on the span."""
    if not settings.GATEWAY_TRACE_CONTENT or not span.is_recording():
        return
    for field in ("messages", "prompt", "input"):
        if field in payload:
            span.set_attribute("gen_ai.input.messages", orjson.dumps(payload[field]).decode())
            return


def record_output(span: Span, response: dict[str, Any]) -> None:
    """With GATEWAY_TRACE_CONTENT: a non-streamed completion's choices on the span."""
    if settings.GATEWAY_TRACE_CONTENT and span.is_recording() and "choices" in response:
        span.set_attribute("gen_ai.output.messages", orjson.dumps(response["choices"]).decode())


def end(span: Span, entry: Entry, endpoint: str, endpoint_type: str | None, response_model: str | None) -> None:
    """Name the span, set its attributes from the usage record's data and end it."""
    if span.is_recording():
        from opentelemetry.trace import Status, StatusCode

        operation = OPERATIONS.get(endpoint_type or "", "")
        span.update_name(f"{operation} {entry.model}".strip() or "gateway")
        attributes: dict[str, Any] = {
            "gateway.endpoint": endpoint, "gateway.family": entry.family, "gateway.request_id": entry.request_id,
            "gateway.retries": entry.retries, "gateway.fallbacks": entry.fallbacks, "gateway.stream": entry.stream,
            "http.response.status_code": entry.status,
        }
        optional = {
            "gen_ai.operation.name": operation, "gen_ai.system": entry.provider, "gen_ai.provider.name": entry.provider,
            "gen_ai.request.model": entry.model, "gen_ai.response.model": response_model,
            "gen_ai.usage.input_tokens": entry.prompt_tokens, "gen_ai.usage.output_tokens": entry.completion_tokens,
            "gateway.route": entry.route, "gateway.destination": entry.endpoint, "gateway.consumer": entry.consumer,
            "error.type": entry.error_code,
        }
        attributes.update((key, value) for key, value in optional.items() if value not in (None, ""))
        span.set_attributes(attributes)
        if entry.status >= 500:
            span.set_status(Status(StatusCode.ERROR, entry.error_code or str(entry.status)))
    span.end()
