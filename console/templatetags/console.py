"""The console's panels on the admin's change pages ({% endpoint_health original %}, ...), and its formats."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.http import urlencode

from console import panels
from console.figures import format_usd
from consumers.models import Consumer
from endpoints_app.models import Endpoint, TrafficRoute

register = template.Library()


@register.filter
def usd(picousd: int | None) -> str:
    return format_usd(picousd or 0)


@register.filter
def percent(fraction: float | None) -> str:
    return "—" if fraction is None else f"{fraction:.1%}"


@register.filter
def milliseconds(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f} ms"


@register.simple_tag
def filter_query(current: dict[str, str], key: str, value: str) -> str:
    """The dashboard's query string with `key` set to `value`."""
    return urlencode({**current, key: value})


@register.inclusion_tag("console/endpoint_health.html")
def endpoint_health(endpoint: Endpoint) -> dict[str, Any]:
    return panels.endpoint_panel(endpoint)


@register.inclusion_tag("console/route_health.html")
def route_health(route: TrafficRoute) -> dict[str, Any]:
    return panels.route_panel(route)


@register.inclusion_tag("console/consumer_spend.html")
def consumer_spend(consumer: Consumer) -> dict[str, Any]:
    return panels.consumer_panel(consumer)


@register.inclusion_tag("console/playground.html")
def playground(target: Endpoint | TrafficRoute) -> dict[str, Any]:
    return panels.playground(target)
