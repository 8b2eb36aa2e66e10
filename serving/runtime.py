"""The in-memory table: endpoints, traffic routes, consumers and keys.

Each process keeps every enabled endpoint and route in memory, with its provider adapter built
once, and every consumer and key (keys by their prefix, with their keyed hash). An invocation reads
only this table: no database query once warm. The table is rebuilt when this process changes the
config (signals) or when a poller thread sees the shared config version move (another worker,
instance, the admin, the API or `load_config`), within GATEWAY_CONFIG_POLL_SECONDS: that is how a
revoked key stops working everywhere within a second.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from consumers.models import Consumer, GatewayKey
from endpoints_app.models import Budgeted, Endpoint, TrafficRoute
from endpoints_app.validation import FALLBACK_DEFAULT
from observability import metrics
from providers import registry, secrets
from providers.base import BaseProvider
from providers.errors import EndpointNotFound, GatewayError
from serving import budgets, snapshot
from serving.auth import LiveConsumer, LiveKey
from serving.bridge import to_thread
from serving.budgets import Budget
from serving.ratelimit import RateLimit, call_limit, token_limit
from serving.upstream import Timeouts
from usage import prices
from usage.reports import ledger_spend

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveEndpoint:
    name: str
    endpoint_type: str
    provider_name: str
    model_name: str | None
    provider: BaseProvider
    limit: RateLimit | None
    limit_info: dict[str, Any] | None  # as the listing shows it
    streaming: bool
    prices: tuple[int, int] | None = None  # pico-dollars per input and per output token (None: unknown)
    budget: Budget | None = None
    params: dict[str, Any] = field(default_factory=dict)  # `params:` defaults, max, deny, on_max


@dataclass(frozen=True)
class LiveRoute:
    name: str
    task_type: str
    destinations: tuple[str, ...]
    weights: tuple[int, ...]  # TRAFFIC_SPLIT percentages (all 1 for FALLBACK)
    strategy: str = "TRAFFIC_SPLIT"
    fallback_on: frozenset[str] = frozenset()

    @property
    def fallback(self) -> bool:
        return self.strategy == "FALLBACK"

    def candidates(self, skip: frozenset[str] = frozenset()) -> list[str]:
        """The destinations to try, in order, without those in `skip` (open circuits): a FALLBACK route's in
        its order; a TRAFFIC_SPLIT route's one, picked by weight among the others (their weights
        re-normalised)."""
        available = [(name, weight) for name, weight in zip(self.destinations, self.weights, strict=True)
                     if name not in skip]
        if self.fallback or not available:
            return [name for name, _ in available]
        total = sum(weight for _, weight in available)
        point = random.random() * total
        cumulative = 0
        for name, weight in available:
            cumulative += weight
            if point < cumulative:
                return [name]
        return [available[-1][0]]


@dataclass
class EndpointTable:
    version: int
    endpoints: dict[str, LiveEndpoint] = field(default_factory=dict)
    routes: dict[str, LiveRoute] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # endpoint names in config order
    consumers: dict[str, LiveConsumer] = field(default_factory=dict)
    keys: dict[str, LiveKey] = field(default_factory=dict)  # by prefix
    restored: bool = False  # built from the snapshot (the database was away): rebuilt once it answers

    def resolve(self, name: str) -> LiveEndpoint | LiveRoute:
        endpoint = self.endpoints.get(name)
        if endpoint is not None:
            return endpoint
        route = self.routes.get(name)
        if route is not None:
            return route
        raise EndpointNotFound(
            f"The endpoint '{name}' is not present or active on the server. Please verify the endpoint name."
        )

    def type_of(self, name: str) -> str | None:
        if name in self.endpoints:
            return self.endpoints[name].endpoint_type
        if name in self.routes:
            return self.routes[name].task_type
        return None


def _timeouts(endpoint: Endpoint) -> Timeouts:
    connect = endpoint.connect_timeout or settings.GATEWAY_CONNECT_TIMEOUT
    read = endpoint.read_timeout or settings.GATEWAY_READ_TIMEOUT
    retries = endpoint.max_retries if endpoint.max_retries is not None else settings.GATEWAY_MAX_RETRIES
    total = endpoint.total_timeout or max(read, connect)
    return Timeouts(connect=connect, read=read, total=total, retries=retries)


@dataclass
class TableRows:
    """What the database holds for the table, as its queries return it: model rows whose secrets are still
    references or encrypted values (resolved when the table is built). What a snapshot keeps."""

    version: int
    endpoints: list[Endpoint]
    routes: list[tuple[str, str, str, list[str] | None, list[tuple[str, int | None]]]]  # name, type, strategy,
    #                                                                     fallback_on, (destination, percentage)
    consumers: list[Consumer]
    keys: list[tuple[str, str, str, Any, Any]]  # prefix, digest, consumer, expires_at, revoked_at


def fetch_rows() -> TableRows:
    from endpoints_app.services import config_version

    version = config_version()
    routes = [
        (route.name, route.task_type, route.routing_strategy, route.fallback_on,
         [(d.endpoint.name, d.traffic_percentage) for d in route.destinations.all()])
        for route in TrafficRoute.objects.filter(enabled=True).prefetch_related("destinations__endpoint")
    ]
    return TableRows(
        version=version,
        endpoints=list(Endpoint.objects.filter(enabled=True)),
        routes=routes,
        consumers=list(Consumer.objects.all()),
        keys=list(GatewayKey.objects.values_list("prefix", "digest", "consumer__name", "expires_at", "revoked_at")),
    )


def build_table(rows: TableRows | None = None, *, restored: bool = False) -> EndpointTable:
    """The table from the database's rows (fetched now unless given: a snapshot's, `restored`)."""
    if rows is None:
        rows = fetch_rows()
    table = EndpointTable(version=rows.version, restored=restored)
    for endpoint in rows.endpoints:
        try:
            provider_cls = registry.get(endpoint.provider)
        except registry.UnknownProvider:
            logger.error("endpoint %s names unknown provider %r; skipped", endpoint.name, endpoint.provider)
            continue
        limit = None
        limit_info = None
        if endpoint.has_limit:
            assert endpoint.limit_calls is not None
            limit = call_limit(endpoint.limit_calls, endpoint.limit_renewal_period)
            limit_info = {
                "calls": endpoint.limit_calls,
                "key": endpoint.limit_key,
                "renewal_period": endpoint.limit_renewal_period,
            }
        provider = provider_cls(
            provider_name=endpoint.provider,
            model_name=endpoint.model_name,
            config=endpoint.config,
            timeouts=_timeouts(endpoint),
        )
        _read_secrets(provider)
        table.endpoints[endpoint.name] = LiveEndpoint(
            name=endpoint.name,
            endpoint_type=endpoint.endpoint_type,
            provider_name=endpoint.provider,
            model_name=endpoint.model_name,
            provider=provider,
            limit=limit,
            limit_info=limit_info,
            streaming=endpoint.endpoint_type in provider_cls.streaming_types,
            prices=_prices(endpoint),
            budget=_budget(endpoint),
            params=endpoint.params or {},
        )
        table.order.append(endpoint.name)
    for name, task_type, strategy, fallback_on, pairs in rows.routes:
        fallback = strategy == "FALLBACK"
        destinations = [
            (endpoint_name, 1 if fallback else percentage or 0)
            for endpoint_name, percentage in pairs
            if endpoint_name in table.endpoints and (fallback or (percentage or 0) > 0)
        ]
        if not destinations:
            continue
        table.routes[name] = LiveRoute(
            name, task_type, tuple(n for n, _ in destinations), tuple(w for _, w in destinations),
            strategy, frozenset(fallback_on or FALLBACK_DEFAULT) if fallback else frozenset(),
        )
    for consumer in rows.consumers:
        table.consumers[consumer.name] = LiveConsumer(
            name=consumer.name, enabled=consumer.enabled, allow_all="*" in consumer.allow,
            allow=frozenset(consumer.allow),
            limit=call_limit(consumer.limit_calls, consumer.limit_renewal_period)
            if consumer.has_limit and consumer.limit_calls is not None else None,
            token_limit=token_limit(consumer.token_limit_tokens, consumer.token_limit_renewal_period)
            if consumer.has_token_limit and consumer.token_limit_tokens is not None else None,
            budget=_budget(consumer),
        )
    for prefix, digest, consumer_name, expires_at, revoked_at in rows.keys:
        table.keys[prefix] = LiveKey(prefix=prefix, digest=digest, consumer=consumer_name,
                                     expires_at=expires_at.timestamp() if expires_at else None,
                                     revoked=revoked_at is not None)
    if not restored:  # the ledger is in the database, away when a snapshot is used
        _seed_budgets(table)
    return table


def _prices(endpoint: Endpoint) -> tuple[int, int] | None:
    """The endpoint's `cost:`, else the built-in list price of its model, in pico-dollars per token."""
    if endpoint.has_cost:
        assert endpoint.cost_input_per_million is not None and endpoint.cost_output_per_million is not None
        found: tuple[Decimal, Decimal] | None = (endpoint.cost_input_per_million, endpoint.cost_output_per_million)
    else:
        found = prices.list_price(endpoint.model_name)
    if found is None:
        return None
    return prices.picousd_per_token(found[0]), prices.picousd_per_token(found[1])


def _budget(row: Budgeted) -> Budget | None:
    if not row.has_budget or row.budget_usd is None:
        return None
    return Budget.of(row.budget_usd, row.budget_period, row.budget_action or "reject")


def _seed_budgets(table: EndpointTable) -> None:
    """Start this period's budget counters from the ledger where they are not counting yet (a restarted
    counter store). Off the event loop: the table is built in a helper thread."""
    now = time.time()
    windows = [budgets.window(f"e:{e.name}", e.budget, now) for e in table.endpoints.values() if e.budget]
    windows += [budgets.window(f"c:{c.name}", c.budget, now) for c in table.consumers.values() if c.budget]
    if windows:
        budgets.seed(windows, ledger_spend(windows))


def _read_secrets(provider: BaseProvider) -> None:
    """Resolve the endpoint's secrets once here, off the event loop: key files are read into memory and
    encrypted keys decrypted, so that requests find them ready. A secret that cannot be resolved yet (an
    unset variable) is reported by the requests that need it."""
    try:
        provider.config  # noqa: B018  (resolving is the point)
    except GatewayError:
        pass


# -- the process-wide table ----------------------------------------------------------------------------
_lock = threading.Lock()
_table: EndpointTable | None = None
_stale = True
_poller_pid: int | None = None
# After a rebuild failed with a table left to serve: when to try again (until then the table serves as is).
_retry_at = 0.0
_RETRY_SECONDS = 2.0
_WARN_EVERY_SECONDS = 10.0
_last_warning = 0.0
# A key the table does not know makes a process look at the config version at most this often (below).
_UNKNOWN_KEY_CHECK_SECONDS = 0.25
_last_unknown_key_check = 0.0


def invalidate() -> None:
    """The table changed: rebuild it on its next use (now, even if a rebuild failed a moment ago)."""
    global _stale, _retry_at
    _stale = True
    _retry_at = 0.0


def current_table() -> EndpointTable:
    """The live table, for code running in the async bridge (an invocation); rebuilt when stale, in a
    helper thread (Django refuses database calls on the event loop). Zero queries on the warm path."""
    table = _table
    if table is not None and (not _stale or time.monotonic() < _retry_at):
        return table
    return to_thread(load_table)


def load_table() -> EndpointTable:
    """The live table, for code that may block (a thread: the management API, start-up, tests)."""
    table = _table
    if table is not None and (not _stale or time.monotonic() < _retry_at):
        return table
    return _rebuild()


def _rebuild() -> EndpointTable:
    """Build the table from the database. When that fails, the table this process has keeps serving (or,
    in a process that has none yet, the snapshot's: serving.snapshot), retried after _RETRY_SECONDS and
    logged once per interval; only a process with neither raises."""
    global _table, _stale, _retry_at
    with _lock:
        if _table is None or (_stale and time.monotonic() >= _retry_at):
            _stale = False
            opened_here = connection.connection is None
            try:
                secrets.KEY_FILES.refresh()
                rows = fetch_rows()
                table = build_table(rows)
            except Exception as exc:
                _stale = True
                metrics.reload_failed("table")
                fallback = _table if _table is not None else _restored()
                if fallback is None:
                    raise
                _table = fallback
                _retry_at = time.monotonic() + _RETRY_SECONDS
                _warn(f"the endpoint table cannot be rebuilt ({type(exc).__name__}: {exc}); serving the table of "
                      f"config version {fallback.version}{' from the snapshot' if fallback.restored else ''} until "
                      "the database answers")
            else:
                _table = table
                _retry_at = 0.0
                metrics.config_loaded(table.version)
                snapshot.save(rows)
            finally:
                # Whichever thread rebuilds the table (a worker's helper thread, a management API thread) must not
                # keep a database connection for it (Django's are per thread). Not inside a transaction: that one
                # is in use.
                if opened_here and not connection.in_atomic_block:
                    connection.close()
            _ensure_poller()
        return _table


def table_for_unknown_key() -> EndpointTable | None:
    """A newer table, for code in the async bridge that met a key this one does not know: a key made a
    moment ago (create_key, the admin, the API, another instance) works at once instead of after the
    poller's next look (GATEWAY_CONFIG_POLL_SECONDS). The config version is read in a helper thread, at
    most every _UNKNOWN_KEY_CHECK_SECONDS per process, so made-up keys cost the database next to nothing.
    None when the version has not moved (or was looked at a moment ago)."""
    global _last_unknown_key_check
    now = time.monotonic()
    if now - _last_unknown_key_check < _UNKNOWN_KEY_CHECK_SECONDS:
        return None
    _last_unknown_key_check = now
    return to_thread(_newer_table)


def _newer_table() -> EndpointTable | None:
    from endpoints_app.services import config_version

    table = _table
    try:
        version = config_version()
    except Exception:  # the database is away: the poller reports it
        return None
    finally:
        if not connection.in_atomic_block:
            connection.close()  # a helper thread of the pool: keep no connection open for it
    if table is not None and version == table.version and not table.restored:
        return None
    invalidate()
    return load_table()


def knows(name: str) -> bool:
    """Whether the table this process serves has an endpoint or a route of that name."""
    table = _table
    return table is not None and (name in table.endpoints or name in table.routes)


def _restored() -> EndpointTable | None:
    rows = snapshot.load()
    if rows is None:
        return None
    try:
        return build_table(rows, restored=True)
    except Exception:
        logger.warning("the endpoint table snapshot cannot be built", exc_info=True)
        return None


def _warn(message: str) -> None:
    """One line per interval, not one per request (nor per poll)."""
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= _WARN_EVERY_SECONDS:
        _last_warning = now
        logger.warning("%s", message)


def served_version() -> int | None:
    return _table.version if _table is not None else None


def _ensure_poller() -> None:
    global _poller_pid
    interval = settings.GATEWAY_CONFIG_POLL_SECONDS
    if interval <= 0 or _poller_pid == os.getpid():
        return
    _poller_pid = os.getpid()
    threading.Thread(target=_poll, args=(interval,), name="gateway-config-poller", daemon=True).start()


def _poll(interval: float) -> None:
    from endpoints_app.services import config_version

    while True:
        time.sleep(interval)
        secrets.KEY_FILES.refresh()  # a key file rotated on disk is used from the next request on
        try:
            version = config_version()
        except Exception as exc:  # the database may be briefly away; keep serving the table we have
            _warn(f"config version check failed ({type(exc).__name__}: {exc}); serving the table we have")
            close_old_connections()
            continue
        table = _table
        if table is not None and (version != table.version or table.restored):
            logger.info("config version %s → %s: reloading endpoint table", table.version, version)
            invalidate()
            try:
                load_table()  # here, off the event loop: the next request finds it ready
            except Exception:  # the next request tries again, and reports it
                logger.warning("endpoint table rebuild failed", exc_info=True)
