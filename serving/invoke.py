"""The invocation service: one request's way from the caller to the provider and back.

    begin(request, family)               the request's id, route family and clock
    authenticate(table, inv, header)     who calls (serving.auth): 401
    authorize(inv, name)                 may they call that endpoint or route: 403
    prepare(table, inv)                  every limit in one round trip to the counters: the endpoint's and
                                         the consumer's call windows, the consumer's token window, the
                                         budgets (429); for a traffic route, its destinations' circuits
    call(inv, payload, stream)           the endpoint's params, then the provider adapter (translation, the
                                         one HTTP client); a route's destination picked by weight
                                         (TRAFFIC_SPLIT) or tried in order while they fail (FALLBACK)
    finish(inv, status, usage, error)    after the answer (a stream: after its end): the tokens and the
                                         cost are added to the windows and budgets without waiting, one
                                         usage record goes to the ledger's buffer (usage.ledger), and the
                                         same data to the metrics, the access log and the span
                                         (observability)

The views (serving.views) parse and validate the request, call these in order and render the answer.
Everything here reads the in-memory table: no database query.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from consumers import keys
from observability import metrics, reports, tracing
from providers import shapes
from providers.base import BaseProvider
from providers.errors import (
    GatewayError,
    InvalidParameter,
    NoDestinationAvailable,
    NotSupported,
    RateLimited,
    RateLimitUnavailable,
    RequestValidationError,
    WrongEndpointType,
)
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from serving import auth, budgets, circuit, counters, params, ratelimit, redaction, runtime, upstream
from serving.auth import Caller
from serving.ratelimit import Admitted, RateLimit, RateState, TokenLimit
from serving.runtime import EndpointTable, LiveEndpoint, LiveRoute
from usage import ledger

logger = logging.getLogger(__name__)

_TYPE_WORDS = {CHAT: "a chat", COMPLETIONS: "a completions", EMBEDDINGS: "an embeddings"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_random_bits = random.getrandbits
ERROR_KINDS = {  # error code -> the kind the ledger counts it as
    "invalid_api_key": "refused", "permission_denied": "refused",
    "rate_limit_exceeded": "limited", "budget_exceeded": "limited", "rate_limit_unavailable": "limited",
    "upstream_error": "upstream", "upstream_unreachable": "upstream", "bad_upstream_response": "upstream",
    "upstream_tls_error": "upstream", "upstream_timeout": "timeout",
    "internal_error": "internal", "configuration_error": "internal",
}


def request_id(given: str | None) -> str:
    """The client's X-Request-Id when it is a sensible one, else a new one."""
    if given and _REQUEST_ID.match(given):
        return given
    # 96 bits from the process's generator (seeded from the OS at start and again after a fork): an id
    # needs to be unique, not secret, and os.urandom costs a system call per request.
    return f"{_random_bits(96):024x}"


@dataclass
class Invocation:
    request_id: str
    family: str  # the route family the client called: endpoints, gateway or v1
    started: float  # perf_counter
    wall: float  # epoch seconds
    caller: Caller | None = None
    name: str = ""  # the endpoint or route the client named
    route: str = ""  # the traffic route, when one was named
    endpoint: LiveEndpoint | None = None  # the endpoint that serves it (a route's chosen destination)
    admitted: Admitted = ratelimit.NOTHING_COUNTED
    destination_admitted: Admitted = ratelimit.NOTHING_COUNTED  # a route destination's own limits
    candidates: tuple[LiveEndpoint, ...] = ()
    live_route: LiveRoute | None = None
    circuits: dict[str, tuple[str, int]] | None = None  # a route's destinations: (state, failures)
    fallbacks: int = 0
    stream: bool = False
    client_wants_usage: bool = True  # a stream client that asked for the usage chunk
    ttfb: float | None = None
    retries: int = 0
    finished: bool = False
    upstream_seconds: float | None = None  # in upstream calls (a stream: until its first chunk)
    span: Any = None  # the OpenTelemetry span, when tracing is on
    traceparent: str | None = None  # what the upstream calls carry
    response_model: str | None = None  # the model the answer names (for the span)

    @property
    def rate(self) -> RateState | None:
        states = [s for s in (self.admitted.rate, self.destination_admitted.rate) if s is not None]
        return min(states, key=lambda s: s.remaining) if states else None


def begin(given_request_id: str | None, family: str, traceparent: str | None = None) -> Invocation:
    """The invocation's id and clock; its span, the child of the client's `traceparent`, when tracing is on."""
    inv = Invocation(request_id(given_request_id), family, time.perf_counter(), time.time())
    if traceparent is not None or tracing.get() is not None:
        inv.span, inv.traceparent = tracing.start(traceparent)
    return inv


def wrong_type(name: str, expected_type: str) -> WrongEndpointType:
    return WrongEndpointType(f"Endpoint '{name}' is not {_TYPE_WORDS[expected_type]} endpoint.", param="model")


def authenticate(table: EndpointTable, inv: Invocation, authorization: str | None) -> None:
    """Set the caller, with GATEWAY_AUTH=keys (Unauthorized, 401, without a valid key)."""
    if auth.enabled():
        inv.caller = auth.authenticate(authorization, table.keys, table.consumers)


def unknown_key(table: EndpointTable, authorization: str | None) -> bool:
    """Whether the request carries a key whose prefix this table does not know."""
    token = auth.bearer_token(authorization)
    prefix = keys.prefix_of(token) if token is not None else None
    return prefix is not None and prefix not in table.keys


def authorize(inv: Invocation, name: str) -> None:
    """Forbidden (403) unless the caller may call the endpoint or route `name` (anyone may with auth off)."""
    inv.name = name
    if inv.caller is not None:
        auth.authorize(inv.caller, name)


def prepare(table: EndpointTable, inv: Invocation) -> None:
    """Count the call against every limit and budget that applies, in one round trip to the counters; for a
    traffic route, read its destinations' circuits in the same trip and keep those that are not open."""
    target = table.resolve(inv.name)
    calls: list[tuple[str, RateLimit]] = []
    tokens: list[tuple[str, TokenLimit]] = []
    spending: list[tuple[str, budgets.Budget]] = []
    if isinstance(target, LiveEndpoint):
        inv.endpoint = target
        inv.candidates = (target,)
        _endpoint_limits(target, calls, spending)
    else:
        inv.live_route = target
        inv.route = target.name
    if inv.caller is not None:
        consumer = inv.caller.consumer
        if consumer.limit is not None:
            calls.append((f"c:{consumer.name}", consumer.limit))
        if consumer.token_limit is not None:
            tokens.append((f"c:{consumer.name}", consumer.token_limit))
        if consumer.budget is not None:
            spending.append((f"c:{consumer.name}", consumer.budget))
    route = inv.live_route
    reads = circuit.read_commands(list(route.destinations)) if route is not None and circuit.enabled() else []
    if calls or tokens or spending or reads:
        inv.admitted = ratelimit.admit(calls, tokens, spending, reads)
    if route is not None:
        inv.circuits = circuit.states(list(route.destinations), inv.admitted.reads) if reads else {}
        usable = route.candidates(frozenset(n for n, (state, _) in inv.circuits.items() if state == circuit.OPEN))
        if not usable:
            raise NoDestinationAvailable(
                f"Every destination of the route '{route.name}' is failing (their circuits are open); try again in "
                f"{round(settings.GATEWAY_CIRCUIT_COOLDOWN_SECONDS)} s.",
                retry_after=settings.GATEWAY_CIRCUIT_COOLDOWN_SECONDS)
        inv.candidates = tuple(table.endpoints[name] for name in usable)
        inv.endpoint = inv.candidates[0]


def _endpoint_limits(endpoint: LiveEndpoint, calls: list[tuple[str, RateLimit]],
                     spending: list[tuple[str, budgets.Budget]]) -> None:
    if endpoint.limit is not None:
        calls.append((f"e:{endpoint.name}", endpoint.limit))
    if endpoint.budget is not None:
        spending.append((f"e:{endpoint.name}", endpoint.budget))


def call(inv: Invocation, payload: dict[str, Any], *, stream: bool) -> Any:
    """Run the provider operation: a response dict, or an iterator of chunk dicts when streaming (its first
    chunk already received, so that a failure before the first byte is an error here, not in the stream).

    A traffic route's destinations are tried in turn while they fail in a way the route falls back on."""
    inv.stream = stream
    if stream:
        options = payload.get("stream_options")
        inv.client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    route = inv.live_route
    retries = [0]
    token = upstream.RETRIES.set(retries)
    deadline = upstream.DEADLINE.set([])
    traced = upstream.TRACEPARENT.set(inv.traceparent)
    if inv.span is not None:
        tracing.record_input(inv.span, payload)
    try:
        for index, endpoint in enumerate(inv.candidates):
            last = index == len(inv.candidates) - 1
            state, failures = (inv.circuits or {}).get(endpoint.name, (circuit.CLOSED, 0))
            if state == circuit.HALF_OPEN and not circuit.claim_probe(endpoint.name):
                if last and index == 0:
                    raise NoDestinationAvailable(f"The destination of the route '{inv.route}' is being probed "
                                                 "after failing; try again shortly.", retry_after=1)
                if not last:
                    continue  # another request is probing it: skip to the next destination
            inv.endpoint = endpoint
            try:
                if route is not None:
                    _admit_destination(inv, endpoint)
                sent = params.apply(payload, endpoint.params, endpoint.name) if endpoint.params else payload
                started = time.perf_counter()
                try:
                    result = _call_endpoint(endpoint, sent, stream)
                finally:
                    inv.upstream_seconds = (inv.upstream_seconds or 0.0) + time.perf_counter() - started
            except GatewayError as error:
                redaction.scrub_error(error, endpoint.provider.call_secrets())
                if route is not None and circuit.enabled() and not _ours(error):
                    circuit.record(endpoint.name, failed=_is_failure(error))
                if route is None or not route.fallback or last or not _falls_back(error, route.fallback_on):
                    raise
                inv.fallbacks += 1
                logger.warning("route %s: destination %s failed (%s %s), falling back to %s (request %s)",
                               route.name, endpoint.name, error.status, error.code, inv.candidates[index + 1].name,
                               inv.request_id)
                continue
            if route is not None and circuit.enabled() and (state != circuit.CLOSED or failures):
                circuit.record(endpoint.name, failed=False)
            return result
        raise AssertionError("unreachable: the last destination returns or raises")
    finally:
        inv.retries = retries[0]
        upstream.RETRIES.reset(token)
        upstream.DEADLINE.reset(deadline)
        upstream.TRACEPARENT.reset(traced)


def _admit_destination(inv: Invocation, endpoint: LiveEndpoint) -> None:
    calls: list[tuple[str, RateLimit]] = []
    spending: list[tuple[str, budgets.Budget]] = []
    _endpoint_limits(endpoint, calls, spending)
    if calls or spending:
        inv.destination_admitted = ratelimit.admit(calls, [], spending)


def _call_endpoint(endpoint: LiveEndpoint, payload: dict[str, Any], stream: bool) -> Any:
    provider = endpoint.provider
    if stream and not endpoint.streaming:
        # Declared in the registry: refuse before any upstream call, whatever the provider's code does.
        raise provider.not_supported(endpoint.endpoint_type, streaming=True)
    if endpoint.endpoint_type == EMBEDDINGS:
        return _embeddings(provider, payload)
    if not stream:
        return provider.chat(payload) if endpoint.endpoint_type == CHAT else provider.completions(payload)
    chunks = provider.chat_stream(payload) if endpoint.endpoint_type == CHAT else provider.completions_stream(payload)
    first, rest = stream_with_first(chunks)
    return rest if first is None else itertools.chain((first,), rest)


def _ours(error: GatewayError) -> bool:
    """A refusal of the gateway's own (a destination's limit or budget), not the upstream's doing."""
    return isinstance(error, (RateLimited, RateLimitUnavailable))


def _is_failure(error: GatewayError) -> bool:
    """What counts against a destination's circuit: no connection, no answer in time, 429, any 5xx."""
    return error.status >= 500 or error.status == 429


def _falls_back(error: GatewayError, fallback_on: frozenset[str]) -> bool:
    if error.code in ("upstream_unreachable", "upstream_tls_error") and "connect" in fallback_on:
        return True
    if error.code == "upstream_timeout" and "timeout" in fallback_on:
        return True
    if isinstance(error, (RequestValidationError, InvalidParameter, NotSupported)) and error.status != 501:
        return False
    return str(error.status) in fallback_on or (error.status >= 500 and "5xx" in fallback_on)


def _embeddings(provider: BaseProvider, payload: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `encoding_format` (the openai SDK sends "base64" by default) is the gateway's to honour
    for vendors that do not speak OpenAI's API: they get no such field, and "base64" vectors are encoded
    here, as OpenAI encodes them."""
    if provider.speaks_openai_embeddings:
        return provider.embeddings(payload)
    encoding = payload.pop("encoding_format", None)
    response = provider.embeddings(payload)
    return shapes.base64_embeddings(response) if encoding == "base64" else response


def metered(inv: Invocation, chunks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A stream's chunks, passed on as they come, without the usage-only chunk the gateway asked the
    provider for when the client did not; finished at the stream's end (or when it stops early, with
    what was used until then)."""
    usage: Any = None
    error: GatewayError | None = None
    name = inv.name
    metrics.stream_opened(name)
    try:
        for chunk in chunks:
            if inv.ttfb is None:
                inv.ttfb = time.perf_counter()
                if inv.span is not None:
                    inv.response_model = chunk.get("model")
            reported = chunk.get("usage")
            if reported:
                usage = reported
                if not inv.client_wants_usage and not chunk.get("choices"):
                    continue
            yield chunk
    except GatewayError as exc:
        if inv.endpoint is not None:  # the secrets the upstream may quote, out of the final event and the logs
            redaction.scrub_error(exc, inv.endpoint.provider.call_secrets())
        error = exc
        raise
    except Exception:
        error = GatewayError("The stream failed inside the gateway.")
        raise
    finally:
        metrics.stream_closed(name)
        finish(inv, 200, usage=usage, error=error)


def finish(inv: Invocation, status: int, *, usage: Any = None, error: GatewayError | None = None,
           response: dict[str, Any] | None = None, ended: float | None = None) -> None:
    """Account for the call once: its tokens and cost to the caller's windows and budgets (not waited
    for), its record to the ledger's buffer, and the same data to the metrics, the access log and the
    span. `response`: a non-streamed answer (the span reads its model, and its content if asked to).
    `ended`: when the answer was ready (time.perf_counter()), if that was before now."""
    if inv.finished:
        return
    inv.finished = True
    endpoint = inv.endpoint
    prompt, completion, total = _tokens(usage)
    cost = 0
    if endpoint is not None and endpoint.prices is not None:
        cost = (prompt or 0) * endpoint.prices[0] + (completion or 0) * endpoint.prices[1]
    _count(inv, total or 0, cost)
    caller = inv.caller
    now = time.perf_counter() if ended is None else ended
    entry = ledger.Entry(
        inv.wall, inv.request_id, inv.family, caller.consumer.name if caller else "",
        caller.key_prefix if caller else "", inv.name, inv.route, endpoint.name if endpoint else "",
        endpoint.provider_name if endpoint else "", (endpoint.model_name or "") if endpoint else "", inv.stream,
        error.status if error is not None and status >= 400 else status,
        ERROR_KINDS.get(error.code, "invalid") if error is not None else "", error.code if error is not None else "",
        prompt, completion, total, (now - inv.started) * 1000,
        (inv.ttfb - inv.started) * 1000 if inv.ttfb is not None else None, cost, inv.retries, inv.fallbacks)
    ledger.record(entry)
    name = metrics.endpoint_label(inv.name, endpoint is not None or inv.live_route is not None
                                  or runtime.knows(inv.name))
    reports.report(entry, name, inv.upstream_seconds)  # the metrics and the access line, in a moment
    if inv.span is not None:
        if response is not None:
            inv.response_model = response.get("model")
            tracing.record_output(inv.span, response)
        tracing.end(inv.span, entry, name, endpoint.endpoint_type if endpoint else None, inv.response_model)


def _count(inv: Invocation, tokens: int, cost: int) -> None:
    """Add a call's tokens to its token windows and its cost to its budgets, in one trip to the counters,
    without waiting for it."""
    commands: list[tuple[str | int, ...]] = []
    spends: list[tuple[int, tuple[budgets.Window, ...]]] = []
    for admitted in (inv.admitted, inv.destination_admitted):
        if admitted.token_keys and tokens:
            commands += ratelimit.token_commands(admitted, tokens)
        if admitted.budget_windows and cost:
            spends.append((len(commands), admitted.budget_windows))
            commands += budgets.spend_commands(admitted.budget_windows, cost)
    if not commands:
        return

    def spent(replies: list[Any]) -> None:
        for offset, windows in spends:
            budgets.spent(replies[offset:], windows, cost)

    counters.submit(commands, spent if spends else None)


def _tokens(usage: Any) -> tuple[int | None, int | None, int | None]:
    if not isinstance(usage, dict):
        return None, None, None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    total = usage.get("total_tokens")
    prompt = prompt if isinstance(prompt, int) else None
    completion = completion if isinstance(completion, int) else None
    if not isinstance(total, int):
        total = (prompt or 0) + (completion or 0) if prompt is not None or completion is not None else None
    return prompt, completion, total


def stream_with_first(chunks: Iterator[dict[str, Any]]) -> tuple[dict[str, Any] | None, Iterator[dict[str, Any]]]:
    """Pull the first chunk now, so failures before the first byte become normal HTTP errors."""
    iterator = iter(chunks)
    first = next(iterator, None)
    return first, iterator
