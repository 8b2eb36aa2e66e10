"""Amazon Bedrock: pure translation tables (Converse, ConverseStream events, the InvokeModel families,
Titan embeddings, the config shapes), then the full path against a local server speaking Bedrock's
wire format: SigV4 or Bearer auth, JSON bodies and AWS event streams (view → adapter → HTTP → parse)."""
from __future__ import annotations

import binascii
import re
import struct
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from endpoints_app.validation import EntryError, validate_endpoint
from providers import bedrock
from providers.errors import InvalidParameter, UpstreamBadResponse, UpstreamError
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from serving import runtime
from tests.conftest import post_json, sse_events
from tests.fixtures import payload

pytestmark = pytest.mark.django_db

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN_TEXT = "amazon.titan-text-express-v1"
TITAN_EMBED = "amazon.titan-embed-text-v2:0"
SIGV4 = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<akid>[A-Z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/bedrock/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=[0-9a-f]{64}$"
)


# -- an AWS event-stream encoder (test side; the gateway decodes with botocore) ---------------------------
def frame(headers: dict[str, str], body: bytes) -> bytes:
    """One event-stream message: prelude (lengths + CRC), string headers, payload, message CRC."""
    encoded = b"".join(bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
                       for name, value in headers.items())
    prelude = struct.pack(">II", 16 + len(encoded) + len(body), len(encoded))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + encoded + body
    return message + struct.pack(">I", binascii.crc32(message))


def event_frame(event_type: str, data: dict[str, Any]) -> bytes:
    return frame({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
                 orjson.dumps(data))


def exception_frame(exception_type: str, message: str) -> bytes:
    return frame({":exception-type": exception_type, ":content-type": "application/json",
                  ":message-type": "exception"}, orjson.dumps({"message": message}))


def event_stream(name: str) -> bytes:
    return b"".join(event_frame(event_type, data) for event_type, data in payload("bedrock", name))


def split(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i:i + size] for i in range(0, len(data), size))


# -- pure: Converse requests ----------------------------------------------------------------------------
TOOL = {"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}

ADD_PARAMETERS = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                  "required": ["a", "b"]}
ADD_SPEC = {"toolSpec": {"name": "add", "description": "Add two integers.", "inputSchema": {"json": ADD_PARAMETERS}}}


def call(call_id: str, arguments: str, name: str = "add") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.mark.parametrize(
    ("request_payload", "expected"),
    [
        pytest.param(
            {"messages": [{"role": "system", "content": "You are helpful"}, {"role": "user", "content": "Hello"}],
             "n": 1},
            {"system": [{"text": "You are helpful"}], "messages": [{"role": "user", "content": [{"text": "Hello"}]}]},
            id="system-prompt-and-n-1",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": "Hi"}], "temperature": 1.5, "top_p": 0.9, "max_tokens": 100,
             "stop": ["END"], "user": "u1", "presence_penalty": 0.5},
            {"messages": [{"role": "user", "content": [{"text": "Hi"}]}],
             "inferenceConfig": {"temperature": 1.5, "topP": 0.9, "maxTokens": 100, "stopSequences": ["END"]}},
            id="inference-config-unscaled-and-unknown-openai-fields-not-sent",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 64, "top_k": 5,
             "custom_inputs": {"thinking": {"type": "enabled", "budget_tokens": 1024}},
             "guardrailConfig": {"guardrailIdentifier": "gr-1", "guardrailVersion": "1"}},
            {"messages": [{"role": "user", "content": [{"text": "Hi"}]}], "inferenceConfig": {"maxTokens": 64},
             "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 1024}, "top_k": 5},
             "guardrailConfig": {"guardrailIdentifier": "gr-1", "guardrailVersion": "1"}},
            id="model-specific-fields-and-converse-members",
        ),
        pytest.param(
            {"messages": [
                {"role": "user", "content": "Compute both sums"},
                {"role": "assistant", "content": None,
                 "tool_calls": [call("t1", '{"a": 17, "b": 25}'), call("t2", '{"a": 10, "b": 5}')]},
                {"role": "tool", "tool_call_id": "t1", "content": "42"},
                {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "15"}]},
                {"role": "user", "content": "Thanks; now explain."},
            ], "tools": [TOOL], "tool_choice": "required"},
            {"messages": [
                {"role": "user", "content": [{"text": "Compute both sums"}]},
                {"role": "assistant", "content": [
                    {"toolUse": {"toolUseId": "t1", "name": "add", "input": {"a": 17, "b": 25}}},
                    {"toolUse": {"toolUseId": "t2", "name": "add", "input": {"a": 10, "b": 5}}}]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "t1", "content": [{"text": "42"}]}},
                    {"toolResult": {"toolUseId": "t2", "content": [{"text": "15"}]}},
                    {"text": "Thanks; now explain."}]},
            ], "toolConfig": {"tools": [ADD_SPEC], "toolChoice": {"any": {}}}},
            id="tool-calls-become-toolUse-and-tool-results-one-user-turn",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": "x"}], "tools": [TOOL],
             "tool_choice": {"type": "function", "function": {"name": "add"}}},
            {"messages": [{"role": "user", "content": [{"text": "x"}]}],
             "toolConfig": {"tools": [ADD_SPEC], "toolChoice": {"tool": {"name": "add"}}}},
            id="named-tool-choice",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": "x"}], "tools": [TOOL], "tool_choice": "none"},
            {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
            id="tool-choice-none-sends-no-tools",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]},
            {"messages": [{"role": "user", "content": [
                {"text": "What is this?"}, {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}]}]},
            id="data-url-images",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": "x"}],
             "response_format": {"type": "json_schema",
                                 "json_schema": {"name": "answer", "schema": {"type": "object"}}}},
            {"messages": [{"role": "user", "content": [{"text": "x"}]}],
             "outputConfig": {"textFormat": {"type": "json_schema", "structure": {
                 "jsonSchema": {"schema": '{"type": "object"}', "name": "answer"}}}}},
            id="json-schema-response-format",
        ),
    ],
)
def test_it_builds_the_converse_body(request_payload: dict[str, Any], expected: dict[str, Any]) -> None:
    assert bedrock.converse_request(request_payload) == expected


@pytest.mark.parametrize(
    ("request_payload", "message"),
    [
        ({"messages": [{"role": "user", "content": "x"}], "n": 2},
         "'n' must be '1' for the Amazon Bedrock provider. Received value: '2'."),
        ({"messages": [{"role": "assistant", "tool_calls": [call("bad", "not-json")]}]},
         "Invalid assistant tool call arguments: not valid JSON (tool_call_id=bad, tool_name=add)."),
        ({"messages": [{"role": "assistant", "tool_calls": [call("blank", "   ")]}]},
         "Invalid assistant tool call arguments: not valid JSON (tool_call_id=blank, tool_name=add)."),
        ({"messages": [{"role": "tool", "content": "42"}]}, "A tool message needs a tool_call_id for Amazon Bedrock."),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
         "Amazon Bedrock takes images as base64 data URLs (data:image/png|jpeg|gif|webp;base64,...)."),
        ({"messages": [{"role": "user", "content": "x"}],
          "tools": [{"type": "uc_function", "uc_function": {"name": "f"}}]},
         "Amazon Bedrock supports only function tools, got 'uc_function'."),
    ],
)
def test_it_refuses_what_converse_cannot_take(request_payload: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        bedrock.converse_request(request_payload)
    assert caught.value.status == 422
    assert caught.value.detail == message


# -- pure: Converse responses and stream events ----------------------------------------------------------
@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("tool_use", "tool_calls"), ("max_tokens", "length"),
     ("model_context_window_exceeded", "length"), ("content_filtered", "content_filter"),
     ("guardrail_intervened", "content_filter"), ("malformed_model_output", "stop"), (None, "stop")],
)
def test_it_maps_stop_reasons(stop_reason: str | None, expected: str) -> None:
    assert bedrock.finish_reason(stop_reason) == expected


def test_it_maps_a_converse_response() -> None:
    out = bedrock.parse_converse(payload("bedrock", "converse_response.json"), CLAUDE, "bedrock")
    out.pop("created")
    assert out == {
        "id": None, "object": "chat.completion", "model": CLAUDE, "provider": "bedrock",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "Hello from Bedrock!", "tool_calls": None, "refusal": None}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
    }


def test_it_maps_tool_use_and_counts_cache_reads_in_the_prompt() -> None:
    out = bedrock.parse_converse(payload("bedrock", "converse_tool_use_response.json"), CLAUDE, "bedrock")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me add those."
    assert choice["message"]["tool_calls"] == [
        {"id": "tooluse_abc123", "type": "function", "function": {"name": "add", "arguments": '{"a": 17, "b": 25}'}}]
    assert out["usage"] == {"prompt_tokens": 130, "completion_tokens": 10, "total_tokens": 140,
                            "prompt_tokens_details": {"cached_tokens": 100}}


def test_it_returns_reasoning_as_parts_before_the_text() -> None:
    out = bedrock.parse_converse(payload("bedrock", "converse_reasoning_response.json"), CLAUDE, "bedrock")
    assert out["choices"][0]["message"]["content"] == [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "The user greets me."}],
         "signature": "sig-1"},
        {"type": "text", "text": "Hello!"},
    ]
    assert out["usage"] == {"prompt_tokens": 17, "completion_tokens": 30, "total_tokens": 47,
                            "cache_creation_input_tokens": 5}


def test_it_turns_stream_events_into_chunks() -> None:
    events = [tuple(e) for e in payload("bedrock", "converse_stream_events.json")]
    chunks = list(bedrock.converse_stream_chunks(events, model=CLAUDE, provider="bedrock"))
    assert [c["choices"][0]["delta"]["content"] for c in chunks[:2]] == ["Hello", " from Bedrock!"]
    assert chunks[2]["choices"] == [{"index": 0, "finish_reason": "stop",
                                     "delta": {"role": None, "content": None, "tool_calls": None}}]
    assert chunks[3]["choices"] == []
    assert chunks[3]["usage"] == {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {CLAUDE}
    assert len(chunks) == 4


def test_it_streams_tool_calls_numbered_in_order() -> None:
    events = [tuple(e) for e in payload("bedrock", "converse_stream_tool_events.json")]
    chunks = list(bedrock.converse_stream_chunks(events, model=CLAUDE, provider="bedrock"))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"] for d in deltas if d["tool_calls"]]
    assert calls == [
        [{"index": 0, "id": "tooluse_1", "type": "function", "function": {"name": "add", "arguments": ""}}],
        [{"index": 0, "id": None, "type": None, "function": {"name": None, "arguments": '{"a": 17,'}}],
        [{"index": 0, "id": None, "type": None, "function": {"name": None, "arguments": ' "b": 25}'}}],
        [{"index": 1, "id": "tooluse_2", "type": "function", "function": {"name": "mul", "arguments": ""}}],
        [{"index": 1, "id": None, "type": None, "function": {"name": None, "arguments": "{}"}}],
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("size", [1, 7, 37, 4096])
def test_it_decodes_event_stream_frames_split_anywhere(size: int) -> None:
    data = event_stream("converse_stream_events.json")
    events = list(bedrock.decode_event_stream(split(data, size)))
    assert [e[0] for e in events] == ["messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop",
                                      "messageStop", "metadata"]
    assert events[1][1]["delta"] == {"text": "Hello"}


@pytest.mark.parametrize(
    ("exception_type", "status"),
    [("throttlingException", 429), ("validationException", 400), ("modelStreamErrorException", 424),
     ("serviceUnavailableException", 503), ("internalServerException", 500), ("somethingNewException", 502)],
)
def test_an_exception_frame_raises_with_its_status(exception_type: str, status: int) -> None:
    data = event_frame("messageStart", {"role": "assistant"}) + exception_frame(exception_type, "Slow down.")
    events = bedrock.decode_event_stream([data])
    assert next(events) == ("messageStart", {"role": "assistant"})
    with pytest.raises(UpstreamError) as caught:
        next(events)
    assert caught.value.status == status
    assert caught.value.detail == f"{exception_type} while streaming: Slow down."


def test_an_error_frame_raises_from_its_headers() -> None:
    headers = {":error-code": "throttlingException", ":error-message": "Rate exceeded.", ":message-type": "error"}
    data = frame(headers, b"")
    with pytest.raises(UpstreamError) as caught:
        list(bedrock.decode_event_stream([data]))
    assert (caught.value.status, caught.value.detail) == (429, "throttlingException while streaming: Rate exceeded.")


def test_a_corrupt_frame_is_a_bad_upstream_response() -> None:
    data = bytearray(event_frame("messageStart", {"role": "assistant"}))
    data[-1] ^= 0xFF
    with pytest.raises(UpstreamBadResponse):
        list(bedrock.decode_event_stream([bytes(data)]))


# -- pure: InvokeModel completions --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "family"),
    [("us.anthropic.claude-3-sonnet", "anthropic"), ("apac.anthropic.claude-3-haiku", "anthropic"),
     ("anthropic.claude-v2:1", "anthropic"), ("ai21.j2-ultra-v1", "ai21"), ("cohere.command-text-v14", "cohere"),
     ("us.amazon.nova-premier-v1:0", "amazon"), ("amazon.titan-text-express-v1", "amazon")],
)
def test_it_picks_the_family_the_model_id_contains(model: str, family: str) -> None:
    assert bedrock.model_family(model).name == family


@pytest.mark.parametrize("model", ["meta.llama3-8b-instruct-v1:0", "anthropic", None])
def test_an_unknown_family_is_a_422(model: str | None) -> None:
    with pytest.raises(InvalidParameter) as caught:
        bedrock.model_family(model)
    assert caught.value.status == 422
    assert caught.value.message.startswith("Unknown Amazon Bedrock model type None")


@pytest.mark.parametrize(
    ("model", "request_payload", "expected"),
    [
        pytest.param("anthropic.claude-v2", {"prompt": "How does a car work?", "max_tokens": 200, "n": 1},
                     {"max_tokens_to_sample": 200, "prompt": "\n\nHuman: How does a car work?\n\nAssistant:",
                      "stop_sequences": ["\n\nHuman:"], "anthropic_version": "bedrock-2023-05-31"},
                     id="anthropic"),
        pytest.param("anthropic.claude-instant-v1", {"prompt": "Hi", "temperature": 1.0, "stop": ["END"]},
                     {"max_tokens_to_sample": 8191, "prompt": "\n\nHuman: Hi\n\nAssistant:", "temperature": 0.5,
                      "stop_sequences": ["END", "\n\nHuman:"], "anthropic_version": "bedrock-2023-05-31"},
                     id="anthropic-default-max-tokens-capped-at-8191"),
        pytest.param("anthropic.claude-v2", {"prompt": "Hi", "max_tokens": 100_000, "stop": ["\n\nHuman:"]},
                     {"max_tokens_to_sample": 8191, "prompt": "\n\nHuman: Hi\n\nAssistant:",
                      "stop_sequences": ["\n\nHuman:"], "anthropic_version": "bedrock-2023-05-31"},
                     id="anthropic-cap-and-no-duplicate-stop"),
        pytest.param(TITAN_TEXT, {"prompt": "This is a test", "n": 1, "temperature": 0.5, "stop": ["foobar"],
                                  "max_tokens": 1000},
                     {"inputText": "This is a test", "textGenerationConfig": {
                         "temperature": 0.25, "stopSequences": ["foobar"], "maxTokenCount": 1000}},
                     id="titan-temperature-halved"),
        pytest.param(TITAN_TEXT, {"prompt": "This is a test", "max_tokens": 1000, "top_p": 0.9},
                     {"inputText": "This is a test", "textGenerationConfig": {"maxTokenCount": 1000, "topP": 0.9}},
                     id="titan-topP"),
        pytest.param("ai21.j2-ultra", {"prompt": "This is a test", "n": 1}, {"prompt": "This is a test"},
                     id="ai21-n-1-not-sent"),
        pytest.param("ai21.j2-mid", {"prompt": "This is a test", "n": 2, "max_tokens": 1000, "stop": ["foobar"],
                                     "top_p": 0.9},
                     {"prompt": "This is a test", "stopSequences": ["foobar"], "maxTokens": 1000, "numResults": 2,
                      "topP": 0.9},
                     id="ai21-renames"),
        pytest.param("cohere.command-text-v14", {"prompt": "Hello", "temperature": 0.4, "n": 2, "stop": ["x"]},
                     {"prompt": "Hello", "temperature": 1.0, "num_generations": 2, "stop_sequences": ["x"]},
                     id="cohere-temperature-times-2.5"),
    ],
)
def test_it_builds_the_invoke_model_body_of_each_family(model: str, request_payload: dict[str, Any],
                                                        expected: dict[str, Any]) -> None:
    assert bedrock.completions_body(request_payload, bedrock.model_family(model)) == expected


@pytest.mark.parametrize(
    ("model", "request_payload", "status", "message"),
    [
        (TITAN_TEXT, {"prompt": "x", "n": 2}, 422, "'n' must be '1' for AWS Titan models. Received value: '2'."),
        (TITAN_TEXT, {"prompt": "x", "top_p": 0}, 422, "'top_p' must be greater than 0 for AWS Titan models."),
        ("anthropic.claude-v2", {"prompt": "x", "top_p": 0.5}, 422,
         "Cannot set both 'temperature' and 'top_p' parameters. Please use only the temperature parameter for your "
         "query."),
        ("anthropic.claude-v2", {"prompt": "x", "max_tokens": 1_000_001}, 422,
         "Invalid value for max_tokens: cannot exceed 1000000."),
        ("cohere.command-text-v14", {"prompt": "x", "stop_sequences": ["y"]}, 400,
         "Invalid parameter stop_sequences. Use stop instead."),
    ],
)
def test_it_applies_mlflows_family_rules(model: str, request_payload: dict[str, Any], status: int,
                                         message: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        bedrock.completions_body(request_payload, bedrock.model_family(model))
    assert (caught.value.status, caught.value.detail) == (status, message)


@pytest.mark.parametrize(
    ("model", "fixture", "text", "finish", "usage"),
    [
        (TITAN_TEXT, "titan_completions_response.json", "\nThis is a test", "stop",
         {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}),
        ("anthropic.claude-v2", "anthropic_completions_response.json", " Hello! My name is Claude.", "stop",
         {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}),
        ("ai21.j2-ultra", "ai21_completions_response.json", "\nIt looks like", "stop",
         {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}),
        ("cohere.command-text-v14", "cohere_completions_response.json", " Hi there!", None,
         {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}),
    ],
)
def test_it_maps_each_family_response(model: str, fixture: str, text: str, finish: str | None,
                                      usage: dict[str, Any]) -> None:
    out = bedrock.model_family(model).parse(payload("bedrock", fixture), model)
    assert out["object"] == "text_completion"
    assert out["model"] == model
    assert out["choices"] == [{"index": 0, "text": text, "finish_reason": finish}]
    assert out["usage"] == usage
    if not model.startswith("cohere"):
        assert out["id"] is None


# -- pure: Titan embeddings --------------------------------------------------------------------------------
def test_it_sends_one_titan_body_per_input_with_the_extra_fields() -> None:
    assert bedrock.titan_embeddings_bodies({"input": ["a", "b"], "dimensions": 256}) == [
        {"inputText": "a", "dimensions": 256}, {"inputText": "b", "dimensions": 256}]
    assert bedrock.titan_embeddings_bodies({"input": "a"}) == [{"inputText": "a"}]
    with pytest.raises(InvalidParameter):
        bedrock.titan_embeddings_bodies({"input": [1, 2, 3]})


def test_it_sums_titan_token_counts() -> None:
    answers = [{"embedding": [0.1], "inputTextTokenCount": 5}, {"embedding": [0.2], "inputTextTokenCount": 3}]
    assert bedrock.parse_titan_embeddings(answers, TITAN_EMBED) == {
        "object": "list", "model": TITAN_EMBED, "usage": {"prompt_tokens": 8, "total_tokens": 8},
        "data": [{"object": "embedding", "embedding": [0.1], "index": 0},
                 {"object": "embedding", "embedding": [0.2], "index": 1}],
    }


# -- config shapes, refused at load time ------------------------------------------------------------------
def _entry(config: Any, model: str | None = CLAUDE, endpoint_type: str = CHAT,
           provider: str = "bedrock") -> dict[str, Any]:
    return {"name": "b", "endpoint_type": endpoint_type,
            "model": {"provider": provider, "name": model, "config": config}}


@pytest.mark.parametrize(
    "aws_config",
    [
        {},
        {"aws_region": "us-east-1"},
        {"aws_bearer_token": "bedrock-api-key", "aws_region": "eu-west-1"},
        {"aws_role_arn": "arn:aws:iam::123456789012:role/bedrock", "session_length_seconds": 3600},
        {"aws_access_key_id": "AKID", "aws_secret_access_key": "secret", "aws_session_token": "token",
         "aws_region": "us-east-1", "aws_endpoint_url": "$BEDROCK_URL"},
    ],
)
def test_every_mlflow_aws_config_shape_loads(aws_config: dict[str, Any]) -> None:
    spec, _ = validate_endpoint(_entry({"aws_config": aws_config}))
    assert spec.provider == "bedrock"


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        (_entry({"aws_config": {"aws_access_key_id": "AKID"}}), "model.config.aws_config.aws_secret_access_key",
         "aws_access_key_id and aws_secret_access_key must be given together"),
        (_entry({"aws_config": {"aws_session_token": "t"}}), "model.config.aws_config.aws_session_token",
         "aws_session_token needs aws_access_key_id and aws_secret_access_key"),
        (_entry({"aws_config": {"aws_bearer_token": "k", "aws_role_arn": "arn:aws:iam::1:role/r"}}),
         "model.config.aws_config.aws_role_arn", "aws_config takes one way to authenticate"),
        (_entry({"aws_config": {"aws_role_arn": "arn:aws:iam::1:role/r", "session_length_seconds": 60}}),
         "model.config.aws_config.session_length_seconds", "must be at least 900"),
        (_entry({"aws_config": {"aws_region": "us-east-1", "aws_secret": "x"}}), "model.config.aws_config.aws_secret",
         "unknown config key"),
        (_entry({}), "model.config.aws_config", "'aws_config' is required"),
        (_entry({"aws_config": {}}, model=None), "model.name", "Amazon Bedrock needs model.name"),
        (_entry({"aws_config": {}}, endpoint_type="llm/v1/rerank"), "endpoint_type", "is not supported"),
    ],
)
def test_bad_entries_are_refused_at_load_time(entry: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(EntryError) as caught:
        validate_endpoint(entry)
    assert caught.value.field == field
    assert message in caught.value.message


def test_the_amazon_bedrock_alias_names_the_same_provider() -> None:
    from providers import registry

    assert registry.get("amazon-bedrock") is registry.get("bedrock") is bedrock.BedrockProvider
    assert bedrock.BedrockProvider.endpoint_types == frozenset({CHAT, COMPLETIONS, EMBEDDINGS})
    assert bedrock.BedrockProvider.streaming_types == frozenset({CHAT})


# -- end to end ------------------------------------------------------------------------------------------------
class Upstream:
    """A local Bedrock: records each request and answers with queued responses."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.requests: list[Request] = []

    def answer(self, path: str, response: Response | Any, *, times: int = 1) -> None:
        def handler(request: Request) -> Response:
            self.requests.append(request)
            if isinstance(response, Response):
                return response
            return Response(orjson.dumps(response), content_type="application/json")

        for _ in range(times):
            self.server.expect_ordered_request(path, method="POST").respond_with_handler(handler)

    def json(self, index: int = -1) -> Any:
        return orjson.loads(self.requests[index].get_data())


@pytest.fixture
def upstream(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Upstream:
    monkeypatch.setattr(bedrock, "CREDENTIALS", bedrock.AwsCredentialSource())
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("TEST_AWS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("TEST_AWS_SECRET", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("TEST_BEDROCK_URL", httpserver.url_for(""))
    return Upstream(httpserver)


HELLO = {"messages": [{"role": "user", "content": "x"}]}
KEYS = {"aws_access_key_id": "$TEST_AWS_KEY_ID", "aws_secret_access_key": "$TEST_AWS_SECRET",
        "aws_region": "us-west-2", "aws_endpoint_url": "$TEST_BEDROCK_URL"}


def assert_sigv4(request: Request, akid: str = "AKIDEXAMPLE", region: str = "us-west-2") -> dict[str, str]:
    match = SIGV4.match(request.headers["Authorization"])
    assert match, request.headers["Authorization"]
    assert (match["akid"], match["region"]) == (akid, region)
    assert match["date"] == request.headers["X-Amz-Date"][:8]
    assert {"host", "x-amz-date", "content-type"} <= set(match["signed"].split(";"))
    return match.groupdict()


def verify_signature(request: Request, secret: str, token: str | None = None, *, akid: str = "AKIDEXAMPLE",
                     region: str = "us-west-2") -> None:
    """Recompute the signature from what the server received, as AWS does, with the test's secret."""
    match = assert_sigv4(request, akid=akid, region=region)
    raw_path = request.environ["RAW_URI"]
    headers = {name: request.headers[name] for name in match["signed"].split(";")}
    received = AWSRequest(method="POST", url=f"http://{request.host}{raw_path}", data=request.get_data(),
                          headers=headers)
    received.context["timestamp"] = request.headers["X-Amz-Date"]
    auth = SigV4Auth(ReadOnlyCredentials(match["akid"], secret, token), "bedrock", region)
    expected = auth.signature(auth.string_to_sign(received, auth.canonical_request(received)), received)
    assert request.headers["Authorization"].endswith(f"Signature={expected}")


def test_chat_signs_with_sigv4_resolves_env_references_and_returns_mlflow_shape(upstream: Upstream, make_endpoint: Any,
                                                                                client: Any) -> None:
    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": KEYS})
    upstream.answer(f"/model/{CLAUDE}/converse", payload("bedrock", "converse_response.json"))
    response = post_json(client, "/endpoints/chat/invocations", {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        "temperature": 0.7, "max_tokens": 50})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello from Bedrock!", "tool_calls": None,
                                             "refusal": None}
    assert (body["id"], body["model"], body["provider"]) == (None, CLAUDE, "bedrock")
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    sent = upstream.requests[0]
    verify_signature(sent, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    assert "X-Amz-Security-Token" not in sent.headers
    assert sent.environ["RAW_URI"] == "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    assert upstream.json() == {"system": [{"text": "Be brief."}],
                               "messages": [{"role": "user", "content": [{"text": "Hello"}]}],
                               "inferenceConfig": {"temperature": 0.7, "maxTokens": 50}}


def test_a_session_token_is_sent_and_signed(upstream: Upstream, make_endpoint: Any, client: Any) -> None:
    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": {**KEYS, "aws_session_token": "FwoGZXIvYXdz"}})
    upstream.answer(f"/model/{CLAUDE}/converse", payload("bedrock", "converse_response.json"))
    assert post_json(client, "/endpoints/chat/invocations", HELLO).status_code == 200
    sent = upstream.requests[0]
    assert sent.headers["X-Amz-Security-Token"] == "FwoGZXIvYXdz"
    assert "x-amz-security-token" in assert_sigv4(sent)["signed"].split(";")
    verify_signature(sent, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "FwoGZXIvYXdz")


def test_a_bearer_token_is_sent_as_is(upstream: Upstream, make_endpoint: Any, client: Any,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_BEDROCK_API_KEY", "bedrock-api-key-123")
    make_endpoint("chat", CHAT, "amazon-bedrock", CLAUDE, {"aws_config": {
        "aws_bearer_token": "$TEST_BEDROCK_API_KEY", "aws_endpoint_url": "$TEST_BEDROCK_URL"}})
    upstream.answer(f"/model/{CLAUDE}/converse", payload("bedrock", "converse_response.json"))
    response = post_json(client, "/endpoints/chat/invocations", {"messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200, response.content
    assert upstream.requests[0].headers["Authorization"] == "Bearer bedrock-api-key-123"
    assert "X-Amz-Date" not in upstream.requests[0].headers


def test_the_default_credential_chain_and_region_come_from_the_environment(upstream: Upstream, make_endpoint: Any,
                                                                           client: Any,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-env")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": {"aws_endpoint_url": "$TEST_BEDROCK_URL"}})
    upstream.answer(f"/model/{CLAUDE}/converse", payload("bedrock", "converse_response.json"))
    assert post_json(client, "/endpoints/chat/invocations", HELLO).status_code == 200
    verify_signature(upstream.requests[0], "secret-from-env", akid="AKIDFROMENV", region="eu-central-1")


def test_a_slow_credential_source_does_not_stall_other_requests_of_the_worker(
        upstream: Upstream, make_endpoint: Any, client: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """botocore's default chain runs a credential_process that takes a second (as SSO, an instance
    role's metadata service or STS can): meanwhile the worker's event loop serves another request."""
    process = tmp_path / "slow_credentials.py"
    process.write_text(textwrap.dedent("""\
        import json, time
        time.sleep(1.5)
        print(json.dumps({"Version": 1, "AccessKeyId": "AKIDPROCESS", "SecretAccessKey": "process-secret"}))
    """))
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\ncredential_process = {sys.executable} {process}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": {"aws_region": "us-west-2",
                                                                   "aws_endpoint_url": "$TEST_BEDROCK_URL"}})
    make_endpoint("echo", CHAT, "mock", "m")
    upstream.answer(f"/model/{CLAUDE}/converse", payload("bedrock", "converse_response.json"), times=2)
    runtime.load_table()  # built here, where the test's rows are visible
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post_json, client, "/endpoints/chat/invocations", HELLO)
        time.sleep(0.3)  # the credential process is running
        started = time.monotonic()
        quick = post_json(client, "/endpoints/echo/invocations", HELLO)
        elapsed = time.monotonic() - started
        assert quick.status_code == 200
        assert elapsed < 0.5, f"the mock endpoint waited {elapsed:.2f} s behind the credential process"
        assert not slow.done()
        assert slow.result(timeout=20).status_code == 200
    verify_signature(upstream.requests[0], "process-secret", akid="AKIDPROCESS")
    started = time.monotonic()
    assert post_json(client, "/endpoints/chat/invocations", HELLO).status_code == 200
    assert time.monotonic() - started < 1.0  # the credentials were cached: the process did not run again


@pytest.mark.parametrize(("lifetime", "sts_calls"), [(3600, 1), (30, 2)])
def test_an_assumed_role_is_cached_until_it_nearly_expires(upstream: Upstream, make_endpoint: Any, client: Any,
                                                           monkeypatch: pytest.MonkeyPatch, lifetime: int,
                                                           sts_calls: int) -> None:
    calls: list[dict[str, Any]] = []

    def fake_assume_role(session: Any, **kwargs: Any) -> tuple[Any, float]:
        calls.append(kwargs)
        return (ReadOnlyCredentials(f"ASIAROLE{len(calls)}", "role-secret", "role-token"),
                time.time() + lifetime)

    monkeypatch.setattr(bedrock, "assume_role", fake_assume_role)
    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": {
        "aws_role_arn": "arn:aws:iam::123456789012:role/bedrock", "session_length_seconds": 1800,
        "aws_region": "us-west-2", "aws_endpoint_url": "$TEST_BEDROCK_URL"}})
    upstream.answer(f"/model/{CLAUDE}/converse", payload("bedrock", "converse_response.json"), times=2)
    for _ in range(2):
        assert post_json(client, "/endpoints/chat/invocations", HELLO).status_code == 200
    assert len(calls) == sts_calls
    assert calls[0]["role_arn"] == "arn:aws:iam::123456789012:role/bedrock"
    assert calls[0]["seconds"] == 1800
    verify_signature(upstream.requests[1], "role-secret", "role-token", akid=f"ASIAROLE{sts_calls}")
    assert upstream.requests[1].headers["X-Amz-Security-Token"] == "role-token"


def test_an_unset_environment_variable_is_a_configuration_error(upstream: Upstream, make_endpoint: Any,
                                                                client: Any) -> None:
    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": {**KEYS, "aws_session_token": "$TEST_UNSET_TOKEN"}})
    response = post_json(client, "/endpoints/chat/invocations", HELLO)
    assert response.status_code == 500
    assert "TEST_UNSET_TOKEN" in response.json()["detail"]
    assert upstream.requests == []


def test_a_stream_refused_before_it_starts_keeps_its_status(upstream: Upstream, make_endpoint: Any,
                                                            client: Any) -> None:
    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": KEYS})
    error = Response(b'{"message": "Too many requests, please wait before trying again."}', status=429,
                     content_type="application/json")
    upstream.answer(f"/model/{CLAUDE}/converse-stream", error)
    response = post_json(client, "/endpoints/chat/invocations", {**HELLO, "stream": True})
    assert response.status_code == 429
    assert response.json() == {"detail": "Too many requests, please wait before trying again."}


def test_tools_round_trip_through_converse(upstream: Upstream, make_endpoint: Any, client: Any) -> None:
    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": KEYS})
    upstream.answer(f"/model/{CLAUDE}/converse", payload("bedrock", "converse_tool_use_response.json"))
    response = post_json(client, "/v1/chat/completions", {
        "model": "chat", "messages": [{"role": "user", "content": "add 17 and 25"}], "tools": [TOOL],
        "tool_choice": "auto"})
    assert response.status_code == 200, response.content
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 17, "b": 25}'}
    assert upstream.json()["toolConfig"] == {"tools": [ADD_SPEC], "toolChoice": {"auto": {}}}


def test_chat_streaming_decodes_the_event_stream(upstream: Upstream, make_endpoint: Any, client: Any) -> None:
    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": KEYS})
    upstream.answer(f"/model/{CLAUDE}/converse-stream", Response(
        event_stream("converse_stream_events.json"), content_type=bedrock.EVENT_STREAM))
    response = post_json(client, "/endpoints/chat/invocations",
                         {"messages": [{"role": "user", "content": "Hello"}], "stream": True,
                          "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert [e["choices"][0]["delta"]["content"] for e in events[:2]] == ["Hello", " from Bedrock!"]
    assert events[2]["choices"][0]["finish_reason"] == "stop"
    assert events[3]["usage"] == {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    assert_sigv4(upstream.requests[0])
    assert "stream" not in upstream.json()


def test_a_stream_exception_after_the_first_chunk_ends_with_an_error_event(upstream: Upstream, make_endpoint: Any,
                                                                            client: Any) -> None:
    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": KEYS})
    body = (event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}})
            + exception_frame("throttlingException", "Too many tokens."))
    upstream.answer(f"/model/{CLAUDE}/converse-stream", Response(body, content_type=bedrock.EVENT_STREAM))
    events = sse_events(post_json(client, "/endpoints/chat/invocations",
                                  {"messages": [{"role": "user", "content": "x"}], "stream": True}))
    assert events[0]["choices"][0]["delta"]["content"] == "Hel"
    assert events[1]["error"]["status"] == 429
    assert events[1]["error"]["message"] == "throttlingException while streaming: Too many tokens."


@pytest.mark.parametrize(
    ("model", "fixture", "expected_body", "text"),
    [
        (TITAN_TEXT, "titan_completions_response.json",
         {"inputText": "Say hi", "textGenerationConfig": {"temperature": 0.5, "maxTokenCount": 10}},
         "\nThis is a test"),
        (CLAUDE, "anthropic_completions_response.json",
         {"prompt": "\n\nHuman: Say hi\n\nAssistant:", "temperature": 0.5, "max_tokens_to_sample": 10,
          "stop_sequences": ["\n\nHuman:"], "anthropic_version": "bedrock-2023-05-31"}, " Hello! My name is Claude."),
    ],
)
def test_completions_invoke_the_model_with_its_family_body(upstream: Upstream, make_endpoint: Any, client: Any,
                                                           model: str, fixture: str, expected_body: dict[str, Any],
                                                           text: str) -> None:
    make_endpoint("completions", COMPLETIONS, "bedrock", model, {"aws_config": KEYS})
    upstream.answer(f"/model/{model}/invoke", payload("bedrock", fixture))
    response = post_json(client, "/endpoints/completions/invocations",
                         {"prompt": "Say hi", "temperature": 1.0, "max_tokens": 10})
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["text"] == text
    assert response.json()["model"] == model
    assert upstream.json() == expected_body
    assert upstream.requests[0].headers["Accept"] == "application/json"
    assert_sigv4(upstream.requests[0])


def test_completions_of_an_unknown_family_are_a_422(upstream: Upstream, make_endpoint: Any, client: Any) -> None:
    make_endpoint("completions", COMPLETIONS, "bedrock", "meta.llama3-8b-instruct-v1:0", {"aws_config": KEYS})
    response = post_json(client, "/endpoints/completions/invocations", {"prompt": "x"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Unknown Amazon Bedrock model type None")
    assert upstream.requests == []


def test_completions_streaming_is_not_offered(upstream: Upstream, make_endpoint: Any, client: Any) -> None:
    make_endpoint("completions", COMPLETIONS, "bedrock", TITAN_TEXT, {"aws_config": KEYS})
    response = post_json(client, "/endpoints/completions/invocations", {"prompt": "x", "stream": True})
    assert response.status_code == 501
    assert response.json() == {
        "detail": "The completions streaming route is not implemented for Amazon Bedrock models."}


def test_embeddings_call_titan_once_per_input(upstream: Upstream, make_endpoint: Any, client: Any) -> None:
    make_endpoint("embeddings", EMBEDDINGS, "bedrock", TITAN_EMBED, {"aws_config": KEYS})
    upstream.answer(f"/model/{TITAN_EMBED}/invoke", payload("bedrock", "titan_embeddings_response.json"), times=2)
    response = post_json(client, "/endpoints/embeddings/invocations", {"input": ["first", "second"]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][0]["embedding"] == [0.1, 0.2, 0.3]
    assert body["usage"] == {"prompt_tokens": 10, "total_tokens": 10}
    assert body["model"] == TITAN_EMBED
    assert [orjson.loads(r.get_data()) for r in upstream.requests] == [{"inputText": "first"}, {"inputText": "second"}]


def test_a_bedrock_error_keeps_its_status_and_message_on_both_routes(upstream: Upstream, make_endpoint: Any,
                                                                     client: Any) -> None:
    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": KEYS})
    error = Response(orjson.dumps(payload("bedrock", "validation_error.json")), status=400,
                     content_type="application/json", headers={"x-amzn-ErrorType": "ValidationException:http://x/"})
    upstream.answer(f"/model/{CLAUDE}/converse", error, times=2)
    mlflow = post_json(client, "/endpoints/chat/invocations", {"messages": [{"role": "user", "content": "x"}]})
    assert mlflow.status_code == 400
    assert mlflow.json() == {"detail": "The provided model identifier is invalid."}
    openai = post_json(client, "/v1/chat/completions", {"model": "chat", **HELLO})
    assert openai.status_code == 400
    assert openai.json()["error"]["message"] == "The provided model identifier is invalid."


def test_an_error_with_only_a_type_reports_the_type(upstream: Upstream, make_endpoint: Any, client: Any) -> None:
    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": KEYS})
    error = Response(b'{"__type": "com.amazon.coral.service#AccessDeniedException"}', status=403,
                     content_type="application/json")
    upstream.answer(f"/model/{CLAUDE}/converse", error)
    response = post_json(client, "/endpoints/chat/invocations", {"messages": [{"role": "user", "content": "x"}]})
    assert (response.status_code, response.json()) == (403, {"detail": "AccessDeniedException"})


def test_a_read_timeout_is_a_504(upstream: Upstream, make_endpoint: Any, client: Any) -> None:
    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": KEYS}, timeouts={"read": 0.2, "retries": 0})

    release, answered = threading.Event(), threading.Event()

    def slow(request: Request) -> Response:
        release.wait(timeout=3)  # only after the gateway gave up
        answered.set()
        return Response(b"{}", content_type="application/json")

    upstream.server.expect_request(f"/model/{CLAUDE}/converse").respond_with_handler(slow)
    response = post_json(client, "/endpoints/chat/invocations", {"messages": [{"role": "user", "content": "x"}]})
    release.set()
    # The server is single-threaded: the next test's request must not queue behind this handler.
    assert answered.wait(timeout=3)
    assert response.status_code == 504
    assert "did not answer" in response.json()["detail"]


def test_a_missing_region_is_a_400(upstream: Upstream, make_endpoint: Any, client: Any) -> None:
    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": {"aws_bearer_token": "k"}})
    response = post_json(client, "/endpoints/chat/invocations", {"messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400
    assert "needs a region" in response.json()["detail"]


def test_model_ids_are_escaped_in_the_url(upstream: Upstream) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-v2"
    config = bedrock.BedrockConfig.validate({"aws_config": {"aws_bearer_token": "k", "aws_region": "us-east-1"}})
    provider = bedrock.BedrockProvider(provider_name="bedrock", model_name=arn, config=config)
    request = provider.bedrock_request("converse", {"messages": []})
    assert request.url == ("https://bedrock-runtime.us-east-1.amazonaws.com/model/"
                           "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-v2"
                           "/converse")
    assert request.body == b'{"messages":[]}'


@pytest.mark.django_db(transaction=True)
def test_the_openai_sdk_streams_bedrock_tool_calls(live_server: Any, upstream: Upstream, make_endpoint: Any) -> None:
    import openai

    make_endpoint("chat", CHAT, "bedrock", CLAUDE, {"aws_config": KEYS})
    upstream.answer(f"/model/{CLAUDE}/converse-stream", Response(
        event_stream("converse_stream_tool_events.json"), content_type=bedrock.EVENT_STREAM))
    sdk = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)
    stream = sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": "add"}],
                                         tools=cast(Any, [TOOL]), stream=True,
                                         stream_options={"include_usage": True})
    text, finish, total = "", None, None
    calls: dict[int, dict[str, str]] = {}
    for chunk in stream:
        total = chunk.usage.total_tokens if chunk.usage else total
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                call["name"] += (delta.function.name or "") if delta.function else ""
                call["arguments"] += (delta.function.arguments or "") if delta.function else ""
    assert text == "Adding."
    assert calls == {0: {"id": "tooluse_1", "name": "add", "arguments": '{"a": 17, "b": 25}'},
                     1: {"id": "tooluse_2", "name": "mul", "arguments": "{}"}}
    assert (finish, total) == ("tool_calls", 65)
    verify_signature(upstream.requests[0], "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
