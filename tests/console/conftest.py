"""The console's fixtures: usage seeded through the ledger's own writer, and operators."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from usage import ledger
from usage.ledger import Entry

_ids = itertools.count()


def entry(minutes_ago: float, *, consumer: str = "", endpoint: str = "chat", name: str | None = None, route: str = "",
          model: str = "mock-chat", status: int = 200, error_kind: str = "", error_code: str = "", prompt: int = 10,
          completion: int = 5, latency_ms: float = 42.0, cost: int = 1_000_000, request_id: str | None = None,
          stream: bool = False, now: datetime | None = None) -> Entry:
    """One invocation as serving.invoke.finish records it, `minutes_ago` before `now`."""
    when = (now or timezone.now()) - timedelta(minutes=minutes_ago)
    failed = status >= 400
    return Entry(when.timestamp(), request_id or f"req-{next(_ids)}", "endpoints", consumer,
                 "gwk_00000000" if consumer else "", name if name is not None else (route or endpoint), route,
                 endpoint, "mock" if endpoint else "", model if endpoint else "", stream, status, error_kind,
                 error_code, None if failed else prompt, None if failed else completion,
                 None if failed else prompt + completion, latency_ms, None, 0 if failed else cost, 0, 0)


def seed(entries: list[Entry]) -> None:
    """Write records and rollups exactly as the ledger's writer does, in one batch."""
    ledger.write(entries)


@pytest.fixture
def operator(db: None) -> Any:
    return get_user_model().objects.create_superuser("operator", password="operator-password")


@pytest.fixture
def staff_client(operator: Any) -> Client:
    client = Client()
    client.force_login(operator)
    return client


MakeStaff = Callable[..., Client]


@pytest.fixture
def make_staff(db: None) -> MakeStaff:
    """A logged-in staff user with only the given permissions ("app.codename")."""

    def make(*permissions: str) -> Client:
        from django.contrib.auth.models import Permission

        user = get_user_model().objects.create_user(f"staff{next(_ids)}", password="x", is_staff=True)
        for permission in permissions:
            app_label, codename = permission.split(".")
            user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        client = Client()
        client.force_login(user)
        return client

    return make
