"""`provider: azure` means Azure OpenAI (MLflow's calls api.openai.com unless the type is set)."""
from __future__ import annotations

from typing import Any

import orjson
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from endpoints_app.validation import EntryError, validate_endpoint
from providers.azure import AzureOpenAIProvider
from providers.openai import OpenAIProvider
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.conftest import post_json, sse_events
from tests.fixtures import payload, raw

pytestmark = pytest.mark.django_db
AZURE_CONFIG = {"openai_api_key": "$AZURE_KEY", "openai_api_base": "https://my-resource.openai.azure.com",
                "openai_deployment_name": "gpt4o-prod", "openai_api_version": "2024-06-01"}


def _endpoint(config: dict[str, Any], endpoint_type: str = CHAT) -> dict[str, Any]:
    return {"name": "az", "endpoint_type": endpoint_type,
            "model": {"provider": "azure", "name": "gpt-4o", "config": config}}


def test_it_reuses_the_openai_provider() -> None:
    assert issubclass(AzureOpenAIProvider, OpenAIProvider)
    assert AzureOpenAIProvider.endpoint_types == OpenAIProvider.endpoint_types
    assert AzureOpenAIProvider.streaming_types == OpenAIProvider.streaming_types


def test_the_api_type_defaults_to_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_KEY", "k")
    spec, _ = validate_endpoint(_endpoint(AZURE_CONFIG))
    provider = AzureOpenAIProvider(provider_name="azure", model_name="gpt-4o", config=spec.config)
    config = provider.config
    assert config["openai_api_type"] == "azure"
    assert provider.url(config, "chat/completions") == (
        "https://my-resource.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-06-01")
    assert provider.headers(config) == {"api-key": "k"}


@pytest.mark.parametrize("missing", ["openai_api_base", "openai_deployment_name", "openai_api_version"])
def test_the_azure_fields_are_required(missing: str) -> None:
    config = {k: v for k, v in AZURE_CONFIG.items() if k != missing}
    with pytest.raises(EntryError) as caught:
        validate_endpoint(_endpoint(config))
    assert caught.value.field == f"model.config.{missing}"


@pytest.mark.parametrize(("api_type", "accepted"), [("azure", True), ("AzureAD", True), ("openai", False)])
def test_only_azure_api_types_are_selectable(api_type: str, accepted: bool) -> None:
    raw_endpoint = _endpoint({**AZURE_CONFIG, "openai_api_type": api_type})
    if accepted:
        spec, _ = validate_endpoint(raw_endpoint)
        assert spec.config["openai_api_type"] == api_type.lower()
    else:
        with pytest.raises(EntryError) as caught:
            validate_endpoint(raw_endpoint)
        assert caught.value.field == "model.config.openai_api_type"


def test_an_organization_is_refused_as_for_openai_azure() -> None:
    with pytest.raises(EntryError) as caught:
        validate_endpoint(_endpoint({**AZURE_CONFIG, "openai_organization": "org-1"}))
    assert caught.value.field == "model.config.openai_organization"


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture
def azure_server(make_endpoint: Any, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    monkeypatch.setenv("AZURE_KEY", "azure-secret")
    config = {**AZURE_CONFIG, "openai_api_base": httpserver.url_for("/")}
    make_endpoint("az-chat", CHAT, "azure", "gpt-4o", config)
    make_endpoint("az-completions", COMPLETIONS, "azure", "gpt-35-instruct", config)
    make_endpoint("az-embeddings", EMBEDDINGS, "azure", "text-embedding-3-small", config)
    make_endpoint("az-entra", CHAT, "azure", "gpt-4o", {**config, "openai_api_type": "azuread"})
    return httpserver


def _recording(seen: list[Request], body: Any) -> Any:
    def handler(request: Request) -> Response:
        seen.append(request)
        return Response(orjson.dumps(body), content_type="application/json")

    return handler


def test_chat_calls_the_deployment_with_the_api_key_header(azure_server: HTTPServer, client: Any) -> None:
    seen: list[Request] = []
    azure_server.expect_oneshot_request(
        "/openai/deployments/gpt4o-prod/chat/completions", method="POST", query_string="api-version=2024-06-01",
    ).respond_with_handler(_recording(seen, payload("openai", "chat_response.json")))
    response = post_json(client, "/endpoints/az-chat/invocations", {"messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 200, response.content
    assert response.json()["provider"] == "azure"
    assert seen[0].headers["api-key"] == "azure-secret"
    assert "Authorization" not in seen[0].headers
    assert orjson.loads(seen[0].get_data()) == {"n": 1, "messages": [{"role": "user", "content": "Hi"}]}


def test_azuread_sends_a_bearer_token(azure_server: HTTPServer, client: Any) -> None:
    seen: list[Request] = []
    azure_server.expect_oneshot_request("/openai/deployments/gpt4o-prod/chat/completions").respond_with_handler(
        _recording(seen, payload("openai", "chat_response.json")))
    response = post_json(client, "/endpoints/az-entra/invocations", {"messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 200, response.content
    assert seen[0].headers["Authorization"] == "Bearer azure-secret"
    assert "api-key" not in seen[0].headers


def test_chat_streaming(azure_server: HTTPServer, client: Any) -> None:
    azure_server.expect_oneshot_request("/openai/deployments/gpt4o-prod/chat/completions").respond_with_data(
        raw("openai", "chat_stream.txt"), content_type="text/event-stream")
    response = post_json(client, "/endpoints/az-chat/invocations",
                         {"messages": [{"role": "user", "content": "Hi"}], "stream": True})
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert events[1]["choices"][0]["delta"]["content"] == "Hel"
    assert events[1]["provider"] == "azure"


def test_completions_and_embeddings_use_their_deployment_paths(azure_server: HTTPServer, client: Any) -> None:
    azure_server.expect_oneshot_request("/openai/deployments/gpt4o-prod/completions").respond_with_json(
        payload("openai", "completions_response.json"))
    azure_server.expect_oneshot_request("/openai/deployments/gpt4o-prod/embeddings").respond_with_json(
        payload("openai", "embeddings_response.json"))
    response = post_json(client, "/endpoints/az-completions/invocations", {"prompt": "x"})
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["text"] == "\n\nThis is indeed a test"
    response = post_json(client, "/v1/embeddings", {"model": "az-embeddings", "input": "x"})
    assert response.status_code == 200, response.content
    azure_server.check_assertions()


def test_an_azure_error_passes_its_status_and_message(azure_server: HTTPServer, client: Any) -> None:
    error = {"error": {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist."}}
    azure_server.expect_request("/openai/deployments/gpt4o-prod/chat/completions").respond_with_json(error, status=404)
    response = post_json(client, "/endpoints/az-chat/invocations", {"messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 404
    assert response.json() == {"detail": "The API deployment for this resource does not exist."}
    response = post_json(client, "/v1/chat/completions",
                         {"model": "az-chat", "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "The API deployment for this resource does not exist."
