"""A gateway key, once made, is in no database row, no export and no log line: made by the command,
the management API and the admin, then used, forged, revoked."""

from __future__ import annotations

import logging
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client

from consumers.models import GatewayKey
from endpoints_app.services import export_config
from providers.shapes import CHAT
from tests.conftest import post_json
from tests.consumers.conftest import MakeConsumer, bearer

pytestmark = pytest.mark.django_db(transaction=True)

HI = {"messages": [{"role": "user", "content": "hi"}]}


def every_stored_value() -> str:
    """Every row of every table, as text."""
    parts: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            parts.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(parts)


def database_files() -> bytes:
    """The SQLite database's own files (pages and write-ahead log), or nothing on PostgreSQL."""
    if connection.vendor != "sqlite":
        return b""
    name = Path(connection.settings_dict["NAME"])
    return b"".join(path.read_bytes() for path in (name, Path(f"{name}-wal")) if path.exists())


def test_no_key_is_stored_exported_or_logged(client: Any, make_consumer: MakeConsumer, make_endpoint: Any,
                                             settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    settings.GATEWAY_AUTH = "keys"
    make_endpoint("chat", CHAT, "mock", "m")
    make_consumer("team", ["chat"])
    get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-123")
    made: list[str] = []
    with caplog.at_level(logging.DEBUG):
        out = StringIO()
        call_command("create_key", "team", stdout=out)
        made.append(out.getvalue().strip().split("\n")[-1])

        browser = Client()
        browser.login(username="ops", password="pw-ops-123")
        page = browser.post("/admin/consumers/gatewaykey/add/", {"consumer": GatewayKey.objects.get().consumer_id,
                                                                  "name": "from the admin", "expires_in": ""})
        assert page.status_code == 200 and "no-store" in page["Cache-Control"]
        shown = page.content.decode().split('id="new-key"')[1].split('value="')[1].split('"')[0]
        made.append(shown)

        api = browser.post("/api/manage/keys/", {"consumer": "team"}, content_type="application/json")
        assert api.status_code == 201
        made.append(api.json()["key"])

        for key in made:
            assert post_json(client, "/endpoints/chat/invocations", HI, **bearer(key)).status_code == 200
            assert post_json(client, "/endpoints/chat/invocations", HI, **bearer(key[:-2] + "zz")).status_code == 401
        call_command("revoke_key", made[0][:12], stdout=StringIO())
        assert post_json(client, "/endpoints/chat/invocations", HI, **bearer(made[0])).status_code == 401
        assert post_json(client, "/v1/chat/completions", {**HI, "model": "chat"},
                         **bearer(made[1])).status_code == 200
    assert len(set(made)) == 3 and all(key.startswith("gwk_") for key in made)
    stored, files, exported = every_stored_value(), database_files(), export_config()
    logged = caplog.text + "\n".join(repr(record.args) for record in caplog.records)
    assert GatewayKey.objects.count() == 3
    for key in made:
        secret_part = key[13:]
        assert secret_part not in stored
        assert secret_part.encode() not in files
        assert secret_part not in exported
        assert secret_part not in logged
    assert made[0][:12] in stored  # the prefixes are stored: they name the keys
