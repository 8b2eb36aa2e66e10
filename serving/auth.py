"""Who is calling: the gateway key on a request, checked against the in-memory key table.

With GATEWAY_AUTH=keys every invocation and listing route needs `Authorization: Bearer <key>` (what
the openai SDK sends as `api_key` and MLflow's deployments client from MLFLOW_TRACKING_TOKEN). The
key is looked up by its prefix in the process's table (serving.runtime, rebuilt when the config
version moves) and checked with a constant-time comparison of its keyed hash: no database query.
A missing, unknown, expired or revoked key is a 401; a consumer that is disabled or may not call
the endpoint or route is a 403.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from django.conf import settings

from consumers import keys
from providers.errors import Forbidden, Unauthorized
from serving.budgets import Budget
from serving.ratelimit import RateLimit, TokenLimit


@dataclass(frozen=True)
class LiveConsumer:
    name: str
    enabled: bool
    allow_all: bool
    allow: frozenset[str]
    limit: RateLimit | None
    token_limit: TokenLimit | None
    budget: Budget | None = None

    def may_call(self, name: str) -> bool:
        return self.allow_all or name in self.allow


@dataclass(frozen=True)
class LiveKey:
    prefix: str
    digest: str
    consumer: str
    expires_at: float | None  # epoch seconds
    revoked: bool


@dataclass(frozen=True)
class Caller:
    """An authenticated request's consumer and the prefix of the key it used."""

    consumer: LiveConsumer
    key_prefix: str


def enabled() -> bool:
    return bool(settings.GATEWAY_AUTH == "keys")


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def authenticate(authorization: str | None, keys_table: dict[str, LiveKey],
                 consumers: dict[str, LiveConsumer]) -> Caller:
    """The caller of a request with this Authorization header. Raises Unauthorized (401)."""
    token = bearer_token(authorization)
    if token is None:
        raise Unauthorized("A gateway key is required: send `Authorization: Bearer <key>` (the openai SDK's "
                           "api_key, or MLFLOW_TRACKING_TOKEN for MLflow's client).")
    prefix = keys.prefix_of(token)
    key = keys_table.get(prefix) if prefix is not None else None
    if key is None or not _matches(token, key.digest):
        raise Unauthorized("The gateway key is not valid.")
    if key.revoked:
        raise Unauthorized(f"The gateway key {key.prefix} has been revoked.")
    if key.expires_at is not None and key.expires_at <= time.time():
        raise Unauthorized(f"The gateway key {key.prefix} has expired.")
    consumer = consumers.get(key.consumer)
    if consumer is None:  # deleted between two table builds
        raise Unauthorized("The gateway key is not valid.")
    return Caller(consumer, key.prefix)


# The keys this process has checked, by their stored digest: a client sends the same key on every request,
# and comparing it with the one that matched last time (in constant time) costs less than hashing it again.
_checked: dict[str, bytes] = {}
_CHECKED_MAX = 4096


def _matches(token: str, digest: str) -> bool:
    presented = token.encode("utf-8", "surrogateescape")
    known = _checked.get(digest)
    if known is not None and hmac.compare_digest(known, presented):
        return True
    if not keys.matches(token, digest):
        return False
    if len(_checked) >= _CHECKED_MAX:
        _checked.clear()
    _checked[digest] = presented
    return True


def authorize(caller: Caller, name: str) -> None:
    """Raise Forbidden (403) unless the caller's consumer may call the endpoint or route `name`."""
    consumer = caller.consumer
    if not consumer.enabled:
        raise Forbidden(f"The consumer '{consumer.name}' is disabled.")
    if not consumer.may_call(name):
        raise Forbidden(f"The consumer '{consumer.name}' may not call '{name}'.")
