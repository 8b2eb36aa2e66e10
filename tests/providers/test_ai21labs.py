"""AI21 Labs: the J2 complete body and answer tables, the model-name check at load time, then the
full path against a local server speaking AI21's /{model}/complete."""
from __future__ import annotations

from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from endpoints_app.validation import EntryError, validate_endpoint
from providers import ai21labs
from providers.ai21labs import AI21LabsProvider
from providers.errors import InvalidParameter
from providers.shapes import CHAT, COMPLETIONS
from tests.conftest import post_json
from tests.fixtures import payload

pytestmark = pytest.mark.django_db


def _endpoint(model: str | None, endpoint_type: str = COMPLETIONS) -> dict[str, Any]:
    return {"name": "j2", "endpoint_type": endpoint_type,
            "model": {"provider": "ai21labs", "name": model, "config": {"ai21labs_api_key": "$AI21_KEY"}}}


# -- pure translation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_payload", "expected"),
    [
        ({"prompt": "Hi", "n": 1}, {"prompt": "Hi", "numResults": 1}),
        ({"prompt": "Hi", "n": 2, "stop": ["\n"], "max_tokens": 8, "temperature": 0.7, "top_p": 0.9},
         {"prompt": "Hi", "numResults": 2, "stopSequences": ["\n"], "maxTokens": 8, "temperature": 0.7, "topP": 0.9}),
        ({"prompt": "Hi", "minTokens": 2}, {"prompt": "Hi", "minTokens": 2}),
    ],
)
def test_it_builds_the_complete_body(request_payload: dict[str, Any], expected: dict[str, Any]) -> None:
    assert ai21labs.request_body(request_payload) == expected


@pytest.mark.parametrize(("native", "gateway"), [("maxTokens", "max_tokens"), ("numResults", "n"),
                                                 ("stopSequences", "stop"), ("topP", "top_p")])
def test_it_refuses_ai21_native_parameter_names(native: str, gateway: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        ai21labs.request_body({"prompt": "Hi", native: 1})
    assert caught.value.detail == f"Invalid parameter {native}. Use {gateway} instead."


def test_it_maps_completions_finish_reasons_and_token_counts() -> None:
    out = ai21labs.parse_complete(payload("ai21labs", "complete_response.json"), "j2-mid")
    assert out["id"] == "7921a78e-d905-c9df-27e3-88e4831e3c3b"
    assert out["model"] == "j2-mid"
    assert out["choices"] == [
        {"index": 0, "text": " Paris.", "finish_reason": "stop"},
        {"index": 1, "text": " a city", "finish_reason": "length"},
    ]
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


@pytest.mark.parametrize(("ai21_reason", "expected"),
                         [("endoftext", "stop"), ("stop", "stop"), ("length", "length"), (None, None)])
def test_it_gives_ai21_finish_reasons_in_openai_terms(ai21_reason: str | None, expected: str | None) -> None:
    body = {"completions": [{"data": {"text": "x"}, "finishReason": {"reason": ai21_reason}}]}
    assert ai21labs.parse_complete(body, "j2-mid")["choices"][0]["finish_reason"] == expected


def test_usage_stays_empty_without_token_lists() -> None:
    out = ai21labs.parse_complete({"completions": [{"data": {"text": "x"}, "finishReason": {"reason": "stop"}}]}, "m")
    assert out["usage"] == {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}


# -- load-time checks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["j2-ultra", "j2-mid", "j2-light"])
def test_the_j2_models_are_accepted(model: str) -> None:
    spec, _ = validate_endpoint(_endpoint(model))
    assert spec.provider == "ai21labs"


@pytest.mark.parametrize("model", ["jamba-1.5-large", "j2-grande", None])
def test_other_models_are_refused_when_loaded(model: str | None) -> None:
    with pytest.raises(EntryError) as caught:
        validate_endpoint(_endpoint(model))
    assert caught.value.field == "model.name"
    assert "use one of j2-ultra, j2-mid, j2-light" in caught.value.message.lower()


def test_chat_is_refused_when_loaded() -> None:
    with pytest.raises(EntryError) as caught:
        validate_endpoint(_endpoint("j2-mid", CHAT))
    assert caught.value.field == "endpoint_type"


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture
def ai21(make_endpoint: Any, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    monkeypatch.setenv("AI21_KEY", "ai21-secret")
    make_endpoint("j2", COMPLETIONS, "ai21labs", "j2-ultra",
                  {"ai21labs_api_key": "$AI21_KEY", "ai21labs_api_base": httpserver.url_for("/studio/v1")})
    return httpserver


def test_completions_send_the_exact_complete_request(ai21: HTTPServer, client: Any) -> None:
    ai21.expect_oneshot_request(
        "/studio/v1/j2-ultra/complete", method="POST",
        headers={"Authorization": "Bearer ai21-secret", "Content-Type": "application/json"},
        json={"prompt": "The capital of France is", "numResults": 2, "maxTokens": 5, "stopSequences": ["."]},
    ).respond_with_json(payload("ai21labs", "complete_response.json"))
    response = post_json(client, "/endpoints/j2/invocations",
                         {"prompt": "The capital of France is", "n": 2, "max_tokens": 5, "stop": ["."]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert [c["text"] for c in body["choices"]] == [" Paris.", " a city"]
    assert body["usage"]["total_tokens"] == 6
    ai21.check_assertions()


def test_the_default_api_base_is_ai21_studio(make_endpoint: Any) -> None:
    endpoint = make_endpoint("j2-default", COMPLETIONS, "ai21labs", "j2-light", {"ai21labs_api_key": "k"})
    provider = AI21LabsProvider(provider_name="ai21labs", model_name="j2-light", config=endpoint.config)
    assert provider.config["ai21labs_api_base"] == "https://api.ai21.com/studio/v1"


def test_streaming_is_refused_with_501_before_any_upstream_call(ai21: HTTPServer, client: Any) -> None:
    response = post_json(client, "/endpoints/j2/invocations", {"prompt": "x", "stream": True})
    assert response.status_code == 501
    assert response.json() == {"detail": "The completions streaming route is not implemented for AI21 Labs models."}
    assert ai21.log == []


def test_an_ai21_error_passes_its_status_and_detail(ai21: HTTPServer, client: Any) -> None:
    ai21.expect_request("/studio/v1/j2-ultra/complete", method="POST").respond_with_json(
        payload("ai21labs", "error_response.json"), status=401)
    response = post_json(client, "/endpoints/j2/invocations", {"prompt": "x"})
    assert response.status_code == 401
    assert response.json() == {"detail": "Forbidden: Bad or missing API token."}
    response = post_json(client, "/v1/completions", {"model": "j2", "prompt": "x"})
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Forbidden: Bad or missing API token."
