"""OpenAPI entries for the invocation routes, generated from the pydantic wire schemas.

The invocation views are plain Django views (the hot path), so drf-spectacular cannot see them;
this postprocessing hook adds their paths with the same models that validate the requests
(endpoints_app.schemas) and declare the responses providers build (providers.shapes), plus one
concrete path per configured endpoint with exactly its type's schemas (as MLflow's document lists
one POST per endpoint). Nothing here describes a body by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel

from endpoints_app.schemas import REQUEST_MODELS
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from providers.wire import CHUNK_MODELS, RESPONSE_MODELS

REF = "#/components/schemas/{model}"

_ERRORS = {
    "Health": {
        "type": "object",
        "required": ["status", "config_version", "pid"],
        "properties": {
            "status": {"type": "string", "enum": ["OK", "ERROR"]},
            "config_version": {"type": ["integer", "null"]},
            "pid": {"type": "integer"},
        },
    },
    "MLflowError": {
        "type": "object",
        "required": ["detail"],
        "properties": {"detail": {}},
        "description": "MLflow's error body: a message, or FastAPI's validation list.",
    },
    "RateLimitError": {
        "type": "object",
        "properties": {"error": {"type": "string"}},
        "example": {"error": "Rate limit exceeded: 2 per 1 minute"},
    },
    "OpenAIError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": "string", "nullable": True},
                    "code": {"type": "string", "nullable": True},
                },
            }
        },
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def model_components(models: Iterable[type[BaseModel]],
                     mode: Literal["validation", "serialization"]) -> dict[str, Any]:
    """The JSON schemas of `models` and of every model they use, by name, as the document holds them.

    Raises ValueError if two different schemas would share a name (one would silently replace the other)."""
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF, mode=mode)
        for name, sub in [*schema.pop("$defs", {}).items(), (model.__name__, schema)]:
            if out.setdefault(name, sub) != sub:
                raise ValueError(f"two different schemas are named {name!r} in the OpenAPI document")
    return out


def _components() -> dict[str, Any]:
    requests = model_components(REQUEST_MODELS.values(), "validation")
    responses = model_components([*RESPONSE_MODELS.values(), *CHUNK_MODELS.values()], "serialization")
    clashes = [name for name in requests.keys() & responses.keys() if requests[name] != responses[name]]
    if clashes:
        raise ValueError(f"a request and a response schema share the names {sorted(clashes)}")
    return {**_ERRORS, **requests, **responses}


def _responses(endpoint_type: str | None, error_schema: str) -> dict[str, Any]:
    error = {"application/json": {"schema": _ref(error_schema)}}
    if endpoint_type is None:
        ok_schema: dict[str, Any] = {"oneOf": [_ref(model.__name__) for model in RESPONSE_MODELS.values()]}
        chunk_models = list(CHUNK_MODELS.values())
    else:
        ok_schema = _ref(RESPONSE_MODELS[endpoint_type].__name__)
        chunk_models = [CHUNK_MODELS[endpoint_type]] if endpoint_type in CHUNK_MODELS else []
    content: dict[str, Any] = {"application/json": {"schema": ok_schema}}
    if chunk_models:
        names = " or ".join(model.__name__ for model in chunk_models)
        content["text/event-stream"] = {
            "schema": {
                "type": "string",
                "description": f'With "stream": true: `data: {{chunk}}` events (each a {names}, as in '
                "`x-event-data`), then `data: [DONE]`.",
            },
            "x-event-data": (_ref(chunk_models[0].__name__) if len(chunk_models) == 1
                             else {"oneOf": [_ref(model.__name__) for model in chunk_models]}),
        }
    return {
        "200": {"description": "The provider's answer in the gateway's shape", "content": content},
        "400": {"description": "Bad request (wrong endpoint type on /v1, malformed page token)", "content": error},
        "404": {"description": "No such endpoint or route", "content": error},
        "422": {"description": "The body does not fit the endpoint type's schema", "content": error},
        "429": {
            "description": "Rate limit exceeded (Retry-After and X-RateLimit-* headers)",
            "content": {
                "application/json": {
                    "schema": _ref("RateLimitError" if error_schema == "MLflowError" else error_schema)
                }
            },
        },
        "501": {"description": "The provider does not offer this operation", "content": error},
        "502": {"description": "The upstream is unreachable or answered something unusable", "content": error},
        "504": {"description": "The upstream timed out", "content": error},
    }


def _request_body(endpoint_type: str | None) -> dict[str, Any]:
    if endpoint_type is None:
        schema: dict[str, Any] = {"oneOf": [_ref(model.__name__) for model in REQUEST_MODELS.values()]}
    else:
        schema = _ref(REQUEST_MODELS[endpoint_type].__name__)
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _operation(
    operation_id: str,
    summary: str,
    tag: str,
    endpoint_type: str | None,
    error_schema: str,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "requestBody": _request_body(endpoint_type),
        "responses": _responses(endpoint_type, error_schema),
    }
    if parameters:
        op["parameters"] = parameters
    return op


def add_invocation_paths(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(_components())
    paths = result.setdefault("paths", {})
    paths["/health"] = {
        "get": {
            "operationId": "health",
            "summary": "Liveness, and the config version this process serves",
            "tags": ["health"],
            "responses": {
                "200": {"description": "Serving", "content": {"application/json": {"schema": _ref("Health")}}},
                "503": {
                    "description": "The endpoint table cannot be loaded",
                    "content": {"application/json": {"schema": _ref("Health")}},
                },
            },
        }
    }
    name_param = [
        {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "Endpoint or traffic route name",
        }
    ]
    paths["/endpoints/{name}/invocations"] = {
        "post": _operation(
            "invoke_endpoint",
            "Invoke an endpoint or traffic route (MLflow predict)",
            "invocations",
            None,
            "MLflowError",
            name_param,
        )
    }
    for path, endpoint_type, op_id, summary in (
        ("/v1/chat/completions", CHAT, "openai_chat_completions", "OpenAI-compatible chat (model = endpoint name)"),
        ("/v1/completions", COMPLETIONS, "openai_completions", "OpenAI-compatible completions"),
        ("/v1/embeddings", EMBEDDINGS, "openai_embeddings", "OpenAI-compatible embeddings"),
    ):
        paths[path] = {"post": _operation(op_id, summary, "openai", endpoint_type, "OpenAIError")}
    for name, endpoint_type in _configured_endpoints():
        paths[f"/endpoints/{name}/invocations"] = {
            "post": _operation(
                f"invoke_{_identifier(name)}",
                f"Invoke '{name}' ({endpoint_type})",
                "endpoints",
                endpoint_type,
                "MLflowError",
            )
        }
    return result


def _configured_endpoints() -> list[tuple[str, str]]:
    from serving import runtime

    try:
        table = runtime.load_table()
    except Exception:  # the schema must render even when the database is not ready
        return []
    items = [(name, table.endpoints[name].endpoint_type) for name in table.order]
    items += [(name, route.task_type) for name, route in table.routes.items()]
    return items


def _identifier(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)
