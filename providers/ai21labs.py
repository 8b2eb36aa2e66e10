"""AI21 Labs (`provider: ai21labs`): completions with the Jurassic-2 models (§2.11).

`POST {ai21labs_api_base}/{model}/complete` with a Bearer key. Gateway names map to AI21's
(`stop`→`stopSequences`, `n`→`numResults`, `max_tokens`→`maxTokens`, and, unlike MLflow, `top_p`→
`topP`); the native names are refused (422); streaming is not offered (501, as for every provider
that does not declare it). Only j2-ultra, j2-mid and j2-light are accepted, and that is checked
when the endpoint is loaded rather than on the first request. Usage is counted from the token lists
AI21 returns (MLflow reports none).
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from providers import shapes
from providers.base import BaseProvider, drop_none, reject_native_names, rename_keys
from providers.config import ConfigField, ConfigValidationError, ProviderConfig
from providers.errors import UpstreamBadResponse
from providers.shapes import COMPLETIONS
from serving.upstream import UpstreamRequest

MODELS = ("j2-ultra", "j2-mid", "j2-light")
NAME_MAP = {"stop": "stopSequences", "n": "numResults", "max_tokens": "maxTokens", "top_p": "topP"}
# AI21's finishReason.reason → OpenAI's (MLflow passes AI21's on as they are).
FINISH_REASONS = {"endoftext": "stop", "stop": "stop", "length": "length"}


# -- pure translation -------------------------------------------------------------------------------
def request_body(payload: dict[str, Any]) -> dict[str, Any]:
    """Our completions request → AI21's complete body. Raises InvalidParameter (422)."""
    reject_native_names(payload, NAME_MAP)
    body = rename_keys(drop_none(payload), NAME_MAP)
    body.pop("stream", None)
    return body


def _token_count(part: Any) -> int | None:
    tokens = part.get("tokens") if isinstance(part, dict) else None
    return len(tokens) if isinstance(tokens, list) else None


def parse_complete(body: Any, model: str | None) -> dict[str, Any]:
    """AI21's complete answer → our completions response."""
    try:
        completions = body["completions"]
        choices = [
            shapes.text_choice(index, item["data"]["text"],
                               shapes.finish_reason((item.get("finishReason") or {}).get("reason"), FINISH_REASONS))
            for index, item in enumerate(completions)
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The AI21 Labs response is missing {exc}.") from None
    generated = [_token_count(item["data"]) for item in completions]
    completion_tokens = sum(n for n in generated if n is not None) if generated and None not in generated else None
    usage = shapes.usage(_token_count(body.get("prompt")), completion_tokens)
    return shapes.completions_response(id=body.get("id"), model=model, choices=choices, usage=usage)


# -- the provider --------------------------------------------------------------------------------------
class AI21LabsConfig(ProviderConfig):
    fields = (
        ConfigField("ai21labs_api_key", required=True, kind="secret", help="API key ($ENV, file path or literal)"),
        ConfigField("ai21labs_api_base", kind="url", default="https://api.ai21.com/studio/v1"),
    )


class AI21LabsProvider(BaseProvider):
    name = "ai21labs"
    display_name = "AI21 Labs"
    config_class = AI21LabsConfig
    endpoint_types = frozenset({COMPLETIONS})

    @classmethod
    def check_endpoint(cls, endpoint_type: str, model_name: str | None) -> None:
        super().check_endpoint(endpoint_type, model_name)
        if model_name not in MODELS:
            raise ConfigValidationError(
                "model.name",
                f"An unsupported AI21 Labs model was specified: {model_name!r}. Use one of {', '.join(MODELS)}.",
            )

    def error_message(self, body: Any) -> Any:
        # AI21 reports errors as {"detail": "..."}.
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            return body["detail"]
        return super().error_message(body)

    def completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        config = self.config
        base = str(config["ai21labs_api_base"]).rstrip("/")
        request = UpstreamRequest(
            url=f"{base}/{quote(str(self.model_name), safe='')}/complete",
            headers={"Authorization": f"Bearer {config['ai21labs_api_key']}"},
            json=request_body(payload),
        )
        return parse_complete(self.post_json(request), self.model_name)
