"""The unmodified clients with gateway keys, through a live server: the openai SDK's `api_key` and MLflow's
deployments client's MLFLOW_TRACKING_TOKEN; each refusal arrives as the client's own exception class."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from mlflow.deployments import get_deploy_client

from consumers.services import revoke_key
from providers.shapes import CHAT, EMBEDDINGS
from tests.consumers.conftest import MakeConsumer, new_key

pytestmark = [pytest.mark.django_db(transaction=True)]

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def gateway(live_server: Any, make_endpoint: Any, make_consumer: MakeConsumer, settings: Any,
            monkeypatch: pytest.MonkeyPatch) -> str:
    settings.GATEWAY_AUTH = "keys"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    make_endpoint("chat", CHAT, "mock", "m")
    make_endpoint("secret-chat", CHAT, "mock", "m")
    make_endpoint("emb", EMBEDDINGS, "mock", "e", {"dimensions": 3})
    make_consumer("team", ["chat", "emb"], limit={"calls": 4, "renewal_period": "hour"})
    return str(live_server.url)


def sdk(gateway: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0)


def test_the_openai_sdk_calls_with_its_api_key_and_maps_each_refusal(gateway: str) -> None:
    key = new_key("team")
    client = sdk(gateway, key)
    chat = client.chat.completions.create(model="chat", messages=HI)  # type: ignore[arg-type]
    assert chat.choices[0].message.content == "Echo: Hi"
    assert [m.id for m in client.models.list()] == ["chat", "emb"]
    with pytest.raises(openai.AuthenticationError, match="not valid"):
        sdk(gateway, key[:-1] + "x").chat.completions.create(model="chat", messages=HI)  # type: ignore[arg-type]
    with pytest.raises(openai.PermissionDeniedError, match="may not call 'secret-chat'"):
        client.chat.completions.create(model="secret-chat", messages=HI)  # type: ignore[arg-type]
    client.embeddings.create(model="emb", input="x")
    client.chat.completions.create(model="chat", messages=HI)  # type: ignore[arg-type]
    client.chat.completions.create(model="chat", messages=HI)  # type: ignore[arg-type]  # the 4th call of 4
    with pytest.raises(openai.RateLimitError, match="Rate limit exceeded: 4 per 1 hour"):
        client.chat.completions.create(model="chat", messages=HI)  # type: ignore[arg-type]
    revoke_key(key[:12])
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        client.chat.completions.create(model="chat", messages=HI)  # type: ignore[arg-type]


def test_the_openai_sdk_streams_with_a_key(gateway: str) -> None:
    stream = sdk(gateway, new_key("team")).chat.completions.create(
        model="chat", messages=HI, stream=True)  # type: ignore[arg-type]
    chunks: list[Any] = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: Hi"


def test_mlflows_client_sends_mlflow_tracking_token(gateway: str, monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key("team")
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    with pytest.raises(Exception, match="401"):
        get_deploy_client(gateway).predict(endpoint="chat", inputs={"messages": HI})
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    client = get_deploy_client(gateway)
    assert [e.name for e in client.list_endpoints()] == ["chat", "emb"]
    answer = client.predict(endpoint="chat", inputs={"messages": HI})
    assert answer["choices"][0]["message"]["content"] == "Echo: Hi"
    with pytest.raises(Exception, match="403"):
        client.predict(endpoint="secret-chat", inputs={"messages": HI})
    revoke_key(key[:12])
    with pytest.raises(Exception, match="401"):
        client.predict(endpoint="chat", inputs={"messages": HI})
