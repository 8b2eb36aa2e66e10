"""MLflow model serving (`provider: mlflow-model-serving`): models served by `mlflow models serve`
(or any MLflow scoring server), at `POST {model_server_url}/invocations` (§2.12).

Completions and embeddings use MLflow's `inputs`/`params` form and read the `predictions` key of the
answer, as MLflow does: `{"inputs": [prompt], "params": {...}}` → a list of strings (or a dict with
`choices`, or a single key), and `{"inputs": [...]}` → a list of vectors (or one vector).

Chat differs from MLflow on purpose. MLflow sends only the first message's content as
`{"inputs": [content]}` and refuses more than one message, so a conversation never reaches the
model. Here the whole conversation is sent in the scoring server's unified LLM chat form,
`{"messages": [...], "temperature": ..., "max_tokens": ..., ...}`: the request shape of MLflow chat
models (`mlflow.pyfunc.ChatModel`, `ChatAgent`, and pyfunc models logged with a chat signature),
which is also the OpenAI request shape. For such a request the scoring server returns the model's
answer unwrapped, an OpenAI-style chat completion (`choices[].message`); an answer wrapped in
`predictions` (strings, or a chat completion) is accepted too.
"""
from __future__ import annotations

from typing import Any

from providers import shapes
from providers.base import BaseProvider, drop_none
from providers.config import ConfigField, ProviderConfig
from providers.errors import UpstreamBadResponse
from providers.openai_compatible import parse_chat
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from serving.upstream import UpstreamRequest

PREDICTIONS = "predictions"


# -- pure translation -------------------------------------------------------------------------------
def inputs_body(payload: dict[str, Any], key: str) -> dict[str, Any]:
    """MLflow's serving form: the input under `inputs` (always a list), the other fields as `params`."""
    params = drop_none(payload)
    params.pop("stream", None)
    data = params.pop(key, None)
    body: dict[str, Any] = {"inputs": data if isinstance(data, list) else [data]}
    if params:
        body["params"] = params
    return body


def chat_body(payload: dict[str, Any]) -> dict[str, Any]:
    """The unified LLM chat form: every message, with the parameters alongside."""
    body = drop_none(payload)
    body.pop("stream", None)
    return body


def predictions_of(body: Any) -> Any:
    if not isinstance(body, dict) or PREDICTIONS not in body:
        raise UpstreamBadResponse(f"The response is missing the required key: {PREDICTIONS}.")
    return body[PREDICTIONS]


def texts_of(predictions: Any) -> list[str]:
    """MLflow's rule for text predictions: a list of strings, a dict with `choices`, or a one-key dict."""
    if isinstance(predictions, dict):
        if "choices" in predictions:
            predictions = predictions["choices"]
        elif len(predictions) == 1:
            predictions = next(iter(predictions.values()))
        else:
            raise UpstreamBadResponse(
                "The dict format is invalid for this route type. Ensure the served model returns a dict key "
                "containing 'choices'"
            )
    if not isinstance(predictions, list) or not predictions:
        raise UpstreamBadResponse("The served model returned no predictions (an empty or non-list value).")
    if not all(isinstance(text, str) for text in predictions):
        raise UpstreamBadResponse("The served model's predictions must be strings for this route type.")
    return predictions


def parse_completions(body: Any, model: str | None) -> dict[str, Any]:
    texts = texts_of(predictions_of(body))
    return shapes.completions_response(id=None, model=model, usage=None,
                                       choices=[shapes.text_choice(i, text, None) for i, text in enumerate(texts)])


def _is_chat_completion(value: Any) -> bool:
    choices = value.get("choices") if isinstance(value, dict) else None
    return isinstance(choices, list) and bool(choices) and all(
        isinstance(c, dict) and isinstance(c.get("message"), dict) for c in choices
    )


def parse_chat_answer(body: Any, model: str | None, provider: str) -> dict[str, Any]:
    """A chat completion (bare, or under `predictions`), or MLflow's text predictions."""
    if not _is_chat_completion(body):
        if not isinstance(body, dict) or PREDICTIONS not in body:
            raise UpstreamBadResponse(
                f"The response is missing the required key: {PREDICTIONS} (or the 'choices' of a chat completion)."
            )
        body = body[PREDICTIONS]
    if _is_chat_completion(body):
        out = parse_chat(body, provider)
        out["model"] = out["model"] or model
        return out
    choices = [shapes.chat_choice(i, shapes.message(text), None) for i, text in enumerate(texts_of(body))]
    return shapes.chat_response(id=None, model=model, choices=choices, usage=None, provider=provider)


def parse_embeddings(body: Any, model: str | None) -> dict[str, Any]:
    predictions = predictions_of(body)
    if isinstance(predictions, list) and predictions and all(isinstance(x, (int, float)) for x in predictions):
        predictions = [predictions]  # a single input's vector
    if not (isinstance(predictions, list) and predictions and all(
        isinstance(vector, list) and all(isinstance(x, (int, float)) for x in vector) for vector in predictions
    )):
        raise UpstreamBadResponse("The served model's predictions are not a list of embedding vectors.")
    return shapes.embeddings_response(vectors=predictions, model=model, usage=None)


# -- the provider --------------------------------------------------------------------------------------
class MlflowModelServingConfig(ProviderConfig):
    fields = (
        ConfigField("model_server_url", required=True, kind="url", help="The scoring server, e.g. http://host:5000"),
    )


class MlflowModelServingProvider(BaseProvider):
    name = "mlflow-model-serving"
    display_name = "MLflow Model Serving"
    config_class = MlflowModelServingConfig
    endpoint_types = frozenset({CHAT, COMPLETIONS, EMBEDDINGS})

    def _invoke(self, body: dict[str, Any]) -> Any:
        base = str(self.config["model_server_url"]).rstrip("/")
        return self.post_json(UpstreamRequest(url=f"{base}/invocations", json=body))

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        return parse_chat_answer(self._invoke(chat_body(payload)), self.model_name, self.provider_name)

    def completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        return parse_completions(self._invoke(inputs_body(payload, "prompt")), self.model_name)

    def embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        return parse_embeddings(self._invoke(inputs_body(payload, "input")), self.model_name)
