"""The console in Debian's Chromium (Playwright), against the whole application under uvicorn: an operator
logs in, reads the dashboard, runs the playground, creates and revokes a key, imports YAML and downloads it.

Each test saves a screenshot of every page it visits under GATEWAY_TEST_ARTIFACTS (default
var/test-artifacts/console/<test>/, git-ignored). The rows a test needs are made by fixtures before the
browser starts, and the database is checked after it closes: the ORM is not used in this thread while
Playwright's event loop runs in it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection

from consumers.models import Consumer, GatewayKey
from endpoints_app.models import Endpoint, Source, TrafficDestination, TrafficRoute
from providers.shapes import CHAT
from tests.conftest import MakeEndpoint, require
from tests.console.conftest import entry, seed
from usage import ledger
from usage.models import UsageRecord
from usage.reports import report, totals

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
PASSWORD = "console-browser-password"
ARTIFACTS = Path(os.environ.get("GATEWAY_TEST_ARTIFACTS") or Path(settings.BASE_DIR) / "var" / "test-artifacts")
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# -- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Iterator[Any]:
    """shots(page, "name") saves a full-page screenshot as <artifacts>/console/<test>/<nn>-name.png."""
    folder = ARTIFACTS / "console" / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*"):
        old.unlink()
    taken: list[Path] = []

    def take(page: Any, name: str) -> Path:
        path = folder / f"{len(taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)
        return path

    take.folder = folder  # type: ignore[attr-defined]
    yield take
    assert taken and all(path.stat().st_size > 1000 for path in taken)


@pytest.fixture
def operator(transactional_db: None) -> Any:
    return get_user_model().objects.create_superuser("operator", password=PASSWORD)


Browser = Callable[[], AbstractContextManager[tuple[Any, str]]]


@pytest.fixture
def browser(operator: Any, live_server: Any, monkeypatch: pytest.MonkeyPatch) -> Browser:
    """`with browser() as (page, url)`: a page logged in as the operator, and the server's URL."""
    require(os.path.exists(CHROMIUM), f"Chromium is not installed at {CHROMIUM}")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop here
    from playwright.sync_api import sync_playwright

    @contextmanager
    def opened() -> Iterator[tuple[Any, str]]:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = chromium.new_context(viewport={"width": 1280, "height": 900},
                                            accept_downloads=True).new_page()
                page.set_default_timeout(15_000)
                page.goto(f"{live_server.url}/admin/login/?next=/admin/")
                page.fill("#id_username", "operator")
                page.fill("#id_password", PASSWORD)
                page.click("input[type=submit]")
                page.wait_for_selector("#console-module")
                yield page, live_server.url
            finally:
                chromium.close()

    return opened


@pytest.fixture
def ledger_writer() -> Iterator[None]:
    """The ledger's writer thread, as a server runs it (the tests' settings turn it off)."""
    stop = threading.Event()

    def run() -> None:
        try:
            while not stop.wait(0.3):
                ledger.get().flush()
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="test-ledger-writer", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(5)


@pytest.fixture
def usage_of_the_day(operator: Any) -> None:
    seed([entry(minutes, consumer=consumer, endpoint=endpoint, cost=cost, latency_ms=latency, status=status,
                error_kind=kind)
          for minutes, consumer, endpoint, cost, latency, status, kind in (
              (5, "search", "chat", 4_000_000_000_000, 35, 200, ""),
              (65, "search", "chat", 3_000_000_000_000, 120, 200, ""),
              (125, "batch", "embed", 500_000_000_000, 8, 200, ""),
              (185, "batch", "chat", 0, 40, 429, "limited"),
              (245, "search", "chat", 0, 30_000, 504, "timeout"),
              (305, "", "chat", 0, 2, 401, "refused"),
              (600, "batch", "embed", 250_000_000_000, 9, 200, ""),
              (900, "search", "chat", 0, 300, 502, "upstream"))])


@pytest.fixture
def mock_chat(operator: Any, make_endpoint: MakeEndpoint) -> tuple[Endpoint, TrafficRoute]:
    """A priced mock chat endpoint that streams slowly, another one, and a route between them."""
    chat = make_endpoint("chat", CHAT, "mock", "mock-chat", config={"stream_chunks": 6, "chunk_delay_ms": 150},
                         limit={"calls": 50, "renewal_period": "day"})  # one window for the whole test
    Endpoint.objects.filter(pk=chat.pk).update(cost_input_per_million=Decimal(1), cost_output_per_million=Decimal(2))
    other = make_endpoint("chat-b", CHAT, "mock", "mock-chat-b")
    route = TrafficRoute.objects.create(name="split", task_type=CHAT)
    TrafficDestination.objects.create(route=route, endpoint=chat, traffic_percentage=50, position=0)
    TrafficDestination.objects.create(route=route, endpoint=other, traffic_percentage=50, position=1)
    return chat, route


@pytest.fixture
def team(operator: Any) -> Consumer:
    return Consumer.objects.create(name="search-team", allow=["*"], source=Source.ADMIN)


def admin_page(page: Any, url: str, row: Endpoint | TrafficRoute | Consumer) -> None:
    path = {Endpoint: "endpoints_app/endpoint", TrafficRoute: "endpoints_app/trafficroute",
            Consumer: "consumers/consumer"}[type(row)]
    page.goto(f"{url}/admin/{path}/{row.pk}/change/")


def send(page: Any, text: str, *, stream: bool = False, key: str | None = None) -> None:
    page.fill("#console-input", text)
    if stream:
        page.check("#console-stream")
    if key is not None:
        page.fill("#console-key", key)
    page.click("#console-send")


def answered(page: Any) -> dict[str, str]:
    page.wait_for_selector("#console-playground-form[data-state=answered]")
    return {name: page.inner_text(f"#console-{name}") for name in ("answer", "status", "tokens", "request-id")}


def from_ledger(page: Any) -> dict[str, str]:
    page.wait_for_selector("#console-playground-form[data-ledger=found]")
    return {name: page.inner_text(f"#console-{name}") for name in ("cost", "served-by", "tokens")}


# -- the dashboard ------------------------------------------------------------------------------------------------
def test_the_dashboard_draws_the_usage_and_shows_the_report_s_numbers(usage_of_the_day: None, browser: Browser,
                                                                      shots: Any) -> None:
    with browser() as (page, url):
        shots(page, "admin-index")
        page.click("#console-module >> text=Usage dashboard")
        page.wait_for_selector(".console-dashboard")
        page.check("input[name=window][value='24h']")
        page.click(".console-filters input[type=submit]")
        page.wait_for_url("**/admin/console/?window=24h**")
        shots(page, "dashboard-24h-light")
        dashboard = page.locator(".console-dashboard")
        since, until = dashboard.get_attribute("data-since"), dashboard.get_attribute("data-until")
        shown = {name: page.inner_text(f"dd[data-total={name}]")
                 for name in ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd")}
        top_by_cost = page.eval_on_selector_all(
            "#top-consumers-cost tbody tr[data-name]",
            "rows => rows.map(r => [r.dataset.name, r.querySelector('[data-usd]').textContent])")
        drawn = {slug: page.locator(f"#chart-{slug} svg").locator(
            "rect.console-bar, path.console-line, circle.console-dot").count()
            for slug in ("requests", "errors", "tokens", "cost", "latency")}
        titles = page.eval_on_selector_all(".console-chart svg", "svgs => svgs.map(s => [s.getAttribute('role'), "
                                           "s.querySelector('title').textContent])")
        stacks = dict(page.eval_on_selector_all(
            "#chart-errors g[data-series]", "gs => gs.map(g => [g.dataset.series, g.querySelectorAll('rect').length])"))
        page.click("#chart-requests summary")  # the numbers, for screen readers and keyboards
        requests_total_row = page.inner_text("#chart-requests tfoot td")
        shots(page, "dashboard-numbers-open")
        light = _colours(page)
        page.evaluate("localStorage.setItem('theme', 'dark')")  # where the admin's theme switch keeps it
        page.reload()
        dark = _colours(page)
        shots(page, "dashboard-24h-dark")
        page.evaluate("localStorage.setItem('theme', 'light')")
        page.click("#top-consumers-cost a >> text=search")  # narrow to one consumer
        page.wait_for_url("**consumer=search**")
        search_requests = page.inner_text("dd[data-total=requests]")
        shots(page, "dashboard-24h-search")
        page.goto(f"{url}/admin/console/?window=1h")
        hour_requests = page.inner_text("dd[data-total=requests]")
        shots(page, "dashboard-1h")

    assert all(count > 0 for count in drawn.values()), drawn
    assert [role for role, _ in titles] == ["img"] * 5 and all(title for _, title in titles)
    assert since is not None and until is not None
    by_consumer = report(datetime.fromisoformat(since), datetime.fromisoformat(until), "consumer")
    expected = totals(by_consumer)
    assert {k: int(v) for k, v in shown.items() if k != "cost_usd"} == {
        k: expected[k] for k in ("requests", "errors", "prompt_tokens", "completion_tokens")} == {
        "requests": 8, "errors": 4, "prompt_tokens": 40, "completion_tokens": 20}
    assert Decimal(shown["cost_usd"]) == Decimal("7.75") == Decimal(str(expected["cost_usd"]))
    assert [(name, float(cost)) for name, cost in top_by_cost] == [
        (row["consumer"], row["cost_usd"]) for row in by_consumer if row["cost_usd"]] == [
        ("search", 7.0), ("batch", 0.75)]
    assert requests_total_row == "8"
    assert stacks == {"refused": 1, "limited": 1, "invalid": 0, "upstream": 1, "timeout": 1, "internal": 0}
    assert (search_requests, hour_requests) == ("4", "1")
    # The admin's own colours in each theme: bars in --link-fg, ticks in --body-quiet-color.
    assert light == {"bar": "rgb(65, 120, 147)", "tick": "rgb(102, 102, 102)", "background": "rgb(255, 255, 255)"}
    assert dark == {"bar": "rgb(129, 212, 250)", "tick": "rgb(208, 208, 208)", "background": "rgb(18, 18, 18)"}


def _colours(page: Any) -> dict[str, str]:
    return page.evaluate("""() => ({
        bar: getComputedStyle(document.querySelector('#chart-requests rect.console-bar')).fill,
        tick: getComputedStyle(document.querySelector('#chart-requests text.console-tick')).fill,
        background: getComputedStyle(document.body).backgroundColor})""")


# -- the playground -----------------------------------------------------------------------------------------------
def test_the_playground_chats_with_the_mock_provider_and_streams(mock_chat: tuple[Endpoint, TrafficRoute],
                                                                 ledger_writer: None, browser: Browser,
                                                                 shots: Any) -> None:
    chat, route = mock_chat
    with browser() as (page, url):
        admin_page(page, url, chat)
        page.wait_for_selector("#console-health")
        shots(page, "endpoint-page")

        send(page, "hello from the browser")
        plain = answered(page)
        plain_ledger = from_ledger(page)
        shots(page, "playground-chat")

        send(page, "stream me slowly please", stream=True)
        # The text shows while the stream is still coming (six chunks, 150 ms apart).
        page.wait_for_function("() => document.getElementById('console-answer').textContent.length > 0 && "
                               "document.getElementById('console-playground-form').dataset.state === 'sending'")
        partial = page.inner_text("#console-answer")
        shots(page, "playground-stream-arriving")
        streamed = answered(page)
        first_byte = page.inner_text("#console-ttfb")
        stream_ledger = from_ledger(page)
        shots(page, "playground-stream-done")

        page.reload()
        health = {name: page.inner_text(f"dd[data-health={name}]") for name in ("requests", "error-rate")}
        limit = page.get_attribute("[data-limit]", "data-limit")
        shots(page, "endpoint-health-after")

        admin_page(page, url, route)
        page.wait_for_selector("#console-destinations")
        send(page, "which one answers")
        through_route = answered(page)
        served_by = from_ledger(page)["served-by"]
        shots(page, "route-playground")

    assert plain["answer"] == "Echo: hello from the browser" and plain["status"] == "200 OK"
    assert plain["tokens"] == "4 / 5" and plain["request-id"].startswith("console-")
    assert plain_ledger["cost"] == "0.000014"  # 4 tokens at $1/M and 5 at $2/M
    assert plain_ledger["served-by"] == "chat — mock mock-chat"
    assert streamed["answer"] == "Echo: stream me slowly please"
    assert partial and len(partial) < len(streamed["answer"]) and streamed["answer"].startswith(partial)
    assert first_byte != "—"
    assert stream_ledger["tokens"] == "4 / 5" and stream_ledger["cost"] == "0.000014"
    assert health == {"requests": "2", "error-rate": "0.0%"} and limit == "2/50"
    assert through_route["answer"] == "Echo: which one answers"
    assert served_by in ("chat (through split) — mock mock-chat", "chat-b (through split) — mock mock-chat-b")
    records = list(UsageRecord.objects.filter(request_id__startswith="console-").order_by("time"))
    assert [(r.name, r.route, r.stream, r.status) for r in records] == [
        ("chat", "", False, 200), ("chat", "", True, 200), ("split", "split", False, 200)]
    assert served_by.startswith(records[2].endpoint + " ")


# -- keys -----------------------------------------------------------------------------------------------------------
def test_an_operator_creates_a_key_uses_it_and_revokes_it(mock_chat: tuple[Endpoint, TrafficRoute], team: Consumer,
                                                          settings: Any, browser: Browser, shots: Any) -> None:
    settings.GATEWAY_AUTH = "keys"
    chat, _ = mock_chat
    with browser() as (page, url):
        admin_page(page, url, team)
        page.wait_for_selector("#console-spend")
        shots(page, "consumer-page")
        page.click("#console-create-key")
        page.wait_for_url("**/admin/consumers/gatewaykey/add/?consumer=*")
        page.wait_for_selector("input[name=_save]")  # the whole form is there, its select's choice with it
        preselected = page.input_value("#id_consumer")
        page.fill("#id_name", "playground")
        page.fill("#id_expires_in", "1h")
        shots(page, "key-form")
        page.click("input[name=_save]")
        key = page.input_value("#new-key")
        shots(page, "key-shown-once")
        page.click("text=Done")
        page.wait_for_selector("#consumer_form input[name=_save]")
        shown_again = key in page.content()
        shots(page, "consumer-with-key")

        admin_page(page, url, chat)
        send(page, "hello with a key", key=key)
        with_key = answered(page)
        shots(page, "playground-with-key")

        admin_page(page, url, team)
        page.click(".inline-related a.deletelink >> text=Revoke")
        page.wait_for_selector("#confirm-revoke")
        shots(page, "revoke-confirmation")
        page.click("#confirm-revoke")
        page.wait_for_selector(".messagelist .success")
        message = page.inner_text(".messagelist")
        shots(page, "key-revoked")

        admin_page(page, url, chat)
        send(page, "hello again", key=key)
        refused = answered(page)
        shots(page, "playground-revoked-key")

    assert preselected == str(team.pk) and key.startswith("gwk_") and not shown_again
    assert (with_key["status"], with_key["answer"]) == ("200 OK", "Echo: hello with a key")
    assert "revoked" in message
    assert refused["status"].startswith("401") and "revoked" in refused["answer"]
    record = GatewayKey.objects.get()
    assert key.startswith(record.prefix) and record.state == "revoked" and record.name == "playground"


# -- YAML -------------------------------------------------------------------------------------------------------------
BROKEN = b"""\
endpoints:
  - name: good
    endpoint_type: llm/v1/chat
    model: {provider: mock, config: {}}
  - name: broken
    endpoint_type: llm/v1/chat
    model:
      provider: nosuchvendor
routes:
  - name: split
    task_type: llm/v1/chat
    destinations:
      - {name: good, traffic_percentage: 60}
"""
VALID = b"""\
endpoints:
  - name: chat
    endpoint_type: llm/v1/chat
    model: {provider: mock, name: mock-chat-2, config: {stream_chunks: 6, chunk_delay_ms: 150}}
    limit: {calls: 50, renewal_period: day}
  - name: new-embed
    endpoint_type: llm/v1/embeddings
    model:
      provider: openai
      name: text-embedding-3-small
      config: {openai_api_key: sk-literal-in-the-upload-0f9e}
consumers:
  - name: analysts
    allow: [chat]
"""


def upload(page: Any, url: str, name: str, text: bytes) -> None:
    page.goto(f"{url}/admin/console/")
    page.click(".object-tools >> text=Import YAML")
    page.set_input_files("#id_file", files=[{"name": name, "mimeType": "application/yaml", "buffer": text}])
    page.click("#console-preview")


def test_a_yaml_file_with_errors_shows_them_and_changes_nothing(operator: Any, browser: Browser, shots: Any) -> None:
    with browser() as (page, url):
        upload(page, url, "broken.yaml", BROKEN)
        page.wait_for_selector("#console-issues")
        issues = page.eval_on_selector_all("#console-issues tbody tr", "rows => rows.map(r => [r.dataset.location, "
                                           "r.dataset.field, r.querySelector('.errorlist-message').textContent, "
                                           "r.lastElementChild.textContent])")
        apply_buttons = page.locator("#console-apply").count()
        shots(page, "import-errors")

    assert [(location, field, line) for location, field, _, line in issues] == [
        ("endpoints[1] 'broken'", "model.provider", "8"), ("routes[0] 'split'", "destinations", "12")]
    assert "nosuchvendor" in issues[0][2] and "must be 100" in issues[1][2]
    assert apply_buttons == 0
    assert not Endpoint.objects.exists() and not TrafficRoute.objects.exists()


def test_a_valid_yaml_file_is_previewed_applied_and_downloaded(mock_chat: tuple[Endpoint, TrafficRoute],
                                                               browser: Browser, shots: Any) -> None:
    with browser() as (page, url):
        upload(page, url, "team.yaml", VALID)
        page.wait_for_selector("#console-diff")
        created = page.eval_on_selector_all("#console-created li", "items => items.map(i => [i.dataset.kind, "
                                            "i.dataset.name])")
        changes = page.eval_on_selector_all("table.console-diff[data-name=chat] tbody tr", "rows => rows.map(r => "
                                            "[r.dataset.path, r.cells[1].textContent, r.cells[2].textContent])")
        secret_in_page = "sk-literal-in-the-upload" in page.content()
        shots(page, "import-preview")
        page.click("#console-apply")
        page.wait_for_selector(".messagelist .success")
        applied = page.inner_text(".messagelist")
        shots(page, "import-applied")
        with page.expect_download() as download_info:
            page.click(".object-tools >> text=Download YAML")
        download = download_info.value
        saved = shots.folder / download.suggested_filename
        download.save_as(str(saved))
        shots(page, "after-download")

    assert created == [["endpoint", "new-embed"], ["consumer", "analysts"]]
    assert ["model.name", "mock-chat", "mock-chat-2"] in changes
    assert not secret_in_page
    assert "2 created (new-embed, consumer analysts), 1 updated (chat)" in applied
    text = saved.read_text()
    exported = yaml.safe_load(text)
    assert sorted(e["name"] for e in exported["endpoints"]) == ["chat", "chat-b", "new-embed"]
    assert next(e for e in exported["endpoints"] if e["name"] == "new-embed")["model"]["config"] == {
        "openai_api_key": "<literal key stored encrypted; not exported>"}
    assert "sk-literal-in-the-upload" not in text
    assert Endpoint.objects.get(name="chat").model_name == "mock-chat-2"
    assert Consumer.objects.get(name="analysts").allow == ["chat"]
