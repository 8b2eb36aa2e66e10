"""The in-memory endpoint table."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from django.db import connection

from providers.shapes import CHAT
from serving import runtime
from serving.bridge import run_sync


@pytest.mark.django_db(transaction=True)
def test_a_rebuild_outside_a_transaction_leaves_no_connection_open(make_endpoint: Any) -> None:
    if connection.vendor == "sqlite" and connection.is_in_memory_db():  # type: ignore[attr-defined]
        pytest.skip("Django never closes an in-memory SQLite connection; the PostgreSQL run checks this")
    make_endpoint("chat", CHAT, "mock", "m")
    connection.close()
    runtime.invalidate()
    table = runtime.load_table()
    assert "chat" in table.endpoints
    assert connection.connection is None  # request threads must not each keep one


@pytest.mark.django_db
def test_a_rebuild_inside_a_transaction_keeps_the_connection(make_endpoint: Any) -> None:
    make_endpoint("chat", CHAT, "mock", "m")
    runtime.invalidate()
    assert "chat" in runtime.load_table().endpoints
    assert connection.connection is not None


@pytest.mark.django_db(transaction=True)
def test_on_the_event_loop_the_table_is_built_in_a_helper_thread(make_endpoint: Any) -> None:
    """Django refuses database access on an event loop's thread (SynchronousOnlyOperation): inside
    the async bridge the rebuild runs in a thread, while other requests go on."""
    make_endpoint("chat", CHAT, "mock", "m")
    runtime.invalidate()
    threads: list[str] = []
    real_build = runtime.build_table

    def build(*args: Any, **kwargs: Any) -> runtime.EndpointTable:
        threads.append(threading.current_thread().name)
        return real_build(*args, **kwargs)

    async def on_the_loop() -> runtime.EndpointTable:
        return await run_sync(runtime.current_table)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime, "build_table", build)
        table = asyncio.run(on_the_loop())
    assert "chat" in table.endpoints
    assert len(threads) == 1 and threads[0] != threading.current_thread().name
