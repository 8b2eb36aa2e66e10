"""Consumers and keys built in code, and the gateway with GATEWAY_AUTH=keys."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.models import Consumer
from consumers.services import create_key
from providers.shapes import CHAT, EMBEDDINGS
from tests.conftest import MakeConsumer, MakeEndpoint  # noqa: F401  (MakeConsumer: for the tests' imports)


@pytest.fixture
def auth_on(settings: Any) -> None:
    settings.GATEWAY_AUTH = "keys"


@pytest.fixture
def mock_endpoints(make_endpoint: MakeEndpoint) -> None:
    make_endpoint("chat", CHAT, "mock", "m")
    make_endpoint("other", CHAT, "mock", "m")
    make_endpoint("emb", EMBEDDINGS, "mock", "e", {"dimensions": 3})


def new_key(consumer: Consumer | str, **kwargs: Any) -> str:
    return create_key(consumer, **kwargs).key


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}
