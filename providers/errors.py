"""The gateway's error hierarchy.

Every error a request can meet is one of these. Each carries an HTTP status, a machine-readable
code and a detail; one handler (endpoints_app.errors) renders them in MLflow's shape on the MLflow
routes and in OpenAI's envelope on the /v1 routes.
"""
from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status = 500
    code = "internal_error"
    openai_type = "server_error"

    def __init__(self, detail: Any, *, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None, param: str | None = None) -> None:
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail
        if status is not None:
            self.status = status
            if status < 500 and self.openai_type == GatewayError.openai_type:
                # A client's error (400, 404, 405, 413, ...) raised without a class of its own: OpenAI's
                # type for it, never server_error.
                self.openai_type = "invalid_request_error"
        if code is not None:
            self.code = code
        self.retry_after = retry_after
        self.param = param
        self.headers: dict[str, str] = {}

    @property
    def message(self) -> str:
        """A one-line human message, whatever the shape of detail."""
        detail = self.detail
        if isinstance(detail, str):
            return detail
        if isinstance(detail, dict):
            for key in ("message", "detail", "error"):
                value = detail.get(key)
                if isinstance(value, str):
                    return value
                if isinstance(value, dict) and isinstance(value.get("message"), str):
                    return str(value["message"])
        if isinstance(detail, list) and detail and isinstance(detail[0], dict) and "msg" in detail[0]:
            return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e['msg']}" for e in detail)
        return str(detail)


class RequestValidationError(GatewayError):
    """The client's body does not fit the endpoint type's schema (FastAPI-style detail list)."""

    status = 422
    code = "invalid_request"
    openai_type = "invalid_request_error"


class RequestTooLarge(GatewayError):
    """The client's body is over GATEWAY_MAX_REQUEST_BYTES."""

    status = 413
    code = "request_too_large"
    openai_type = "invalid_request_error"


class InvalidParameter(GatewayError):
    """A gateway rule that a provider enforces (n must be 1, native parameter names, ...)."""

    status = 422
    code = "invalid_parameter"
    openai_type = "invalid_request_error"


class EndpointNotFound(GatewayError):
    status = 404
    code = "endpoint_not_found"
    openai_type = "invalid_request_error"


class WrongEndpointType(GatewayError):
    status = 400
    code = "wrong_endpoint_type"
    openai_type = "invalid_request_error"


class NotSupported(GatewayError):
    """The provider does not offer this operation (chat, completions, embeddings, streaming)."""

    status = 501
    code = "not_supported"
    openai_type = "invalid_request_error"


class Unauthorized(GatewayError):
    """No gateway key, or one that is unknown, expired or revoked (GATEWAY_AUTH=keys)."""

    status = 401
    code = "invalid_api_key"
    openai_type = "invalid_request_error"

    def __init__(self, detail: Any, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers["WWW-Authenticate"] = 'Bearer realm="gateway"'


class Forbidden(GatewayError):
    """A valid key whose consumer may not call this endpoint or route (or is disabled)."""

    status = 403
    code = "permission_denied"
    openai_type = "permission_error"


class RateLimited(GatewayError):
    status = 429
    code = "rate_limit_exceeded"
    openai_type = "rate_limit_error"


class RateLimitUnavailable(GatewayError):
    """The rate-limit counters cannot be reached and GATEWAY_RATE_LIMIT_FAIL_OPEN is off."""

    status = 503
    code = "rate_limit_unavailable"
    openai_type = "server_error"


class NoDestinationAvailable(GatewayError):
    """Every destination of a traffic route has its circuit open (or is being probed by another request)."""

    status = 503
    code = "no_destination_available"
    openai_type = "server_error"


class ConfigurationError(GatewayError):
    """The endpoint's configuration cannot be used (e.g. an environment variable is unset)."""

    status = 500
    code = "configuration_error"
    openai_type = "server_error"


class UpstreamError(GatewayError):
    """The provider answered with an error status; status and message are passed through."""

    code = "upstream_error"
    openai_type = "api_error"


class UpstreamTimeout(GatewayError):
    status = 504
    code = "upstream_timeout"
    openai_type = "timeout"


class UpstreamUnavailable(GatewayError):
    status = 502
    code = "upstream_unreachable"
    openai_type = "api_connection_error"


class UpstreamBadResponse(GatewayError):
    """The provider's answer could not be understood (wrong content type, bad JSON, bad shape)."""

    status = 502
    code = "bad_upstream_response"
    openai_type = "api_error"


class UpstreamTLSError(UpstreamUnavailable):
    """TLS with the provider failed (an untrusted or mismatched certificate, a refused handshake): not
    transient, so never retried; the message names the reason."""

    status = 502
    code = "upstream_tls_error"
    openai_type = "api_connection_error"
