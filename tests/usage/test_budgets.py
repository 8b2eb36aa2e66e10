"""Budgets: spend counted with the limits, `reject` refuses until the UTC period renews, `alert` notifies
once per crossing of 50, 80 and 100 %."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from providers.shapes import CHAT
from serving import budgets, counters
from tests.asgi import event_loop
from tests.conftest import MakeConsumer, post_json
from tests.consumers.conftest import bearer, new_key
from usage import ledger

pytestmark = pytest.mark.django_db

HI = {"messages": [{"role": "user", "content": "hi"}]}
# The mock answers "hi" with "Echo: hi": 1 prompt token and 2 completion tokens, so each call costs 3 cents.
CENT_A_TOKEN = {"input_per_million_tokens": 10_000, "output_per_million_tokens": 10_000}


@pytest.mark.parametrize(("period", "now", "start", "end"), [
    ("day", "2026-12-02T13:45:00", "2026-12-02T00:00:00", "2026-12-03T00:00:00"),
    ("week", "2026-12-02T13:45:00", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),  # a Wednesday; weeks from Monday
    ("week", "2026-11-30T00:00:00", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),
    ("month", "2026-12-31T23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
    ("month", "2027-02-10T08:00:00", "2027-02-01T00:00:00", "2027-03-01T00:00:00"),
])
def test_periods_renew_at_utc_boundaries(period: str, now: str, start: str, end: str) -> None:
    assert budgets.period_bounds(period, datetime.fromisoformat(now).replace(tzinfo=UTC)) == (
        datetime.fromisoformat(start).replace(tzinfo=UTC), datetime.fromisoformat(end).replace(tzinfo=UTC))


@pytest.mark.parametrize(("before", "after", "crossed"), [
    (0, 49, []), (0, 50, [50]), (49, 81, [50, 80]), (80, 100, [100]), (0, 250, [50, 80, 100]), (100, 120, []),
    (50, 50, []),
])
def test_a_spend_crosses_each_threshold_once(before: int, after: int, crossed: list[int]) -> None:
    assert budgets.crossed(before, after, 100) == crossed


def test_a_reject_budget_refuses_once_spent_until_the_period_renews(client: Any, make_endpoint: Any) -> None:
    make_endpoint("chat", CHAT, "mock", "m", cost=CENT_A_TOKEN, budget={"usd": "0.08", "period": "day"})
    statuses = [post_json(client, "/endpoints/chat/invocations", HI).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]  # 3 + 3 cents < 8 cents before the third, 9 after it
    refused = post_json(client, "/endpoints/chat/invocations", HI)
    assert refused.status_code == 429
    assert refused.json()["error"].startswith("Budget exceeded: endpoint 'chat' has spent $0.090000 of its $0.08 "
                                              "daily budget; it renews at ")
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    assert abs(int(refused["Retry-After"]) - (midnight - now).total_seconds()) <= 2
    v1 = post_json(client, "/v1/chat/completions", {**HI, "model": "chat"})
    assert v1.status_code == 429
    assert (v1.json()["error"]["code"], v1.json()["error"]["type"]) == ("budget_exceeded", "rate_limit_error")
    assert v1["X-Budget-Limit-USD"] == "0.08" and v1["X-Budget-Spent-USD"] == "0.090000"


def test_a_consumer_budget_applies_to_every_endpoint_it_calls(client: Any, make_endpoint: Any,
                                                              make_consumer: MakeConsumer, settings: Any) -> None:
    settings.GATEWAY_AUTH = "keys"
    make_endpoint("a", CHAT, "mock", "m", cost=CENT_A_TOKEN)
    make_endpoint("b", CHAT, "mock", "m", cost=CENT_A_TOKEN)
    key = new_key(make_consumer("team", budget={"usd": 0.05, "period": "month", "action": "reject"}))
    other = new_key(make_consumer("other"))
    assert post_json(client, "/endpoints/a/invocations", HI, **bearer(key)).status_code == 200
    assert post_json(client, "/endpoints/b/invocations", HI, **bearer(key)).status_code == 200
    refused = post_json(client, "/endpoints/a/invocations", HI, **bearer(key))
    assert refused.status_code == 429 and "consumer 'team'" in refused.json()["error"]
    assert post_json(client, "/endpoints/a/invocations", HI, **bearer(other)).status_code == 200


class Webhook:
    """A local receiver of alert POSTs."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.received = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()
                hook.received.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def wait_for(self, count: int) -> list[dict[str, Any]]:
        import time

        deadline = time.monotonic() + 10
        while len(self.bodies) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.bodies


@pytest.fixture
def webhook(settings: Any) -> Any:
    hook = Webhook()
    settings.GATEWAY_ALERT_WEBHOOK_URL = hook.url
    yield hook
    hook.server.shutdown()


def test_an_alert_budget_notifies_each_crossing_once_and_keeps_serving(client: Any, make_endpoint: Any,
                                                                       webhook: Webhook,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    make_endpoint("chat", CHAT, "mock", "m", cost=CENT_A_TOKEN, budget={"usd": "0.10", "period": "week",
                                                                         "action": "alert"})
    with caplog.at_level("WARNING", logger="serving.budgets"):
        statuses = [post_json(client, "/endpoints/chat/invocations", HI).status_code for _ in range(5)]
        bodies = webhook.wait_for(3)
    assert statuses == [200] * 5  # 15 cents on a 10-cent alert budget: nothing refused
    assert [b["threshold_percent"] for b in bodies] == [50, 80, 100]  # after 6, 9 and 12 cents
    assert [b["spent_usd"] for b in bodies] == ["0.060000", "0.090000", "0.120000"]
    assert bodies[0] | {"time": 0, "period_start": "", "period_end": ""} == {
        "event": "budget.threshold", "scope": "endpoint", "name": "chat", "threshold_percent": 50,
        "spent_usd": "0.060000", "budget_usd": "0.1", "period": "week", "period_start": "", "period_end": "",
        "action": "alert", "time": 0}
    assert caplog.text.count("budget alert: endpoint 'chat'") == 3


def test_a_restarted_counter_store_starts_the_period_from_the_ledger(client: Any, make_endpoint: Any) -> None:
    make_endpoint("chat", CHAT, "mock", "m", cost=CENT_A_TOKEN, budget={"usd": "0.08", "period": "month"})
    for _ in range(3):
        assert post_json(client, "/endpoints/chat/invocations", HI).status_code == 200
    ledger.get().flush()
    asyncio.run_coroutine_threadsafe(counters.settle(), event_loop()).result()  # the last spend is counted
    counters.reset()  # the store that counted is gone (a restarted server without Redis)
    from tests.conftest import flush_redis

    flush_redis()
    from serving import runtime

    runtime.invalidate()  # the table is built again, and seeds the period's counter from the rollups
    assert post_json(client, "/endpoints/chat/invocations", HI).status_code == 429


def test_a_budget_in_the_yaml_round_trips(tmp_path: Any) -> None:
    from io import StringIO

    import yaml
    from django.core.management import call_command

    from endpoints_app.models import Endpoint
    from endpoints_app.services import export_config

    path = tmp_path / "gateway.yaml"
    path.write_text(
        "endpoints:\n  - name: chat\n    endpoint_type: llm/v1/chat\n    model: {provider: mock, name: m, config: {}}\n"
        "    cost: {input_per_million_tokens: 0.15, output_per_million_tokens: 0.6}\n"
        "    budget: {usd: 50, period: day, action: alert}\n"
        "consumers:\n  - name: team\n    allow: ['*']\n    budget: {usd: 12.5, period: month}\n")
    call_command("load_config", str(path), stdout=StringIO())
    endpoint = Endpoint.objects.get()
    assert (endpoint.cost_input_per_million, endpoint.cost_output_per_million) == (Decimal("0.15"), Decimal("0.6"))
    document = yaml.safe_load(export_config())
    assert document["endpoints"][0]["cost"] == {"input_per_million_tokens": 0.15, "output_per_million_tokens": 0.6}
    assert document["endpoints"][0]["budget"] == {"usd": 50, "period": "day", "action": "alert"}
    assert document["consumers"][0]["budget"] == {"usd": 12.5, "period": "month", "action": "reject"}


@pytest.mark.parametrize(("entry", "field", "message"), [
    ("cost: {input_per_million_tokens: 0.15}", "cost.output_per_million_tokens", "is required"),
    ("cost: {input_per_million_tokens: -1, output_per_million_tokens: 1}", "cost.input_per_million_tokens",
     "must be from 0"),
    ("cost: {input_per_million_tokens: 0.0000001, output_per_million_tokens: 1}", "cost.input_per_million_tokens",
     "at most 6 decimals"),
    ("cost: {input: 1}", "cost.input", "unknown cost key"),
    ("budget: {usd: 10, period: year}", "budget.period", "period must be day, week or month"),
    ("budget: {usd: 10, action: block}", "budget.action", "action must be reject or alert"),
    ("budget: {period: day}", "budget.usd", "usd is required"),
    ("budget: {usd: ten}", "budget.usd", "must be a number of US dollars"),
])
def test_a_bad_cost_or_budget_is_refused_naming_its_field(tmp_path: Any, entry: str, field: str, message: str) -> None:
    from django.core.management import CommandError, call_command

    path = tmp_path / "gateway.yaml"
    path.write_text("endpoints:\n  - name: chat\n    endpoint_type: llm/v1/chat\n"
                    f"    model: {{provider: mock, name: m, config: {{}}}}\n    {entry}\n")
    with pytest.raises(CommandError) as caught:
        call_command("load_config", str(path))
    assert f"field {field!r}" in str(caught.value) and message in str(caught.value)
