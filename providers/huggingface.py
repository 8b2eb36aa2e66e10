"""Hugging Face Text Generation Inference (`provider: huggingface-text-generation-inference`).

Completions only, against a TGI server's native API (§2.8): `POST {hf_server_url}/generate` with
`{"inputs": prompt, "parameters": {...}}`, and `/generate_stream` for streaming (Server-Sent
Events, one generated token per event, the last one carrying `generated_text` and `details`).

Rules kept from MLflow: `n` must be 1; `max_tokens` becomes `max_new_tokens`, and the native name is
refused (422); the gateway temperature t (0..2) is sent as max(50*t, 0.001), since TGI wants a
strictly positive value; `details` is requested so that usage can be reported (prompt tokens from
`details.prefill`, completion tokens from `details.generated_tokens`). TGI's finish reasons
(`length`, `eos_token`, `stop_sequence`) are given in OpenAI's terms (`length`, `stop`), where MLflow
passes them on as they are.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from providers import shapes
from providers.base import BaseProvider, drop_none, reject_native_names, rename_keys, require_n_is_one
from providers.config import ConfigField, ProviderConfig
from providers.errors import UpstreamBadResponse, UpstreamError
from providers.shapes import COMPLETIONS
from serving.upstream import SSEEvent, UpstreamRequest

NAME_MAP = {"max_tokens": "max_new_tokens"}
DISPLAY_NAME = "Text Generation Inference"
# TGI's finish reasons → OpenAI's (`length` is both).
FINISH_REASONS = {"eos_token": "stop", "stop_sequence": "stop"}
# TGI's `error_type` of an error event → the status it would have answered with.
_ERROR_STATUS = {"validation": 422, "overloaded": 429, "generation": 424, "incomplete_generation": 500}


# -- pure translation -------------------------------------------------------------------------------
def scale_temperature(temperature: float) -> float:
    return max(temperature * 50, 0.001)


def request_body(payload: dict[str, Any], *, stream: bool = False) -> dict[str, Any]:
    """Our completions request → TGI's generate body. Raises InvalidParameter (422)."""
    reject_native_names(payload, NAME_MAP)
    require_n_is_one(payload, DISPLAY_NAME)
    parameters = rename_keys(drop_none(payload), NAME_MAP)
    prompt = parameters.pop("prompt")
    parameters.pop("n", None)
    parameters.pop("stream", None)
    if "temperature" in parameters:
        parameters["temperature"] = scale_temperature(parameters["temperature"])
    parameters["details"] = True
    if not stream:
        # TGI refuses prefill details on a stream ("decoder_input_details == true is not supported").
        parameters["decoder_input_details"] = True
    return {"inputs": prompt, "parameters": parameters}


def parse_generate(body: Any, model: str | None) -> dict[str, Any]:
    """TGI's generate answer → our completions response."""
    if isinstance(body, list) and body:
        body = body[0]  # the hosted Inference API wraps the answer in a list
    if not isinstance(body, dict) or not isinstance(body.get("generated_text"), str):
        raise UpstreamBadResponse("The Text Generation Inference response is missing generated_text.")
    details: dict[str, Any] = body["details"] if isinstance(body.get("details"), dict) else {}
    prefill = details.get("prefill")
    usage = shapes.usage(len(prefill) if isinstance(prefill, list) else None, details.get("generated_tokens"))
    return shapes.completions_response(
        id=None, model=model, usage=usage,
        choices=[shapes.text_choice(0, body["generated_text"],
                                    shapes.finish_reason(details.get("finish_reason"), FINISH_REASONS))],
    )


def parse_stream_event(data: Any, model: str | None, created: int) -> dict[str, Any]:
    """One `/generate_stream` event → one completions chunk (the last one with finish reason and usage)."""
    if not isinstance(data, dict):
        raise UpstreamBadResponse("The Text Generation Inference stream sent an event that is not an object.")
    if "error" in data:
        status = _ERROR_STATUS.get(str(data.get("error_type")), 502)
        raise UpstreamError(str(data["error"]), status=status)
    token: dict[str, Any] = data["token"] if isinstance(data.get("token"), dict) else {}
    text = "" if token.get("special") else str(token.get("text") or "")
    details: dict[str, Any] | None = data["details"] if isinstance(data.get("details"), dict) else None
    usage = None
    finish_reason = None
    if details is not None:
        finish_reason = shapes.finish_reason(details.get("finish_reason"), FINISH_REASONS)
        usage = shapes.usage(details.get("input_length"), details.get("generated_tokens"))
    return shapes.completions_chunk(id=None, model=model, created=created, usage=usage,
                                    choices=[shapes.text_choice(0, text, finish_reason)])


def _event_json(events: Iterator[SSEEvent]) -> Iterator[Any]:
    for event in events:
        if not event.data.strip():
            continue
        try:
            yield orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse("The Text Generation Inference stream sent an event that is not JSON.") from None


# -- the provider --------------------------------------------------------------------------------------
class HuggingFaceTGIConfig(ProviderConfig):
    fields = (
        ConfigField("hf_server_url", required=True, kind="url", help="The TGI server, e.g. http://tgi:8080"),
    )


class HuggingFaceTGIProvider(BaseProvider):
    name = "huggingface-text-generation-inference"
    display_name = DISPLAY_NAME
    config_class = HuggingFaceTGIConfig
    endpoint_types = frozenset({COMPLETIONS})
    streaming_types = frozenset({COMPLETIONS})

    def _request(self, route: str, payload: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        base = str(self.config["hf_server_url"]).rstrip("/")
        return UpstreamRequest(url=f"{base}/{route}", json=request_body(payload, stream=stream))

    def completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        return parse_generate(self.post_json(self._request("generate", payload, stream=False)), self.model_name)

    def completions_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        events = self.post_sse(self._request("generate_stream", payload, stream=True))
        model, created = self.model_name, shapes.now()
        return (parse_stream_event(data, model, created) for data in _event_json(events))
