"""The work behind the commands, the admin and the API for consumers and keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from consumers import keys
from consumers.models import Consumer, GatewayKey, OperatorToken
from endpoints_app.columns import budget_columns, budget_to_yaml
from endpoints_app.models import Endpoint, Source, TrafficRoute

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from endpoints_app.services import ImportReport
    from endpoints_app.validation import ConsumerSpec


class KeyError_(ValueError):
    """A key or consumer operation that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class IssuedKey:
    """A key just made: `key` is shown once and never stored; `record` is what is stored."""

    key: str
    record: GatewayKey


def create_key(consumer: Consumer | str, *, name: str = "", expires_in: timedelta | None = None,
               created_by: str = "") -> IssuedKey:
    if isinstance(consumer, str):
        try:
            consumer = Consumer.objects.get(name=consumer)
        except Consumer.DoesNotExist:
            known = ", ".join(Consumer.objects.values_list("name", flat=True)[:20]) or "none yet"
            raise KeyError_(f"There is no consumer named {consumer!r} (consumers: {known}). Create it in the "
                            "config file's `consumers:` list, the admin or the API first.") from None
    expires_at = timezone.now() + expires_in if expires_in is not None else None
    for _ in range(5):  # a prefix collision is a 1-in-4-billion event; try again
        key, prefix = keys.new_key(keys.CONSUMER_KEY)
        try:
            with transaction.atomic():
                record = GatewayKey.objects.create(consumer=consumer, name=name, prefix=prefix, digest=keys.digest(key),
                                                   expires_at=expires_at, created_by=created_by)
        except IntegrityError:
            continue
        return IssuedKey(key, record)
    raise KeyError_("Could not make a unique key prefix; try again.")


def find_key(prefix: str) -> GatewayKey:
    """A key by its prefix (the whole key is accepted too: its prefix is read off it)."""
    prefix = keys.prefix_of(prefix.strip()) or prefix.strip()
    try:
        return GatewayKey.objects.select_related("consumer").get(prefix=prefix)
    except GatewayKey.DoesNotExist:
        raise KeyError_(f"There is no key with the prefix {prefix!r}: list them in the admin or with the API "
                        "(GET /api/manage/keys/).") from None


def revoke_key(prefix: str) -> GatewayKey:
    """Revoke a key now; every worker of every instance refuses it within GATEWAY_CONFIG_POLL_SECONDS."""
    record = find_key(prefix)
    if record.revoked_at is None:
        record.revoked_at = timezone.now()
        record.save(update_fields=["revoked_at"])
    return record


def create_operator_token(user: User, *, name: str = "", expires_in: timedelta | None = None
                          ) -> tuple[str, OperatorToken]:
    if not getattr(user, "is_staff", False) or not user.is_active:
        raise KeyError_(f"{user} is not an active staff user: only operators get management API tokens.")
    token, prefix = keys.new_key(keys.OPERATOR_TOKEN)
    expires_at = timezone.now() + expires_in if expires_in is not None else None
    record = OperatorToken.objects.create(user=user, name=name, prefix=prefix, digest=keys.digest(token),
                                          expires_at=expires_at)
    return token, record


def operator_for_token(presented: str) -> User | None:
    """The active staff user whose valid token this is, else None (the management API; not the hot path)."""
    prefix = keys.prefix_of(presented)
    if prefix is None or not prefix.startswith(keys.OPERATOR_TOKEN):
        return None
    record = OperatorToken.objects.select_related("user").filter(prefix=prefix, revoked_at__isnull=True).first()
    if record is None or not keys.matches(presented, record.digest):
        return None
    if record.expires_at is not None and record.expires_at <= timezone.now():
        return None
    user = record.user
    return user if user.is_active and getattr(user, "is_staff", False) else None


# -- YAML -------------------------------------------------------------------------------------------------
def consumer_values(spec: ConsumerSpec) -> dict[str, Any]:
    """The columns a validated consumer definition sets (YAML, admin and API alike)."""
    return {
        "description": spec.description,
        "enabled": spec.enabled,
        "allow": list(spec.allow),
        "limit_calls": spec.limit.calls if spec.limit else None,
        "limit_renewal_period": spec.limit.renewal_period if spec.limit else "",
        "token_limit_tokens": spec.token_limit.tokens if spec.token_limit else None,
        "token_limit_renewal_period": spec.token_limit.renewal_period if spec.token_limit else "",
        **budget_columns(spec.budget),
    }


def apply_consumers(specs: list[ConsumerSpec], source_path: str, prune: bool, report: ImportReport) -> None:
    """Inside an import's transaction: upsert the file's consumers; with `prune`, delete the consumers an
    earlier load of this file made that it no longer has (their keys go with them)."""
    existing = {c.name: c for c in Consumer.objects.select_for_update()}
    for position, spec in enumerate(specs):
        values = {**consumer_values(spec), "source": Source.YAML, "source_path": source_path, "position": position}
        consumer = existing.get(spec.name)
        label = f"consumer {spec.name}"
        if consumer is None:
            Consumer.objects.create(name=spec.name, **values)
            report.created.append(label)
        elif any(getattr(consumer, key) != value for key, value in values.items()):
            for key, value in values.items():
                setattr(consumer, key, value)
            consumer.save()
            report.updated.append(label)
        else:
            report.unchanged.append(label)
    if prune:
        wanted = {spec.name for spec in specs}
        for name, consumer in existing.items():
            if name not in wanted and consumer.source == Source.YAML and consumer.source_path == source_path:
                consumer.delete()
                report.deleted.append(f"consumer {name}")


def consumer_to_yaml(consumer: Consumer) -> dict[str, Any]:
    """A consumer as a `consumers[]` entry (its keys are never exported)."""
    entry: dict[str, Any] = {"name": consumer.name}
    if consumer.description:
        entry["description"] = consumer.description
    entry["allow"] = list(consumer.allow)
    if consumer.has_limit:
        entry["limit"] = {"calls": consumer.limit_calls, "renewal_period": consumer.limit_renewal_period}
    if consumer.has_token_limit:
        entry["token_limit"] = {"tokens": consumer.token_limit_tokens,
                                "renewal_period": consumer.token_limit_renewal_period}
    budget = budget_to_yaml(consumer)
    if budget:
        entry["budget"] = budget
    if not consumer.enabled:
        entry["enabled"] = False
    return entry


def callable_names() -> dict[str, str]:
    """Every endpoint and traffic route a consumer may be allowed to call."""
    return {**dict.fromkeys(Endpoint.objects.values_list("name", flat=True), "endpoint"),
            **dict.fromkeys(TrafficRoute.objects.values_list("name", flat=True), "route")}
