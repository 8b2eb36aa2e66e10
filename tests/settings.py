"""Test settings: the real settings, read from the environment as in production, with the few
test-only defaults set first (a throwaway secret key, no background config poller: in-process
signals invalidate the table; the propagation tests start real servers that poll)."""

from __future__ import annotations

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)
os.environ.setdefault("GATEWAY_CONFIG_POLL_SECONDS", "0")

from gateway_project.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests

# Parallel test workers (pytest-xdist) must not share a Redis database: each flushes its own.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if REDIS_URL and _worker.startswith("gw"):  # noqa: F405
    _base = REDIS_URL.rsplit("/", 1)[0] if REDIS_URL.count("/") > 2 else REDIS_URL  # noqa: F405
    CACHES["default"]["LOCATION"] = f"{_base}/{10 + int(_worker[2:])}"  # noqa: F405

# Server threads of live-server tests must not keep connections that block dropping the test database.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
