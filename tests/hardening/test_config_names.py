"""Issue 15, item 10: a string stored in a bounded column (names, the upstream model, a limit's key and
period) is checked against the column's size by the one validator, so that 300 characters are a clear
validation error (400 from the API, an error from load_config), on SQLite and on PostgreSQL alike (run
this file with DATABASE_URL=postgres://...), never a DataError traceback; megabytes are refused the same way."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.management.base import CommandError
from django.test import Client

from consumers.models import Consumer
from endpoints_app.models import (
    LIMIT_KEY_MAX_LENGTH,
    MODEL_NAME_MAX_LENGTH,
    NAME_MAX_LENGTH,
    RENEWAL_PERIOD_MAX_LENGTH,
    Endpoint,
    TrafficRoute,
)
from endpoints_app.validation import EntryError, validate_endpoint
from providers.shapes import CHAT
from tests.admin.test_admin import ENDPOINTS, endpoint_form, form_errors
from tests.hardening.config_helpers import load_config, operator_api, send

pytestmark = pytest.mark.django_db
LONG = "n" * 300


def mock_definition(name: str = "chat", **extra: Any) -> dict[str, Any]:
    return {"name": name, "endpoint_type": CHAT, "model": {"provider": "mock", "name": "mock-model", "config": {}},
            **extra}


def test_the_columns_and_the_validator_share_their_sizes() -> None:
    assert Endpoint._meta.get_field("name").max_length == NAME_MAX_LENGTH
    assert TrafficRoute._meta.get_field("name").max_length == NAME_MAX_LENGTH
    assert Consumer._meta.get_field("name").max_length == NAME_MAX_LENGTH
    assert Endpoint._meta.get_field("model_name").max_length == MODEL_NAME_MAX_LENGTH
    assert Endpoint._meta.get_field("limit_key").max_length == LIMIT_KEY_MAX_LENGTH
    assert Endpoint._meta.get_field("limit_renewal_period").max_length == RENEWAL_PERIOD_MAX_LENGTH


@pytest.mark.parametrize(("definition", "field", "message"), [
    (mock_definition(LONG), "name", f"the name is 300 characters long; at most {NAME_MAX_LENGTH} are allowed"),
    (mock_definition("n" * 5_000_000), "name", "the name is 5000000 characters long; at most 255 are allowed"),
    (mock_definition(model={"provider": "mock", "name": LONG, "config": {}}), "model.name",
     "model.name is 300 characters long; at most 255 are allowed"),
    (mock_definition(limit={"calls": 1, "renewal_period": "minute", "key": LONG}), "limit.key",
     "limit.key is 300 characters long; at most 255 are allowed"),
    (mock_definition(limit={"calls": 1, "renewal_period": "1" * 40 + " minutes"}), "limit.renewal_period",
     "limit.renewal_period is 48 characters long; at most 32 are allowed"),
])
def test_an_overlong_string_is_a_validation_error(definition: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(EntryError) as caught:
        validate_endpoint(definition)
    assert (caught.value.field, caught.value.message) == (field, message)


def test_a_name_of_exactly_the_column_size_is_stored() -> None:
    response = send(operator_api(), "post", "/api/manage/endpoints/", mock_definition("n" * NAME_MAX_LENGTH))
    assert response.status_code == 201, response.content
    assert len(Endpoint.objects.get().name) == NAME_MAX_LENGTH


def test_the_api_answers_400_for_300_characters_in_any_bounded_field() -> None:
    api = operator_api()
    cases: dict[str, list[tuple[dict[str, Any], str]]] = {
        "/api/manage/endpoints/": [(mock_definition(LONG), "name"),
                                   (mock_definition(model={"provider": "mock", "name": LONG, "config": {}}),
                                    "model.name"),
                                   (mock_definition(limit={"calls": 1, "renewal_period": "minute", "key": LONG}),
                                    "limit.key")],
        "/api/manage/routes/": [({"name": LONG, "task_type": CHAT,
                                  "destinations": [{"name": "chat", "traffic_percentage": 100}]}, "name")],
        "/api/manage/consumers/": [({"name": LONG}, "name"),
                                   ({"name": "team",
                                     "token_limit": {"tokens": 1, "renewal_period": "9" * 40 + " days"}},
                                    "token_limit.renewal_period")],
    }
    assert send(api, "post", "/api/manage/endpoints/", mock_definition()).status_code == 201
    for path, bodies in cases.items():
        for body, field in bodies:
            response = send(api, "post", path, body)
            assert response.status_code == 400, (path, field, response.content[:200])
            assert field in response.json(), response.json()
    assert list(Endpoint.objects.values_list("name", flat=True)) == ["chat"]
    assert not TrafficRoute.objects.exists() and not Consumer.objects.exists()


def test_load_config_refuses_a_300_character_name(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"endpoints:\n  - name: {LONG}\n    endpoint_type: llm/v1/chat\n"
                      "    model: {provider: mock, config: {}}\n"
                      f"consumers:\n  - name: {LONG}\n")
    with pytest.raises(CommandError) as caught:
        load_config(config)
    message = str(caught.value)
    assert "endpoints[0] " in message and "consumers[0] " in message
    assert message.count("the name is 300 characters long; at most 255 are allowed") == 2
    assert not Endpoint.objects.exists()


def test_the_admin_form_refuses_a_300_character_name(admin_client: Client) -> None:
    response = admin_client.post(f"{ENDPOINTS}add/", endpoint_form(name=LONG))
    assert "name" in form_errors(response)
    assert not Endpoint.objects.exists()
