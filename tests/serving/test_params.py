"""An endpoint's `params:`: defaults filled in, maxima clamped or refused, denied fields refused, before the
provider sees the request (asserted on what a local OpenAI-speaking upstream receives)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pytest_httpserver import HTTPServer

from providers.shapes import CHAT
from serving.params import apply
from tests.conftest import MakeEndpoint, post_json
from tests.fixtures import payload

pytestmark = pytest.mark.django_db

HI = {"messages": [{"role": "user", "content": "Hi"}]}
PARAMS = {"defaults": {"temperature": 0.2, "user": "gateway"}, "max": {"max_tokens": 1024, "n": 1},
          "deny": ["logit_bias"]}


@pytest.mark.parametrize(("request_body", "expected"), [
    ({"x": 1}, {"x": 1, "temperature": 0.2, "user": "gateway"}),
    ({"temperature": 0.9}, {"temperature": 0.9, "user": "gateway"}),
    ({"temperature": None}, {"temperature": 0.2, "user": "gateway"}),
    ({"max_tokens": 4096}, {"max_tokens": 1024, "temperature": 0.2, "user": "gateway"}),
    ({"max_tokens": 100}, {"max_tokens": 100, "temperature": 0.2, "user": "gateway"}),
])
def test_defaults_fill_in_and_maxima_clamp(request_body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert apply(request_body, PARAMS, "chat") == expected


def test_the_request_dict_itself_is_left_alone() -> None:
    body = {"max_tokens": 4096}
    apply(body, PARAMS, "chat")
    assert body == {"max_tokens": 4096}


@pytest.fixture
def upstream_endpoint(make_endpoint: MakeEndpoint, httpserver: HTTPServer) -> Any:
    def make(params: dict[str, Any]) -> None:
        make_endpoint("chat", CHAT, "openai", "gpt-4o-mini",
                      {"openai_api_key": "sk-test", "openai_api_base": httpserver.url_for("/v1")}, params=params)

    return make


def test_the_upstream_gets_the_defaults_and_the_clamped_maximum(client: Any, upstream_endpoint: Any,
                                                                httpserver: HTTPServer) -> None:
    upstream_endpoint(PARAMS)
    httpserver.expect_oneshot_request("/v1/chat/completions").respond_with_json(payload("openai",
                                                                                        "chat_response.json"))
    response = post_json(client, "/v1/chat/completions", {**HI, "model": "chat", "max_tokens": 5000})
    assert response.status_code == 200
    sent = orjson.loads(httpserver.log[0][0].get_data())
    assert (sent["temperature"], sent["user"], sent["max_tokens"]) == (0.2, "gateway", 1024)


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/chat/completions", {**HI, "model": "chat", "logit_bias": {"50256": -100}}, "logit_bias"),
    ("/endpoints/chat/invocations", {**HI, "logit_bias": {"50256": -100}}, "logit_bias"),
])
def test_a_denied_field_is_a_400_naming_it_and_nothing_is_sent(client: Any, upstream_endpoint: Any,
                                                               httpserver: HTTPServer, path: str, body: Any,
                                                               field: str) -> None:
    upstream_endpoint(PARAMS)
    response = post_json(client, path, body)
    assert response.status_code == 400
    text = response.json()["error"]["message"] if path.startswith("/v1") else response.json()["detail"]
    assert text == "The field 'logit_bias' is not allowed on endpoint 'chat'."
    if path.startswith("/v1"):
        assert response.json()["error"]["param"] == field
    assert httpserver.log == []


def test_with_on_max_reject_a_maximum_is_a_400(client: Any, upstream_endpoint: Any, httpserver: HTTPServer) -> None:
    upstream_endpoint({**PARAMS, "on_max": "reject"})
    response = post_json(client, "/v1/chat/completions", {**HI, "model": "chat", "max_tokens": 5000})
    assert response.status_code == 400
    assert response.json()["error"] == {"message": "'max_tokens' is 5000, more than 1024, the most endpoint 'chat' "
                                                   "allows.", "type": "invalid_request_error", "param": "max_tokens",
                                        "code": "invalid_parameter"}
    assert httpserver.log == []


@pytest.mark.parametrize(("params", "field", "message"), [
    ({"defaults": ["temperature"]}, "params.defaults", "defaults must map"),
    ({"max": {"max_tokens": "lots"}}, "params.max.max_tokens", "must be a number"),
    ({"deny": "logit_bias"}, "params.deny", "deny must be a list"),
    ({"deny": ["n"], "max": {"n": 1}}, "params.deny", "cannot be both denied"),
    ({"on_max": "truncate"}, "params.on_max", "on_max must be clamp or reject"),
    ({"defaults": {"stream": True}}, "params.defaults", "cannot set model, messages or stream"),
    ({"maximum": {}}, "params.maximum", "unknown params key"),
])
def test_bad_params_are_refused_at_load_time(params: dict[str, Any], field: str, message: str) -> None:
    from endpoints_app.validation import EntryError, validate_endpoint

    with pytest.raises(EntryError) as caught:
        validate_endpoint({"name": "chat", "endpoint_type": CHAT, "model": {"provider": "mock", "config": {}},
                           "params": params})
    assert (caught.value.field, message in caught.value.message) == (field, True), caught.value.message
