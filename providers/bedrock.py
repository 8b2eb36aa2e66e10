"""Amazon Bedrock (`provider: bedrock`, alias `amazon-bedrock`), as MLflow 3.x serves it (§2.4).

- Chat: the Converse API (`POST /model/{id}/converse`); streams use ConverseStream
  (`/converse-stream`), an AWS event stream decoded frame by frame with botocore's EventStreamBuffer.
- Completions: InvokeModel (`/model/{id}/invoke`) with the body of the model family that the model
  id *contains*: amazon (Titan), cohere, ai21 or anthropic (the legacy text-completion body).
- Embeddings: one Titan InvokeModel call per input.

Requests go through the one HTTP seam, signed with SigV4 by botocore, or carrying a Bedrock API key
as a Bearer token. Unlike MLflow: `$ENV` references resolve in every aws_config secret and URL, the
base URL can be overridden (`aws_endpoint_url`), a read timeout is a 504 (MLflow crashes), Bedrock's
error bodies keep their status and message, streaming also works with an API key, and usage and
finish reasons are filled in wherever Bedrock reports them.

Converse refuses members it does not know, so only the gateway fields it has a slot for are sent;
model-specific parameters go in `additionalModelRequestFields` (or MLflow's `custom_inputs`), and
Converse's own top-level members (guardrailConfig, performanceConfig, ...) are forwarded as given.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from providers import ai21labs, anthropic, cohere, shapes
from providers.base import (
    BaseProvider,
    content_text,
    parse_base64_data_url,
    rename_keys,
    require_n_is_one,
)
from providers.config import ConfigField, ConfigValidationError, ProviderConfig
from providers.errors import (
    ConfigurationError,
    InvalidParameter,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from serving.bridge import to_thread
from serving.upstream import Timeouts, UpstreamRequest, default_error_message, get_transport, iter_raw

# botocore (about 20 MB per process) is imported when a Bedrock endpoint first signs or decodes,
# not in every worker that merely knows the provider exists.
if TYPE_CHECKING:
    import botocore.session
    from botocore.credentials import ReadOnlyCredentials
    from botocore.eventstream import EventStreamMessage

DISPLAY_NAME = "Amazon Bedrock"
SIGNING_NAME = "bedrock"  # the SigV4 service name of bedrock-runtime
ROLE_SESSION_NAME = "ai-gateway-bedrock"
EVENT_STREAM = "application/vnd.amazon.eventstream"
ANTHROPIC_VERSION = "bedrock-2023-05-31"
ANTHROPIC_MAX_TOKENS_TO_SAMPLE = 8191
HUMAN_STOP = "\n\nHuman:"
_ROLE_REFRESH_MARGIN = 60.0  # renew assumed-role credentials this long before they expire
_CHAIN_REFRESH_MARGIN = 600.0  # fetch temporary credentials of the default chain again this long before they expire
_STATIC_CREDENTIALS_SECONDS = 300.0  # how long long-term keys of the default chain are used before looking again


# -- config ------------------------------------------------------------------------------------------
class BedrockConfig(ProviderConfig):
    fields = (
        ConfigField("aws_config", required=True, help="How to reach and authenticate to Bedrock", children=(
            ConfigField("aws_region", help="e.g. us-east-1; defaults to AWS_REGION or the AWS config file"),
            ConfigField("aws_bearer_token", kind="secret", help="A Bedrock API key, sent as a Bearer token"),
            ConfigField("aws_role_arn", kind="secret", help="A role to assume with STS"),
            ConfigField("session_length_seconds", value_type=int, default=900, minimum=900,
                        help="Assumed-role session length"),
            ConfigField("aws_access_key_id", kind="secret"),
            ConfigField("aws_secret_access_key", kind="secret"),
            ConfigField("aws_session_token", kind="secret"),
            ConfigField("aws_endpoint_url", kind="url", help="Default https://bedrock-runtime.{region}.amazonaws.com"),
        )),
    )

    @classmethod
    def check(cls, stored: dict[str, Any]) -> None:
        aws = stored.get("aws_config") or {}
        pair = [key for key in ("aws_access_key_id", "aws_secret_access_key") if key in aws]
        if len(pair) == 1:
            missing = "aws_secret_access_key" if pair[0] == "aws_access_key_id" else "aws_access_key_id"
            raise ConfigValidationError(f"aws_config.{missing}",
                                        "aws_access_key_id and aws_secret_access_key must be given together")
        if "aws_session_token" in aws and not pair:
            raise ConfigValidationError("aws_config.aws_session_token",
                                        "aws_session_token needs aws_access_key_id and aws_secret_access_key")
        ways = [key for key in ("aws_bearer_token", "aws_role_arn", "aws_access_key_id") if key in aws]
        if len(ways) > 1:
            raise ConfigValidationError(
                f"aws_config.{ways[1]}",
                f"aws_config takes one way to authenticate, got {' and '.join(ways)}: use a bearer token, a role, "
                "an access key pair, or none of them for the default credential chain",
            )


# -- credentials and signing ---------------------------------------------------------------------------
def assume_role(session: botocore.session.Session, *, role_arn: str, seconds: int, region: str | None,
                timeouts: Timeouts) -> tuple[ReadOnlyCredentials, float]:
    """STS AssumeRole with botocore's STS client (the one AWS call that does not use our HTTP seam).

    Returns the temporary credentials and their expiry (epoch seconds)."""
    from botocore.config import Config as BotocoreConfig
    from botocore.credentials import ReadOnlyCredentials
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    config = BotocoreConfig(connect_timeout=timeouts.connect, read_timeout=timeouts.read,
                            retries={"max_attempts": timeouts.retries + 1})
    try:
        client = session.create_client("sts", region_name=region, config=config)
        answer = client.assume_role(RoleArn=role_arn, RoleSessionName=ROLE_SESSION_NAME, DurationSeconds=seconds)
    except ClientError as exc:
        error = exc.response.get("Error") or {}
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 502
        raise UpstreamError(f"STS AssumeRole failed: {error.get('Message') or exc}", status=status) from None
    except NoCredentialsError:
        raise ConfigurationError("STS AssumeRole needs base credentials from the AWS default chain.") from None
    except (ReadTimeoutError, ConnectTimeoutError):
        raise UpstreamTimeout("STS AssumeRole did not answer in time.") from None
    except BotoCoreError as exc:
        raise UpstreamUnavailable(f"STS AssumeRole failed: {exc}") from None
    issued = answer["Credentials"]
    credentials = ReadOnlyCredentials(issued["AccessKeyId"], issued["SecretAccessKey"], issued["SessionToken"])
    return credentials, issued["Expiration"].timestamp()


class AwsCredentialSource:
    """botocore's default chain and assumed roles, cached per process.

    Getting them may block for seconds: botocore reads its config files, runs a credential_process,
    asks the instance metadata service or calls STS. That runs in a helper thread (serving.bridge.
    to_thread), never on the worker's event loop, so other requests go on meanwhile; requests find
    cached credentials ready until shortly before they expire."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._session: botocore.session.Session | None = None
        self._region: tuple[str | None] | None = None  # the config file's region, once read
        self._chain: tuple[ReadOnlyCredentials, float] | None = None  # credentials, and when to fetch them again
        self._roles: dict[tuple[str, int, str | None], tuple[ReadOnlyCredentials, float]] = {}

    def session(self) -> botocore.session.Session:
        with self._lock:
            if self._session is None:
                import botocore.session

                self._session = botocore.session.get_session()
            return self._session

    def default_region(self) -> str | None:
        """AWS_REGION (what the AWS SDKs read), else botocore's AWS_DEFAULT_REGION or config file."""
        region = os.environ.get("AWS_REGION")
        if region:
            return region
        if self._region is None:
            self._region = (to_thread(self._configured_region),)
        return self._region[0]

    def _configured_region(self) -> str | None:
        region = self.session().get_config_variable("region")
        return str(region) if region else None

    def default_chain(self) -> ReadOnlyCredentials:
        cached = self._chain
        if cached is not None and time.time() < cached[1]:
            return cached[0]
        return to_thread(self._load_default_chain)

    def _load_default_chain(self) -> ReadOnlyCredentials:
        from botocore.exceptions import BotoCoreError

        with self._lock:
            cached = self._chain
            if cached is not None and time.time() < cached[1]:
                return cached[0]  # another request fetched them meanwhile
            try:
                credentials = self.session().get_credentials()
                frozen = credentials.get_frozen_credentials() if credentials is not None else None
            except BotoCoreError as exc:
                raise ConfigurationError(f"AWS credentials could not be loaded: {exc}") from None
            if frozen is None:
                raise ConfigurationError(
                    "No AWS credentials found: give aws_config a bearer token, a role or an access key pair, or "
                    "configure the AWS default credential chain (environment, ~/.aws, instance role)."
                )
            expiry = getattr(credentials, "_expiry_time", None)  # temporary credentials (role, SSO, process)
            now = time.time()
            if expiry is not None:
                refresh_at = max(now + 1.0, expiry.timestamp() - _CHAIN_REFRESH_MARGIN)
            else:
                refresh_at = now + _STATIC_CREDENTIALS_SECONDS
            self._chain = (frozen, refresh_at)
            return frozen

    def cached_secrets(self) -> list[str]:
        """The secret keys and session tokens held in the cache (no I/O)."""
        held = [self._chain[0]] if self._chain is not None else []
        held += [credentials for credentials, _ in list(self._roles.values())]
        return [value for c in held for value in (c.secret_key, c.token) if value]

    def assumed_role(self, role_arn: str, seconds: int, region: str | None, timeouts: Timeouts) -> ReadOnlyCredentials:
        key = (role_arn, seconds, region)
        cached = self._roles.get(key)
        if cached is not None and time.time() < cached[1] - _ROLE_REFRESH_MARGIN:
            return cached[0]
        return to_thread(self._assume_role, key, timeouts)

    def _assume_role(self, key: tuple[str, int, str | None], timeouts: Timeouts) -> ReadOnlyCredentials:
        role_arn, seconds, region = key
        with self._lock:
            cached = self._roles.get(key)
            if cached is not None and time.time() < cached[1] - _ROLE_REFRESH_MARGIN:
                return cached[0]  # another request assumed it meanwhile
            credentials, expires_at = assume_role(self.session(), role_arn=role_arn, seconds=seconds, region=region,
                                                  timeouts=timeouts)
            self._roles[key] = (credentials, expires_at)
            return credentials


CREDENTIALS = AwsCredentialSource()


def sigv4_headers(credentials: ReadOnlyCredentials, region: str, url: str, body: bytes,
                  headers: dict[str, str]) -> dict[str, str]:
    """The headers of a POST signed with SigV4 by botocore (Authorization, X-Amz-Date, token)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(credentials, SIGNING_NAME, region).add_auth(request)
    return {str(k): str(v) for k, v in request.headers.items()}


# -- pure translation: chat (Converse) -------------------------------------------------------------------
STOP_REASONS = {
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
INFERENCE_NAMES = {"temperature": "temperature", "top_p": "topP", "max_tokens": "maxTokens", "stop": "stopSequences"}
# Converse's own top-level members: a client may send them and they are forwarded as given.
CONVERSE_MEMBERS = ("guardrailConfig", "promptVariables", "additionalModelResponseFieldPaths", "requestMetadata",
                    "performanceConfig", "serviceTier", "outputConfig")
TOOL_CHOICES: dict[str, dict[str, Any]] = {"auto": {"auto": {}}, "required": {"any": {}}}
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                 "image/webp": "webp"}


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    url = str((part.get("image_url") or {}).get("url") or "")
    parsed = parse_base64_data_url(url)
    image_format = IMAGE_FORMATS.get(parsed[0]) if parsed else None
    if parsed is None or image_format is None:
        raise InvalidParameter(
            "Amazon Bedrock takes images as base64 data URLs (data:image/png|jpeg|gif|webp;base64,...)."
        )
    return {"image": {"format": image_format, "source": {"bytes": parsed[1]}}}


def _user_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    blocks = []
    for part in content:
        if part.get("type") == "text":
            blocks.append({"text": part.get("text", "")})
        elif part.get("type") == "image_url":
            blocks.append(_image_block(part))
        else:
            raise InvalidParameter(f"Amazon Bedrock does not accept {part.get('type')!r} content parts.")
    return blocks


def _tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    call_id, name = call.get("id"), function.get("name")
    if not name:
        raise InvalidParameter(f"Invalid assistant tool call: missing function name (tool_call_id={call_id}).")
    arguments = function.get("arguments")
    try:
        if not isinstance(arguments, str) or not arguments.strip():
            raise ValueError
        parsed = json.loads(arguments)
    except ValueError:
        raise InvalidParameter(
            f"Invalid assistant tool call arguments: not valid JSON (tool_call_id={call_id}, tool_name={name})."
        ) from None
    return {"toolUse": {"toolUseId": call_id, "name": name, "input": parsed}}


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    text = content_text(message.get("content"))  # reasoning parts are not sent back
    blocks: list[dict[str, Any]] = [{"text": text}] if text else []
    return blocks + [_tool_use_block(call) for call in message.get("tool_calls") or []]


def _tool_result_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    call_id = message.get("tool_call_id")
    if not call_id:
        raise InvalidParameter("A tool message needs a tool_call_id for Amazon Bedrock.")
    return [{"toolResult": {"toolUseId": call_id, "content": [{"text": content_text(message.get("content"))}]}}]


# Our role → (Converse role, block builder). Tool results travel in user turns.
_TURNS: dict[str, tuple[str, Callable[[dict[str, Any]], list[dict[str, Any]]]]] = {
    "user": ("user", _user_blocks),
    "assistant": ("assistant", _assistant_blocks),
    "tool": ("user", _tool_result_blocks),
}


def converse_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Our messages → (Converse `system` blocks, Converse `messages`).

    Consecutive messages that land on the same Converse role are merged into one turn, so a run of
    tool results (and any user text after them) is a single user turn, as Converse requires."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            text = content_text(message.get("content"))
            if text:
                system.append({"text": text})
            continue
        if role not in _TURNS:
            raise InvalidParameter(f"Amazon Bedrock does not accept messages with role {role!r}.")
        converse_role, build = _TURNS[role]
        blocks = build(message)
        if turns and turns[-1]["role"] == converse_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": converse_role, "content": blocks})
    return system, turns


def _tool_spec(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function")
    if tool.get("type") != "function" or not function:
        raise InvalidParameter(f"Amazon Bedrock supports only function tools, got {tool.get('type')!r}.")
    spec: dict[str, Any] = {"name": function["name"],
                            "inputSchema": {"json": function.get("parameters") or {"type": "object", "properties": {}}}}
    if function.get("description"):
        spec["description"] = function["description"]
    if function.get("strict") is not None:
        spec["strict"] = function["strict"]
    return {"toolSpec": spec}


def _has_tool_blocks(turns: list[dict[str, Any]]) -> bool:
    return any("toolUse" in block or "toolResult" in block for turn in turns for block in turn["content"])


def converse_tool_config(payload: dict[str, Any], turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    tools = payload.get("tools")
    if not tools:
        return None
    config: dict[str, Any] = {"tools": [_tool_spec(tool) for tool in tools]}
    choice = payload.get("tool_choice")
    if choice == "none":
        # Converse has no "none": leave the tools out, unless the history's tool blocks need them declared.
        return config if _has_tool_blocks(turns) else None
    if isinstance(choice, dict):
        config["toolChoice"] = {"tool": {"name": choice["function"]["name"]}}
    elif choice in TOOL_CHOICES:
        config["toolChoice"] = TOOL_CHOICES[choice]
    return config


def converse_request(payload: dict[str, Any]) -> dict[str, Any]:
    """Our chat request → the Converse (and ConverseStream) body. Raises InvalidParameter (422)."""
    require_n_is_one(payload, DISPLAY_NAME)
    system, turns = converse_messages(payload["messages"])
    body: dict[str, Any] = {"messages": turns}
    if system:
        body["system"] = system
    inference = {native: payload[name] for name, native in INFERENCE_NAMES.items() if name in payload}
    if "maxTokens" not in inference and "max_completion_tokens" in payload:
        inference["maxTokens"] = payload["max_completion_tokens"]
    if inference:
        body["inferenceConfig"] = inference
    tool_config = converse_tool_config(payload, turns)
    if tool_config:
        body["toolConfig"] = tool_config
    additional = {**(payload.get("additionalModelRequestFields") or {}), **(payload.get("custom_inputs") or {})}
    if "top_k" in payload:
        additional.setdefault("top_k", payload["top_k"])
    if additional:
        body["additionalModelRequestFields"] = additional
    body.update((member, payload[member]) for member in CONVERSE_MEMBERS if member in payload)
    response_format = payload.get("response_format") or {}
    if response_format.get("type") == "json_schema" and "outputConfig" not in body:
        schema = response_format.get("json_schema") or {}
        body["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {
            "schema": json.dumps(schema.get("schema") or {}), "name": schema.get("name", "response")}}}}
    return body


def finish_reason(stop_reason: str | None) -> str:
    return STOP_REASONS.get(stop_reason or "", "stop")


def converse_usage(raw: Any) -> dict[str, Any]:
    """Converse's usage → ours: prompt tokens include cache reads and writes, as MLflow 3.x counts them."""
    if not isinstance(raw, dict):
        return shapes.usage()
    input_tokens = raw.get("inputTokens")
    cache_read = raw.get("cacheReadInputTokens")
    cache_write = raw.get("cacheWriteInputTokens")
    prompt = input_tokens + (cache_read or 0) + (cache_write or 0) if input_tokens is not None else None
    return shapes.usage(prompt, raw.get("outputTokens"),
                        prompt_tokens_details={"cached_tokens": cache_read} if cache_read else None,
                        cache_creation_input_tokens=cache_write or None)


def _tool_call(tool_use: dict[str, Any]) -> dict[str, Any]:
    return {"id": tool_use.get("toolUseId"), "type": "function",
            "function": {"name": tool_use.get("name"), "arguments": json.dumps(tool_use.get("input") or {})}}


def _reasoning_part(block: dict[str, Any]) -> dict[str, Any]:
    reasoning = block.get("reasoningText") or {}
    summary = [{"type": "summary_text", "text": reasoning.get("text", "")}]
    part: dict[str, Any] = {"type": "reasoning", "summary": summary}
    if reasoning.get("signature"):
        part["signature"] = reasoning["signature"]
    return part


def parse_converse(body: Any, model: str | None, provider: str) -> dict[str, Any]:
    """A Converse response → our chat response. `content` is the text, or a part list when the
    model reasoned (reasoning parts first, as MLflow 3.x returns them); `id` is null."""
    try:
        blocks = body["output"]["message"]["content"] or []
        texts = [block["text"] for block in blocks if "text" in block]
        tool_calls = [_tool_call(block["toolUse"]) for block in blocks if "toolUse" in block]
        reasoning = any("reasoningContent" in block for block in blocks)
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The Bedrock Converse response is missing {exc}.") from None
    content: Any = "".join(texts) if texts else None
    if reasoning:
        content = [_reasoning_part(block["reasoningContent"]) if "reasoningContent" in block
                   else {"type": "text", "text": block["text"]}
                   for block in blocks if "reasoningContent" in block or "text" in block]
    message = shapes.message(content, tool_calls=tool_calls)
    return shapes.chat_response(id=None, model=model, provider=provider,
                                choices=[shapes.chat_choice(0, message, finish_reason(body.get("stopReason")))],
                                usage=converse_usage(body.get("usage")))


class _ConverseStream:
    """ConverseStream events → our chat chunks. Tool blocks are numbered in order of appearance."""

    def __init__(self, model: str | None, provider: str) -> None:
        self.model = model
        self.provider = provider
        self.created = shapes.now()
        self.tool_index: dict[int, int] = {}
        self.handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
            "contentBlockStart": self.block_start,
            "contentBlockDelta": self.block_delta,
            "messageStop": self.message_stop,
            "metadata": self.metadata,
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return shapes.chat_chunk(id=None, model=self.model, provider=self.provider, created=self.created,
                                 choices=[shapes.chunk_choice(0, delta, finish)])

    def block_start(self, event: dict[str, Any]) -> dict[str, Any] | None:
        tool = (event.get("start") or {}).get("toolUse")
        if not tool:
            return None
        index = self.tool_index.setdefault(event.get("contentBlockIndex", 0), len(self.tool_index))
        return self.chunk(shapes.delta(tool_calls=[{
            "index": index, "id": tool.get("toolUseId"), "type": "function",
            "function": {"name": tool.get("name"), "arguments": ""}}]))

    def block_delta(self, event: dict[str, Any]) -> dict[str, Any] | None:
        delta = event.get("delta") or {}
        if "text" in delta:
            return self.chunk(shapes.delta(content=delta["text"]))
        if "toolUse" in delta:
            index = self.tool_index.get(event.get("contentBlockIndex", 0), 0)
            return self.chunk(shapes.delta(tool_calls=[{
                "index": index, "id": None, "type": None,
                "function": {"name": None, "arguments": delta["toolUse"].get("input", "")}}]))
        return None  # reasoning and citation deltas have no place in a chat chunk

    def message_stop(self, event: dict[str, Any]) -> dict[str, Any]:
        return self.chunk(shapes.delta(), finish_reason(event.get("stopReason")))

    def metadata(self, event: dict[str, Any]) -> dict[str, Any]:
        return shapes.chat_chunk(id=None, model=self.model, provider=self.provider, created=self.created,
                                 choices=[], usage=converse_usage(event.get("usage")))


def converse_stream_chunks(events: Iterable[tuple[str, dict[str, Any]]], *, model: str | None,
                           provider: str) -> Iterator[dict[str, Any]]:
    """(event type, payload) pairs of a ConverseStream → our chunks: text and tool-call deltas, a
    chunk with the finish reason at messageStop, and a final usage chunk (no choices) at metadata.
    messageStart and contentBlockStop carry nothing the client needs and are skipped."""
    stream = _ConverseStream(model, provider)
    for event_type, payload in events:
        handler = stream.handlers.get(event_type)
        chunk = handler(payload) if handler is not None else None
        if chunk is not None:
            yield chunk


# -- AWS event streams -----------------------------------------------------------------------------------
# The HTTP status each ConverseStream exception has outside a stream (the service model's).
STREAM_EXCEPTION_STATUSES = {
    "validationException": 400,
    "modelTimeoutException": 408,
    "throttlingException": 429,
    "modelStreamErrorException": 424,
    "internalServerException": 500,
    "serviceUnavailableException": 503,
}


def _stream_event(message: EventStreamMessage) -> tuple[str, dict[str, Any]]:
    headers = message.headers
    kind = headers.get(":message-type")
    try:
        payload = orjson.loads(message.payload) if message.payload else {}
    except orjson.JSONDecodeError:
        raise UpstreamBadResponse("The Bedrock event stream sent a frame that is not valid JSON.") from None
    if kind == "event":
        return str(headers.get(":event-type")), payload
    if kind == "exception":
        name = str(headers.get(":exception-type") or "exception")
        detail = payload.get("message") if isinstance(payload, dict) else None
    else:
        name = str(headers.get(":error-code") or "error")
        detail = headers.get(":error-message")
    raise UpstreamError(f"{name} while streaming: {detail or 'no message'}",
                        status=STREAM_EXCEPTION_STATUSES.get(name, 502))


def decode_event_stream(chunks: Iterable[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Raw body bytes (split anywhere) → (event type, JSON payload), decoded by botocore.

    Exception and error frames raise UpstreamError with the exception's usual status."""
    from botocore.eventstream import EventStreamBuffer, ParserError

    buffer = EventStreamBuffer()
    for data in chunks:
        buffer.add_data(data)
        try:
            messages = list(buffer)
        except ParserError as exc:
            raise UpstreamBadResponse(f"The Bedrock event stream is corrupt: {exc}") from None
        for message in messages:
            yield _stream_event(message)


# -- pure translation: completions (InvokeModel) -----------------------------------------------------------
TITAN_NAMES = {"max_tokens": "maxTokenCount", "stop": "stopSequences", "top_p": "topP"}
TITAN_REASONS = {"FINISH": "stop", "STOP_CRITERIA_MET": "stop", "LENGTH": "length",
                 "CONTENT_FILTERED": "content_filter"}


def titan_completions_body(payload: dict[str, Any]) -> dict[str, Any]:
    config = dict(payload)
    prompt = config.pop("prompt")
    n = config.pop("n", 1)
    if n != 1:
        raise InvalidParameter(f"'n' must be '1' for AWS Titan models. Received value: '{n}'.")
    if config.get("top_p") == 0:
        raise InvalidParameter("'top_p' must be greater than 0 for AWS Titan models.")
    if "temperature" in config:
        config["temperature"] = 0.5 * config["temperature"]  # Titan's range is 0-1, ours 0-2
    return {"inputText": prompt, "textGenerationConfig": rename_keys(config, TITAN_NAMES)}


def parse_titan_completions(body: Any, model: str | None) -> dict[str, Any]:
    try:
        results = body["results"]
        choices = [shapes.text_choice(index, result.get("outputText") or "",
                                      TITAN_REASONS.get(result.get("completionReason") or ""))
                   for index, result in enumerate(results)]
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The Bedrock Titan response is missing {exc}.") from None
    counts = [result.get("tokenCount") for result in results]
    completion = sum(counts) if counts and None not in counts else None
    return shapes.completions_response(id=None, model=model, choices=choices,
                                       usage=shapes.usage(body.get("inputTextTokenCount"), completion))


def cohere_completions_body(payload: dict[str, Any]) -> dict[str, Any]:
    body = cohere.completions_body(payload, None)
    body.pop("model", None)  # Bedrock names the model in the URL
    return body


def ai21_completions_body(payload: dict[str, Any]) -> dict[str, Any]:
    return ai21labs.request_body(payload)


def parse_ai21_completions(body: Any, model: str | None) -> dict[str, Any]:
    out = ai21labs.parse_complete(body, model)
    out["id"] = None  # Bedrock's AI21 ids are integers; MLflow reports none
    return out


def anthropic_completions_body(payload: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's text-completion body (MLflow's rules, see providers.anthropic) as Bedrock wants it:
    no model, max_tokens_to_sample capped at 8191, "\\n\\nHuman:" always a stop sequence."""
    body = anthropic.completions_body(payload, None)
    body.pop("model", None)
    body["max_tokens_to_sample"] = min(body["max_tokens_to_sample"], ANTHROPIC_MAX_TOKENS_TO_SAMPLE)
    stops = list(body.get("stop_sequences") or [])
    body["stop_sequences"] = stops if HUMAN_STOP in stops else [*stops, HUMAN_STOP]
    body["anthropic_version"] = ANTHROPIC_VERSION
    return body


def parse_anthropic_completions(body: Any, model: str | None) -> dict[str, Any]:
    out = anthropic.parse_completions(body)
    out["model"] = model
    return out


@dataclass(frozen=True)
class ModelFamily:
    name: str
    body: Callable[[dict[str, Any]], dict[str, Any]]
    parse: Callable[[Any, str | None], dict[str, Any]]


# In MLflow's order: the first family whose name the model id contains wins.
MODEL_FAMILIES = (
    ModelFamily("amazon", titan_completions_body, parse_titan_completions),
    ModelFamily("cohere", cohere_completions_body, cohere.parse_completions),
    ModelFamily("ai21", ai21_completions_body, parse_ai21_completions),
    ModelFamily("anthropic", anthropic_completions_body, parse_anthropic_completions),
)


def model_family(model_id: str | None) -> ModelFamily:
    """The completions family of a model id (`us.anthropic.claude-v2` → anthropic). Raises 422."""
    name = (model_id or "").lower()
    if "." in name:
        for family in MODEL_FAMILIES:
            if family.name in name:
                return family
    raise InvalidParameter(
        f"Unknown Amazon Bedrock model type None: the model id {model_id!r} names none of "
        f"{', '.join(f.name for f in MODEL_FAMILIES)}"
    )


def completions_body(payload: dict[str, Any], family: ModelFamily) -> dict[str, Any]:
    # MLflow serialises Bedrock completions without defaults: n=1 is not sent.
    if payload.get("n") == 1:
        payload = {k: v for k, v in payload.items() if k != "n"}
    return family.body(payload)


# -- pure translation: embeddings (Titan) --------------------------------------------------------------------
def titan_embeddings_bodies(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """One InvokeModel body per input; other fields (dimensions, normalize, ...) go with each."""
    inputs = payload["input"]
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    if not all(isinstance(text, str) for text in texts):
        raise InvalidParameter("Amazon Bedrock Titan embeddings take text input, not token ids.")
    extra = {k: v for k, v in payload.items() if k != "input"}
    return [{"inputText": text, **extra} for text in texts]


def parse_titan_embeddings(answers: list[Any], model: str | None) -> dict[str, Any]:
    try:
        vectors = [answer["embedding"] for answer in answers]
        counts = [answer.get("inputTextTokenCount") for answer in answers]
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The Bedrock Titan embeddings response is missing {exc}.") from None
    prompt = sum(counts) if None not in counts else None
    return shapes.embeddings_response(vectors=vectors, model=model,
                                      usage={"prompt_tokens": prompt, "total_tokens": prompt})


# -- the provider --------------------------------------------------------------------------------------------
class BedrockProvider(BaseProvider):
    name = "bedrock"
    aliases = ("amazon-bedrock",)
    display_name = DISPLAY_NAME
    config_class = BedrockConfig
    endpoint_types = frozenset({CHAT, COMPLETIONS, EMBEDDINGS})
    streaming_types = frozenset({CHAT})
    supports_tools = True

    def call_secrets(self) -> list[str]:
        """The config's secrets and the AWS credentials cached in this process (a role's, the default chain's)."""
        return super().call_secrets() + CREDENTIALS.cached_secrets()

    @classmethod
    def check_endpoint(cls, endpoint_type: str, model_name: str | None) -> None:
        super().check_endpoint(endpoint_type, model_name)
        if not model_name:
            raise ConfigValidationError("model.name", "Amazon Bedrock needs model.name: the model id, inference "
                                                      "profile or ARN to call")

    # -- operations ---------------------------------------------------------------------------------------
    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = self.post_json(self.bedrock_request("converse", converse_request(payload)))
        return parse_converse(body, self.model_name, self.provider_name)

    def chat_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        request = self.bedrock_request("converse-stream", converse_request(payload), accept=EVENT_STREAM)
        response = get_transport().open_stream(request, self.timeouts, self.error_message)
        events = decode_event_stream(iter_raw(response))
        return converse_stream_chunks(events, model=self.model_name, provider=self.provider_name)

    def completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        family = model_family(self.model_name)
        body = self.post_json(self.bedrock_request("invoke", completions_body(payload, family)))
        return family.parse(body, self.model_name)

    def embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        answers = [self.post_json(self.bedrock_request("invoke", body)) for body in titan_embeddings_bodies(payload)]
        return parse_titan_embeddings(answers, self.model_name)

    def error_message(self, body: Any) -> Any:
        """Bedrock answers `{"message": ...}` (or `Message`), sometimes with only a `__type`."""
        if isinstance(body, dict):
            for key in ("message", "Message"):
                if isinstance(body.get(key), str):
                    return body[key]
            if isinstance(body.get("__type"), str):
                return body["__type"].rsplit("#", 1)[-1]
        return default_error_message(body)

    # -- the request: URL and authorisation -----------------------------------------------------------------
    def bedrock_request(self, operation: str, body: dict[str, Any], *,
                        accept: str = "application/json") -> UpstreamRequest:
        aws = self.config["aws_config"] or {}
        data = orjson.dumps(body)
        url = f"{self.base_url(aws)}/model/{quote(self.model_name or '', safe='')}/{operation}"
        headers = {"Content-Type": "application/json", "Accept": accept}
        if aws.get("aws_bearer_token"):
            headers["Authorization"] = f"Bearer {aws['aws_bearer_token']}"
        else:
            region = self.region(aws)
            headers = sigv4_headers(self.credentials(aws, region), region, url, data, headers)
        return UpstreamRequest(url=url, headers=headers, body=data)

    def region(self, aws: dict[str, Any]) -> str:
        region = aws.get("aws_region") or CREDENTIALS.default_region()
        if not region:
            raise ConfigurationError(
                "Amazon Bedrock needs a region: set aws_config.aws_region (or AWS_REGION).", status=400
            )
        return str(region)

    def base_url(self, aws: dict[str, Any]) -> str:
        if aws.get("aws_endpoint_url"):
            return str(aws["aws_endpoint_url"]).rstrip("/")
        return f"https://bedrock-runtime.{self.region(aws)}.amazonaws.com"

    def credentials(self, aws: dict[str, Any], region: str) -> ReadOnlyCredentials:
        if aws.get("aws_role_arn"):
            return CREDENTIALS.assumed_role(aws["aws_role_arn"], int(aws["session_length_seconds"]), region,
                                            self.timeouts)
        if aws.get("aws_access_key_id"):
            from botocore.credentials import ReadOnlyCredentials

            return ReadOnlyCredentials(aws["aws_access_key_id"], aws["aws_secret_access_key"],
                                       aws.get("aws_session_token"))
        return CREDENTIALS.default_chain()
