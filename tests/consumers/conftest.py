"""Consumers and keys built in code, and the gateway with GATEWAY_AUTH=keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from consumers.models import Consumer
from consumers.services import create_key
from endpoints_app.models import Source
from endpoints_app.validation import validate_consumer
from providers.shapes import CHAT, EMBEDDINGS
from tests.conftest import MakeEndpoint

MakeConsumer = Callable[..., Consumer]


@pytest.fixture
def make_consumer(db: None) -> MakeConsumer:
    """Create a consumer through the validator YAML uses; keyword args mirror the YAML."""

    def make(name: str, allow: list[str] | str = "*", **raw: Any) -> Consumer:
        from consumers.services import consumer_values

        spec = validate_consumer({"name": name, "allow": allow, **raw})
        return Consumer.objects.create(name=spec.name, source=Source.ADMIN, **consumer_values(spec))

    return make


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
