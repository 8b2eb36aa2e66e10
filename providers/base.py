"""The provider contract.

A provider turns the gateway's request (a dict already validated against the endpoint type's
schema, see endpoints_app.schemas) into its vendor's request, sends it through the one HTTP seam
(serving.upstream), and turns the vendor's answer into the gateway's response shapes: plain dicts
with exactly the keys and types the models in providers.wire declare (built with the helpers of
providers.shapes, checked for every provider by tests/providers/test_shapes.py). Translation lives
in pure methods; only the `post_*` helpers do I/O.

A provider overrides only the operations it offers and declares them in `endpoint_types` and
`streaming_types`, which the registry, the YAML validator and the admin read. The defaults raise
NotSupported (501), with MLflow's messages.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from providers import config as provider_config
from providers.config import ConfigField, ConfigValidationError, ProviderConfig
from providers.errors import ConfigurationError, GatewayError, NotSupported
from providers.secrets import SecretError
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from serving.upstream import (
    SSEEvent,
    Timeouts,
    UpstreamRequest,
    default_error_message,
    get_transport,
    iter_ndjson,
    iter_sse,
)

_OPERATION_WORDS = {CHAT: "chat", COMPLETIONS: "completions", EMBEDDINGS: "embeddings"}


class BaseProvider:
    #: The registry slug, as written in YAML (`provider: openai`).
    name: ClassVar[str] = ""
    #: Other slugs that mean this provider (`amazon-bedrock` for `bedrock`).
    aliases: ClassVar[tuple[str, ...]] = ()
    #: How messages name the vendor ("The chat route is not implemented for Anthropic models.").
    display_name: ClassVar[str] = ""
    config_class: ClassVar[type[ProviderConfig]] = ProviderConfig
    endpoint_types: ClassVar[frozenset[str]] = frozenset()
    streaming_types: ClassVar[frozenset[str]] = frozenset()
    supports_tools: ClassVar[bool] = False
    #: The vendor takes OpenAI's embeddings fields (`encoding_format`) itself; otherwise the gateway does.
    speaks_openai_embeddings: ClassVar[bool] = False
    #: For retired upstream APIs: the message that refuses them at load time.
    retired: ClassVar[str | None] = None

    def __init__(self, *, provider_name: str, model_name: str | None, config: Mapping[str, Any],
                 timeouts: Timeouts | None = None) -> None:
        self.provider_name = provider_name
        self.model_name = model_name
        self.stored_config = config
        self.timeouts = timeouts or Timeouts()
        # A config that references no environment variable and no key file (literal values, keys stored
        # encrypted) cannot change while this provider exists (a change to the endpoint builds a new one): it
        # is resolved once, at its first call.
        self._fixed = not provider_config.has_references(self.config_class.fields, config, ("$env", "$file"))
        self._fixed_config: dict[str, Any] | None = None

    # -- load-time checks -------------------------------------------------------------------------
    @classmethod
    def check_endpoint(cls, endpoint_type: str, model_name: str | None) -> None:
        """Refuse a model name or endpoint type this provider cannot serve (ConfigValidationError)."""
        if cls.retired:
            raise ConfigValidationError("model.provider", cls.retired)
        if endpoint_type not in cls.endpoint_types:
            offered = ", ".join(sorted(cls.endpoint_types)) or "nothing"
            raise ConfigValidationError(
                "endpoint_type",
                f"provider {cls.name!r} does not support {endpoint_type}; it supports {offered}",
            )

    # -- the config, resolved at call time --------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """The config with its references resolved and its defaults filled (a copy of the one resolved at the
        first call, when it cannot change)."""
        fixed = self._fixed_config
        if fixed is not None:
            return dict(fixed)
        try:
            resolved = provider_config.resolve(self.config_class.fields, self.stored_config)
        except SecretError as exc:
            raise ConfigurationError(exc.message) from None
        if self._fixed:
            self._fixed_config = resolved
            return dict(resolved)
        return resolved

    def call_secrets(self) -> list[str]:
        """Every secret value a call of this provider may carry: its config's secrets, resolved (and, in
        providers that derive credentials, what they derived). Scrubbed from the upstream's errors
        (serving.redaction); called only on the error path."""
        try:
            config = self.config
        except GatewayError:
            return []
        return list(_secret_values(self.config_class.fields, config))

    # -- operations (override what the vendor offers) ----------------------------------------------
    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A `wire.ChatResponse` dict. Raises a GatewayError (NotSupported, 501, unless overridden)."""
        raise self.not_supported(CHAT)

    def chat_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """`wire.ChatChunk` dicts; an error raised while iterating ends the stream with an error event."""
        raise self.not_supported(CHAT, streaming=True)

    def completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A `wire.CompletionsResponse` dict."""
        raise self.not_supported(COMPLETIONS)

    def completions_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """`wire.CompletionsChunk` dicts."""
        raise self.not_supported(COMPLETIONS, streaming=True)

    def embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A `wire.EmbeddingsResponse` dict (float vectors, or base64 strings if the vendor was asked for them)."""
        raise self.not_supported(EMBEDDINGS)

    def not_supported(self, endpoint_type: str, *, streaming: bool = False) -> NotSupported:
        """The 501 for an operation this provider does not offer (MLflow's wording)."""
        word = _OPERATION_WORDS[endpoint_type] + (" streaming" if streaming else "")
        return NotSupported(f"The {word} route is not implemented for {self.display_name or self.name} models.")

    # -- I/O helpers: the only way a provider reaches its vendor ---------------------------------
    def error_message(self, body: Any) -> Any:
        """The detail to report for a vendor error body (override for vendor shapes)."""
        return default_error_message(body)

    def post_json(self, request: UpstreamRequest) -> Any:
        return get_transport().send_json(request, self.timeouts, self.error_message)

    def post_sse(self, request: UpstreamRequest) -> Iterator[SSEEvent]:
        response = get_transport().open_stream(request, self.timeouts, self.error_message)
        return iter_sse(response)

    def post_ndjson(self, request: UpstreamRequest) -> Iterator[Any]:
        response = get_transport().open_stream(request, self.timeouts, self.error_message)
        return iter_ndjson(response)


def _secret_values(fields: tuple[ConfigField, ...], config: Mapping[str, Any]) -> Iterator[str]:
    for f in fields:
        value = config.get(f.name)
        if f.children and isinstance(value, Mapping):
            yield from _secret_values(f.children, value)
        elif f.is_secret and isinstance(value, str) and value:
            yield value


def drop_none(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if v is not None}


def rename_keys(payload: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    return {mapping.get(k, k): v for k, v in payload.items()}


def reject_native_names(payload: Mapping[str, Any], mapping: Mapping[str, str]) -> None:
    """MLflow's rule: a vendor-native name that a gateway name maps onto is refused (422)."""
    from providers.errors import InvalidParameter

    for gateway_name, native_name in mapping.items():
        if native_name in payload and native_name != gateway_name:
            raise InvalidParameter(f"Invalid parameter {native_name}. Use {gateway_name} instead.")


def require_n_is_one(payload: Mapping[str, Any], display_name: str) -> None:
    from providers.errors import InvalidParameter

    n = payload.get("n", 1)
    if n != 1:
        raise InvalidParameter(f"'n' must be '1' for the {display_name} provider. Received value: '{n}'.")


def content_text(content: Any) -> str:
    """The text of a message's content: a string as is, the text parts of a part list joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text") or "") for part in content
                       if isinstance(part, Mapping) and part.get("type") == "text")
    return ""


def parse_base64_data_url(url: str) -> tuple[str, str] | None:
    """`data:image/png;base64,AAAA` → ("image/png", "AAAA"); None for any other URL."""
    header, sep, data = url.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        return None
    return header[len("data:"):-len(";base64")] or "application/octet-stream", data
