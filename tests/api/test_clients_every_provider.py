"""The real clients, unmodified, against a live server, for every provider in the registry: MLflow's
deployments client and the `openai` SDK call each endpoint type a provider declares, and the SDK
streams each type it declares streamable. The upstream is a local server answering with the vendor's
recorded payloads (fixtures/providers/<provider>/), so each case runs the whole path: client → view →
adapter → HTTP to the "vendor" → parse → client.

`mock` is covered by tests/api/test_clients.py; the retired `palm` and `mosaicml` are refused at load
time (tests/providers/test_retired.py). The last test checks that the table below covers everything
else the registry declares, so a new provider or a new endpoint type cannot go untested here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any, cast

import openai
import pytest
from mlflow.deployments import get_deploy_client
from pytest_httpserver import HTTPServer

from providers import bedrock
from providers.registry import PROVIDER_CLASSES
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.fixtures import payload, raw
from tests.providers.test_bedrock import CLAUDE, KEYS, TITAN_EMBED, TITAN_TEXT, event_stream
from tests.providers.test_bedrock import upstream as upstream  # a fixture: static AWS credentials, no AWS files

pytestmark = [pytest.mark.django_db(transaction=True)]

COVERED_ELSEWHERE = {"mock", "palm", "mosaicml"}
JSON = "application/json"
SSE = "text/event-stream"
NDJSON = "application/stream+json"
HI = [{"role": "user", "content": "Hi"}]
PROMPT = "Say hi"
MAX_TOKENS = 20  # TogetherAI refuses completions without it; every other provider maps it
KEY_ENV = "EVERY_PROVIDER_KEY"
BASE_ENV = "EVERY_PROVIDER_BASE"  # set per case to the local server's URL under `Case.mount`
KEY, BASE = f"${KEY_ENV}", f"${BASE_ENV}"


@dataclass(frozen=True)
class Case:
    """One provider and endpoint type: how the endpoint is configured, what the upstream is asked and
    answers, and what the client must see."""

    provider: str
    endpoint_type: str
    model: str
    config: Mapping[str, Any]
    #: The path under the local server that plays the vendor's base URL ($EVERY_PROVIDER_BASE).
    mount: str
    path: str
    body: str | bytes
    #: The text of the first choice, or the vectors of an embeddings response.
    expected: str | list[list[float]]
    content_type: str = JSON
    query_string: str | None = None
    stream: bool = False
    #: What is embedded (Bedrock's Titan takes one input per upstream request).
    texts: tuple[str, ...] = ("a", "b")

    @property
    def id(self) -> str:
        return f"{self.provider}-{self.endpoint_type.rsplit('/', 1)[1]}{'-stream' if self.stream else ''}"


def _vectors(provider: str, name: str) -> list[list[float]]:
    return [item["embedding"] for item in payload(provider, name)["data"]]


def _openai_family(provider: str, config: Mapping[str, Any], mount: str = "/v1", path: str = "/v1",
                   types: tuple[str, ...] = (CHAT, COMPLETIONS, EMBEDDINGS),
                   streams: tuple[str, ...] = (CHAT, COMPLETIONS), query_string: str | None = None) -> list[Case]:
    """A provider speaking OpenAI's wire format, answered with OpenAI's recordings."""
    model = f"{provider}-model"
    calls = {CHAT: "chat/completions", COMPLETIONS: "completions", EMBEDDINGS: "embeddings"}
    answers: dict[str, tuple[str, str | list[list[float]]]] = {
        CHAT: ("chat_response.json", "Hello! How can I help?"),
        COMPLETIONS: ("completions_response.json", "\n\nThis is indeed a test"),
        EMBEDDINGS: ("embeddings_response.json", _vectors("openai", "embeddings_response.json")),
    }
    streamed = {CHAT: ("chat_stream.txt", "Hello"), COMPLETIONS: ("completions_stream.txt", "This is")}
    cases = [Case(provider, t, model, config, mount, f"{path}/{calls[t]}", raw("openai", answers[t][0]),
                  answers[t][1], query_string=query_string) for t in types]
    cases += [Case(provider, t, model, config, mount, f"{path}/{calls[t]}", raw("openai", streamed[t][0]),
                   streamed[t][1], SSE, query_string, stream=True) for t in streams]
    return cases


OPENAI_CONFIG = {"openai_api_key": KEY, "openai_api_base": BASE}
AZURE_CONFIG = {**OPENAI_CONFIG, "openai_deployment_name": "gpt4o-prod", "openai_api_version": "2024-06-01"}
COMPATIBLE_CONFIG = {"api_key": KEY, "api_base": BASE}
ANTHROPIC_CONFIG = {"anthropic_api_key": KEY, "anthropic_api_base": BASE}
GEMINI_CONFIG = {"gemini_api_key": KEY, "gemini_api_base": BASE}
GEMINI = "/v1beta/models/gemini-2.5-flash"
BEDROCK_CONFIG = {"aws_config": KEYS}  # the Bedrock tests' static credentials; its URL is $TEST_BEDROCK_URL
COHERE_CONFIG = {"cohere_api_key": KEY, "cohere_api_base": BASE}
MISTRAL_CONFIG = {"mistral_api_key": KEY, "mistral_api_base": BASE}
TOGETHER_CONFIG = {"togetherai_api_key": KEY, "togetherai_api_base": BASE}
TOGETHER_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
SERVING = "mlflow-model-serving"
TGI = "huggingface-text-generation-inference"

CASES: list[Case] = [
    *_openai_family("openai", OPENAI_CONFIG, streams=(CHAT, COMPLETIONS)),
    *_openai_family("azure", AZURE_CONFIG, mount="", path="/openai/deployments/gpt4o-prod",
                    query_string="api-version=2024-06-01"),
    Case("anthropic", CHAT, "claude-sonnet-4-20250514", ANTHROPIC_CONFIG, "/v1", "/v1/messages",
         raw("anthropic", "chat_response.json"), "Hello! How can I help you today?"),
    Case("anthropic", COMPLETIONS, "claude-2.1", ANTHROPIC_CONFIG, "/v1", "/v1/complete",
         raw("anthropic", "complete_response.json"), " Hello! My name is Claude."),
    Case("anthropic", CHAT, "claude-sonnet-4-20250514", ANTHROPIC_CONFIG, "/v1", "/v1/messages",
         raw("anthropic", "chat_stream.txt"), "Hello!", SSE, stream=True),
    Case("gemini", CHAT, "gemini-2.5-flash", GEMINI_CONFIG, "/v1beta", f"{GEMINI}:generateContent",
         raw("gemini", "chat_response.json"), "Blue is often seen as a calming color."),
    Case("gemini", COMPLETIONS, "gemini-2.5-flash", GEMINI_CONFIG, "/v1beta", f"{GEMINI}:generateContent",
         raw("gemini", "chat_response.json"), "Blue is often seen as a calming color."),
    Case("gemini", EMBEDDINGS, "text-embedding-004", GEMINI_CONFIG, "/v1beta",
         "/v1beta/models/text-embedding-004:batchEmbedContents", raw("gemini", "batch_embed_contents_response.json"),
         [e["values"] for e in payload("gemini", "batch_embed_contents_response.json")["embeddings"]]),
    Case("gemini", CHAT, "gemini-2.5-flash", GEMINI_CONFIG, "/v1beta", f"{GEMINI}:streamGenerateContent",
         raw("gemini", "chat_stream.txt"), "The capital is Paris.", SSE, "alt=sse", stream=True),
    Case("gemini", COMPLETIONS, "gemini-2.5-flash", GEMINI_CONFIG, "/v1beta", f"{GEMINI}:streamGenerateContent",
         raw("gemini", "chat_stream.txt"), "The capital is Paris.", SSE, "alt=sse", stream=True),
    Case("bedrock", CHAT, CLAUDE, BEDROCK_CONFIG, "", f"/model/{CLAUDE}/converse",
         raw("bedrock", "converse_response.json"), "Hello from Bedrock!"),
    Case("bedrock", COMPLETIONS, TITAN_TEXT, BEDROCK_CONFIG, "", f"/model/{TITAN_TEXT}/invoke",
         raw("bedrock", "titan_completions_response.json"), "\nThis is a test"),
    Case("bedrock", EMBEDDINGS, TITAN_EMBED, BEDROCK_CONFIG, "", f"/model/{TITAN_EMBED}/invoke",
         raw("bedrock", "titan_embeddings_response.json"),
         [payload("bedrock", "titan_embeddings_response.json")["embedding"]], texts=("a",)),
    Case("bedrock", CHAT, CLAUDE, BEDROCK_CONFIG, "", f"/model/{CLAUDE}/converse-stream",
         event_stream("converse_stream_events.json"), "Hello from Bedrock!", bedrock.EVENT_STREAM, stream=True),
    Case("cohere", CHAT, "command-r-plus", COHERE_CONFIG, "/v1", "/v1/chat", raw("cohere", "chat_response.json"),
         "LLMs are neural networks trained on large amounts of text."),
    Case("cohere", COMPLETIONS, "command", COHERE_CONFIG, "/v1", "/v1/generate",
         raw("cohere", "generate_response.json"), " Once upon a time"),
    Case("cohere", EMBEDDINGS, "embed-english-v3.0", COHERE_CONFIG, "/v1", "/v1/embed",
         raw("cohere", "embed_response.json"), payload("cohere", "embed_response.json")["embeddings"]),
    Case("cohere", CHAT, "command-r-plus", COHERE_CONFIG, "/v1", "/v1/chat", raw("cohere", "chat_stream.ndjson"),
         "How are you", NDJSON, stream=True),
    Case("cohere", COMPLETIONS, "command", COHERE_CONFIG, "/v1", "/v1/generate",
         raw("cohere", "generate_stream.ndjson"), " Hi there", NDJSON, stream=True),
    Case("mistral", CHAT, "mistral-small-latest", MISTRAL_CONFIG, "/v1", "/v1/chat/completions",
         raw("mistral", "chat_response.json"), "Bonjour! Comment puis-je vous aider?"),
    Case("mistral", COMPLETIONS, "mistral-small-latest", MISTRAL_CONFIG, "/v1", "/v1/chat/completions",
         raw("mistral", "chat_response.json"), "Bonjour! Comment puis-je vous aider?"),
    Case("mistral", EMBEDDINGS, "mistral-embed", MISTRAL_CONFIG, "/v1", "/v1/embeddings",
         raw("mistral", "embeddings_response.json"), _vectors("mistral", "embeddings_response.json")),
    Case("mistral", CHAT, "mistral-small-latest", MISTRAL_CONFIG, "/v1", "/v1/chat/completions",
         raw("mistral", "chat_stream.txt"), "Bonjour", SSE, stream=True),
    Case("togetherai", CHAT, TOGETHER_MODEL, TOGETHER_CONFIG, "/v1", "/v1/chat/completions",
         raw("togetherai", "chat_response.json"), "Paris is the capital."),
    Case("togetherai", COMPLETIONS, "mistralai/Mixtral-8x7B-v0.1", TOGETHER_CONFIG, "/v1", "/v1/completions",
         raw("togetherai", "completions_response.json"), "Example text."),
    Case("togetherai", EMBEDDINGS, "togethercomputer/m2-bert-80M-8k-retrieval", TOGETHER_CONFIG, "/v1",
         "/v1/embeddings", raw("togetherai", "embeddings_response.json"),
         _vectors("togetherai", "embeddings_response.json")),
    Case("togetherai", CHAT, TOGETHER_MODEL, TOGETHER_CONFIG, "/v1", "/v1/chat/completions",
         raw("togetherai", "chat_stream.txt"), " The City Paris", SSE, stream=True),
    Case("togetherai", COMPLETIONS, "mistralai/Mixtral-8x7B-v0.1", TOGETHER_CONFIG, "/v1", "/v1/completions",
         raw("togetherai", "completions_stream.txt"), '    "":', SSE, stream=True),
    Case(TGI, COMPLETIONS, "mistral-7b", {"hf_server_url": BASE}, "/tgi", "/tgi/generate",
         raw("huggingface", "generate_response.json"), " Paris, the capital of France."),
    Case(TGI, COMPLETIONS, "mistral-7b", {"hf_server_url": BASE}, "/tgi", "/tgi/generate_stream",
         raw("huggingface", "generate_stream.txt"), " Paris.", SSE, stream=True),
    Case(SERVING, CHAT, "my-chat-model", {"model_server_url": BASE}, "/model", "/model/invocations",
         raw("mlflow_model_serving", "chat_model_response.json"), "You said your name is Ada."),
    Case(SERVING, COMPLETIONS, "my-text-model", {"model_server_url": BASE}, "/model", "/model/invocations",
         raw("mlflow_model_serving", "completions_response.json"), "The capital of France is Paris."),
    Case(SERVING, EMBEDDINGS, "my-embedder", {"model_server_url": BASE}, "/model", "/model/invocations",
         raw("mlflow_model_serving", "embeddings_response.json"),
         payload("mlflow_model_serving", "embeddings_response.json")["predictions"]),
    Case("ai21labs", COMPLETIONS, "j2-ultra", {"ai21labs_api_key": KEY, "ai21labs_api_base": BASE}, "/studio/v1",
         "/studio/v1/j2-ultra/complete", raw("ai21labs", "complete_response.json"), " Paris."),
    *_openai_family("openai-compatible", COMPATIBLE_CONFIG),
    *_openai_family("groq", COMPATIBLE_CONFIG, types=(CHAT,), streams=(CHAT,)),
    *_openai_family("deepseek", COMPATIBLE_CONFIG, types=(CHAT,), streams=(CHAT,)),
    *_openai_family("xai", COMPATIBLE_CONFIG, types=(CHAT, COMPLETIONS), streams=(CHAT,)),
    *_openai_family("openrouter", COMPATIBLE_CONFIG),
    *_openai_family("ollama", {"api_base": BASE}),
    *_openai_family("databricks", {"host": BASE, "token": KEY}, mount="", path="/serving-endpoints"),
]


def _params(stream: bool) -> list[Any]:
    return [pytest.param(case, id=case.id) for case in CASES if case.stream == stream]


@pytest.fixture
def gateway(case: Case, request: pytest.FixtureRequest, live_server: Any, make_endpoint: Any,
            httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The case's endpoint, named `ep`, served live; the upstream answers once with the recording."""
    if case.provider == "bedrock":
        request.getfixturevalue("upstream")
    monkeypatch.setenv(KEY_ENV, "sk-every-provider")
    monkeypatch.setenv(BASE_ENV, httpserver.url_for(case.mount))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    make_endpoint("ep", case.endpoint_type, case.provider, case.model, dict(case.config))
    httpserver.expect_oneshot_request(case.path, method="POST", query_string=case.query_string).respond_with_data(
        case.body, content_type=case.content_type)
    return str(live_server.url)


def _one_upstream_call(httpserver: HTTPServer, case: Case) -> None:
    httpserver.check_assertions()
    assert len(httpserver.log) == 1, [r.full_path for r, _ in httpserver.log]
    sent = httpserver.log[0][0]
    assert (sent.path, sent.query_string.decode() or None) == (case.path, case.query_string)


def _inputs(case: Case) -> dict[str, Any]:
    if case.endpoint_type == CHAT:
        return {"messages": HI}
    if case.endpoint_type == COMPLETIONS:
        return {"prompt": PROMPT, "max_tokens": MAX_TOKENS}
    return {"input": list(case.texts)}


# -- MLflow's deployments client ----------------------------------------------------------------------------
@pytest.mark.parametrize("case", _params(stream=False))
def test_mlflow_client_predicts(case: Case, gateway: str, httpserver: HTTPServer) -> None:
    result = get_deploy_client(gateway).predict(endpoint="ep", inputs=_inputs(case))
    _one_upstream_call(httpserver, case)
    if case.endpoint_type == EMBEDDINGS:
        assert {"object", "data", "usage"} <= result.keys()
        assert [item["embedding"] for item in result["data"]] == case.expected
        return
    assert {"object", "choices", "usage"} <= result.keys()
    choice = result["choices"][0]
    assert (choice["message"]["content"] if case.endpoint_type == CHAT else choice["text"]) == case.expected


# -- the openai SDK ---------------------------------------------------------------------------------------------
@pytest.fixture
def sdk(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("case", _params(stream=False))
def test_openai_sdk_calls(case: Case, sdk: openai.OpenAI, httpserver: HTTPServer) -> None:
    if case.endpoint_type == CHAT:
        chat = sdk.chat.completions.create(model="ep", messages=cast(Any, HI))
        assert chat.object == "chat.completion"
        assert chat.choices[0].message.content == case.expected
    elif case.endpoint_type == COMPLETIONS:
        completion = sdk.completions.create(model="ep", prompt=PROMPT, max_tokens=MAX_TOKENS)
        assert completion.object == "text_completion"
        assert completion.choices[0].text == case.expected
    else:
        embeddings = sdk.embeddings.create(model="ep", input=list(case.texts), encoding_format="float")
        assert embeddings.object == "list"
        assert [item.embedding for item in embeddings.data] == case.expected
    _one_upstream_call(httpserver, case)


@pytest.mark.parametrize("case", _params(stream=True))
def test_openai_sdk_streams(case: Case, sdk: openai.OpenAI, httpserver: HTTPServer) -> None:
    if case.endpoint_type == CHAT:
        chat_chunks = list(sdk.chat.completions.create(model="ep", messages=cast(Any, HI), stream=True))
        assert {c.object for c in chat_chunks} == {"chat.completion.chunk"}
        text = "".join(c.choices[0].delta.content or "" for c in chat_chunks if c.choices)
    else:
        chunks = list(sdk.completions.create(model="ep", prompt=PROMPT, max_tokens=MAX_TOKENS, stream=True))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == case.expected
    _one_upstream_call(httpserver, case)


# -- the table covers the registry ----------------------------------------------------------------------------
def _declared() -> set[tuple[str, str, bool]]:
    declared: set[tuple[str, str, bool]] = set()
    for dotted in PROVIDER_CLASSES:
        module_name, class_name = dotted.rsplit(".", 1)
        cls = getattr(import_module(module_name), class_name)
        if cls.name not in COVERED_ELSEWHERE:
            declared |= {(cls.name, t, False) for t in cls.endpoint_types}
            declared |= {(cls.name, t, True) for t in cls.streaming_types}
    return declared


def test_the_table_covers_every_provider_type_and_stream_the_registry_declares() -> None:
    cases = [(case.provider, case.endpoint_type, case.stream) for case in CASES]
    assert len(cases) == len(set(cases)), "a provider/type appears twice"
    assert set(cases) == _declared()
