"""The in-memory endpoint table."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from endpoints_app import runtime
from providers.shapes import CHAT


@pytest.mark.django_db(transaction=True)
def test_a_rebuild_outside_a_transaction_leaves_no_connection_open(make_endpoint: Any) -> None:
    if connection.vendor == "sqlite" and connection.is_in_memory_db():  # type: ignore[attr-defined]
        pytest.skip("Django never closes an in-memory SQLite connection; the PostgreSQL run checks this")
    make_endpoint("chat", CHAT, "mock", "m")
    connection.close()
    runtime.invalidate()
    table = runtime.current_table()
    assert "chat" in table.endpoints
    assert connection.connection is None  # request threads must not each keep one


@pytest.mark.django_db
def test_a_rebuild_inside_a_transaction_keeps_the_connection(make_endpoint: Any) -> None:
    make_endpoint("chat", CHAT, "mock", "m")
    runtime.invalidate()
    assert "chat" in runtime.current_table().endpoints
    assert connection.connection is not None
