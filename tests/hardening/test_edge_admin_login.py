"""Issue 15, item 11 (admin): password guessing is throttled and the cookies are Secure by default.

The probe could guess the admin's password without limit, and the session and CSRF cookies lacked `Secure`
with DEBUG=false. Now django-axes locks an address out after GATEWAY_LOGIN_FAILURE_LIMIT failures (5), its
attempts in the database so that every worker counts them together; the address is the client's as uvicorn
resolved it (X-Forwarded-For only from a proxy in FORWARDED_ALLOW_IPS, 127.0.0.1 by default)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.hardening.rawhttp import start_gateway
from tests.serving.conftest import ROOT, Server, Servers, manage, server_env

pytestmark = pytest.mark.slow

LIMIT = 5


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """Two workers (the attempts are counted together) and the admin's password."""
    folder = tmp_path_factory.mktemp("login")
    servers = Servers(tmp_path_factory.mktemp("servers"))
    try:
        server = start_gateway(servers, folder, workers=2)
        made = manage(server_env(f"sqlite:///{folder}/gateway.sqlite3"), "ensure_admin")
        match = re.search(r"password: (\S+)", made.stdout)
        assert match, made.stdout + made.stderr
        yield server, match[1]
    finally:
        servers.kill_all()


class _FromAddress(HTTPAdapter):
    """Connect from another local address (127.0.0.2: not a trusted proxy)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, source_address=(self.address, 0), **kwargs)


def _log_in(server: Server, password: str, *, forwarded_for: str | None = None,
            source: str | None = None) -> requests.Response:
    """The admin's login form, as a browser posts it (the CSRF cookie is Secure: sent by hand over http)."""
    with requests.Session() as session:
        if source is not None:
            session.mount("http://", _FromAddress(source))
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        page = session.get(server.url("/admin/login/"), headers=headers, timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, page.text[:500]
        headers["Cookie"] = f"csrftoken={page.cookies['csrftoken']}"
        return session.post(server.url("/admin/login/"), headers=headers, allow_redirects=False, timeout=10,
                            data={"csrfmiddlewaretoken": token[1], "username": "admin", "password": password,
                                  "next": "/admin/"})


def _is_locked_out(response: requests.Response) -> bool:
    if response.status_code != 429:
        return False
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Retry-After"] == "900"
    assert response.json() == {"detail": "Too many failed logins from this address; try again later."}
    return True


def test_cookies_are_secure_by_default(gateway: tuple[Server, str]) -> None:
    server, password = gateway
    page = requests.get(server.url("/admin/login/"), timeout=10)
    assert re.search(r"csrftoken=[^,]*; .*Secure", page.headers["Set-Cookie"])
    logged_in = _log_in(server, password, forwarded_for="198.51.100.1")
    assert logged_in.status_code == 302
    assert re.search(r"sessionid=[^,]*; .*Secure", logged_in.headers["Set-Cookie"])


def test_an_address_is_locked_out_after_five_failures_and_another_is_not(gateway: tuple[Server, str]) -> None:
    server, password = gateway
    attacker = "203.0.113.5"  # behind a proxy on 127.0.0.1 (trusted by default), which says who the client is
    for _ in range(LIMIT - 1):
        assert _log_in(server, "guess", forwarded_for=attacker).status_code == 200  # the form again
    assert _is_locked_out(_log_in(server, "guess", forwarded_for=attacker))
    assert _is_locked_out(_log_in(server, password, forwarded_for=attacker))  # even the right password
    assert _log_in(server, password, forwarded_for="203.0.113.9").status_code == 302  # someone else: welcome


def test_an_untrusted_client_cannot_dodge_the_lockout_with_x_forwarded_for(gateway: tuple[Server, str]) -> None:
    server, _ = gateway
    answers = [_log_in(server, "guess", source="127.0.0.2", forwarded_for=f"192.0.2.{n}") for n in range(LIMIT + 1)]
    assert [a.status_code for a in answers[:LIMIT - 1]] == [200] * (LIMIT - 1)
    assert _is_locked_out(answers[LIMIT - 1]) and _is_locked_out(answers[LIMIT])


@pytest.mark.parametrize(("environment", "secure"), [
    ({"DEBUG": "false"}, True),
    ({"DEBUG": "true"}, False),  # local development over http
    ({"DEBUG": "false", "SECURE_COOKIES": "false"}, False),
    ({"DEBUG": "true", "SECURE_COOKIES": "true"}, True),
])
def test_secure_cookies_follow_debug_unless_set(environment: dict[str, str], secure: bool) -> None:
    env = server_env("sqlite:////tmp/unused.sqlite3", **environment)
    code = ("from django.conf import settings; import django; django.setup(); "
            "print(settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE)")
    printed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60, check=True).stdout.split()
    assert printed == [str(secure), str(secure)]
