"""The invocation service: one request's way from the caller to the provider and back.

    begin(request, family)               the request's id, route family and clock
    authenticate(table, inv, header)     who calls (serving.auth): 401
    authorize(inv, name)                 may they call that endpoint or route: 403
    prepare(table, inv, name)            pick the route's destination, then every limit in one round trip
                                         to the counters: the endpoint's and the consumer's call windows,
                                         the consumer's token window, the budgets (429)
    call(inv, payload, stream)           the provider adapter (translation, the one HTTP client)
    finish(inv, status, usage, error)    after the answer (a stream: after its end): the tokens and the
                                         cost are added to the windows and budgets without waiting, and one
                                         usage record goes to the ledger's buffer (usage.ledger)

The views (serving.views) parse and validate the request, call these in order and render the answer.
Everything here reads the in-memory table: no database query.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from providers import shapes
from providers.base import BaseProvider
from providers.errors import GatewayError, WrongEndpointType
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from serving import auth, budgets, ratelimit
from serving.auth import Caller
from serving.ratelimit import Admitted, RateLimit, RateState, TokenLimit
from serving.runtime import EndpointTable, LiveEndpoint
from usage import ledger

_TYPE_WORDS = {CHAT: "a chat", COMPLETIONS: "a completions", EMBEDDINGS: "an embeddings"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
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
    return os.urandom(12).hex()


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
    stream: bool = False
    client_wants_usage: bool = True  # a stream client that asked for the usage chunk
    ttfb: float | None = None
    retries: int = 0
    finished: bool = False

    @property
    def rate(self) -> RateState | None:
        return self.admitted.rate


def begin(given_request_id: str | None, family: str) -> Invocation:
    return Invocation(request_id(given_request_id), family, time.perf_counter(), time.time())


def wrong_type(name: str, expected_type: str) -> WrongEndpointType:
    return WrongEndpointType(f"Endpoint '{name}' is not {_TYPE_WORDS[expected_type]} endpoint.", param="model")


def authenticate(table: EndpointTable, inv: Invocation, authorization: str | None) -> None:
    """Set the caller, with GATEWAY_AUTH=keys (Unauthorized, 401, without a valid key)."""
    if auth.enabled():
        inv.caller = auth.authenticate(authorization, table.keys, table.consumers)


def authorize(inv: Invocation, name: str) -> None:
    """Forbidden (403) unless the caller may call the endpoint or route `name` (anyone may with auth off)."""
    inv.name = name
    if inv.caller is not None:
        auth.authorize(inv.caller, name)


def prepare(table: EndpointTable, inv: Invocation) -> None:
    """Pick the endpoint (a route's destination) and count the call against every limit and budget."""
    endpoint, inv.route = table.resolve(inv.name)
    inv.endpoint = endpoint
    calls: list[tuple[str, RateLimit]] = []
    tokens: list[tuple[str, TokenLimit]] = []
    spending: list[tuple[str, budgets.Budget]] = []
    if endpoint.limit is not None:
        calls.append((f"e:{endpoint.name}", endpoint.limit))
    if endpoint.budget is not None:
        spending.append((f"e:{endpoint.name}", endpoint.budget))
    if inv.caller is not None:
        consumer = inv.caller.consumer
        if consumer.limit is not None:
            calls.append((f"c:{consumer.name}", consumer.limit))
        if consumer.token_limit is not None:
            tokens.append((f"c:{consumer.name}", consumer.token_limit))
        if consumer.budget is not None:
            spending.append((f"c:{consumer.name}", consumer.budget))
    if calls or tokens or spending:
        inv.admitted = ratelimit.admit(calls, tokens, spending)


def call(inv: Invocation, payload: dict[str, Any], *, stream: bool) -> Any:
    """Run the provider operation: a response dict, or an iterator of chunk dicts when streaming."""
    endpoint = inv.endpoint
    assert endpoint is not None
    provider = endpoint.provider
    inv.stream = stream
    if stream and not endpoint.streaming:
        # Declared in the registry: refuse before any upstream call, whatever the provider's code does.
        raise provider.not_supported(endpoint.endpoint_type, streaming=True)
    if endpoint.endpoint_type == EMBEDDINGS:
        return _embeddings(provider, payload)
    if stream:
        options = payload.get("stream_options")
        inv.client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    if endpoint.endpoint_type == CHAT:
        return provider.chat_stream(payload) if stream else provider.chat(payload)
    return provider.completions_stream(payload) if stream else provider.completions(payload)


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
    try:
        for chunk in chunks:
            if inv.ttfb is None:
                inv.ttfb = time.perf_counter()
            reported = chunk.get("usage")
            if reported:
                usage = reported
                if not inv.client_wants_usage and not chunk.get("choices"):
                    continue
            yield chunk
    except GatewayError as exc:
        error = exc
        raise
    except Exception:
        error = GatewayError("The stream failed inside the gateway.")
        raise
    finally:
        finish(inv, 200, usage=usage, error=error)


def finish(inv: Invocation, status: int, *, usage: Any = None, error: GatewayError | None = None) -> None:
    """Account for the call once: its tokens and cost to the caller's windows and budgets (not waited
    for), and its record to the ledger's buffer."""
    if inv.finished:
        return
    inv.finished = True
    endpoint = inv.endpoint
    prompt, completion, total = _tokens(usage)
    cost = 0
    if endpoint is not None and endpoint.prices is not None:
        cost = (prompt or 0) * endpoint.prices[0] + (completion or 0) * endpoint.prices[1]
    admitted = inv.admitted
    if admitted.token_keys and total:
        ratelimit.add_tokens(admitted, total)
    if admitted.budget_windows and cost:
        budgets.add_spend(admitted.budget_windows, cost)
    caller = inv.caller
    now = time.perf_counter()
    ledger.record(ledger.Entry(
        inv.wall, inv.request_id, inv.family, caller.consumer.name if caller else "",
        caller.key_prefix if caller else "", inv.name, inv.route, endpoint.name if endpoint else "",
        endpoint.provider_name if endpoint else "", (endpoint.model_name or "") if endpoint else "", inv.stream,
        error.status if error is not None and status >= 400 else status,
        ERROR_KINDS.get(error.code, "invalid") if error is not None else "", error.code if error is not None else "",
        prompt, completion, total, (now - inv.started) * 1000,
        (inv.ttfb - inv.started) * 1000 if inv.ttfb is not None else None, cost, inv.retries))


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
