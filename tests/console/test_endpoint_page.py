"""What the console adds to an endpoint's and a traffic route's admin page: health over the last hour,
the last errors, the rate-limit window and the budget as the counters hold them, and the playground; and
the ledger lookup the playground uses."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import orjson
import pytest
from django.test import Client

from console import health
from endpoints_app.models import Endpoint, TrafficDestination, TrafficRoute
from endpoints_app.services import save_route
from endpoints_app.validation import validate_route
from providers.shapes import CHAT, EMBEDDINGS
from serving import budgets, counters
from serving.budgets import Budget
from tests.asgi import event_loop
from tests.conftest import MakeEndpoint, post_json
from tests.console.conftest import entry, seed
from usage import ledger

pytestmark = pytest.mark.django_db


def change_page(client: Client, row: Endpoint | TrafficRoute) -> Any:
    kind = "endpoint" if isinstance(row, Endpoint) else "trafficroute"
    response = client.get(f"/admin/endpoints_app/{kind}/{row.pk}/change/")
    assert response.status_code == 200
    return response


@pytest.fixture
def chat(make_endpoint: MakeEndpoint) -> Endpoint:
    return make_endpoint("chat", CHAT, "mock", "mock-chat", limit={"calls": 50, "renewal_period": "minute"})


def test_the_endpoint_page_shows_the_last_hour(staff_client: Client, chat: Endpoint) -> None:
    seed([entry(2, endpoint="chat", latency_ms=20), entry(3, endpoint="chat", latency_ms=20),
          entry(4, endpoint="chat", latency_ms=20),
          entry(5, endpoint="chat", status=502, error_kind="upstream", error_code="upstream_error", latency_ms=900),
          entry(90, endpoint="chat", status=500, error_kind="internal", error_code="internal_error"),  # > 1 h ago
          entry(2, endpoint="other")])
    response = change_page(staff_client, chat)
    html = response.content.decode()
    assert '<dd data-health="requests">4</dd>' in html
    assert '<dd data-health="error-rate">25.0%</dd>' in html
    usage = response.context["usage"]
    assert usage.totals["requests"] == 4 and usage.p95 is not None and 500 < usage.p95 <= 1000
    assert 'id="endpoint-requests"' in html and 'id="endpoint-errors"' in html


def test_the_last_errors_are_listed_newest_first(staff_client: Client, chat: Endpoint) -> None:
    seed([entry(30, endpoint="chat", status=504, error_kind="timeout", error_code="upstream_timeout",
                request_id="older"),
          entry(1, endpoint="", name="chat", status=401, error_kind="refused", error_code="invalid_api_key",
                request_id="refused-before-any-endpoint"),
          entry(2, endpoint="chat", status=429, error_kind="limited", error_code="rate_limit_exceeded",
                request_id="newer"),
          entry(1, endpoint="chat", request_id="a-success"),
          entry(1, endpoint="other", status=500, error_kind="internal", error_code="internal_error",
                request_id="someone-else"),
          entry(26 * 60, endpoint="chat", status=500, error_kind="internal", error_code="internal_error",
                request_id="yesterday")])
    errors = change_page(staff_client, chat).context["recent_errors"]
    assert [(e.request_id, e.status, e.error_code) for e in errors] == [
        ("refused-before-any-endpoint", 401, "invalid_api_key"), ("newer", 429, "rate_limit_exceeded"),
        ("older", 504, "upstream_timeout")]


def test_the_rate_limit_window_is_read_from_the_counters(staff_client: Client, chat: Endpoint, client: Any) -> None:
    for _ in range(3):
        assert post_json(client, "/endpoints/chat/invocations",
                         {"messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    limit = change_page(staff_client, chat).context["limit"]
    assert (limit.used, limit.calls, limit.remaining, limit.description) == (3, 50, 47, "50 per 1 minute")
    assert 1 <= limit.reset_seconds <= 60
    assert 'data-limit="3/50"' in change_page(staff_client, chat).content.decode()


def test_an_endpoint_without_a_limit_or_a_budget_says_so(staff_client: Client, make_endpoint: MakeEndpoint) -> None:
    plain = make_endpoint("plain", CHAT, "mock", "m")
    html = change_page(staff_client, plain).content.decode()
    assert 'data-limit="none"' in html and 'data-budget="none"' in html


def test_counters_that_cannot_be_read_are_reported(staff_client: Client, chat: Endpoint,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(commands: Any) -> list[Any]:
        raise counters.CounterUnavailable("ConnectionRefusedError: [Errno 111] Connection refused")

    monkeypatch.setattr(counters, "execute_blocking", unreachable)
    html = change_page(staff_client, chat).content.decode()
    assert 'data-limit="unavailable"' in html and "Connection refused" in html


def test_the_budget_is_the_counter_s_spend_against_the_period(staff_client: Client, chat: Endpoint) -> None:
    Endpoint.objects.filter(pk=chat.pk).update(budget_usd=Decimal("2"), budget_period="day", budget_action="reject")
    chat.refresh_from_db()
    seed([entry(1, endpoint="chat", cost=500_000_000_000)])  # $0.50 in the ledger
    win = budgets.window("e:chat", Budget.of(Decimal("2"), "day", "reject"), time.time())
    counters.execute_blocking([("SET", win.key, 1_500_000_000_000)])  # $1.50 counted
    response = change_page(staff_client, chat)
    state = response.context["budget"]
    assert (state.counted, state.ledger, state.spent, state.percent) == (1_500_000_000_000, 500_000_000_000,
                                                                          1_500_000_000_000, 75.0)
    html = response.content.decode()
    assert "$1.5 of $2</strong> today (75.0 %)" in html
    assert "the ledger's rollups hold $0.5 for the same period" in html


def test_a_budget_not_yet_counting_shows_the_ledger(staff_client: Client, chat: Endpoint) -> None:
    Endpoint.objects.filter(pk=chat.pk).update(budget_usd=Decimal("1"), budget_period="month", budget_action="alert")
    chat.refresh_from_db()
    seed([entry(1, endpoint="chat", cost=250_000_000_000)])
    state = change_page(staff_client, chat).context["budget"]
    assert (state.counted, state.spent, state.percent) == (None, 250_000_000_000, 25.0)


def test_the_playground_calls_the_invocation_route(staff_client: Client, chat: Endpoint,
                                                   make_endpoint: MakeEndpoint, settings: Any) -> None:
    html = change_page(staff_client, chat).content.decode()
    assert 'data-url="/endpoints/chat/invocations"' in html and 'data-operation="chat"' in html
    assert 'id="console-stream"' in html and "console/playground.js" in html
    assert 'id="console-key"' not in html  # GATEWAY_AUTH=off: no key to give
    settings.GATEWAY_AUTH = "keys"
    embed = make_endpoint("embed", EMBEDDINGS, "mock", "e")
    html = change_page(staff_client, embed).content.decode()
    assert 'data-operation="embeddings"' in html and 'id="console-stream"' not in html
    assert '<input type="password" id="console-key"' in html


@pytest.fixture
def split(make_endpoint: MakeEndpoint, chat: Endpoint) -> TrafficRoute:
    other = make_endpoint("chat-b", CHAT, "mock", "mock-b")
    route = TrafficRoute.objects.create(name="split", task_type=CHAT)
    TrafficDestination.objects.create(route=route, endpoint=chat, traffic_percentage=70, position=0)
    TrafficDestination.objects.create(route=route, endpoint=other, traffic_percentage=30, position=1)
    return route


def test_a_route_page_shows_its_destinations_and_its_errors(staff_client: Client, split: TrafficRoute) -> None:
    seed([entry(1, endpoint="chat", route="split"), entry(2, endpoint="chat-b", route="split", status=502,
                                                          error_kind="upstream", error_code="upstream_error",
                                                          request_id="via-b"),
          entry(3, endpoint="", name="split", status=403, error_kind="refused", error_code="permission_denied",
                request_id="refused"),
          entry(4, endpoint="chat", status=500, error_kind="internal", error_code="internal_error",
                request_id="direct-call")])
    response = change_page(staff_client, split)
    rows = {row["endpoint"].name: row for row in response.context["rows"]}
    assert (rows["chat"]["share"], rows["chat"]["health"].requests, rows["chat"]["health"].errors) == (70, 2, 1)
    assert (rows["chat-b"]["health"].requests, rows["chat-b"]["health"].error_rate) == (1, 1.0)
    assert rows["chat"]["limit"].description == "50 per 1 minute" and rows["chat-b"]["limit"] is None
    assert response.context["refused"].requests == 1
    assert [e.request_id for e in response.context["recent_errors"]] == ["via-b", "refused"]
    html = response.content.decode()
    assert 'data-url="/endpoints/split/invocations"' in html and 'id="console-stream"' in html


def test_the_ledger_lookup_finds_a_call_by_its_request_id(staff_client: Client, chat: Endpoint, client: Any) -> None:
    answer = post_json(client, "/endpoints/chat/invocations", {"messages": [{"role": "user", "content": "hi"}]},
                       HTTP_X_REQUEST_ID="console-abc123")
    assert answer["X-Request-Id"] == "console-abc123"
    lookup = "/admin/console/ledger/console-abc123/"
    assert staff_client.get(lookup).status_code == 404  # buffered, not written yet: the playground polls
    assert orjson.loads(staff_client.get(lookup).content) == {"found": False, "request_id": "console-abc123"}
    ledger.get().flush()
    assert staff_client.get(lookup, {"name": "other"}).status_code == 404  # not a call of that endpoint
    record = orjson.loads(staff_client.get(lookup, {"name": "chat"}).content)
    assert record == orjson.loads(staff_client.get(lookup).content)
    assert {k: record[k] for k in ("found", "endpoint", "route", "provider", "model", "status", "prompt_tokens",
                                   "completion_tokens", "cost_usd")} == {
        "found": True, "endpoint": "chat", "route": "", "provider": "mock", "model": "mock-chat", "status": 200,
        "prompt_tokens": 1, "completion_tokens": 2, "cost_usd": "0"}


def test_the_ledger_lookup_refuses_what_cannot_be_a_request_id(staff_client: Client) -> None:
    assert staff_client.get("/admin/console/ledger/" + "x" * 129 + "/").status_code == 404
    assert staff_client.get("/admin/console/ledger/a%20b/").status_code == 404


def test_health_reads_one_round_trip_of_counters(chat: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    real = counters.execute_blocking

    def spy(commands: Any) -> list[Any]:
        sent.append(commands)
        return real(commands)

    monkeypatch.setattr(counters, "execute_blocking", spy)
    Endpoint.objects.filter(pk=chat.pk).update(budget_usd=Decimal("1"), budget_period="week", budget_action="reject")
    chat.refresh_from_db()
    counted = health.endpoint_counters([chat])
    assert len(sent) == 1 and [c[0] for c in sent[0]] == ["GET", "GET"]
    assert sent[0][0][1].startswith("gateway:ratelimit:e:chat:60:") and sent[0][1][1].startswith(
        "gateway:spend:e:chat:week:")
    assert counted.limits[0].used == 0 and counted.budgets[0].counted is None


def test_the_ledger_lookup_through_a_route_finds_the_destination_that_answered(staff_client: Client,
                                                                              split: TrafficRoute) -> None:
    seed([entry(1, endpoint="chat-b", route="split", request_id="console-via-route"),
          entry(1, endpoint="", name="split", status=401, error_kind="refused", error_code="invalid_api_key",
                request_id="console-refused")])
    found = orjson.loads(staff_client.get("/admin/console/ledger/console-via-route/", {"name": "split"}).content)
    assert (found["endpoint"], found["route"]) == ("chat-b", "split")
    refused = orjson.loads(staff_client.get("/admin/console/ledger/console-refused/", {"name": "split"}).content)
    assert (refused["endpoint"], refused["status"], refused["error_code"]) == ("", 401, "invalid_api_key")


def test_the_route_and_endpoint_pages_show_a_destination_s_open_circuit(staff_client: Client, chat: Endpoint,
                                                                       make_endpoint: MakeEndpoint, client: Any,
                                                                       settings: Any) -> None:
    settings.GATEWAY_CIRCUIT_FAILURES = 2
    settings.GATEWAY_CIRCUIT_COOLDOWN_SECONDS = 30
    down = make_endpoint("down", CHAT, "openai", "gpt-4o-mini",  # nothing listens on port 9: refused
                         {"openai_api_key": "sk-test", "openai_api_base": "http://127.0.0.1:9/v1"},
                         timeouts={"retries": 0})
    save_route(validate_route({"name": "resilient", "task_type": CHAT, "routing_strategy": "FALLBACK",
                               "destinations": [{"name": "down"}, {"name": "chat"}]}, {"down": CHAT, "chat": CHAT}))
    for _ in range(2):
        response = post_json(client, "/endpoints/resilient/invocations",
                             {"messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200 and response["X-Gateway-Destination"] == "chat"
        asyncio.run_coroutine_threadsafe(counters.settle(), event_loop()).result()  # the failure is counted
    response = change_page(staff_client, TrafficRoute.objects.get(name="resilient"))
    rows = {row["endpoint"].name: row for row in response.context["rows"]}
    assert rows["down"]["circuit"].state == "open" and 1 <= rows["down"]["circuit"].seconds_open <= 30
    assert (rows["chat"]["circuit"].state, rows["chat"]["order"], rows["down"]["order"]) == ("closed", 2, 1)
    html = response.content.decode()
    assert 'data-circuit="open"' in html and "Order" in html and "opens after 2 consecutive failures" in html
    html = change_page(staff_client, down).content.decode()
    assert 'data-circuit="open"' in html and "s left" in html
    assert 'data-circuit="closed"' in change_page(staff_client, chat).content.decode()
