"""One smoke test of the admin in a real headless Chromium against Django's live server: an operator
logs in, adds a mock endpoint through the form, sees it listed, and the gateway serves it."""
from __future__ import annotations

import os
from typing import Any

import pytest
import requests
from django.contrib.auth import get_user_model
from playwright.sync_api import sync_playwright

from endpoints_app.models import Endpoint, Source
from tests.conftest import require

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
SCREENSHOT = "/tmp/admin-smoke.png"


@pytest.mark.browser
def test_an_operator_adds_a_mock_endpoint_in_a_real_browser(live_server: Any, transactional_db: None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    require(os.path.exists(CHROMIUM), f"Chromium is not installed at {CHROMIUM}")
    # Playwright's sync API runs an event loop in this thread; the ORM calls below are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    get_user_model().objects.create_superuser("operator", password="browser-smoke-password")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{live_server.url}/admin/endpoints_app/endpoint/add/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", "browser-smoke-password")
            page.click("input[type=submit]")
            page.wait_for_selector("#endpoint_form")

            page.fill("#id_name", "browser-chat")
            page.select_option("#id_endpoint_type", "llm/v1/chat")
            page.select_option("#id_provider", "mock")
            page.fill("#id_model_name", "mock-chat")
            page.fill("#id_config_text", "latency_ms: 1")
            page.click("input[name=_save]")

            page.wait_for_selector("#result_list")
            assert "was added successfully" in page.inner_text(".messagelist")
            assert page.inner_text("#result_list tbody th a") == "browser-chat"
            page.screenshot(path=SCREENSHOT, full_page=True)
        finally:
            browser.close()

    endpoint = Endpoint.objects.get()
    assert (endpoint.name, endpoint.provider, endpoint.config, endpoint.source) == (
        "browser-chat", "mock", {"latency_ms": 1.0}, Source.ADMIN)
    listed = requests.get(f"{live_server.url}/api/2.0/endpoints/", timeout=10).json()["endpoints"]
    assert [(e["name"], e["model"]) for e in listed] == [("browser-chat", {"name": "mock-chat", "provider": "mock"})]
