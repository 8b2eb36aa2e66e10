"""The management API (/api/manage/): operators only; consumers, keys, endpoints and routes in the config
file's shape, through the same validator as YAML and the admin."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from consumers.models import Consumer, GatewayKey
from endpoints_app.models import Endpoint, Source, TrafficRoute
from providers.shapes import CHAT
from tests.conftest import post_json
from tests.consumers.conftest import MakeConsumer, bearer

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(db: None) -> Any:
    return get_user_model().objects.create_user("ops", password="pw-ops-123", is_staff=True)


@pytest.fixture
def operator_token(operator: Any) -> str:
    out = StringIO()
    call_command("create_operator_token", "ops", stdout=out)
    return out.getvalue().strip().split("\n")[-1]


@pytest.fixture
def api(operator_token: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {operator_token}")


def send(api: Client, method: str, path: str, body: Any = None) -> Any:
    return getattr(api, method)(path, data=body, content_type="application/json")


# -- who may use it ---------------------------------------------------------------------------------------
def test_without_credentials_it_is_401_with_a_bearer_challenge(client: Any) -> None:
    response = client.get("/api/manage/consumers/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="gateway-management"'


def test_a_gateway_key_is_not_an_operator_token(client: Any, make_consumer: MakeConsumer) -> None:
    from consumers.services import create_key

    key = create_key(make_consumer("team")).key
    assert client.get("/api/manage/consumers/", **bearer(key)).status_code == 401


def test_a_staff_session_works_and_a_non_staff_one_does_not(client: Any, operator: Any) -> None:
    get_user_model().objects.create_user("someone", password="pw-someone-1")
    client.login(username="someone", password="pw-someone-1")
    assert client.get("/api/manage/consumers/").status_code == 403
    client.login(username="ops", password="pw-ops-123")
    assert client.get("/api/manage/consumers/").status_code == 200


def test_a_revoked_token_or_a_demoted_operator_is_refused(api: Client, operator: Any) -> None:
    assert api.get("/api/manage/consumers/").status_code == 200
    operator.is_staff = False
    operator.save()
    assert api.get("/api/manage/consumers/").status_code == 401
    operator.is_staff = True
    operator.save()
    operator.operator_tokens.update(revoked_at="2026-01-01T00:00:00Z")
    assert api.get("/api/manage/consumers/").status_code == 401


def test_an_operator_token_is_stored_only_as_a_hash(operator_token: str, operator: Any) -> None:
    record = operator.operator_tokens.get()
    assert operator_token.startswith(record.prefix) and operator_token not in record.digest


# -- consumers ---------------------------------------------------------------------------------------------
def test_consumers_are_created_read_changed_and_deleted_in_the_config_shape(api: Client, make_endpoint: Any) -> None:
    make_endpoint("chat", CHAT, "mock", "m")
    created = send(api, "post", "/api/manage/consumers/", {
        "name": "team", "description": "Search", "allow": ["chat"], "limit": {"calls": 5, "renewal_period": "minute"}})
    assert created.status_code == 201, created.content
    body = created.json()
    assert {k: body[k] for k in ("name", "description", "allow", "limit", "enabled", "active_keys", "source")} == {
        "name": "team", "description": "Search", "allow": ["chat"], "limit": {"calls": 5, "renewal_period": "minute"},
        "enabled": True, "active_keys": 0, "source": "admin"}
    patched = send(api, "patch", "/api/manage/consumers/team/", {"enabled": False})
    assert patched.status_code == 200 and patched.json()["enabled"] is False
    assert patched.json()["limit"] == {"calls": 5, "renewal_period": "minute"}  # the rest kept
    listed = api.get("/api/manage/consumers/?enabled=false").json()
    assert listed["count"] == 1 and listed["results"][0]["name"] == "team"
    assert api.delete("/api/manage/consumers/team/").status_code == 204
    assert not Consumer.objects.exists()


def test_an_invalid_consumer_is_400_naming_the_field_and_nothing_is_saved(api: Client, make_endpoint: Any) -> None:
    make_endpoint("chat", CHAT, "mock", "m")
    response = send(api, "post", "/api/manage/consumers/", {"name": "team", "allow": ["chatt"]})
    assert response.status_code == 400
    assert response.json() == {"allow[0]": ["there is no endpoint or route named 'chatt'; did you mean 'chat'?"]}
    duplicate = send(api, "post", "/api/manage/consumers/", {"name": "team", "allow": ["chat"]})
    assert duplicate.status_code == 201
    again = send(api, "post", "/api/manage/consumers/", {"name": "team", "allow": ["chat"]})
    assert again.status_code == 400 and again.json() == {"name": ["A consumer is already named 'team'."]}
    assert Consumer.objects.count() == 1


# -- keys ----------------------------------------------------------------------------------------------------------
def test_a_key_is_shown_once_on_creation_and_never_again(api: Client, make_consumer: MakeConsumer) -> None:
    make_consumer("team")
    created = send(api, "post", "/api/manage/keys/", {"consumer": "team", "name": "ci", "expires_in": "7d"})
    assert created.status_code == 201, created.content
    body = created.json()
    key = body["key"]
    assert key.startswith(body["prefix"] + "_") and body["state"] == "active" and body["expires_at"]
    assert body["created_by"] == "api:ops"
    for page in (api.get("/api/manage/keys/"), api.get(f"/api/manage/keys/{body['prefix']}/"),
                 api.get("/api/manage/consumers/team/")):
        assert page.status_code == 200
        assert key not in page.content.decode()
    assert api.get("/api/manage/keys/").json()["results"][0]["prefix"] == body["prefix"]


def test_a_key_is_revoked_through_the_api_and_refused_at_once(api: Client, make_consumer: MakeConsumer,
                                                              client: Any, settings: Any, make_endpoint: Any) -> None:
    settings.GATEWAY_AUTH = "keys"
    make_endpoint("chat", CHAT, "mock", "m")
    make_consumer("team")
    key = send(api, "post", "/api/manage/keys/", {"consumer": "team"}).json()["key"]
    hi = {"messages": [{"role": "user", "content": "hi"}]}
    assert post_json(client, "/endpoints/chat/invocations", hi, **bearer(key)).status_code == 200
    revoked = api.post(f"/api/manage/keys/{key[:12]}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert post_json(client, "/endpoints/chat/invocations", hi, **bearer(key)).status_code == 401
    assert api.get("/api/manage/keys/?state=revoked").json()["count"] == 1
    assert api.get("/api/manage/keys/?state=active").json()["count"] == 0


def test_deleting_a_key_revokes_it_and_keeps_its_record(api: Client, make_consumer: MakeConsumer) -> None:
    make_consumer("team")
    prefix = send(api, "post", "/api/manage/keys/", {"consumer": "team"}).json()["prefix"]
    assert api.delete(f"/api/manage/keys/{prefix}/").status_code == 200
    assert GatewayKey.objects.get(prefix=prefix).revoked_at is not None


@pytest.mark.parametrize(("body", "field"), [({"consumer": "nobody"}, "consumer"),
                                             ({"consumer": "team", "expires_in": "forever"}, "expires_in"),
                                             ({"consumer": "team", "expires_at": "2001-01-01T00:00:00Z"},
                                              "expires_at")])
def test_a_bad_key_request_is_400(api: Client, make_consumer: MakeConsumer, body: Any, field: str) -> None:
    make_consumer("team")
    response = send(api, "post", "/api/manage/keys/", body)
    assert response.status_code == 400 and field in response.json()
    assert not GatewayKey.objects.exists()


# -- endpoints and routes ------------------------------------------------------------------------------------------
def test_endpoints_go_through_the_yaml_validator_and_never_show_a_secret(api: Client) -> None:
    definition = {"name": "gpt", "endpoint_type": "llm/v1/chat",
                  "model": {"provider": "openai", "name": "gpt-4o", "config": {"openai_api_key": "sk-literal-123"}},
                  "limit": {"calls": 10, "renewal_period": "minute"}}
    created = send(api, "post", "/api/manage/endpoints/", definition)
    assert created.status_code == 201, created.content
    assert "sk-literal-123" not in created.content.decode()
    assert created.json()["model"]["config"]["openai_api_key"] == "<literal key stored encrypted; not exported>"
    endpoint = Endpoint.objects.get(name="gpt")
    assert endpoint.source == Source.ADMIN and "$enc" in endpoint.config["openai_api_key"]
    bad = send(api, "patch", "/api/manage/endpoints/gpt/", {"model": {"provider": "openai", "config": {}}})
    assert bad.status_code == 400 and "model.config.openai_api_key" in bad.json()
    kept = send(api, "patch", "/api/manage/endpoints/gpt/", {"enabled": False})
    assert kept.status_code == 200 and kept.json()["enabled"] is False
    assert Endpoint.objects.get(name="gpt").config == endpoint.config  # the placeholder kept the stored key
    unknown = send(api, "post", "/api/manage/endpoints/", {**definition, "name": "x", "model": {"provider": "nope"}})
    assert unknown.status_code == 400 and "model.provider" in unknown.json()


def test_routes_are_validated_against_the_endpoints(api: Client, make_endpoint: Any) -> None:
    make_endpoint("a", CHAT, "mock", "m")
    make_endpoint("b", CHAT, "mock", "m")
    created = send(api, "post", "/api/manage/routes/", {
        "name": "split", "task_type": CHAT,
        "destinations": [{"name": "a", "traffic_percentage": 70}, {"name": "b", "traffic_percentage": 30}]})
    assert created.status_code == 201, created.content
    assert [d.traffic_percentage for d in TrafficRoute.objects.get().destinations.all()] == [70, 30]
    bad = send(api, "put", "/api/manage/routes/split/", {
        "name": "split", "task_type": CHAT, "destinations": [{"name": "a", "traffic_percentage": 50}]})
    assert bad.status_code == 400 and "destinations" in bad.json()
    assert send(api, "post", "/api/manage/routes/", {
        "name": "a", "task_type": CHAT, "destinations": [{"name": "b", "traffic_percentage": 100}]}).status_code == 400
    blocked = api.delete("/api/manage/endpoints/a/")
    assert blocked.status_code == 400 and "split" in blocked.json()["name"][0]


def test_the_management_api_is_documented(client: Any) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/manage/consumers/", "/api/manage/keys/", "/api/manage/keys/{prefix}/revoke/",
                 "/api/manage/endpoints/", "/api/manage/routes/{name}/"):
        assert path in paths, path
