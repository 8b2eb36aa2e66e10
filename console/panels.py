"""What the console adds to the admin's change pages of endpoints, traffic routes and consumers: the
template context of each panel, built from console.health and console.dashboard."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from console import charts, health
from console.dashboard import usage_over_time, window_named
from console.figures import usage_charts
from consumers.models import Consumer
from endpoints_app.models import Endpoint, TrafficRoute
from providers import registry
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS


def endpoint_panel(endpoint: Endpoint) -> dict[str, Any]:
    usage = usage_over_time(window_named("1h"), endpoint=endpoint.name)
    shown = [chart for chart in usage_charts(usage, prefix="endpoint") if chart.slug in
             ("endpoint-requests", "endpoint-errors")]
    counted = health.endpoint_counters([endpoint])
    found = health.circuits([endpoint.name])
    return {
        "endpoint": endpoint, "usage": usage,
        "circuit": found[endpoint.name] if isinstance(found, dict) else None,
        "circuit_unreadable": found if isinstance(found, str) else "",
        "error_percent": f"{usage.error_rate:.1%}" if usage.error_rate is not None else "—",
        "charts": [charts.render(chart) for chart in shown],
        "recent_errors": health.recent_errors(endpoints=[endpoint.name], called=endpoint.name),
        "limit": counted.limits[0] if counted.limits else None,
        "budget": counted.budgets[0] if counted.budgets else None,
        "counted": counted,
        "spend": health.period_spend(endpoint=endpoint.name).as_usd(),
    }


def route_panel(route: TrafficRoute) -> dict[str, Any]:
    destinations = list(route.destinations.select_related("endpoint"))
    endpoints = [d.endpoint for d in destinations]
    names = [e.name for e in endpoints]
    figures = health.last_hour([route.name, *names])
    counted = health.endpoint_counters(endpoints)
    limits = {state.scope[2:]: state for state in counted.limits}
    budgets = {state.scope[2:]: state for state in counted.budgets}
    found = health.circuits(names)
    rows = [{"endpoint": d.endpoint, "share": d.traffic_percentage, "order": index + 1,
             "health": figures[d.endpoint.name], "limit": limits.get(d.endpoint.name),
             "budget": budgets.get(d.endpoint.name),
             "circuit": found.get(d.endpoint.name) if isinstance(found, dict) else None}
            for index, d in enumerate(destinations)]
    return {
        "route": route, "rows": rows, "refused": figures[route.name], "counted": counted,
        "fallback": route.routing_strategy == "FALLBACK",
        "circuit_failures": settings.GATEWAY_CIRCUIT_FAILURES,
        "circuit_cooldown": f"{settings.GATEWAY_CIRCUIT_COOLDOWN_SECONDS:g}",
        "circuit_unreadable": found if isinstance(found, str) else "",
        "recent_errors": health.recent_errors(endpoints=names, called=route.name, route=route.name),
    }


def consumer_panel(consumer: Consumer) -> dict[str, Any]:
    counted = health.consumer_counters(consumer)
    return {
        "consumer": consumer, "counted": counted,
        "limit": counted.limits[0] if counted.limits else None,
        "budget": counted.budgets[0] if counted.budgets else None,
        "spend": health.period_spend(consumer=consumer.name).as_usd(),
    }


def _streams(endpoint: Endpoint) -> bool:
    try:
        return endpoint.endpoint_type in registry.get(endpoint.provider).streaming_types
    except registry.UnknownProvider:
        return False


def playground(target: Endpoint | TrafficRoute) -> dict[str, Any]:
    """The playground's settings: it calls the gateway's own invocation route, as any client does."""
    if isinstance(target, TrafficRoute):
        kind, endpoint_type = "route", target.task_type
        endpoints = [d.endpoint for d in target.destinations.select_related("endpoint")]
        streams = bool(endpoints) and all(_streams(e) for e in endpoints)
    else:
        kind, endpoint_type, streams = "endpoint", target.endpoint_type, _streams(target)
    return {
        "name": target.name, "kind": kind, "endpoint_type": endpoint_type, "enabled": target.enabled,
        "operation": {CHAT: "chat", COMPLETIONS: "completions", EMBEDDINGS: "embeddings"}.get(endpoint_type, ""),
        "streams": streams and endpoint_type in (CHAT, COMPLETIONS),
        "invocation_url": f"/endpoints/{target.name}/invocations",
        "needs_key": settings.GATEWAY_AUTH == "keys",
    }
