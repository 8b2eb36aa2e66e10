"""The OpenAI-compatible family (Groq, DeepSeek, xAI, OpenRouter, Ollama, Databricks and the generic
`openai-compatible`): each vendor's declarations, default URL and auth, then the full path against
a local server speaking OpenAI's wire format, parametrised over the vendors."""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from endpoints_app.validation import EntryError, validate_endpoint
from providers import registry
from providers.databricks import oauth_tokens
from providers.openai_compatible import OpenAICompatibleProvider
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.conftest import post_json, sse_events
from tests.fixtures import payload, raw

pytestmark = pytest.mark.django_db
KEY = "vendor-secret"


@dataclass(frozen=True)
class Vendor:
    provider: str
    default_base: str | None
    types: frozenset[str]
    streaming: frozenset[str]
    #: The path under the local server that plays the vendor's base URL.
    mount: str = "/v1"
    auth: str | None = f"Bearer {KEY}"
    extra_config: dict[str, Any] = field(default_factory=dict)

    def config(self, server: HTTPServer) -> dict[str, Any]:
        if self.provider == "databricks":
            return {"host": server.url_for(""), "token": "$VENDOR_KEY"}
        if self.provider == "ollama":
            return {"api_base": server.url_for(self.mount)}
        return {"api_key": "$VENDOR_KEY", "api_base": server.url_for(self.mount)}


ALL = frozenset({CHAT, COMPLETIONS, EMBEDDINGS})
CHAT_ONLY = frozenset({CHAT})
VENDORS = [
    Vendor("groq", "https://api.groq.com/openai/v1", CHAT_ONLY, CHAT_ONLY),
    Vendor("deepseek", "https://api.deepseek.com/v1", CHAT_ONLY, CHAT_ONLY),
    Vendor("xai", "https://api.x.ai/v1", frozenset({CHAT, COMPLETIONS}), CHAT_ONLY),
    Vendor("openrouter", "https://openrouter.ai/api/v1", ALL, frozenset({CHAT, COMPLETIONS})),
    Vendor("ollama", "http://localhost:11434/v1", ALL, frozenset({CHAT, COMPLETIONS}), auth=None),
    Vendor("databricks", None, ALL, frozenset({CHAT, COMPLETIONS}), mount="/serving-endpoints"),
    Vendor("openai-compatible", None, ALL, frozenset({CHAT, COMPLETIONS})),
]
IDS = [v.provider for v in VENDORS]
PATHS = {CHAT: "chat/completions", COMPLETIONS: "completions", EMBEDDINGS: "embeddings"}
REQUESTS: dict[str, dict[str, Any]] = {
    CHAT: {"messages": [{"role": "user", "content": "Hi"}]}, COMPLETIONS: {"prompt": "Say"},
    EMBEDDINGS: {"input": ["a", "b"]},
}
RESPONSES = {CHAT: "chat_response.json", COMPLETIONS: "completions_response.json",
             EMBEDDINGS: "embeddings_response.json"}
STREAMS = {CHAT: "chat_stream.txt", COMPLETIONS: "completions_stream.txt"}


def _cases(kind: str) -> list[Any]:
    cases = []
    for vendor in VENDORS:
        for endpoint_type in (CHAT, COMPLETIONS, EMBEDDINGS):
            offered = endpoint_type in (vendor.streaming if kind == "stream" else vendor.types)
            if offered == (kind != "refused"):
                label = f"{vendor.provider}-{endpoint_type.rsplit('/', 1)[1]}"
                cases.append(pytest.param(vendor, endpoint_type, id=label))
    return cases


def _compatible(name: str, model: str, config: dict[str, Any] | None = None) -> OpenAICompatibleProvider:
    cls = registry.get(name)
    assert issubclass(cls, OpenAICompatibleProvider)
    return cls(provider_name=name, model_name=model, config=config or {})


# -- declarations and load-time checks ------------------------------------------------------------------
@pytest.mark.parametrize("vendor", VENDORS, ids=IDS)
def test_each_vendor_declares_what_it_offers(vendor: Vendor) -> None:
    cls = registry.get(vendor.provider)
    assert cls.endpoint_types == vendor.types
    assert cls.streaming_types == vendor.streaming
    assert cls.supports_tools
    assert getattr(cls, "default_api_base", None) == vendor.default_base


@pytest.mark.parametrize(("vendor", "endpoint_type"), _cases("refused"))
def test_a_type_the_vendor_lacks_is_refused_when_loaded(vendor: Vendor, endpoint_type: str) -> None:
    config = {"host": "https://dbc.example.com", "token": "t"} if vendor.provider == "databricks" else {"api_key": "k"}
    with pytest.raises(EntryError) as caught:
        validate_endpoint({"name": "x", "endpoint_type": endpoint_type,
                           "model": {"provider": vendor.provider, "name": "m", "config": config}})
    assert caught.value.field == "endpoint_type"
    assert f"provider {vendor.provider!r} does not support {endpoint_type}" in caught.value.message


@pytest.mark.parametrize("vendor", [v for v in VENDORS if v.default_base], ids=lambda v: v.provider)
def test_without_api_base_the_vendor_default_is_used(vendor: Vendor) -> None:
    provider = _compatible(vendor.provider, "m")
    assert provider.url({"api_key": "k"}, "chat/completions") == f"{vendor.default_base}/chat/completions"


def test_the_generic_provider_needs_an_api_base() -> None:
    with pytest.raises(EntryError) as caught:
        validate_endpoint({"name": "x", "endpoint_type": CHAT,
                           "model": {"provider": "openai-compatible", "name": "m", "config": {}}})
    assert caught.value.field == "model.config.api_key"


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture
def vendor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VENDOR_KEY", KEY)


def _recorder(seen: list[Request], body: Any = None, stream: str | None = None) -> Any:
    def handler(request: Request) -> Response:
        seen.append(request)
        if stream is not None:
            return Response(stream, content_type="text/event-stream")
        return Response(orjson.dumps(body), content_type="application/json")

    return handler


def _check_upstream(request: Request, vendor: Vendor, expected_json: dict[str, Any]) -> None:
    assert request.headers.get("Authorization") == vendor.auth
    assert request.headers["Content-Type"] == "application/json"
    assert orjson.loads(request.get_data()) == expected_json


@pytest.mark.parametrize(("vendor", "endpoint_type"), _cases("offered"))
def test_each_offered_type_sends_the_exact_openai_request(vendor: Vendor, endpoint_type: str, vendor_env: None,
                                                         make_endpoint: Any, httpserver: HTTPServer,
                                                         client: Any) -> None:
    make_endpoint("ep", endpoint_type, vendor.provider, "vendor-model", vendor.config(httpserver))
    seen: list[Request] = []
    httpserver.expect_oneshot_request(f"{vendor.mount}/{PATHS[endpoint_type]}", method="POST").respond_with_handler(
        _recorder(seen, payload("openai", RESPONSES[endpoint_type])))
    response = post_json(client, "/endpoints/ep/invocations", REQUESTS[endpoint_type])
    assert response.status_code == 200, response.content
    defaults = {} if endpoint_type == EMBEDDINGS else {"n": 1}
    _check_upstream(seen[0], vendor, {"model": "vendor-model", **defaults, **REQUESTS[endpoint_type]})
    body = response.json()
    if endpoint_type == CHAT:
        assert body["choices"][0]["message"]["content"] == "Hello! How can I help?"
        assert body["provider"] == vendor.provider
    elif endpoint_type == COMPLETIONS:
        assert body["choices"][0]["text"] == "\n\nThis is indeed a test"
    else:
        assert len(body["data"]) == 2


@pytest.mark.parametrize(("vendor", "endpoint_type"), _cases("stream"))
def test_each_declared_stream_passes_chunks_through(vendor: Vendor, endpoint_type: str, vendor_env: None,
                                                   make_endpoint: Any, httpserver: HTTPServer, client: Any) -> None:
    make_endpoint("ep", endpoint_type, vendor.provider, "vendor-model", vendor.config(httpserver))
    seen: list[Request] = []
    httpserver.expect_oneshot_request(f"{vendor.mount}/{PATHS[endpoint_type]}", method="POST").respond_with_handler(
        _recorder(seen, stream=raw("openai", STREAMS[endpoint_type])))
    response = post_json(client, "/endpoints/ep/invocations", {**REQUESTS[endpoint_type], "stream": True,
                                                               "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    events = sse_events(response)
    _check_upstream(seen[0], vendor, {"model": "vendor-model", "n": 1, **REQUESTS[endpoint_type], "stream": True,
                                      "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    assert events[-2]["usage"]["total_tokens"] in {5, 11}
    if endpoint_type == CHAT:
        assert [e["choices"][0]["delta"]["content"] for e in events[1:3]] == ["Hel", "lo"]
        assert events[1]["provider"] == vendor.provider


def test_an_undeclared_stream_is_refused_without_calling_the_vendor(vendor_env: None, make_endpoint: Any,
                                                                   httpserver: HTTPServer, client: Any) -> None:
    xai = next(v for v in VENDORS if v.provider == "xai")
    make_endpoint("grok-text", COMPLETIONS, "xai", "grok-2", xai.config(httpserver))
    response = post_json(client, "/endpoints/grok-text/invocations", {"prompt": "x", "stream": True})
    assert response.status_code == 501
    assert response.json() == {"detail": "The completions streaming route is not implemented for xAI models."}
    assert httpserver.log == []


@pytest.mark.parametrize("vendor", VENDORS, ids=IDS)
def test_a_vendor_error_passes_its_status_and_message(vendor: Vendor, vendor_env: None, make_endpoint: Any,
                                                      httpserver: HTTPServer, client: Any) -> None:
    make_endpoint("ep", CHAT, vendor.provider, "vendor-model", vendor.config(httpserver))
    error = {"error": {"message": "Invalid API Key", "type": "invalid_request_error", "code": "invalid_api_key"}}
    httpserver.expect_request(f"{vendor.mount}/chat/completions", method="POST").respond_with_json(error, status=401)
    response = post_json(client, "/endpoints/ep/invocations", REQUESTS[CHAT])
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid API Key"}
    response = post_json(client, "/v1/chat/completions", {"model": "ep", **REQUESTS[CHAT]})
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid API Key"


# -- Ollama's optional key -------------------------------------------------------------------------------
def test_ollama_sends_a_real_key_as_a_bearer_token(vendor_env: None, make_endpoint: Any, httpserver: HTTPServer,
                                                  client: Any) -> None:
    make_endpoint("llama", CHAT, "ollama", "llama3.2",
                  {"api_base": httpserver.url_for("/v1"), "api_key": "$VENDOR_KEY"})
    seen: list[Request] = []
    httpserver.expect_oneshot_request("/v1/chat/completions").respond_with_handler(
        _recorder(seen, payload("openai", "chat_response.json")))
    assert post_json(client, "/endpoints/llama/invocations", REQUESTS[CHAT]).status_code == 200
    assert seen[0].headers["Authorization"] == f"Bearer {KEY}"


def test_ollama_needs_no_config_at_all() -> None:
    spec, _ = validate_endpoint({"name": "llama", "endpoint_type": CHAT,
                                 "model": {"provider": "ollama", "name": "llama3.2", "config": {}}})
    provider = _compatible("ollama", "llama3.2", spec.config)
    config = provider.config
    assert config["api_key"] == "ollama"
    assert provider.headers(config) == {}
    assert provider.url(config, "chat/completions") == "http://localhost:11434/v1/chat/completions"


# -- Databricks ------------------------------------------------------------------------------------------
@pytest.fixture
def no_cached_tokens() -> Any:
    oauth_tokens.clear()
    yield
    oauth_tokens.clear()


def test_databricks_oauth_m2m_fetches_a_token_once_and_reuses_it(no_cached_tokens: None, make_endpoint: Any,
                                                                httpserver: HTTPServer, client: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBX_SECRET", "sp-secret")
    make_endpoint("dbx", CHAT, "databricks", "databricks-meta-llama-3-3-70b-instruct",
                  {"host": httpserver.url_for(""), "client_id": "sp-id", "client_secret": "$DBX_SECRET"})
    token_requests: list[Request] = []
    chat_requests: list[Request] = []
    httpserver.expect_oneshot_request("/oidc/v1/token", method="POST").respond_with_handler(
        _recorder(token_requests, payload("databricks", "oauth_token_response.json")))
    httpserver.expect_request("/serving-endpoints/chat/completions", method="POST").respond_with_handler(
        _recorder(chat_requests, payload("openai", "chat_response.json")))
    for _ in range(2):
        response = post_json(client, "/endpoints/dbx/invocations", REQUESTS[CHAT])
        assert response.status_code == 200, response.content
    assert len(token_requests) == 1
    token_request = token_requests[0]
    assert token_request.headers["Authorization"] == "Basic " + base64.b64encode(b"sp-id:sp-secret").decode()
    assert token_request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert token_request.form.to_dict() == {"grant_type": "client_credentials", "scope": "all-apis"}
    assert [r.headers["Authorization"] for r in chat_requests] == ["Bearer eyJraWQiOiJkYXRhYnJpY2tzIn0.m2m-token"] * 2
    assert orjson.loads(chat_requests[0].get_data())["model"] == "databricks-meta-llama-3-3-70b-instruct"


def test_databricks_oauth_failure_passes_the_status(no_cached_tokens: None, make_endpoint: Any,
                                                    httpserver: HTTPServer, client: Any) -> None:
    make_endpoint("dbx", CHAT, "databricks", "m", {"host": httpserver.url_for(""), "client_id": "sp-id",
                                                   "client_secret": "wrong"})
    httpserver.expect_request("/oidc/v1/token").respond_with_json(
        {"error": "invalid_client", "error_description": "Client authentication failed"}, status=401)
    response = post_json(client, "/endpoints/dbx/invocations", REQUESTS[CHAT])
    assert response.status_code == 401
    assert response.json() == {"detail": "invalid_client"}


def test_databricks_serving_errors_pass_their_message(vendor_env: None, make_endpoint: Any, httpserver: HTTPServer,
                                                      client: Any) -> None:
    make_endpoint("dbx", CHAT, "databricks", "missing", {"host": httpserver.url_for(""), "token": "$VENDOR_KEY"})
    error = payload("databricks", "error_response.json")
    httpserver.expect_request("/serving-endpoints/chat/completions").respond_with_json(error, status=404)
    response = post_json(client, "/endpoints/dbx/invocations", REQUESTS[CHAT])
    assert response.status_code == 404
    assert response.json() == {"detail": error["message"]}


@pytest.mark.parametrize(
    ("model", "base"),
    [("databricks-gte-large-en", "https://dbc.example.com/serving-endpoints"),
     ("main.default.my_agent", "https://dbc.example.com/ai-gateway/mlflow/v1")],
)
def test_databricks_routes_unity_catalog_names_to_the_ai_gateway(model: str, base: str) -> None:
    provider = _compatible("databricks", model)
    assert provider.url({"host": "https://dbc.example.com/"}, "embeddings") == f"{base}/embeddings"


@pytest.mark.parametrize(
    ("config", "field_name"),
    [({"host": "https://dbc.example.com"}, "model.config.token"),
     ({"host": "https://dbc.example.com", "client_id": "sp"}, "model.config.client_secret"),
     ({"token": "t"}, "model.config.host")],
)
def test_databricks_needs_a_host_and_a_token_or_client_credentials(config: dict[str, Any], field_name: str) -> None:
    with pytest.raises(EntryError) as caught:
        validate_endpoint({"name": "dbx", "endpoint_type": CHAT,
                           "model": {"provider": "databricks", "name": "m", "config": config}})
    assert caught.value.field == field_name


def test_databricks_model_serving_is_an_alias() -> None:
    assert registry.canonical_name("databricks-model-serving") == "databricks-model-serving"
    assert registry.get("databricks-model-serving") is registry.get("databricks")
