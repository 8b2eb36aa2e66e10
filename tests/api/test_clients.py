"""The real clients, unmodified, against a live server: MLflow's deployments client and the
`openai` SDK, with the upstream faked by a local server speaking OpenAI's wire format."""

from __future__ import annotations

import os
from typing import Any, cast

import openai
import pytest
from mlflow.deployments import get_deploy_client
from pytest_httpserver import HTTPServer

from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.fixtures import payload, raw

pytestmark = [pytest.mark.django_db(transaction=True)]

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def gateway(live_server: Any, make_endpoint: Any, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CLIENT_TEST_KEY", "sk-client")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    config = {"openai_api_key": "$CLIENT_TEST_KEY", "openai_api_base": httpserver.url_for("/v1")}
    make_endpoint("chat", CHAT, "openai", "gpt-4o-mini", config, limit={"calls": 1000, "renewal_period": "minute"})
    make_endpoint("completions", COMPLETIONS, "openai", "gpt-3.5-turbo-instruct", config)
    make_endpoint("embeddings", EMBEDDINGS, "openai", "text-embedding-3-small", config)
    make_endpoint("echo", CHAT, "mock", "mock-model")
    make_endpoint("tiny", CHAT, "mock", "mock-model", limit={"calls": 1, "renewal_period": "hour"})
    return str(live_server.url)


# -- MLflow's deployments client ---------------------------------------------------------------------------
def test_mlflow_client_lists_and_gets_endpoints(gateway: str) -> None:
    client = get_deploy_client(gateway)
    endpoints = client.list_endpoints()
    assert [e.name for e in endpoints] == ["chat", "completions", "embeddings", "echo", "tiny"]
    chat = endpoints[0]
    assert chat.model.provider == "openai" and chat.model.name == "gpt-4o-mini"
    assert chat.limit.calls == 1000
    assert chat.endpoint_url == f"{gateway}/endpoints/chat/invocations"
    one = client.get_endpoint("embeddings")
    assert one.endpoint_type == EMBEDDINGS
    assert one.limit is None


def test_mlflow_client_predicts_chat_completions_and_embeddings(gateway: str, httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request(
        "/v1/chat/completions",
        headers={"Authorization": "Bearer sk-client"},
        json={"model": "gpt-4o-mini", "n": 1, "messages": HI, "temperature": 0.2},
    ).respond_with_json(payload("openai", "chat_response.json"))
    httpserver.expect_oneshot_request(
        "/v1/completions",
        json={
            "model": "gpt-3.5-turbo-instruct",
            "prompt": "Name three potions",
            "n": 1,
            "temperature": 0.2,
            "max_tokens": 1000,
        },
    ).respond_with_json(payload("openai", "completions_response.json"))
    httpserver.expect_oneshot_request(
        "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": ["a", "b"]},
    ).respond_with_json(payload("openai", "embeddings_response.json"))
    client = get_deploy_client(gateway)
    chat = client.predict(endpoint="chat", inputs={"messages": HI, "temperature": 0.2})
    assert chat["choices"][0]["message"]["content"] == "Hello! How can I help?"
    completion = client.predict(
        endpoint="completions", inputs={"prompt": "Name three potions", "n": 1, "temperature": 0.2, "max_tokens": 1000}
    )
    assert completion["choices"][0]["text"] == "\n\nThis is indeed a test"
    assert completion["object"] == "text_completion"
    embeddings = client.predict(endpoint="embeddings", inputs={"input": ["a", "b"]})
    assert len(embeddings["data"]) == 2
    httpserver.check_assertions()


def test_mlflow_client_surfaces_an_unknown_endpoint(gateway: str) -> None:
    client = get_deploy_client(gateway)
    with pytest.raises(Exception, match="404"):
        client.get_endpoint("nope")


# -- the openai SDK -------------------------------------------------------------------------------------------
@pytest.fixture
def sdk(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)


def test_openai_sdk_chat_completions_and_embeddings(sdk: openai.OpenAI, httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/v1/chat/completions").respond_with_json(payload("openai", "chat_response.json"))
    httpserver.expect_oneshot_request("/v1/completions").respond_with_json(
        payload("openai", "completions_response.json")
    )
    httpserver.expect_oneshot_request("/v1/embeddings").respond_with_json(payload("openai", "embeddings_response.json"))
    chat = sdk.chat.completions.create(model="chat", messages=HI)  # type: ignore[arg-type]
    assert chat.choices[0].message.content == "Hello! How can I help?"
    assert chat.usage is not None and chat.usage.total_tokens == 15
    completion = sdk.completions.create(model="completions", prompt="Say this is a test")
    assert completion.choices[0].text == "\n\nThis is indeed a test"
    embeddings = sdk.embeddings.create(model="embeddings", input=["a", "b"], encoding_format="float")
    assert embeddings.data[0].embedding == [0.0023064255, -0.009327292, 0.015797347]


def test_openai_sdk_streams_chat_with_the_usage_chunk(sdk: openai.OpenAI, httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/v1/chat/completions").respond_with_data(
        raw("openai", "chat_stream.txt"), content_type="text/event-stream"
    )
    stream = sdk.chat.completions.create(model="chat", messages=cast(Any, HI), stream=True,
                                         stream_options={"include_usage": True})
    chunks: list[Any] = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 11
    httpserver.expect_oneshot_request("/v1/chat/completions").respond_with_data(
        raw("openai", "chat_stream.txt"), content_type="text/event-stream"
    )
    unasked: list[Any] = list(sdk.chat.completions.create(model="chat", messages=HI, stream=True))  # type: ignore[arg-type]
    assert all(c.usage is None for c in unasked)  # the gateway asked the vendor for it, not the client


def test_openai_sdk_streams_completions(sdk: openai.OpenAI, httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/v1/completions").respond_with_data(
        raw("openai", "completions_stream.txt"), content_type="text/event-stream"
    )
    chunks = list(sdk.completions.create(model="completions", prompt="Say", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "This is"


def test_openai_sdk_raises_its_own_error_classes(sdk: openai.OpenAI, httpserver: HTTPServer) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="nope", messages=HI)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="not a chat endpoint"):
        sdk.chat.completions.create(model="embeddings", messages=HI)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="echo", messages=HI, temperature=5)  # type: ignore[arg-type]
    sdk.chat.completions.create(model="tiny", messages=HI)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="tiny", messages=HI)  # type: ignore[arg-type]
    httpserver.expect_oneshot_request("/v1/chat/completions").respond_with_json(
        {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}, status=401
    )
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
        sdk.chat.completions.create(model="chat", messages=HI)  # type: ignore[arg-type]


def test_openai_sdk_lists_models(sdk: openai.OpenAI) -> None:
    assert {m.id for m in sdk.models.list()} == {"chat", "completions", "embeddings", "echo", "tiny"}


def test_seed_document_client_snippet_runs_as_written(gateway: str, httpserver: HTTPServer) -> None:
    """The seed's snippet: predict on `completions` with n=2."""
    body = payload("openai", "completions_response.json")
    body["choices"] = [dict(body["choices"][0], index=0), dict(body["choices"][0], index=1, text="Crucio")]
    httpserver.expect_oneshot_request("/v1/completions").respond_with_json(body)
    client = get_deploy_client(gateway)
    name = "completions"
    data = dict(
        prompt="Name three potions or spells in harry potter that sound like an insult. Only show the names.",
        n=2,
        temperature=0.2,
        max_tokens=1000,
    )
    response = client.predict(endpoint=name, inputs=data)
    assert [c["text"] for c in response["choices"]] == ["\n\nThis is indeed a test", "Crucio"]
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
