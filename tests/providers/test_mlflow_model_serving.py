"""MLflow model serving: MLflow's inputs/params form for completions and embeddings, the whole
conversation for chat (MLflow sends only the first message), then the full path against a local
server speaking the MLflow scoring server's /invocations."""
from __future__ import annotations

from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from providers import mlflow_model_serving as serving
from providers.errors import UpstreamBadResponse
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.conftest import post_json
from tests.fixtures import payload

pytestmark = pytest.mark.django_db
PROVIDER = "mlflow-model-serving"
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "My name is Ada."},
    {"role": "assistant", "content": "Hello Ada."},
    {"role": "user", "content": "What is my name?"},
]


# -- pure translation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_payload", "key", "expected"),
    [
        ({"prompt": "Hi", "n": 1}, "prompt", {"inputs": ["Hi"], "params": {"n": 1}}),
        ({"prompt": "Hi", "n": 1, "temperature": 0.3, "max_tokens": 9}, "prompt",
         {"inputs": ["Hi"], "params": {"n": 1, "temperature": 0.3, "max_tokens": 9}}),
        ({"input": "one"}, "input", {"inputs": ["one"]}),
        ({"input": ["a", "b"], "dimensions": 3}, "input", {"inputs": ["a", "b"], "params": {"dimensions": 3}}),
    ],
)
def test_it_builds_mlflows_inputs_and_params(request_payload: dict[str, Any], key: str,
                                             expected: dict[str, Any]) -> None:
    assert serving.inputs_body(request_payload, key) == expected


def test_chat_sends_every_message_with_the_parameters_alongside() -> None:
    assert serving.chat_body({"messages": CONVERSATION, "n": 1, "temperature": 0.1}) == {
        "messages": CONVERSATION, "n": 1, "temperature": 0.1}


@pytest.mark.parametrize(
    ("predictions", "texts"),
    [
        (["a", "b"], ["a", "b"]),
        ({"choices": ["a"]}, ["a"]),
        ({"candidates": ["x", "y"]}, ["x", "y"]),
    ],
)
def test_it_reads_text_predictions_in_mlflows_forms(predictions: Any, texts: list[str]) -> None:
    out = serving.parse_completions({"predictions": predictions}, "served")
    assert [c["text"] for c in out["choices"]] == texts
    assert all(c["finish_reason"] is None for c in out["choices"])
    assert out["model"] == "served"
    assert out["usage"] == {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"outputs": ["a"]}, "The response is missing the required key: predictions."),
        ({"predictions": {"a": ["x"], "b": ["y"]}}, "The dict format is invalid for this route type."),
        ({"predictions": []}, "no predictions"),
        ({"predictions": [1, 2]}, "must be strings"),
    ],
)
def test_unreadable_predictions_are_a_bad_upstream_response(body: Any, message: str) -> None:
    with pytest.raises(UpstreamBadResponse) as caught:
        serving.parse_completions(body, "served")
    assert message in caught.value.message
    assert caught.value.status == 502


def test_a_chat_model_answer_is_read_as_a_chat_completion() -> None:
    out = serving.parse_chat_answer(payload("mlflow_model_serving", "chat_model_response.json"), "ep", PROVIDER)
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "You said your name is Ada.",
                                                      "tool_calls": None, "refusal": None}, "finish_reason": "stop"}]
    assert out["usage"]["total_tokens"] == 31
    assert out["model"] == "my-chat-model"
    assert out["provider"] == PROVIDER


@pytest.mark.parametrize(
    "body",
    [{"predictions": ["Hi there"]}, {"predictions": {"choices": [{"index": 0, "message": {
        "role": "assistant", "content": "Hi there"}, "finish_reason": None}]}}],
)
def test_a_chat_answer_wrapped_in_predictions_is_accepted(body: Any) -> None:
    out = serving.parse_chat_answer(body, "ep", PROVIDER)
    assert out["choices"][0]["message"]["content"] == "Hi there"
    assert out["model"] == "ep"


@pytest.mark.parametrize(
    ("predictions", "vectors"),
    [([[0.1, 0.2], [0.3, 0.4]], [[0.1, 0.2], [0.3, 0.4]]), ([0.1, 0.2], [[0.1, 0.2]])],
)
def test_it_reads_embeddings_as_a_list_of_vectors_or_one_vector(predictions: Any, vectors: Any) -> None:
    out = serving.parse_embeddings({"predictions": predictions}, "emb")
    assert [d["embedding"] for d in out["data"]] == vectors


def test_embeddings_that_are_not_vectors_are_refused() -> None:
    with pytest.raises(UpstreamBadResponse):
        serving.parse_embeddings({"predictions": ["a"]}, "emb")


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture
def served(make_endpoint: Any, httpserver: HTTPServer) -> HTTPServer:
    config = {"model_server_url": httpserver.url_for("/model")}
    make_endpoint("served-chat", CHAT, PROVIDER, "my-chat-model", config)
    make_endpoint("served-completions", COMPLETIONS, PROVIDER, "my-text-model", config)
    make_endpoint("served-embeddings", EMBEDDINGS, PROVIDER, "my-embedder", config)
    return httpserver


def test_a_multi_turn_chat_reaches_the_model_whole(served: HTTPServer, client: Any) -> None:
    served.expect_oneshot_request(
        "/model/invocations", method="POST", headers={"Content-Type": "application/json"},
        json={"messages": CONVERSATION, "n": 1, "max_tokens": 50},
    ).respond_with_json(payload("mlflow_model_serving", "chat_model_response.json"))
    response = post_json(client, "/endpoints/served-chat/invocations", {"messages": CONVERSATION, "max_tokens": 50})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "You said your name is Ada."
    assert body["provider"] == PROVIDER
    served.check_assertions()


def test_completions_send_inputs_and_params(served: HTTPServer, client: Any) -> None:
    served.expect_oneshot_request(
        "/model/invocations", method="POST",
        json={"inputs": ["Capital of France?"], "params": {"n": 1, "temperature": 0.5}},
    ).respond_with_json(payload("mlflow_model_serving", "completions_response.json"))
    response = post_json(client, "/endpoints/served-completions/invocations",
                         {"prompt": "Capital of France?", "temperature": 0.5})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["choices"] == [{"index": 0, "text": "The capital of France is Paris.", "finish_reason": None}]
    assert body["model"] == "my-text-model"
    served.check_assertions()


def test_embeddings_round_trip(served: HTTPServer, client: Any) -> None:
    served.expect_oneshot_request("/model/invocations", method="POST", json={"inputs": ["a", "b"]}).respond_with_json(
        payload("mlflow_model_serving", "embeddings_response.json"))
    response = post_json(client, "/v1/embeddings", {"model": "served-embeddings", "input": ["a", "b"]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert [d["embedding"] for d in body["data"]] == [[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]]
    assert body["model"] == "my-embedder"


def test_a_missing_predictions_key_is_a_502_with_mlflows_message(served: HTTPServer, client: Any) -> None:
    served.expect_request("/model/invocations", method="POST").respond_with_json({"outputs": ["x"]})
    response = post_json(client, "/endpoints/served-completions/invocations", {"prompt": "x"})
    assert response.status_code == 502
    assert response.json() == {"detail": "The response is missing the required key: predictions."}
    response = post_json(client, "/v1/completions", {"model": "served-completions", "prompt": "x"})
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "The response is missing the required key: predictions."


def test_a_scoring_server_error_passes_its_status_and_message(served: HTTPServer, client: Any) -> None:
    error = payload("mlflow_model_serving", "error_response.json")
    served.expect_oneshot_request("/model/invocations", method="POST").respond_with_json(error, status=400)
    response = post_json(client, "/endpoints/served-chat/invocations", {"messages": CONVERSATION})
    assert response.status_code == 400
    assert response.json() == {"detail": error["message"]}


def test_streaming_is_not_offered(served: HTTPServer, client: Any) -> None:
    response = post_json(client, "/endpoints/served-chat/invocations", {"messages": CONVERSATION, "stream": True})
    assert response.status_code == 501
    assert response.json() == {"detail": "The chat streaming route is not implemented for MLflow Model Serving models."}
    assert served.log == []


def test_a_chat_answer_without_choices_or_predictions_is_a_502(served: HTTPServer, client: Any) -> None:
    served.expect_oneshot_request("/model/invocations", method="POST").respond_with_json({"answer": "x"})
    response = post_json(client, "/endpoints/served-chat/invocations", {"messages": CONVERSATION})
    assert response.status_code == 502
    assert response.json() == {"detail": "The response is missing the required key: predictions "
                                         "(or the 'choices' of a chat completion)."}
