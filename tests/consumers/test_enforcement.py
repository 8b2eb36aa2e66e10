"""GATEWAY_AUTH=keys on every route family: who may call what, and the statuses when not."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from consumers.services import revoke_key
from tests.conftest import post_json
from tests.consumers.conftest import MakeConsumer, bearer, new_key

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("auth_on", "mock_endpoints")]

HI = {"messages": [{"role": "user", "content": "hi"}]}
CALLS = [("/endpoints/chat/invocations", HI), ("/gateway/chat/invocations", HI),
         ("/v1/chat/completions", {**HI, "model": "chat"})]


def mlflow_call(client: Any, key: str | None, name: str = "chat") -> Any:
    return post_json(client, f"/endpoints/{name}/invocations", HI, **(bearer(key) if key else {}))


def openai_call(client: Any, key: str | None, model: str = "chat") -> Any:
    return post_json(client, "/v1/chat/completions", {**HI, "model": model}, **(bearer(key) if key else {}))


@pytest.mark.parametrize(("path", "body"), CALLS)
def test_a_valid_key_of_an_allowed_consumer_calls_every_route_family(client: Any, make_consumer: MakeConsumer,
                                                                     path: str, body: Any) -> None:
    key = new_key(make_consumer("team", ["chat"]))
    response = post_json(client, path, body, **bearer(key))
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hi"


@pytest.mark.parametrize(("path", "body"), CALLS)
def test_without_a_key_every_route_family_answers_401(client: Any, path: str, body: Any) -> None:
    response = post_json(client, path, body)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="gateway"'


def test_the_401s_speak_each_route_familys_error_shape(client: Any, make_consumer: MakeConsumer) -> None:
    mlflow = mlflow_call(client, None)
    assert mlflow.json() == {"detail": "A gateway key is required: send `Authorization: Bearer <key>` (the openai "
                                       "SDK's api_key, or MLFLOW_TRACKING_TOKEN for MLflow's client)."}
    openai = openai_call(client, "gwk_00000000_" + "x" * 40)
    assert openai.status_code == 401
    assert openai.json()["error"] == {"message": "The gateway key is not valid.", "type": "invalid_request_error",
                                      "param": None, "code": "invalid_api_key"}


@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer sk-not-ours", "gwk_whatever"])
def test_anything_but_a_bearer_gateway_key_is_401(client: Any, authorization: str) -> None:
    response = post_json(client, "/endpoints/chat/invocations", HI, HTTP_AUTHORIZATION=authorization)
    assert response.status_code == 401


def test_a_key_with_one_character_changed_is_401(client: Any, make_consumer: MakeConsumer) -> None:
    key = new_key(make_consumer("team"))
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert mlflow_call(client, forged).status_code == 401
    assert mlflow_call(client, key).status_code == 200


def test_a_revoked_key_is_401_from_the_next_request(client: Any, make_consumer: MakeConsumer) -> None:
    key = new_key(make_consumer("team"))
    assert mlflow_call(client, key).status_code == 200
    revoke_key(key[:12])
    response = mlflow_call(client, key)
    assert response.status_code == 401
    assert response.json() == {"detail": f"The gateway key {key[:12]} has been revoked."}


def test_an_expired_key_is_401(client: Any, make_consumer: MakeConsumer) -> None:
    consumer = make_consumer("team")
    key = new_key(consumer, expires_in=timedelta(hours=1))
    assert mlflow_call(client, key).status_code == 200
    consumer.keys.update(expires_at=timezone.now() - timedelta(seconds=1))
    consumer.save()  # a change of the config: the table is rebuilt
    response = openai_call(client, key)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == f"The gateway key {key[:12]} has expired."


def test_a_consumer_that_may_not_call_an_endpoint_is_403_on_every_family(client: Any,
                                                                         make_consumer: MakeConsumer) -> None:
    key = new_key(make_consumer("team", ["other"]))
    for path, body in CALLS:
        response = post_json(client, path, body, **bearer(key))
        assert response.status_code == 403, path
    assert mlflow_call(client, key).json() == {"detail": "The consumer 'team' may not call 'chat'."}
    error = openai_call(client, key).json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "permission_denied")
    assert mlflow_call(client, key, "other").status_code == 200


def test_an_unknown_name_is_403_unless_the_consumer_may_call_everything(client: Any,
                                                                        make_consumer: MakeConsumer) -> None:
    """A consumer limited to some endpoints learns nothing about the others, not even whether they exist."""
    limited = new_key(make_consumer("limited", ["chat"]))
    everything = new_key(make_consumer("everything", "*"))
    assert mlflow_call(client, limited, "nope").status_code == 403
    assert mlflow_call(client, everything, "nope").status_code == 404


def test_a_disabled_consumer_is_403_and_enabling_it_restores_access(client: Any, make_consumer: MakeConsumer) -> None:
    consumer = make_consumer("team")
    key = new_key(consumer)
    consumer.enabled = False
    consumer.save()
    response = mlflow_call(client, key)
    assert response.status_code == 403
    assert response.json() == {"detail": "The consumer 'team' is disabled."}
    consumer.enabled = True
    consumer.save()
    assert mlflow_call(client, key).status_code == 200


def test_a_changed_allow_list_applies_at_once(client: Any, make_consumer: MakeConsumer) -> None:
    consumer = make_consumer("team", ["chat"])
    key = new_key(consumer)
    assert mlflow_call(client, key, "other").status_code == 403
    consumer.allow = ["other"]
    consumer.save()
    assert mlflow_call(client, key, "other").status_code == 200
    assert mlflow_call(client, key, "chat").status_code == 403


def test_a_consumer_limit_applies_across_route_families_on_top_of_the_endpoints(
        client: Any, make_consumer: MakeConsumer) -> None:
    key = new_key(make_consumer("team", "*", limit={"calls": 2, "renewal_period": "minute"}))
    other_key = new_key(make_consumer("other-team", "*"))
    first = mlflow_call(client, key)
    assert first.status_code == 200
    assert (first["X-RateLimit-Limit"], first["X-RateLimit-Remaining"]) == ("2", "1")
    assert openai_call(client, key, "other").status_code == 200
    refused = post_json(client, "/gateway/chat/invocations", HI, **bearer(key))
    assert refused.status_code == 429
    assert refused.json() == {"error": "Rate limit exceeded: 2 per 1 minute"}
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused["X-RateLimit-Remaining"] == "0"
    v1 = openai_call(client, key)
    assert v1.status_code == 429 and v1.json()["error"]["type"] == "rate_limit_error"
    assert mlflow_call(client, other_key).status_code == 200  # another consumer has its own window


def test_the_tighter_of_the_endpoint_and_consumer_limits_shows_in_the_headers(
        client: Any, make_consumer: MakeConsumer, make_endpoint: Any) -> None:
    make_endpoint("limited", "llm/v1/chat", "mock", "m", limit={"calls": 3, "renewal_period": "minute"})
    key = new_key(make_consumer("team", "*", limit={"calls": 10, "renewal_period": "minute"}))
    response = mlflow_call(client, key, "limited")
    assert (response["X-RateLimit-Limit"], response["X-RateLimit-Remaining"]) == ("3", "2")
    mlflow_call(client, key, "limited")
    mlflow_call(client, key, "limited")
    assert mlflow_call(client, key, "limited").status_code == 429  # the endpoint's 3, under the consumer's 10


def test_a_token_limit_refuses_once_the_reported_tokens_reach_it(client: Any, make_consumer: MakeConsumer) -> None:
    """The mock provider reports prompt and completion tokens; once a window holds the limit, calls are 429
    until it renews. Streams count too (their final usage)."""
    key = new_key(make_consumer("team", "*", token_limit={"tokens": 10, "renewal_period": "hour"}))
    first = mlflow_call(client, key)
    used = first.json()["usage"]["total_tokens"]
    assert first.status_code == 200 and 0 < used < 10
    calls = 1
    while True:
        response = mlflow_call(client, key)
        if response.status_code == 429:
            break
        assert response.status_code == 200
        calls += 1
        assert calls < 20
    assert calls == -(-10 // used)  # ceil: calls are admitted while the window holds less than the limit
    assert response.json() == {"error": "Token limit exceeded: 10 tokens per 1 hour"}
    assert response["X-RateLimit-Limit"] == "10" and int(response["Retry-After"]) > 0


def test_stream_tokens_count_against_the_token_limit(client: Any, make_consumer: MakeConsumer) -> None:
    key = new_key(make_consumer("team", "*", token_limit={"tokens": 1, "renewal_period": "hour"}))
    stream = post_json(client, "/endpoints/chat/invocations", {**HI, "stream": True}, **bearer(key))
    assert stream.status_code == 200
    assert b"[DONE]" in b"".join(stream.streaming_content)
    assert mlflow_call(client, key).status_code == 429


def test_health_and_the_docs_stay_open(client: Any) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/redoc").status_code == 200


# -- listings --------------------------------------------------------------------------------------------------
LISTINGS = ["/api/2.0/endpoints/", "/api/2.0/gateway/routes/", "/v1/models", "/api/2.0/endpoints/chat",
            "/api/2.0/gateway/routes/chat", "/api/3.0/gateway/route/split"]


@pytest.mark.parametrize("path", LISTINGS)
def test_listings_need_a_key(client: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="gateway"'


def test_listings_show_only_what_the_key_may_call(client: Any, make_consumer: MakeConsumer) -> None:
    key = new_key(make_consumer("team", ["chat", "emb"]))
    endpoints = client.get("/api/2.0/endpoints/", **bearer(key)).json()["endpoints"]
    assert [e["name"] for e in endpoints] == ["chat", "emb"]
    routes = client.get("/api/2.0/gateway/routes/", **bearer(key)).json()["routes"]
    assert [r["name"] for r in routes] == ["chat", "emb"]
    models = client.get("/v1/models", **bearer(key)).json()["data"]
    assert [m["id"] for m in models] == ["chat", "emb"]
    assert client.get("/api/2.0/endpoints/chat", **bearer(key)).status_code == 200
    assert client.get("/api/2.0/endpoints/other", **bearer(key)).status_code == 403


def test_the_models_listing_speaks_openais_error_envelope(client: Any) -> None:
    response = client.get("/v1/models", HTTP_AUTHORIZATION="Bearer nope")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_with_auth_off_no_key_is_needed(client: Any, settings: Any) -> None:
    settings.GATEWAY_AUTH = "off"
    assert mlflow_call(client, None).status_code == 200
    assert len(client.get("/api/2.0/endpoints/").json()["endpoints"]) == 3
