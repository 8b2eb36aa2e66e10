"""The work behind the commands, the admin and the API: import and export of the config document."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from consumers.models import Consumer
from consumers.services import apply_consumers, consumer_to_yaml
from endpoints_app.columns import budget_columns, budget_to_yaml, params_to_yaml, plain_number
from endpoints_app.models import (
    SOURCE_PATH_MAX_LENGTH,
    ConfigState,
    Endpoint,
    Source,
    TrafficDestination,
    TrafficRoute,
)
from endpoints_app.validation import (
    FALLBACK_DEFAULT,
    ConfigDocument,
    ConfigError,
    DestinationSpec,
    EndpointSpec,
    Issue,
    RouteSpec,
    parse_yaml,
    validate_document,
)
from providers import config as provider_config
from providers import registry, secrets
from serving.configread import ConfigFileError, read_config_bytes


# -- import ------------------------------------------------------------------------------------------
@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


class _DryRunRollback(Exception):
    pass


def read_config_file(path: str, *, prune: bool = False) -> ConfigDocument:
    """Read and validate a YAML file in full, touching nothing. Raises ConfigError.

    `prune` says whether this load will delete what the file no longer has (it changes which
    existing endpoints routes may name, and which names are still taken).
    """
    if len(os.path.abspath(path)) > SOURCE_PATH_MAX_LENGTH:
        raise ConfigError([Issue("", "", f"the path is longer than {SOURCE_PATH_MAX_LENGTH} characters")], path[:80])
    try:
        text = read_config_bytes(path, settings.GATEWAY_CONFIG_MAX_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([Issue("", "", "the file does not exist")], path) from None
    except ConfigFileError as exc:
        raise ConfigError([Issue("", "", str(exc))], path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Issue("", "", f"not UTF-8 text (byte {exc.start})")], path) from None
    except OSError as exc:
        raise ConfigError([Issue("", "", f"cannot be read: {exc.strerror or exc}")], path) from None
    with secrets.file_references_under(os.path.dirname(os.path.realpath(path))):
        return validate_text(text, path, prune=prune)


def validate_text(text: str, source: str, *, prune: bool = False) -> ConfigDocument:
    """Validate YAML text against the database as it stands (names taken, stored secrets).

    Endpoints and routes already in the database stay, except with `prune` those an earlier load
    of this same file made: routes may name the endpoints that stay, and their names stay taken.
    """
    doc = parse_yaml(text, source)
    source_path = os.path.abspath(source)
    existing = dict(Endpoint.objects.values_list("name", "config"))
    staying_endpoints = Endpoint.objects.all()
    staying_routes = TrafficRoute.objects.all()
    if prune:
        staying_endpoints = staying_endpoints.exclude(source=Source.YAML, source_path=source_path)
        staying_routes = staying_routes.exclude(source=Source.YAML, source_path=source_path)
    # A name the file defines again is an update of that row, never a collision: a name can be
    # only one kind within the file, so the validator checks the other kind only.
    return validate_document(
        doc, source, existing_configs=existing,
        extra_endpoint_types=dict(staying_endpoints.values_list("name", "endpoint_type")),
        existing_routes={route.name: route_spec(route) for route in staying_routes.prefetch_related(
            "destinations__endpoint")},
    )


def route_spec(route: TrafficRoute) -> RouteSpec:
    """A stored traffic route as the validator sees one."""
    return RouteSpec(name=route.name, task_type=route.task_type, routing_strategy=route.routing_strategy,
                     enabled=route.enabled, destinations=tuple(DestinationSpec(d.endpoint.name, d.traffic_percentage)
                                                               for d in route.destinations.all()),
                     fallback_on=tuple(route.fallback_on))


def import_config(path: str, *, dry_run: bool = False, prune: bool = False) -> ImportReport:
    """Validate `path` in full, then upsert every endpoint and route in one transaction.

    With `prune`, endpoints and routes that an earlier load of this same file created, and that the
    file no longer has, are deleted (those made in the admin or loaded from other files are kept).
    With `dry_run`, the same work runs and is rolled back. Raises ConfigError; on any error the
    database is unchanged.
    """
    document = read_config_file(path, prune=prune)
    return apply_document(document, source_path=os.path.abspath(path), dry_run=dry_run, prune=prune)


def apply_document(document: ConfigDocument, *, source_path: str, dry_run: bool = False,
                   prune: bool = False) -> ImportReport:
    report = ImportReport(warnings=list(document.warnings), dry_run=dry_run)
    try:
        with transaction.atomic():
            _serialize_config_writers()
            _apply(document, source_path, prune, report)
            if dry_run:
                raise _DryRunRollback
    except _DryRunRollback:
        pass
    return report


def _apply(document: ConfigDocument, source_path: str, prune: bool, report: ImportReport) -> None:
    existing = {e.name: e for e in Endpoint.objects.select_for_update().all()}
    for position, spec in enumerate(document.endpoints):
        endpoint = existing.get(spec.name)
        values = _endpoint_values(spec, position, source_path)
        if endpoint is None:
            Endpoint.objects.create(name=spec.name, **values)
            report.created.append(spec.name)
        elif _differs(endpoint, values):
            for key, value in values.items():
                setattr(endpoint, key, value)
            endpoint.save()
            report.updated.append(spec.name)
        else:
            report.unchanged.append(spec.name)

    routes = {r.name: r for r in TrafficRoute.objects.prefetch_related("destinations__endpoint")}
    in_file = {spec.name for spec in document.routes}
    # A route that names an endpoint about to be pruned must go first (destinations PROTECT endpoints).
    if prune:
        for name, route in routes.items():
            if name not in in_file and _owned(route, source_path):
                route.delete()
                report.deleted.append(name)
    for position, route_spec in enumerate(document.routes):
        _upsert_route(route_spec, routes.get(route_spec.name), position, source_path, report)
    if prune:
        wanted = {spec.name for spec in document.endpoints}
        for name, endpoint in existing.items():
            if name not in wanted and _owned(endpoint, source_path):
                if endpoint.route_destinations.exists():
                    raise ConfigError([Issue("", "", f"cannot prune endpoint {name!r}: traffic routes still send "
                                             "traffic to it")], source_path)
                endpoint.delete()
                report.deleted.append(name)
    apply_consumers(document.consumers, source_path, prune, report)
    if report.changed:
        bump_config_version()


def _owned(row: Endpoint | TrafficRoute, source_path: str) -> bool:
    return row.source == Source.YAML and row.source_path == source_path


def endpoint_columns(spec: EndpointSpec) -> dict[str, Any]:
    """The columns a validated endpoint definition sets (YAML, admin and API alike)."""
    limit = spec.limit
    return {
        "endpoint_type": spec.endpoint_type,
        "provider": spec.provider,
        "model_name": spec.model_name,
        "config": spec.config,
        "limit_calls": limit.calls if limit else None,
        "limit_renewal_period": limit.renewal_period if limit else "",
        "limit_key": limit.key if limit else None,
        "connect_timeout": spec.timeouts.connect,
        "read_timeout": spec.timeouts.read,
        "total_timeout": spec.timeouts.total,
        "max_retries": spec.timeouts.retries,
        "params": params_to_yaml(spec.params) or {},
        "cost_input_per_million": spec.cost.input_per_million_tokens if spec.cost else None,
        "cost_output_per_million": spec.cost.output_per_million_tokens if spec.cost else None,
        **budget_columns(spec.budget),
        "enabled": spec.enabled,
    }


def _endpoint_values(spec: EndpointSpec, position: int, source_path: str) -> dict[str, Any]:
    return {**endpoint_columns(spec), "source": Source.YAML, "source_path": source_path, "position": position}


def endpoint_conflicts(spec: EndpointSpec, instance: Endpoint | None) -> list[tuple[str, str]]:
    """What the rest of the config forbids for this definition of one endpoint (the admin and the API):
    (field, message) pairs, none when it can be saved."""
    issues = []
    others = Endpoint.objects.exclude(pk=instance.pk) if instance is not None else Endpoint.objects.all()
    if others.filter(name=spec.name).exists():
        issues.append(("name", f"An endpoint is already named {spec.name!r}."))
    if TrafficRoute.objects.filter(name=spec.name).exists():
        issues.append(("name", f"A traffic route is already named {spec.name!r}: names must be unique across "
                       "endpoints and routes."))
    if instance is not None:
        for route in TrafficRoute.objects.filter(destinations__endpoint=instance).exclude(
                task_type=spec.endpoint_type).distinct():
            issues.append(("endpoint_type", f"the traffic route {route.name!r} sends {route.task_type} traffic to "
                           f"this endpoint, so it cannot become {spec.endpoint_type}; change the route first"))
    return issues


def save_endpoint(spec: EndpointSpec, instance: Endpoint | None = None) -> Endpoint:
    """Create (as made in the admin) or update one endpoint from a validated definition."""
    endpoint = instance or Endpoint(source=Source.ADMIN)
    endpoint.name = spec.name
    for key, value in endpoint_columns(spec).items():
        setattr(endpoint, key, value)
    endpoint.save()
    return endpoint


def route_conflicts(spec: RouteSpec, instance: TrafficRoute | None) -> list[tuple[str, str]]:
    issues = []
    others = TrafficRoute.objects.exclude(pk=instance.pk) if instance is not None else TrafficRoute.objects.all()
    if others.filter(name=spec.name).exists():
        issues.append(("name", f"A traffic route is already named {spec.name!r}."))
    if Endpoint.objects.filter(name=spec.name).exists():
        issues.append(("name", f"An endpoint is already named {spec.name!r}: names must be unique across endpoints "
                       "and routes."))
    return issues


def save_route(spec: RouteSpec, instance: TrafficRoute | None = None) -> TrafficRoute:
    """Create (as made in the admin) or update one traffic route and its destinations."""
    route = instance or TrafficRoute(source=Source.ADMIN)
    route.name = spec.name
    _set_route(route, spec)
    return route


def _set_route(route: TrafficRoute, spec: RouteSpec) -> None:
    route.task_type, route.routing_strategy, route.enabled = spec.task_type, spec.routing_strategy, spec.enabled
    route.fallback_on = list(spec.fallback_on)
    route.save()
    route.destinations.all().delete()
    endpoints = {e.name: e for e in Endpoint.objects.filter(name__in=[d.name for d in spec.destinations])}
    TrafficDestination.objects.bulk_create(
        TrafficDestination(route=route, endpoint=endpoints[d.name], traffic_percentage=d.traffic_percentage,
                           position=i)
        for i, d in enumerate(spec.destinations)
    )


def _differs(endpoint: Endpoint, values: dict[str, Any]) -> bool:
    # Literal secrets are re-encrypted on every read (Fernet tokens differ), so compare them clear.
    for key, value in values.items():
        current = getattr(endpoint, key)
        if key == "config":
            if _comparable_config(endpoint.provider, current) != _comparable_config(values["provider"], value):
                return True
        elif current != value:
            return True
    return False


def _comparable_config(provider: str, stored: dict[str, Any]) -> Any:
    try:
        fields = registry.get(provider).config_class.fields
    except registry.UnknownProvider:
        return stored
    return provider_config.export(fields, stored, reveal=True)


def _upsert_route(spec: RouteSpec, route: TrafficRoute | None, position: int, source_path: str,
                  report: ImportReport) -> None:
    if route is not None and route_spec(route) == spec and route.position == position \
            and route.source == Source.YAML and route.source_path == source_path:
        report.unchanged.append(spec.name)
        return
    (report.created if route is None else report.updated).append(spec.name)
    route = route or TrafficRoute(name=spec.name)
    route.position, route.source, route.source_path = position, Source.YAML, source_path
    _set_route(route, spec)


# Instances that start together (or watch the same file) must not import or migrate at the same time.
_CONFIG_LOCK_KEY = 0x6761_7465  # "gate"


@contextmanager
def exclusive_config_lock() -> Iterator[None]:
    """A session-wide lock on PostgreSQL (nothing to do on SQLite, which serialises writers itself)."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [_CONFIG_LOCK_KEY])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_CONFIG_LOCK_KEY])


def _serialize_config_writers() -> None:
    """Inside an import's transaction: wait for any other import to commit first."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CONFIG_LOCK_KEY])


def bump_config_version() -> None:
    """Mark the config as changed for every process (they poll the version)."""
    updated = ConfigState.objects.filter(pk=1).update(version=F("version") + 1)
    if not updated:
        ConfigState.objects.create(pk=1, version=1)


def config_version() -> int:
    state = ConfigState.objects.filter(pk=1).values_list("version", flat=True).first()
    return int(state or 0)


# -- export ------------------------------------------------------------------------------------------
def endpoint_to_yaml(endpoint: Endpoint, *, reveal_secrets: bool = False) -> dict[str, Any]:
    try:
        fields = registry.get(endpoint.provider).config_class.fields
        config = provider_config.export(fields, endpoint.config, reveal=reveal_secrets)
    except registry.UnknownProvider:
        config = {}
    model: dict[str, Any] = {"provider": endpoint.provider, "name": endpoint.model_name, "config": config}
    if endpoint.model_name is None:
        del model["name"]
    entry: dict[str, Any] = {"name": endpoint.name, "endpoint_type": endpoint.endpoint_type, "model": model}
    if endpoint.has_limit:
        limit: dict[str, Any] = {"calls": endpoint.limit_calls, "renewal_period": endpoint.limit_renewal_period}
        if endpoint.limit_key is not None:
            limit["key"] = endpoint.limit_key
        entry["limit"] = limit
    timeouts = {k: v for k, v in (("connect", endpoint.connect_timeout), ("read", endpoint.read_timeout),
                                  ("total", endpoint.total_timeout), ("retries", endpoint.max_retries))
                if v is not None}
    if timeouts:
        entry["timeouts"] = timeouts
    if endpoint.has_cost:
        entry["cost"] = {"input_per_million_tokens": plain_number(endpoint.cost_input_per_million),
                         "output_per_million_tokens": plain_number(endpoint.cost_output_per_million)}
    budget = budget_to_yaml(endpoint)
    if budget:
        entry["budget"] = budget
    if endpoint.params:
        entry["params"] = endpoint.params
    if not endpoint.enabled:
        entry["enabled"] = False
    return entry


def route_to_yaml(route: TrafficRoute) -> dict[str, Any]:
    fallback = route.routing_strategy == "FALLBACK"
    entry: dict[str, Any] = {
        "name": route.name,
        "task_type": route.task_type,
        "destinations": [{"name": d.endpoint.name} if fallback else
                         {"name": d.endpoint.name, "traffic_percentage": d.traffic_percentage}
                         for d in route.destinations.all()],
        "routing_strategy": route.routing_strategy,
    }
    if fallback and tuple(route.fallback_on) != FALLBACK_DEFAULT:
        entry["fallback_on"] = [int(item) if item.isdigit() else item for item in route.fallback_on]
    if not route.enabled:
        entry["enabled"] = False
    return entry


def export_config(*, reveal_secrets: bool = False) -> str:
    """The whole config in MLflow's YAML schema (and our `consumers:`): references as written, literal
    keys hidden, gateway keys never."""
    document: dict[str, Any] = {
        "endpoints": [endpoint_to_yaml(e, reveal_secrets=reveal_secrets) for e in Endpoint.objects.all()],
    }
    routes = [route_to_yaml(r) for r in TrafficRoute.objects.prefetch_related("destinations__endpoint")]
    if routes:
        document["routes"] = routes
    consumers = [consumer_to_yaml(c) for c in Consumer.objects.all()]
    if consumers:
        document["consumers"] = consumers
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True)
