"""The invocation service: one request's way from the caller to the provider and back.

    authenticate(table, header)          who calls (serving.auth): 401
    authorize(caller, name)              may they call that endpoint or route: 403
    prepare(table, caller, name)         pick the route's destination, and the limits: the endpoint's
                                         and the consumer's call windows and the consumer's token
                                         window, in one round trip (429)
    call(invocation, payload, stream)    the provider adapter (translation, the one HTTP client)
    settle(invocation, usage)            after the answer, off the client's wait: the tokens it used

The views (serving.views) parse and validate the request, call these in order and render the answer.
Everything here reads the in-memory table: no database query.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from providers import shapes
from providers.base import BaseProvider
from providers.errors import WrongEndpointType
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from serving import auth, ratelimit
from serving.auth import Caller
from serving.ratelimit import Admitted, RateLimit, RateState, TokenLimit
from serving.runtime import EndpointTable, LiveEndpoint

_TYPE_WORDS = {CHAT: "a chat", COMPLETIONS: "a completions", EMBEDDINGS: "an embeddings"}


@dataclass
class Invocation:
    caller: Caller | None
    name: str  # the endpoint or route the client named
    endpoint: LiveEndpoint  # the endpoint that serves it (a route's chosen destination)
    admitted: Admitted

    @property
    def rate(self) -> RateState | None:
        return self.admitted.rate


def wrong_type(name: str, expected_type: str) -> WrongEndpointType:
    return WrongEndpointType(f"Endpoint '{name}' is not {_TYPE_WORDS[expected_type]} endpoint.", param="model")


def authenticate(table: EndpointTable, authorization: str | None) -> Caller | None:
    """The caller, with GATEWAY_AUTH=keys (Unauthorized, 401, without a valid key); None when it is off."""
    if not auth.enabled():
        return None
    return auth.authenticate(authorization, table.keys, table.consumers)


def authorize(caller: Caller | None, name: str) -> None:
    """Forbidden (403) unless the caller may call the endpoint or route `name` (anyone may with auth off)."""
    if caller is not None:
        auth.authorize(caller, name)


def prepare(table: EndpointTable, caller: Caller | None, name: str) -> Invocation:
    """Pick the endpoint (a route's destination) and count the call against every limit that applies."""
    endpoint = table.resolve(name)
    calls: list[tuple[str, RateLimit]] = []
    tokens: list[tuple[str, TokenLimit]] = []
    if endpoint.limit is not None:
        calls.append((f"e:{endpoint.name}", endpoint.limit))
    if caller is not None:
        consumer = caller.consumer
        if consumer.limit is not None:
            calls.append((f"c:{consumer.name}", consumer.limit))
        if consumer.token_limit is not None:
            tokens.append((f"c:{consumer.name}", consumer.token_limit))
    admitted = ratelimit.admit(calls, tokens) if calls or tokens else ratelimit.NOTHING_COUNTED
    return Invocation(caller, name, endpoint, admitted)


def call(invocation: Invocation, payload: dict[str, Any], *, stream: bool) -> Any:
    """Run the provider operation: a response dict, or an iterator of chunk dicts when streaming."""
    endpoint = invocation.endpoint
    provider = endpoint.provider
    if stream and not endpoint.streaming:
        # Declared in the registry: refuse before any upstream call, whatever the provider's code does.
        raise provider.not_supported(endpoint.endpoint_type, streaming=True)
    if endpoint.endpoint_type == EMBEDDINGS:
        return _embeddings(provider, payload)
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


def settle(invocation: Invocation, usage: Any) -> None:
    """After the answer (or the stream's end): count the tokens the provider reported."""
    if invocation.admitted.token_keys:
        ratelimit.add_tokens(invocation.admitted, total_tokens(usage))


def total_tokens(usage: Any) -> int:
    if not isinstance(usage, dict):
        return 0
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    return sum(value for key in ("prompt_tokens", "completion_tokens")
               if isinstance(value := usage.get(key), int))


def metered(invocation: Invocation, chunks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A stream's chunks, passed on as they come; the usage its chunks report is settled at its end
    (or when it stops early: what was used until then)."""
    usage: Any = None
    try:
        for chunk in chunks:
            reported = chunk.get("usage")
            if reported:
                usage = reported
            yield chunk
    finally:
        settle(invocation, usage)


def stream_with_first(chunks: Iterator[dict[str, Any]]) -> tuple[dict[str, Any] | None, Iterator[dict[str, Any]]]:
    """Pull the first chunk now, so failures before the first byte become normal HTTP errors."""
    iterator = iter(chunks)
    first = next(iterator, None)
    return first, iterator
