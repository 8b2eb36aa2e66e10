"""Every provider answers in the declared shapes (providers.wire), and the OpenAPI document serves them.

The checker reads an answer as a client does (its JSON) and validates it against the pydantic models
strictly: every required key present, every value of the declared type, no key the models do not
declare. It runs on
- every recorded vendor answer (fixtures/providers/<vendor>/) through the provider's pure translation;
- every operation every registered provider declares, end to end: the view, the adapter, and a local
  server answering with the recording (the table of tests/api/test_clients_every_provider.py), plus
  the built-in mock, which has no upstream.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, get_args

import orjson
import pytest
from pydantic import BaseModel, ValidationError
from pytest_httpserver import HTTPServer

from endpoints_app.openapi import REF
from providers import (
    ai21labs,
    anthropic,
    bedrock,
    cohere,
    gemini,
    huggingface,
    mistral,
    mlflow_model_serving,
    registry,
    shapes,
    wire,
)
from providers import openai_compatible as oa
from providers import togetherai as together
from providers.registry import PROVIDER_CLASSES
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from providers.wire import CHUNK_MODELS, RESPONSE_MODELS
from serving.upstream import SSEEvent
from tests.api.test_clients_every_provider import BASE_ENV, CASES, KEY_ENV, MAX_TOKENS, Case
from tests.conftest import post_json, sse_events
from tests.fixtures import FIXTURES, payload, raw
from tests.providers.test_bedrock import CLAUDE, TITAN_EMBED
from tests.providers.test_bedrock import upstream as upstream  # a fixture: static AWS credentials, no AWS files

pytestmark = pytest.mark.django_db


# -- the checker --------------------------------------------------------------------------------------------
def check(model: type[BaseModel], output: Any) -> None:
    """Raise ValidationError unless `output`, as its JSON, is exactly a `model`: strict types, no extra key."""
    model.model_validate_json(orjson.dumps(output), strict=True, extra="forbid")


def check_all(model: type[BaseModel], outputs: Iterable[Any]) -> int:
    """Check each output; return how many there were."""
    outputs = list(outputs)
    for output in outputs:
        check(model, output)
    return len(outputs)


# -- recorded vendor streams, as the adapters receive them ----------------------------------------------------
def sse(provider: str, name: str) -> Iterator[SSEEvent]:
    """A recorded Server-Sent Events body, event by event (the `data` of each, `event:` lines dropped)."""
    for block in raw(provider, name).split("\n\n"):
        data = [line.partition(":")[2].removeprefix(" ") for line in block.splitlines() if line.startswith("data:")]
        if data:
            yield SSEEvent("\n".join(data))


def sse_json(provider: str, name: str) -> Iterator[Any]:
    return oa.sse_json(sse(provider, name))


def ndjson(provider: str, name: str) -> list[Any]:
    return [orjson.loads(line) for line in raw(provider, name).splitlines() if line.strip()]


def converse_events(name: str) -> list[tuple[str, dict[str, Any]]]:
    return [(event_type, data) for event_type, data in payload("bedrock", name)]


# -- every recorded answer through the pure translation -----------------------------------------------------------
@dataclass(frozen=True)
class Recorded:
    """A recorded vendor answer (`vendor/file`) and what the provider makes of it: one answer, or chunks."""

    vendor: str
    file: str
    model: type[BaseModel]
    translate: Callable[[], Any]
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.vendor}-{Path(self.file).stem}{f'-{self.label}' if self.label else ''}"

    def outputs(self) -> list[Any]:
        result = self.translate()
        return result if isinstance(result, list) else [result]


def answer(vendor: str, file: str, model: type[BaseModel], parse: Callable[[Any], Any], label: str = "") -> Recorded:
    return Recorded(vendor, file, model, lambda: parse(payload(vendor, file)), label)


def stream(vendor: str, file: str, model: type[BaseModel], chunks: Callable[[], Iterable[Any]],
           label: str = "") -> Recorded:
    return Recorded(vendor, file, model, lambda: list(chunks()), label)


def bedrock_completions(model_id: str) -> Callable[[Any], dict[str, Any]]:
    """The parser of the model family `model_id` names (amazon, cohere, ai21, anthropic)."""
    family = bedrock.model_family(model_id)
    return lambda body: family.parse(body, model_id)


def converse_stream(file: str) -> Callable[[], Iterable[dict[str, Any]]]:
    return lambda: bedrock.converse_stream_chunks(converse_events(file), model=CLAUDE, provider="bedrock")


M = "model-from-config"
NOW = int(time.time())

RECORDED: list[Recorded] = [
    # OpenAI's wire format: openai, azure, and the OpenAI-compatible family (groq, ollama, databricks, ...)
    answer("openai", "chat_response.json", wire.ChatResponse, lambda b: oa.parse_chat(b, "openai")),
    answer("openai", "chat_tool_call_response.json", wire.ChatResponse, lambda b: oa.parse_chat(b, "openai")),
    answer("openai", "completions_response.json", wire.CompletionsResponse, oa.parse_completions),
    answer("openai", "embeddings_response.json", wire.EmbeddingsResponse, oa.parse_embeddings),
    answer("openai", "embeddings_response.json", wire.EmbeddingsResponse,
           lambda b: shapes.base64_embeddings(oa.parse_embeddings(b)), label="base64"),
    stream("openai", "chat_stream.txt", wire.ChatChunk,
           lambda: (oa.parse_chat_chunk(d, "openai") for d in sse_json("openai", "chat_stream.txt"))),
    stream("openai", "completions_stream.txt", wire.CompletionsChunk,
           lambda: (oa.parse_completions_chunk(d) for d in sse_json("openai", "completions_stream.txt"))),
    # Anthropic
    answer("anthropic", "chat_response.json", wire.ChatResponse, lambda b: anthropic.parse_chat(b, "anthropic")),
    answer("anthropic", "chat_tool_use_response.json", wire.ChatResponse,
           lambda b: anthropic.parse_chat(b, "anthropic")),
    answer("anthropic", "complete_response.json", wire.CompletionsResponse, anthropic.parse_completions),
    stream("anthropic", "chat_stream.txt", wire.ChatChunk,
           lambda: anthropic.chat_chunks(sse_json("anthropic", "chat_stream.txt"), "anthropic")),
    stream("anthropic", "chat_tool_stream.txt", wire.ChatChunk,
           lambda: anthropic.chat_chunks(sse_json("anthropic", "chat_tool_stream.txt"), "anthropic")),
    # Gemini
    answer("gemini", "chat_response.json", wire.ChatResponse, lambda b: gemini.parse_chat(b, M, "gemini")),
    answer("gemini", "chat_function_call_response.json", wire.ChatResponse,
           lambda b: gemini.parse_chat(b, M, "gemini")),
    answer("gemini", "chat_response.json", wire.CompletionsResponse, lambda b: gemini.parse_completions(b, M),
           label="completions"),
    answer("gemini", "batch_embed_contents_response.json", wire.EmbeddingsResponse,
           lambda b: gemini.parse_embeddings(b, M)),
    answer("gemini", "embed_content_response.json", wire.EmbeddingsResponse,
           lambda b: gemini.parse_embeddings(b, M)),
    stream("gemini", "chat_stream.txt", wire.ChatChunk,
           lambda: gemini.chat_chunks(sse_json("gemini", "chat_stream.txt"), M, "gemini")),
    stream("gemini", "chat_function_call_stream.txt", wire.ChatChunk,
           lambda: gemini.chat_chunks(sse_json("gemini", "chat_function_call_stream.txt"), M, "gemini")),
    stream("gemini", "chat_stream.txt", wire.CompletionsChunk,
           lambda: gemini.completions_chunks(sse_json("gemini", "chat_stream.txt"), M), label="completions"),
    # Amazon Bedrock: Converse for chat, InvokeModel with each model family's body for completions, Titan embeddings
    *(answer("bedrock", file, wire.ChatResponse, lambda b: bedrock.parse_converse(b, CLAUDE, "bedrock"))
      for file in ("converse_response.json", "converse_reasoning_response.json", "converse_tool_use_response.json")),
    *(answer("bedrock", f"{family}_completions_response.json", wire.CompletionsResponse,
             bedrock_completions(model_id))
      for family, model_id in (("titan", "amazon.titan-text-express-v1"), ("cohere", "cohere.command-text-v14"),
                               ("ai21", "ai21.j2-ultra-v1"), ("anthropic", "anthropic.claude-v2"))),
    answer("bedrock", "titan_embeddings_response.json", wire.EmbeddingsResponse,
           lambda b: bedrock.parse_titan_embeddings([b, b], TITAN_EMBED)),
    *(stream("bedrock", file, wire.ChatChunk,
             converse_stream(file))
      for file in ("converse_stream_events.json", "converse_stream_tool_events.json")),
    # Cohere
    answer("cohere", "chat_response.json", wire.ChatResponse, lambda b: cohere.parse_chat(b, M, "cohere")),
    answer("cohere", "generate_response.json", wire.CompletionsResponse, lambda b: cohere.parse_completions(b, M)),
    answer("cohere", "embed_response.json", wire.EmbeddingsResponse, lambda b: cohere.parse_embeddings(b, M)),
    stream("cohere", "chat_stream.ndjson", wire.ChatChunk,
           lambda: cohere.chat_chunks(ndjson("cohere", "chat_stream.ndjson"), M, "cohere")),
    stream("cohere", "generate_stream.ndjson", wire.CompletionsChunk,
           lambda: cohere.completions_chunks(ndjson("cohere", "generate_stream.ndjson"), M)),
    # Mistral
    *(answer("mistral", file, wire.ChatResponse, lambda b: mistral.parse_chat(b, "mistral"))
      for file in ("chat_response.json", "chat_thinking_response.json", "chat_tool_call_response.json")),
    answer("mistral", "chat_response.json", wire.CompletionsResponse, lambda b: mistral.parse_completions(b, M),
           label="completions"),
    answer("mistral", "embeddings_response.json", wire.EmbeddingsResponse, lambda b: mistral.parse_embeddings(b, M)),
    stream("mistral", "chat_stream.txt", wire.ChatChunk,
           lambda: (mistral.parse_chat_chunk(d, "mistral") for d in sse_json("mistral", "chat_stream.txt"))),
    # TogetherAI
    *(answer("togetherai", file, wire.ChatResponse, lambda b: together.parse_chat(b, M, "togetherai"))
      for file in ("chat_response.json", "chat_tool_call_response.json")),
    answer("togetherai", "completions_response.json", wire.CompletionsResponse,
           lambda b: together.parse_completions(b, M)),
    answer("togetherai", "embeddings_response.json", wire.EmbeddingsResponse,
           lambda b: together.parse_embeddings(b, M)),
    stream("togetherai", "chat_stream.txt", wire.ChatChunk,
           lambda: (together.parse_chat_chunk(d, M, "togetherai") for d in sse_json("togetherai", "chat_stream.txt"))),
    stream("togetherai", "completions_stream.txt", wire.CompletionsChunk,
           lambda: (together.parse_completions_chunk(d, M) for d in sse_json("togetherai", "completions_stream.txt"))),
    # Hugging Face TGI
    answer("huggingface", "generate_response.json", wire.CompletionsResponse,
           lambda b: huggingface.parse_generate(b, M)),
    stream("huggingface", "generate_stream.txt", wire.CompletionsChunk,
           lambda: (huggingface.parse_stream_event(orjson.loads(e.data), M, NOW)
                    for e in sse("huggingface", "generate_stream.txt"))),
    # MLflow model serving
    answer("mlflow_model_serving", "chat_model_response.json", wire.ChatResponse,
           lambda b: mlflow_model_serving.parse_chat_answer(b, M, "mlflow-model-serving")),
    answer("mlflow_model_serving", "completions_response.json", wire.CompletionsResponse,
           lambda b: mlflow_model_serving.parse_completions(b, M)),
    answer("mlflow_model_serving", "embeddings_response.json", wire.EmbeddingsResponse,
           lambda b: mlflow_model_serving.parse_embeddings(b, M)),
    # AI21 Labs
    answer("ai21labs", "complete_response.json", wire.CompletionsResponse, lambda b: ai21labs.parse_complete(b, M)),
]

#: Recordings that are not answers: vendor error bodies (covered by each provider's tests) and a token grant.
NOT_ANSWERS = {"databricks/oauth_token_response.json"}


@pytest.mark.parametrize("recorded", [pytest.param(r, id=r.id) for r in RECORDED])
def test_every_recorded_answer_translates_into_the_declared_shapes(recorded: Recorded) -> None:
    assert check_all(recorded.model, recorded.outputs()) > 0


def test_every_recorded_answer_is_checked() -> None:
    recordings = {f"{path.parent.name}/{path.name}" for path in (FIXTURES / "providers").glob("*/*")
                  if "error" not in path.name}
    assert recordings - NOT_ANSWERS == {f"{r.vendor}/{r.file}" for r in RECORDED}


# -- every operation of every provider, end to end ------------------------------------------------------------------
MOCK_CASES = [
    Case("mock", endpoint_type, "mock-model", config={}, mount="", path="", body="", expected="", stream=streamed)
    for endpoint_type, streamed in ((CHAT, False), (COMPLETIONS, False), (EMBEDDINGS, False), (CHAT, True),
                                    (COMPLETIONS, True))
]
END_TO_END = [*CASES, *MOCK_CASES]


def _inputs(case: Case) -> dict[str, Any]:
    if case.endpoint_type == CHAT:
        return {"messages": [{"role": "user", "content": "Hi"}]}
    if case.endpoint_type == COMPLETIONS:
        return {"prompt": "Say hi", "max_tokens": MAX_TOKENS}
    return {"input": list(case.texts)}


def _invoke(client: Any, case: Case, **extra: Any) -> list[Any]:
    """The case's answers as the client receives them: the JSON body, or each chunk of the stream."""
    response = post_json(client, "/endpoints/ep/invocations",
                         {**_inputs(case), **({"stream": True} if case.stream else {}), **extra})
    assert response.status_code == 200, response.content
    if not case.stream:
        return [response.json()]
    *chunks, done = sse_events(response)
    assert done == "[DONE]"
    return chunks


@pytest.fixture
def served(case: Case, request: pytest.FixtureRequest, make_endpoint: Any, httpserver: HTTPServer,
           monkeypatch: pytest.MonkeyPatch) -> Case:
    """The case's endpoint, named `ep`; the local upstream (if any) answers once with the recording."""
    if case.provider == "bedrock":
        request.getfixturevalue("upstream")
    monkeypatch.setenv(KEY_ENV, "sk-shapes")
    monkeypatch.setenv(BASE_ENV, httpserver.url_for(case.mount))
    make_endpoint("ep", case.endpoint_type, case.provider, case.model, dict(case.config))
    if case.path:
        httpserver.expect_oneshot_request(case.path, method="POST", query_string=case.query_string).respond_with_data(
            case.body, content_type=case.content_type)
    return case


def _model(case: Case) -> type[BaseModel]:
    return CHUNK_MODELS[case.endpoint_type] if case.stream else RESPONSE_MODELS[case.endpoint_type]


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in END_TO_END])
def test_every_provider_operation_answers_in_the_declared_shapes(served: Case, client: Any) -> None:
    assert check_all(_model(served), _invoke(client, served)) > 0


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in END_TO_END
                                  if case.endpoint_type == EMBEDDINGS])
def test_base64_embeddings_answer_in_the_declared_shapes(served: Case, client: Any) -> None:
    (output,) = _invoke(client, served, encoding_format="base64")
    check(wire.EmbeddingsResponse, output)
    if not registry.get(served.provider).speaks_openai_embeddings:
        # The gateway encodes them (a recorded OpenAI-style vendor answers floats whatever it was asked).
        assert all(isinstance(item["embedding"], str) for item in output["data"])


def test_the_end_to_end_table_covers_every_operation_the_registry_declares() -> None:
    declared: set[tuple[str, str, bool]] = set()
    for dotted in PROVIDER_CLASSES:
        module_name, class_name = dotted.rsplit(".", 1)
        cls = getattr(import_module(module_name), class_name)
        declared |= {(cls.name, t, False) for t in cls.endpoint_types}
        declared |= {(cls.name, t, True) for t in cls.streaming_types}
    assert {(case.provider, case.endpoint_type, case.stream) for case in END_TO_END} == declared


# -- the checker refuses what is not declared ---------------------------------------------------------------------
def _chat() -> dict[str, Any]:
    return shapes.chat_response(
        id="c1", model="m", provider="mock", usage=shapes.usage(1, 2),
        choices=[shapes.chat_choice(0, shapes.message("hi"), "stop")],
    )


def _without(output: dict[str, Any], *path: str | int) -> dict[str, Any]:
    *parents, last = path
    node: Any = output
    for key in parents:
        node = node[key]
    del node[last]
    return output


def _with(output: dict[str, Any], value: Any, *path: str | int) -> dict[str, Any]:
    *parents, last = path
    node: Any = output
    for key in parents:
        node = node[key]
    node[last] = value
    return output


@pytest.mark.parametrize(
    ("broken", "error_type", "loc"),
    [
        pytest.param(_with(_chat(), "fp_1", "system_fingerprint"), "extra_forbidden", ("system_fingerprint",),
                     id="an-undeclared-top-level-key"),
        pytest.param(_with(_chat(), None, "choices", 0, "logprobs"), "extra_forbidden", ("choices", 0, "logprobs"),
                     id="an-undeclared-nested-key"),
        pytest.param(_with(_chat(), 0.01, "usage", "cost"), "extra_forbidden", ("usage", "cost"),
                     id="an-undeclared-usage-key"),
        pytest.param(_without(_chat(), "provider"), "missing", ("provider",), id="a-missing-required-key"),
        pytest.param(_without(_chat(), "choices", 0, "message", "refusal"), "missing",
                     ("choices", 0, "message", "refusal"), id="a-missing-nested-key"),
        pytest.param(_with(_chat(), "1727000000", "created"), "int_type", ("created",), id="a-string-for-an-int"),
        pytest.param(_with(_chat(), "COMPLETE", "choices", 0, "finish_reason"), "literal_error",
                     ("choices", 0, "finish_reason"), id="an-undeclared-finish-reason"),
    ],
)
def test_the_checker_refuses_what_the_models_do_not_declare(broken: dict[str, Any], error_type: str,
                                                            loc: tuple[str | int, ...]) -> None:
    check(wire.ChatResponse, _chat())
    with pytest.raises(ValidationError) as raised:
        check(wire.ChatResponse, broken)
    assert [(error["type"], error["loc"]) for error in raised.value.errors()] == [(error_type, loc)]


@pytest.mark.parametrize(
    ("builders_list", "declared"),
    [
        pytest.param(shapes.FINISH_REASONS, frozenset(get_args(wire.FinishReason)), id="finish-reasons"),
        pytest.param(shapes.PROMPT_TOKENS_DETAILS, tuple(wire.PromptTokensDetails.model_fields),
                     id="prompt-tokens-details"),
        pytest.param(shapes.COMPLETION_TOKENS_DETAILS, tuple(wire.CompletionTokensDetails.model_fields),
                     id="completion-tokens-details"),
    ],
)
def test_the_builders_know_what_the_models_declare(builders_list: Any, declared: Any) -> None:
    assert builders_list == declared


def test_the_builders_do_not_import_pydantic() -> None:
    """A config reload's `load_config` needs the builders (through the registry), not the models."""
    code = "import sys, providers.registry; print('pydantic' in sys.modules, 'providers.wire' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["False", "False"]


# -- the OpenAPI document serves exactly these models ---------------------------------------------------------------
def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def test_the_openapi_document_declares_the_responses_with_exactly_these_models(client: Any,
                                                                                make_endpoint: Any) -> None:
    for name, endpoint_type in (("chat", CHAT), ("completions", COMPLETIONS), ("embeddings", EMBEDDINGS)):
        make_endpoint(name, endpoint_type, "mock", f"m-{name}")
    document = client.get("/openapi.json").json()
    paths, components = document["paths"], document["components"]["schemas"]

    routes = {"/v1/chat/completions": CHAT, "/v1/completions": COMPLETIONS, "/v1/embeddings": EMBEDDINGS,
              "/endpoints/chat/invocations": CHAT, "/endpoints/completions/invocations": COMPLETIONS,
              "/endpoints/embeddings/invocations": EMBEDDINGS}
    for path, endpoint_type in routes.items():
        content = paths[path]["post"]["responses"]["200"]["content"]
        assert content["application/json"]["schema"] == _ref(RESPONSE_MODELS[endpoint_type]), path
        if endpoint_type in CHUNK_MODELS:
            assert content["text/event-stream"]["x-event-data"] == _ref(CHUNK_MODELS[endpoint_type]), path
        else:
            assert "text/event-stream" not in content, path
    any_endpoint = paths["/endpoints/{name}/invocations"]["post"]["responses"]["200"]["content"]
    assert any_endpoint["application/json"]["schema"] == {"oneOf": [_ref(m) for m in RESPONSE_MODELS.values()]}
    assert any_endpoint["text/event-stream"]["x-event-data"] == {"oneOf": [_ref(m) for m in CHUNK_MODELS.values()]}

    for model in [*RESPONSE_MODELS.values(), *CHUNK_MODELS.values()]:
        schema = model.model_json_schema(ref_template=REF, mode="serialization")
        for name, used in schema.pop("$defs", {}).items():
            assert components[name] == used, name
        assert components[model.__name__] == schema, model.__name__
