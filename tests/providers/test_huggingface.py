"""Hugging Face TGI: the generate body and answer tables, then the full path against a local server
speaking TGI's /generate and /generate_stream."""
from __future__ import annotations

from typing import Any

import orjson
import pytest
from pytest_httpserver import HTTPServer

from endpoints_app.validation import EntryError, validate_endpoint
from providers import huggingface as tgi
from providers.errors import InvalidParameter, UpstreamError
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.conftest import post_json, sse_events
from tests.fixtures import payload, raw

pytestmark = pytest.mark.django_db
PROVIDER = "huggingface-text-generation-inference"


# -- pure translation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_payload", "expected_parameters"),
    [
        ({"prompt": "Hi", "n": 1}, {"details": True, "decoder_input_details": True}),
        ({"prompt": "Hi", "n": 1, "max_tokens": 20, "stop": ["\n"], "top_p": 0.9, "seed": 7},
         {"max_new_tokens": 20, "stop": ["\n"], "top_p": 0.9, "seed": 7, "details": True,
          "decoder_input_details": True}),
        ({"prompt": "Hi", "temperature": 0.5}, {"temperature": 25.0, "details": True, "decoder_input_details": True}),
        ({"prompt": "Hi", "temperature": 0.0}, {"temperature": 0.001, "details": True, "decoder_input_details": True}),
    ],
)
def test_it_builds_the_generate_body(request_payload: dict[str, Any], expected_parameters: dict[str, Any]) -> None:
    assert tgi.request_body(request_payload) == {"inputs": "Hi", "parameters": expected_parameters}


def test_a_stream_body_asks_for_details_but_not_prefill_details() -> None:
    assert tgi.request_body({"prompt": "Hi", "n": 1}, stream=True) == {"inputs": "Hi", "parameters": {"details": True}}


@pytest.mark.parametrize(
    ("request_payload", "message"),
    [
        ({"prompt": "Hi", "n": 2}, "'n' must be '1' for the Text Generation Inference provider. Received value: '2'."),
        ({"prompt": "Hi", "max_new_tokens": 5}, "Invalid parameter max_new_tokens. Use max_tokens instead."),
    ],
)
def test_it_refuses_mlflow_rule_violations(request_payload: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        tgi.request_body(request_payload)
    assert caught.value.detail == message
    assert caught.value.status == 422


@pytest.mark.parametrize(("tgi_reason", "expected"),
                         [("eos_token", "stop"), ("stop_sequence", "stop"), ("length", "length"), (None, None)])
def test_it_gives_tgi_finish_reasons_in_openai_terms(tgi_reason: str | None, expected: str | None) -> None:
    out = tgi.parse_generate({"generated_text": "x", "details": {"finish_reason": tgi_reason}}, "mistral-7b")
    assert out["choices"][0]["finish_reason"] == expected


def test_it_maps_the_answer_and_counts_usage_from_details() -> None:
    out = tgi.parse_generate(payload("huggingface", "generate_response.json"), "mistral-7b")
    assert out["object"] == "text_completion"
    assert out["model"] == "mistral-7b"
    assert out["choices"] == [{"index": 0, "text": " Paris, the capital of France.", "finish_reason": "stop"}]
    assert out["usage"] == {"prompt_tokens": 6, "completion_tokens": 8, "total_tokens": 14}


def test_it_accepts_the_hosted_list_form_without_details() -> None:
    out = tgi.parse_generate([{"generated_text": "ok"}], None)
    assert out["choices"][0]["text"] == "ok"
    assert out["usage"] == {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}


def test_stream_events_map_tokens_skip_special_text_and_end_with_usage() -> None:
    events = [e.removeprefix("data:") for e in raw("huggingface", "generate_stream.txt").split("\n\n") if e.strip()]
    chunks = [tgi.parse_stream_event(orjson.loads(e), "m", 1) for e in events]
    assert [c["choices"][0]["text"] for c in chunks] == [" Paris", ".", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
    assert chunks[-1]["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}
    assert chunks[0]["usage"] is None
    assert chunks[0]["object"] == "text_completion_chunk"


def test_a_stream_error_event_becomes_an_upstream_error() -> None:
    with pytest.raises(UpstreamError) as caught:
        tgi.parse_stream_event({"error": "Request failed during generation", "error_type": "generation"}, "m", 1)
    assert caught.value.status == 424
    assert caught.value.detail == "Request failed during generation"


# -- load-time checks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint_type", [CHAT, EMBEDDINGS])
def test_it_refuses_endpoint_types_other_than_completions(endpoint_type: str) -> None:
    raw_endpoint = {"name": "x", "endpoint_type": endpoint_type,
                    "model": {"provider": PROVIDER, "name": "m", "config": {"hf_server_url": "http://tgi"}}}
    with pytest.raises(EntryError) as caught:
        validate_endpoint(raw_endpoint)
    assert caught.value.field == "endpoint_type"
    assert "supports llm/v1/completions" in caught.value.message


def test_the_server_url_is_required() -> None:
    with pytest.raises(EntryError) as caught:
        validate_endpoint({"name": "x", "endpoint_type": COMPLETIONS,
                           "model": {"provider": PROVIDER, "name": "m", "config": {}}})
    assert caught.value.field == "model.config.hf_server_url"


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture
def tgi_server(make_endpoint: Any, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    monkeypatch.setenv("TEST_TGI_URL", httpserver.url_for("/tgi"))
    make_endpoint("tgi", COMPLETIONS, PROVIDER, "mistral-7b", {"hf_server_url": "$TEST_TGI_URL"})
    return httpserver


def test_completions_send_the_exact_generate_request(tgi_server: HTTPServer, client: Any) -> None:
    tgi_server.expect_oneshot_request(
        "/tgi/generate", method="POST", headers={"Content-Type": "application/json"},
        json={"inputs": "The capital of France is",
              "parameters": {"max_new_tokens": 10, "temperature": 10.0, "details": True,
                             "decoder_input_details": True}},
    ).respond_with_json(payload("huggingface", "generate_response.json"))
    response = post_json(client, "/endpoints/tgi/invocations",
                         {"prompt": "The capital of France is", "max_tokens": 10, "temperature": 0.2})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["choices"] == [{"index": 0, "text": " Paris, the capital of France.", "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 8, "total_tokens": 14}
    assert body["model"] == "mistral-7b"
    tgi_server.check_assertions()


def test_completions_stream_from_generate_stream(tgi_server: HTTPServer, client: Any) -> None:
    tgi_server.expect_oneshot_request(
        "/tgi/generate_stream", method="POST", json={"inputs": "Capital?", "parameters": {"details": True}},
    ).respond_with_data(raw("huggingface", "generate_stream.txt"), content_type="text/event-stream")
    response = post_json(client, "/endpoints/tgi/invocations", {"prompt": "Capital?", "stream": True})
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == " Paris."
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["usage"]["total_tokens"] == 9
    tgi_server.check_assertions()


def test_the_v1_completions_route_works_too(tgi_server: HTTPServer, client: Any) -> None:
    tgi_server.expect_oneshot_request("/tgi/generate", method="POST").respond_with_json(
        payload("huggingface", "generate_response.json"))
    response = post_json(client, "/v1/completions", {"model": "tgi", "prompt": "x"})
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["text"] == " Paris, the capital of France."


def test_a_tgi_validation_error_passes_its_status_and_message(tgi_server: HTTPServer, client: Any) -> None:
    tgi_server.expect_request("/tgi/generate", method="POST").respond_with_json(
        payload("huggingface", "validation_error.json"), status=422)
    response = post_json(client, "/endpoints/tgi/invocations", {"prompt": "x"})
    assert response.status_code == 422
    assert response.json() == {"detail": "Input validation error: `temperature` must be strictly positive"}
    response = post_json(client, "/v1/completions", {"model": "tgi", "prompt": "x"})
    assert response.json()["error"]["message"] == "Input validation error: `temperature` must be strictly positive"


def test_n_above_one_is_refused_before_any_upstream_call(tgi_server: HTTPServer, client: Any) -> None:
    response = post_json(client, "/endpoints/tgi/invocations", {"prompt": "x", "n": 2})
    assert response.status_code == 422
    assert response.json() == {
        "detail": "'n' must be '1' for the Text Generation Inference provider. Received value: '2'."}
    assert tgi_server.log == []
