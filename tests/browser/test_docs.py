"""The API docs render in a real headless browser with no internet: Swagger UI and ReDoc are
self-hosted, and every request the page makes stays on the gateway."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

from providers.shapes import CHAT
from tests.conftest import require

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser_page() -> Iterator[Any]:
    require(os.path.exists(CHROMIUM), "Debian's chromium is not installed")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()


@pytest.fixture
def chat_endpoint(make_endpoint: Any) -> None:
    """Created before the browser starts. Created inside the test, once Playwright's sync API was
    running, it left a database connection that the test database's teardown did not close (on
    PostgreSQL: "database is being accessed by other users" at the end of every run)."""
    make_endpoint("chat", CHAT, "mock", "m")


def test_swagger_ui_renders_the_invocation_routes_offline(
    chat_endpoint: None, browser_page: Any, live_server: Any
) -> None:
    origin = urlparse(live_server.url).netloc
    foreign: list[str] = []
    browser_page.on(
        "request",
        lambda request: foreign.append(request.url) if urlparse(request.url).netloc not in (origin, "") else None,
    )
    browser_page.goto(f"{live_server.url}/docs")
    browser_page.get_by_text("/v1/chat/completions", exact=True).first.wait_for(timeout=15000)
    assert browser_page.get_by_text("/endpoints/chat/invocations", exact=True).count() >= 1
    assert browser_page.get_by_text("/api/2.0/endpoints/", exact=True).count() >= 1
    browser_page.screenshot(path="/tmp/docs-smoke.png", full_page=False)
    assert foreign == []


def test_redoc_renders_offline(browser_page: Any, live_server: Any) -> None:
    browser_page.goto(f"{live_server.url}/redoc")
    browser_page.get_by_text("Django AI Gateway").first.wait_for(timeout=15000)
    assert browser_page.get_by_text("/v1/embeddings").count() >= 1
