"""Test settings: the real settings, read from the environment as in production, with the few
test-only defaults set first (a throwaway secret key, no background config poller: in-process
signals invalidate the table; the propagation tests start real servers that poll)."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)
os.environ.setdefault("GATEWAY_CONFIG_POLL_SECONDS", "0")
os.environ.setdefault("GATEWAY_USAGE_FLUSH_SECONDS", "0")  # no writer thread: tests flush the ledger themselves

from gateway_project.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests

# Parallel test workers (pytest-xdist) must not share a Redis database: each flushes its own.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
_redis_url = os.environ.get("REDIS_URL", "")
if _redis_url and _worker.startswith("gw"):
    _base = _redis_url.rsplit("/", 1)[0] if _redis_url.count("/") > 2 else _redis_url
    REDIS_URL = f"{_base}/{10 + int(_worker[2:])}"

# Server threads of live-server tests must not keep connections that block dropping the test database.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405

# SQLite: a file on tmpfs instead of an in-memory database, so that the live server's threads (their own
# connections) see what transactional tests commit; WAL lets them read while the test writes.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    _folder = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    DATABASES["default"]["TEST"] = {"NAME": f"{_folder}/gateway-tests-{os.getpid()}.sqlite3"}  # noqa: F405
    DATABASES["default"]["OPTIONS"] = {  # noqa: F405
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF",
    }
