"""The one validator for the config document: endpoints, traffic routes and consumers.

`load_config`, `start_server`'s file watcher, the admin forms and the management API all call these
functions, so a definition is accepted or refused the same way wherever it comes from. Everything is
checked before anything is written; errors name the file, the entry (index and name) and the field.
"""
from __future__ import annotations

import difflib
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from django.conf import settings

from endpoints_app.configfile import load_yaml
from endpoints_app.models import (
    LIMIT_KEY_MAX_LENGTH,
    MODEL_NAME_MAX_LENGTH,
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    RENEWAL_PERIOD_MAX_LENGTH,
)
from providers import registry
from providers.config import ConfigValidationError
from providers.secrets import shown
from providers.shapes import ENDPOINT_TYPES
from serving.ratelimit import parse_period

_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class Issue:
    location: str  # "endpoints[2] 'chat'" or "routes[0] 'split'" or "" for the document
    field: str
    message: str

    def __str__(self) -> str:
        where = " ".join(part for part in (self.location, self.field and f"field {shown(self.field)}") if part)
        return f"{where}: {self.message}" if where else self.message


class ConfigError(ValueError):
    """One or more issues in a config document; str() lists them all, one per line."""

    def __init__(self, issues: list[Issue], source: str = "") -> None:
        self.issues = issues
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        return "\n".join(f"{prefix}{issue}" for issue in self.issues)


@dataclass(frozen=True)
class LimitSpec:
    calls: int
    renewal_period: str
    key: str | None = None


@dataclass(frozen=True)
class TimeoutSpec:
    connect: float | None = None
    read: float | None = None
    retries: int | None = None
    total: float | None = None  # the whole call, retries and backoff included


@dataclass(frozen=True)
class ParamsSpec:
    """`params:` what the endpoint fills in, caps and refuses in requests before the provider sees them."""

    defaults: dict[str, Any] = field(default_factory=dict)
    max: dict[str, int | float] = field(default_factory=dict)
    deny: tuple[str, ...] = ()
    on_max: str = "clamp"  # clamp, or reject (400)


@dataclass(frozen=True)
class CostSpec:
    """USD per million tokens, as vendors list their prices."""

    input_per_million_tokens: Decimal
    output_per_million_tokens: Decimal


@dataclass(frozen=True)
class BudgetSpec:
    usd: Decimal
    period: str  # day, week or month (UTC)
    action: str  # reject or alert


@dataclass(frozen=True)
class TokenLimitSpec:
    tokens: int
    renewal_period: str


@dataclass(frozen=True)
class ConsumerSpec:
    name: str
    description: str = ""
    enabled: bool = True
    allow: tuple[str, ...] = ()  # endpoint and route names, or ("*",)
    limit: LimitSpec | None = None
    token_limit: TokenLimitSpec | None = None
    budget: BudgetSpec | None = None


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    endpoint_type: str
    provider: str
    model_name: str | None
    config: dict[str, Any]
    limit: LimitSpec | None = None
    timeouts: TimeoutSpec = field(default_factory=TimeoutSpec)
    enabled: bool = True
    cost: CostSpec | None = None
    budget: BudgetSpec | None = None
    params: ParamsSpec | None = None


@dataclass(frozen=True)
class DestinationSpec:
    name: str
    traffic_percentage: int | None  # None on a FALLBACK route: destinations are tried in order


@dataclass(frozen=True)
class RouteSpec:
    name: str
    task_type: str
    destinations: tuple[DestinationSpec, ...]
    routing_strategy: str = "TRAFFIC_SPLIT"
    enabled: bool = True
    fallback_on: tuple[str, ...] = ()  # FALLBACK: the failures that move on to the next destination


@dataclass
class ConfigDocument:
    endpoints: list[EndpointSpec]
    routes: list[RouteSpec]
    consumers: list[ConsumerSpec] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class EntryError(Exception):
    """One entry is wrong: `field` is the dotted path inside it (`model.config.openai_api_key`)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message


def _first_key(keys: Any) -> str:
    """The first of some unknown keys, for a field path: as text, at most 80 characters."""
    first = min(str(key) for key in keys)
    return first if len(first) <= 80 else first[:80] + "..."


# -- single definitions (also used by the admin) ---------------------------------------------------
def validate_name(name: Any) -> str:
    if name is None or name == "":
        raise EntryError("name", "a non-empty name is required")
    if not isinstance(name, str):
        raise EntryError("name", f"the name must be a string, got {shown(name)}")
    if len(name) > NAME_MAX_LENGTH:
        raise EntryError("name", f"the name is {len(name)} characters long; at most {NAME_MAX_LENGTH} are allowed")
    if not _NAME.match(name):
        raise EntryError("name", f"invalid name {shown(name)}: use only ASCII letters, digits, '_', '-' and '.'")
    return name


def validate_endpoint_type(value: Any, field_name: str = "endpoint_type") -> str:
    if value not in ENDPOINT_TYPES:
        raise EntryError(field_name,
                          f"The endpoint_type {shown(value)} is not supported; use one of {', '.join(ENDPOINT_TYPES)}")
    return str(value)


def validate_limit(raw: Any, *, with_key: bool = True) -> LimitSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise EntryError("limit", "limit must be a mapping with calls and renewal_period")
    allowed = ("calls", "renewal_period", "key") if with_key else ("calls", "renewal_period")
    unknown = set(raw) - set(allowed)
    if unknown:
        raise EntryError(f"limit.{_first_key(unknown)}",
                         f"unknown limit key; use {', '.join(allowed[:-1])} and {allowed[-1]}")
    calls = raw.get("calls")
    if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
        raise EntryError("limit.calls", f"calls must be a whole number of 0 or more, got {shown(calls)}")
    if isinstance(raw.get("renewal_period"), str):
        _period_text("limit", raw["renewal_period"])  # its length first: parse_period quotes it
    try:
        parse_period(raw.get("renewal_period"))
    except ValueError as exc:
        raise EntryError("limit.renewal_period", str(exc)) from None
    key = raw.get("key")
    if key is not None and not isinstance(key, str):
        raise EntryError("limit.key", "key must be a string")
    _check_length("limit.key", key, LIMIT_KEY_MAX_LENGTH)
    return LimitSpec(calls=calls, renewal_period=_period_text("limit", raw["renewal_period"]), key=key)


def validate_token_limit(raw: Any) -> TokenLimitSpec | None:
    """`token_limit: {tokens, renewal_period}`: tokens per period, counted from the providers' usage."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise EntryError("token_limit", "token_limit must be a mapping with tokens and renewal_period")
    unknown = set(raw) - {"tokens", "renewal_period"}
    if unknown:
        raise EntryError(f"token_limit.{_first_key(unknown)}", "unknown token_limit key; use tokens and renewal_period")
    tokens = raw.get("tokens")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise EntryError("token_limit.tokens", f"tokens must be a whole number of 0 or more, got {shown(tokens)}")
    if isinstance(raw.get("renewal_period"), str):
        _period_text("token_limit", raw["renewal_period"])  # its length first: parse_period quotes it
    try:
        parse_period(raw.get("renewal_period"))
    except ValueError as exc:
        raise EntryError("token_limit.renewal_period", str(exc)) from None
    return TokenLimitSpec(tokens=tokens, renewal_period=_period_text("token_limit", raw["renewal_period"]))


def _period_text(prefix: str, value: Any) -> str:
    text = str(value).strip()
    _check_length(f"{prefix}.renewal_period", text, RENEWAL_PERIOD_MAX_LENGTH)
    return text


def _check_length(field_name: str, value: str | None, max_length: int) -> None:
    """A string stored in a bounded column (endpoints_app.models' *_MAX_LENGTH)."""
    if value is not None and len(value) > max_length:
        raise EntryError(field_name, f"{field_name} is {len(value)} characters long; at most {max_length} are allowed")


BUDGET_PERIODS = ("day", "week", "month")
BUDGET_ACTIONS = ("reject", "alert")
_MAX_USD = Decimal("1000000000")


def _usd(value: Any, field_name: str, what: str) -> Decimal:
    """A non-negative amount of dollars, exactly as written (0.15 stays 0.15), at most 6 decimals."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise EntryError(field_name, f"{what} must be a number of US dollars, got {shown(value)}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise EntryError(field_name, f"{what} must be a number of US dollars, got {shown(value)}") from None
    if not amount.is_finite() or amount < 0 or amount > _MAX_USD:
        raise EntryError(field_name, f"{what} must be from 0 to {_MAX_USD}, got {shown(value)}")
    if amount != amount.quantize(Decimal("0.000001")):
        raise EntryError(field_name, f"{what} takes at most 6 decimals, got {shown(value)}")
    return amount.normalize() if amount else Decimal(0)


def validate_cost(raw: Any) -> CostSpec | None:
    """`cost: {input_per_million_tokens, output_per_million_tokens}` in USD."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise EntryError("cost", "cost must be a mapping with input_per_million_tokens and output_per_million_tokens")
    names = ("input_per_million_tokens", "output_per_million_tokens")
    unknown = set(raw) - set(names)
    if unknown:
        raise EntryError(f"cost.{_first_key(unknown)}", f"unknown cost key; use {names[0]} and {names[1]}")
    for name in names:
        if raw.get(name) is None:
            raise EntryError(f"cost.{name}", f"{name} is required (USD per million tokens; 0 for free)")
    return CostSpec(*(_usd(raw[name], f"cost.{name}", name) for name in names))


def validate_budget(raw: Any) -> BudgetSpec | None:
    """`budget: {usd, period: day|week|month, action: reject|alert}`; periods renew at UTC boundaries."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise EntryError("budget", "budget must be a mapping with usd, period and action")
    unknown = set(raw) - {"usd", "period", "action"}
    if unknown:
        raise EntryError(f"budget.{_first_key(unknown)}", "unknown budget key; use usd, period and action")
    if raw.get("usd") is None:
        raise EntryError("budget.usd", "usd is required: the ceiling in US dollars per period")
    usd = _usd(raw["usd"], "budget.usd", "usd")
    period = raw.get("period", "month")
    if period not in BUDGET_PERIODS:
        raise EntryError("budget.period", f"period must be day, week or month, got {shown(period)}")
    action = raw.get("action", "reject")
    if action not in BUDGET_ACTIONS:
        raise EntryError("budget.action", f"action must be reject or alert, got {shown(action)}")
    return BudgetSpec(usd=usd, period=period, action=action)


def validate_params(raw: Any) -> ParamsSpec | None:
    """`params: {defaults: {...}, max: {...}, deny: [...], on_max: clamp|reject}`."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise EntryError("params", "params must be a mapping with defaults, max, deny and on_max")
    unknown = set(raw) - {"defaults", "max", "deny", "on_max"}
    if unknown:
        raise EntryError(f"params.{_first_key(unknown)}", "unknown params key; use defaults, max, deny and on_max")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, Mapping) or not all(isinstance(k, str) for k in defaults):
        raise EntryError("params.defaults", "defaults must map request fields to the values to fill in")
    if "model" in defaults or "stream" in defaults or "messages" in defaults:
        raise EntryError("params.defaults", "defaults cannot set model, messages or stream")
    maxima = raw.get("max") or {}
    if not isinstance(maxima, Mapping):
        raise EntryError("params.max", "max must map numeric request fields to their largest allowed value")
    for name, value in maxima.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise EntryError(f"params.max.{name}", f"the maximum of {name} must be a number, got {shown(value)}")
    deny = raw.get("deny") or []
    if not isinstance(deny, list) or not all(isinstance(item, str) and item for item in deny):
        raise EntryError("params.deny", "deny must be a list of request field names")
    overlap = sorted(set(deny) & (set(defaults) | set(maxima)))
    if overlap:
        raise EntryError("params.deny", f"{shown(overlap[0])} cannot be both denied and given a default or a maximum")
    on_max = raw.get("on_max", "clamp")
    if on_max not in ("clamp", "reject"):
        raise EntryError("params.on_max", f"on_max must be clamp or reject, got {shown(on_max)}")
    return ParamsSpec(defaults=dict(defaults), max=dict(maxima), deny=tuple(dict.fromkeys(deny)), on_max=on_max)


def validate_timeouts(raw: Any) -> TimeoutSpec:
    if raw is None:
        return TimeoutSpec()
    if not isinstance(raw, Mapping):
        raise EntryError("timeouts", "timeouts must be a mapping with connect, read, total and retries")
    unknown = set(raw) - {"connect", "read", "total", "retries"}
    if unknown:
        raise EntryError(f"timeouts.{_first_key(unknown)}",
                         "unknown timeouts key; use connect, read, total and retries")
    values: dict[str, Any] = {}
    for key in ("connect", "read", "total"):
        value = raw.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise EntryError(f"timeouts.{key}", f"{key} must be a positive number of seconds, got {shown(value)}")
            values[key] = float(value)
    retries = raw.get("retries")
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise EntryError("timeouts.retries", f"retries must be a whole number from 0 to 10, got {shown(retries)}")
        values["retries"] = retries
    return TimeoutSpec(**values)


ENDPOINT_KEYS = ("name", "endpoint_type", "route_type", "model", "limit", "timeouts", "enabled", "cost", "budget",
                 "params")


def _unknown_key_notes(name: str, raw: Mapping[str, Any]) -> list[str]:
    """MLflow ignores unknown endpoint keys, and so do we, but a typo (`limits:`) deserves a warning."""
    notes = []
    for key in raw:
        if key not in ENDPOINT_KEYS:
            close = difflib.get_close_matches(str(key), ENDPOINT_KEYS, n=1)
            hint = f"; did you mean {shown(close[0])}?" if close else ""
            notes.append(f"endpoint {shown(name)}: unknown key {shown(key)} is ignored{hint}")
    return notes


def validate_endpoint(raw: Any, *, existing_config: Mapping[str, Any] | None = None,
                      legacy: bool = False) -> tuple[EndpointSpec, list[str]]:
    """One `endpoints[]` entry → EndpointSpec. Raises EntryError. Returns warnings too."""
    notes: list[str] = []
    if not isinstance(raw, Mapping):
        raise EntryError("", "each endpoint must be a mapping")
    name = validate_name(raw.get("name"))
    notes.extend(_unknown_key_notes(name, raw))
    if "route_type" in raw and "endpoint_type" not in raw:
        if not legacy:
            notes.append(f"endpoint {shown(name)}: 'route_type' is deprecated (MLflow 2.x); write 'endpoint_type'")
        endpoint_type = validate_endpoint_type(raw.get("route_type"), "route_type")
    else:
        endpoint_type = validate_endpoint_type(raw.get("endpoint_type"))
    model = raw.get("model")
    if not isinstance(model, Mapping):
        raise EntryError("model", "model must be a mapping with provider, name and config")
    unknown_model_keys = set(model) - {"provider", "name", "config"}
    if unknown_model_keys:
        raise EntryError(f"model.{sorted(unknown_model_keys)[0]}", "unknown model key; use provider, name and config")
    if model.get("provider") in (None, ""):
        raise EntryError("model.provider", f"a provider is required; known providers: {', '.join(registry.names())}")
    try:
        provider = registry.canonical_name(model.get("provider"))
    except registry.UnknownProvider as exc:
        raise EntryError("model.provider", f"{exc} Known providers: {', '.join(registry.names())}") from None
    provider_cls = registry.get(provider)
    model_name = model.get("name")
    if model_name is not None and not isinstance(model_name, str):
        raise EntryError("model.name", "the model name must be a string")
    _check_length("model.name", model_name, MODEL_NAME_MAX_LENGTH)
    if model.get("config") is None and any(f.required for f in provider_cls.config_class.fields):
        raise EntryError("model.config", f"A config must be supplied when setting a provider. "
                          f"The provider entry for {provider} is incorrect.")
    try:
        provider_cls.check_endpoint(endpoint_type, model_name)
        config = provider_cls.config_class.validate(model.get("config"), existing=existing_config)
    except ConfigValidationError as exc:
        top_level = exc.field in {"endpoint_type", "model.name", "model.provider"}
        target = exc.field if top_level else f"model.config.{exc.field}"
        raise EntryError(target.replace("model.config.config", "model.config"), exc.message) from None
    spec = EndpointSpec(
        name=name, endpoint_type=endpoint_type, provider=provider, model_name=model_name, config=config,
        limit=validate_limit(raw.get("limit")), timeouts=validate_timeouts(raw.get("timeouts")),
        enabled=validate_enabled(raw), cost=validate_cost(raw.get("cost")), budget=validate_budget(raw.get("budget")),
        params=validate_params(raw.get("params")),
    )
    return spec, notes


def validate_enabled(raw: Mapping[str, Any]) -> bool:
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise EntryError("enabled", "enabled must be true or false")
    return enabled


ROUTING_STRATEGIES = ("TRAFFIC_SPLIT", "FALLBACK")
# What makes a FALLBACK route try its next destination: no connection, no answer in time, or these statuses.
FALLBACK_DEFAULT = ("connect", "timeout", "429", "5xx")
_REQUEST_CAUSED = {400, 404, 405, 409, 413, 415, 422}


def validate_fallback_on(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return FALLBACK_DEFAULT
    if not isinstance(raw, list) or not raw:
        raise EntryError("fallback_on", "fallback_on must be a non-empty list of: connect, timeout, 5xx, or statuses "
                         "such as 429, 503, 401")
    out = []
    for index, item in enumerate(raw):
        text = str(item).strip().lower()
        if text in ("connect", "timeout", "5xx"):
            out.append(text)
            continue
        if not text.isdigit() or not 400 <= int(text) <= 599:
            raise EntryError(f"fallback_on[{index}]",
                             f"{shown(item)} is not connect, timeout, 5xx or an HTTP error status")
        if int(text) in _REQUEST_CAUSED:
            raise EntryError(f"fallback_on[{index}]", f"{text} is caused by the request itself: another destination "
                             "would refuse it too, so a fallback never moves on for it")
        out.append(text)
    return tuple(dict.fromkeys(out))


def validate_route(raw: Any, endpoint_types: Mapping[str, str]) -> RouteSpec:
    """One 3.x `routes[]` entry; `endpoint_types` maps every known endpoint name to its type."""
    if not isinstance(raw, Mapping):
        raise EntryError("", "each route must be a mapping")
    name = validate_name(raw.get("name"))
    task_type = validate_endpoint_type(raw.get("task_type"), "task_type")
    strategy = raw.get("routing_strategy", "TRAFFIC_SPLIT") or "TRAFFIC_SPLIT"
    if strategy not in ROUTING_STRATEGIES:
        raise EntryError("routing_strategy",
                         f"routing_strategy must be 'TRAFFIC_SPLIT' or 'FALLBACK', got {shown(strategy)}")
    fallback = strategy == "FALLBACK"
    if "fallback_on" in raw and not fallback:
        raise EntryError("fallback_on", "fallback_on applies to routing_strategy FALLBACK only")
    destinations = raw.get("destinations")
    shape = "{name}" if fallback else "{name, traffic_percentage}"
    if not isinstance(destinations, list) or not destinations:
        raise EntryError("destinations", f"destinations must be a non-empty list of {shape}")
    if fallback and len(destinations) < 2:
        raise EntryError("destinations", "a FALLBACK route needs at least two destinations, tried in order")
    out: list[DestinationSpec] = []
    for index, dest in enumerate(destinations):
        where = f"destinations[{index}]"
        if not isinstance(dest, Mapping):
            raise EntryError(where, f"each destination must be a mapping: {shape}")
        dest_name = dest.get("name")
        if not isinstance(dest_name, str) or dest_name not in endpoint_types:
            raise EntryError(f"{where}.name", f"The route destination name must be a endpoint name, but the route "
                              f"'{name}' has an invalid destination name '{_first_key([dest_name])}'.")
        if endpoint_types[dest_name] != task_type:
            raise EntryError(f"{where}.name", f"The route destination endpoint types in the route '{name}' must have "
                              f"endpoint type '{task_type}' but got endpoint type '{endpoint_types[dest_name]}'.")
        if any(d.name == dest_name for d in out):
            raise EntryError(f"{where}.name", f"{shown(dest_name)} is already a destination of this route")
        pct = dest.get("traffic_percentage")
        if fallback:
            if pct is not None:
                raise EntryError(f"{where}.traffic_percentage", "a FALLBACK route tries its destinations in order: "
                                 "give no traffic_percentage")
            out.append(DestinationSpec(str(dest_name), None))
            continue
        if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
            raise EntryError(f"{where}.traffic_percentage",
                              "The route destination traffic percentage must between 0 and 100.")
        out.append(DestinationSpec(str(dest_name), pct))
    if not fallback and sum(d.traffic_percentage or 0 for d in out) != 100:
        raise EntryError("destinations", "For each route configuration, the traffic percentage sum of destinations "
                          f"must be 100, but got invalid configuration of route '{name}'.")
    return RouteSpec(name=name, task_type=task_type, destinations=tuple(out), routing_strategy=strategy,
                     enabled=validate_enabled(raw),
                     fallback_on=validate_fallback_on(raw.get("fallback_on")) if fallback else ())


CONSUMER_KEYS = ("name", "description", "enabled", "allow", "limit", "token_limit", "budget")


def validate_consumer(raw: Any, callable_names: Mapping[str, str] | None = None) -> ConsumerSpec:
    """One `consumers[]` entry. `callable_names` maps every endpoint and route name a consumer may be
    allowed to call to its kind ("endpoint" or "route"); None skips the check of the names."""
    if not isinstance(raw, Mapping):
        raise EntryError("", "each consumer must be a mapping with at least a name")
    name = validate_name(raw.get("name"))
    unknown = [key for key in raw if key not in CONSUMER_KEYS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), CONSUMER_KEYS, n=1)
        hint = f"; did you mean {shown(close[0])}?" if close else f"; use {', '.join(CONSUMER_KEYS)}"
        raise EntryError(str(unknown[0]), f"unknown consumer key {shown(unknown[0])}{hint}")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise EntryError("description", "description must be a string")
    allow = raw.get("allow", [])
    if allow == "*":
        allow = ["*"]
    if not isinstance(allow, list) or not all(isinstance(item, str) and item for item in allow):
        raise EntryError("allow", 'allow must be a list of endpoint and route names, or ["*"] for all of them')
    if "*" in allow and len(allow) > 1:
        raise EntryError("allow", '"*" already allows every endpoint and route: list names or "*", not both')
    if callable_names is not None:
        for index, item in enumerate(allow):
            if item != "*" and item not in callable_names:
                close = difflib.get_close_matches(item, list(callable_names), n=1)
                hint = f"; did you mean {shown(close[0])}?" if close else ""
                raise EntryError(f"allow[{index}]", f"there is no endpoint or route named {shown(item)}{hint}")
    return ConsumerSpec(name=name, description=description.strip(), enabled=validate_enabled(raw),
                        allow=tuple(dict.fromkeys(allow)),
                        limit=validate_limit(raw.get("limit"), with_key=False),
                        token_limit=validate_token_limit(raw.get("token_limit")),
                        budget=validate_budget(raw.get("budget")))


# -- whole documents ---------------------------------------------------------------------------------
def _is_endpoint_shaped(entry: Any) -> bool:
    return isinstance(entry, Mapping) and ("model" in entry or "endpoint_type" in entry or "route_type" in entry)


def _is_route_shaped(entry: Any) -> bool:
    return isinstance(entry, Mapping) and ("destinations" in entry or "task_type" in entry)


def parse_yaml(text: str, source: str = "", max_bytes: int | None = None) -> Any:
    """One YAML document, under the limits of endpoints_app.configfile (size, nesting, aliases, no
    duplicate keys). Raises ConfigError naming the line; never quotes the text."""
    limit = settings.GATEWAY_CONFIG_MAX_BYTES if max_bytes is None else max_bytes
    if len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit:
        raise ConfigError([Issue("", "", f"larger than the {limit} bytes allowed (GATEWAY_CONFIG_MAX_BYTES)")],
                          source)
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"  # not str(exc): it quotes the text
        raise ConfigError([Issue("", "", f"not a valid YAML file{where}: {problem}")], source) from None


def validate_document(doc: Any, source: str = "",
                      existing_configs: Mapping[str, Mapping[str, Any]] | None = None,
                      extra_endpoint_types: Mapping[str, str] | None = None,
                      existing_routes: Mapping[str, RouteSpec] | None = None) -> ConfigDocument:
    """Validate a parsed YAML document in full; raise ConfigError listing every issue.

    `existing_configs` (name → stored config) lets an exported placeholder keep a stored secret.
    `extra_endpoint_types` are endpoints already in the database that stay there (made in the admin,
    loaded from other files): routes may name them, and a route in the file may not take their names.
    `existing_routes` are the traffic routes that stay: an endpoint in the file may not take their names,
    nor change the type of an endpoint they send traffic to. A row the file defines again under the same
    kind is simply updated. Consumers may allow the endpoints and routes of the file and those that stay.
    """
    existing_configs = existing_configs or {}
    extra_endpoint_types = extra_endpoint_types or {}
    existing_routes = existing_routes or {}
    issues: list[Issue] = []
    notes: list[str] = []
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise ConfigError([Issue("", "", "the top level must be a mapping with an 'endpoints' list")], source)

    raw_endpoints = doc.get("endpoints")
    raw_routes = doc.get("routes")
    legacy = False
    if raw_endpoints is None and isinstance(raw_routes, list) and raw_routes \
            and all(map(_is_endpoint_shaped, raw_routes)):
        # MLflow 2.x: `routes` was the name of the endpoints list.
        notes.append("'routes' as the list of endpoints is deprecated (MLflow 2.x); rename it to 'endpoints'")
        raw_endpoints, raw_routes, legacy = raw_routes, None, True
    if raw_endpoints is None:
        raise ConfigError([Issue("", "endpoints", "the 'endpoints' list is required (it may be empty: [])")], source)
    if not isinstance(raw_endpoints, list):
        raise ConfigError([Issue("", "endpoints", "'endpoints' must be a list")], source)

    endpoints: list[EndpointSpec] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(raw_endpoints):
        label = _label("endpoints", index, raw)
        try:
            name = raw.get("name") if isinstance(raw, Mapping) else None
            spec, entry_notes = validate_endpoint(
                raw, existing_config=existing_configs.get(name) if isinstance(name, str) else None, legacy=legacy
            )
        except EntryError as exc:
            issues.append(Issue(label, exc.field, exc.message))
            continue
        if legacy and "route_type" in raw:
            entry_notes = [f"endpoint {spec.name!r}: 'route_type' is deprecated (MLflow 2.x); write 'endpoint_type'"]
        notes.extend(entry_notes)
        if spec.name in seen:
            issues.append(Issue(label, "name", f"duplicate name {spec.name!r} (also {seen[spec.name]}): names must be "
                                "unique across endpoints and routes"))
            continue
        if spec.name in existing_routes:
            issues.append(Issue(label, "name", f"a traffic route named {spec.name!r} already exists: names must be "
                                "unique across endpoints and routes"))
            continue
        seen[spec.name] = label
        endpoints.append(spec)

    routes: list[RouteSpec] = []
    if raw_routes is not None:
        if not isinstance(raw_routes, list):
            issues.append(Issue("", "routes", "'routes' must be a list"))
        else:
            types = {**extra_endpoint_types, **{e.name: e.endpoint_type for e in endpoints}}
            for index, raw in enumerate(raw_routes):
                label = _label("routes", index, raw)
                if not _is_route_shaped(raw) and _is_endpoint_shaped(raw):
                    issues.append(Issue(label, "", "looks like an endpoint: MLflow 2.x 'routes' lists cannot be mixed "
                                        "with 'endpoints'; move it under 'endpoints'"))
                    continue
                try:
                    route = validate_route(raw, types)
                except EntryError as exc:
                    issues.append(Issue(label, exc.field, exc.message))
                    continue
                if route.name in seen:
                    issues.append(Issue(label, "name", f"duplicate name {route.name!r} (also {seen[route.name]}): "
                                        "names must be unique across endpoints and routes"))
                    continue
                if route.name in extra_endpoint_types:
                    issues.append(Issue(label, "name", f"an endpoint named {route.name!r} already exists: names must "
                                        "be unique across endpoints and routes"))
                    continue
                seen[route.name] = label
                routes.append(route)
    issues.extend(_retyped_destinations(endpoints, seen, existing_routes, _names_in(raw_routes)))
    callable_names = {**dict.fromkeys(extra_endpoint_types, "endpoint"), **dict.fromkeys(existing_routes, "route"),
                      **{e.name: "endpoint" for e in endpoints}, **{r.name: "route" for r in routes}}
    consumers = _validate_consumers(doc.get("consumers"), callable_names, issues)
    if issues:
        raise ConfigError(issues, source)
    for note in notes:
        warnings.warn(note, FutureWarning, stacklevel=2)
    return ConfigDocument(endpoints=endpoints, routes=routes, consumers=consumers, warnings=notes)


def _validate_consumers(raw_consumers: Any, callable_names: Mapping[str, str], issues: list[Issue]
                        ) -> list[ConsumerSpec]:
    if raw_consumers is None:
        return []
    if not isinstance(raw_consumers, list):
        issues.append(Issue("", "consumers", "'consumers' must be a list"))
        return []
    consumers: list[ConsumerSpec] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(raw_consumers):
        label = _label("consumers", index, raw)
        try:
            consumer = validate_consumer(raw, callable_names)
        except EntryError as exc:
            issues.append(Issue(label, exc.field, exc.message))
            continue
        if consumer.name in seen:
            issues.append(Issue(label, "name", f"duplicate consumer name {consumer.name!r} "
                                f"(also {seen[consumer.name]})"))
            continue
        seen[consumer.name] = label
        consumers.append(consumer)
    return consumers


def _retyped_destinations(endpoints: list[EndpointSpec], labels: Mapping[str, str],
                          existing_routes: Mapping[str, RouteSpec], redefined: set[str]) -> list[Issue]:
    """A route the file leaves alone must still get endpoints of its task type."""
    types = {e.name: e.endpoint_type for e in endpoints}
    issues = []
    for route in existing_routes.values():
        if route.name in redefined:
            continue
        for destination in route.destinations:
            endpoint_type = types.get(destination.name)
            if endpoint_type is not None and endpoint_type != route.task_type:
                issues.append(Issue(labels[destination.name], "endpoint_type",
                                    f"the traffic route {route.name!r} sends {route.task_type} traffic to this "
                                    f"endpoint, so it cannot become {endpoint_type}; change the route first"))
    return issues


def _names_in(entries: Any) -> set[str]:
    if not isinstance(entries, list):
        return set()
    return {entry["name"] for entry in entries if isinstance(entry, Mapping) and isinstance(entry.get("name"), str)}


def _label(kind: str, index: int, raw: Any) -> str:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    return f"{kind}[{index}]" + (f" {shown(name)}" if isinstance(name, str) else "")
