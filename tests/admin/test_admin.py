"""The admin, through its real views with Django's test client, logged in as an operator: list,
search, filter, create, edit, enable/disable and delete endpoints; the forms run the YAML validator;
secrets show only as set/unset; every change is served by the next request without a restart."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from endpoints_app.models import Endpoint, Source, TrafficDestination, TrafficRoute
from providers.secrets import PLACEHOLDER
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.conftest import MakeEndpoint

pytestmark = pytest.mark.django_db

ENDPOINTS = "/admin/endpoints_app/endpoint/"
ROUTES = "/admin/endpoints_app/trafficroute/"
LITERAL_KEY = "sk-admin-literal-never-shown-5e1d"
Commit = Callable[..., AbstractContextManager[Any]]


@pytest.fixture
def commit(django_capture_on_commit_callbacks: Commit) -> Iterator[Commit]:
    """Run what the view defers to its commit (the test transaction itself never commits)."""
    yield lambda: django_capture_on_commit_callbacks(execute=True)


def endpoint_form(**overrides: Any) -> dict[str, Any]:
    """The add/change form as a browser posts it: a mock chat endpoint unless overridden."""
    data: dict[str, Any] = {
        "name": "helper", "endpoint_type": CHAT, "enabled": "on", "provider": "mock", "model_name": "mock-chat",
        "config_text": "", "limit_calls": "", "limit_renewal_period": "", "limit_key": "", "connect_timeout": "",
        "read_timeout": "", "max_retries": "", "_save": "Save",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def change_form_data(client: Client, endpoint: Endpoint, **overrides: Any) -> dict[str, Any]:
    """What the change form shows, posted back with `overrides` (as an operator editing one field)."""
    response = client.get(f"{ENDPOINTS}{endpoint.pk}/change/")
    form = response.context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    data = {k: ("" if v is None else v) for k, v in data.items()}
    if data.pop("enabled"):
        data["enabled"] = "on"
    data.update(overrides, _save="Save")
    return {k: v for k, v in data.items() if v is not None}


def form_errors(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 200, "the form was accepted"
    return {field: list(errors) for field, errors in response.context["adminform"].form.errors.items()}


def listed(client: Client) -> dict[str, Any]:
    return {e["name"]: e for e in client.get("/api/2.0/endpoints/").json()["endpoints"]}


def changelist_names(response: Any) -> list[str]:
    assert response.status_code == 200
    return [e.name for e in response.context["cl"].result_list]


# -- access ----------------------------------------------------------------------------------------------
def test_the_admin_asks_an_anonymous_visitor_to_log_in(client: Client) -> None:
    response = client.get(ENDPOINTS)
    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={ENDPOINTS}"


# -- list, search, filter -------------------------------------------------------------------------------------
@pytest.fixture
def three_endpoints(make_endpoint: MakeEndpoint) -> None:
    make_endpoint("gpt-chat", CHAT, "openai", "gpt-4o", config={"openai_api_key": "$OPENAI_API_KEY"})
    make_endpoint("mock-embed", EMBEDDINGS, "mock", "mock-embeddings")
    make_endpoint("old-completions", COMPLETIONS, "mock", "davinci", enabled=False)


@pytest.mark.usefixtures("three_endpoints")
def test_the_changelist_lists_every_endpoint(admin_client: Client) -> None:
    response = admin_client.get(ENDPOINTS)
    assert changelist_names(response) == ["gpt-chat", "mock-embed", "old-completions"]
    html = response.content.decode()
    assert "gpt-4o" in html and "llm/v1/embeddings" in html


@pytest.mark.usefixtures("three_endpoints")
@pytest.mark.parametrize(("query", "names"), [
    ("gpt", ["gpt-chat"]), ("davinci", ["old-completions"]), ("mock", ["mock-embed", "old-completions"]),
    ("nothing-matches", []),
])
def test_the_changelist_searches_names_models_and_providers(admin_client: Client, query: str,
                                                            names: list[str]) -> None:
    assert changelist_names(admin_client.get(ENDPOINTS, {"q": query})) == names


@pytest.mark.usefixtures("three_endpoints")
@pytest.mark.parametrize(("params", "names"), [
    ({"provider": "openai"}, ["gpt-chat"]),
    ({"endpoint_type": EMBEDDINGS}, ["mock-embed"]),
    ({"enabled__exact": "0"}, ["old-completions"]),
    ({"enabled__exact": "1", "provider": "mock"}, ["mock-embed"]),
    ({"source__exact": Source.ADMIN}, ["gpt-chat", "mock-embed", "old-completions"]),
])
def test_the_changelist_filters(admin_client: Client, params: dict[str, str], names: list[str]) -> None:
    assert changelist_names(admin_client.get(ENDPOINTS, params)) == names


# -- create ------------------------------------------------------------------------------------------------------
def test_an_operator_adds_an_endpoint_and_the_next_request_serves_it(admin_client: Client, client: Client,
                                                                     commit: Commit) -> None:
    assert listed(client) == {}
    with commit():
        response = admin_client.post(f"{ENDPOINTS}add/", endpoint_form(
            name="helper", config_text="latency_ms: 3\nstream_chunks: 2", limit_calls="10",
            limit_renewal_period="5 minutes", read_timeout="30"))
    assert response.status_code == 302, form_errors(response)
    endpoint = Endpoint.objects.get(name="helper")
    assert (endpoint.provider, endpoint.model_name, endpoint.config, endpoint.source) == (
        "mock", "mock-chat", {"latency_ms": 3.0, "stream_chunks": 2}, Source.ADMIN)
    assert (endpoint.limit_calls, endpoint.limit_renewal_period, endpoint.read_timeout) == (10, "5 minutes", 30.0)
    assert listed(client)["helper"]["limit"] == {"calls": 10, "key": None, "renewal_period": "5 minutes"}


def test_an_added_literal_key_is_stored_encrypted(admin_client: Client) -> None:
    response = admin_client.post(f"{ENDPOINTS}add/", endpoint_form(
        name="gpt", provider="openai", model_name="gpt-4o", config_text=f"openai_api_key: {LITERAL_KEY}"))
    assert response.status_code == 302, form_errors(response)
    stored = Endpoint.objects.get(name="gpt").config
    assert list(stored["openai_api_key"]) == ["$enc"]
    assert LITERAL_KEY not in str(stored)


@pytest.mark.parametrize(("overrides", "field", "message"), [
    ({"config_text": "temperature: 0.7"}, "config_text",
     "model.config.temperature: unknown config key 'temperature'; allowed keys: chunk_delay_ms, dimensions, "
     "latency_ms, stream_chunks"),
    ({"provider": "openai", "config_text": ""}, "config_text",
     "model.config.openai_api_key: 'openai_api_key' is required"),
    ({"provider": "openai", "config_text": "openai_api_key: $K\nopenai_api_type: azure"}, "config_text",
     "model.config.openai_api_base: OpenAI route configuration must specify 'openai_api_base', "
     "'openai_deployment_name', and 'openai_api_version' if 'openai_api_type' is 'azure'"),
    ({"config_text": "latency_ms: [1"}, "config_text",
     "Not valid YAML (line 1, column 15): expected ',' or ']', but got '<stream end>'"),
    ({"config_text": "- latency_ms"}, "config_text", "model.config: must be a mapping of config keys"),
    ({"limit_calls": "10", "limit_renewal_period": "fortnight"}, "limit_renewal_period",
     "renewal_period 'fortnight' is not a period: use second, minute, hour, day, month or year, optionally plural "
     "and with a count, e.g. '5 minutes'"),
    ({"limit_renewal_period": "minute"}, "limit_calls", "calls must be a whole number of 0 or more, got None"),
    ({"limit_calls": "-1", "limit_renewal_period": "minute"}, "limit_calls", None),
    ({"max_retries": "11"}, "max_retries", "retries must be a whole number from 0 to 10, got 11"),
    ({"name": "Space Name"}, "name", None),
    ({"name": "bang!name"}, "name", None),
])
def test_the_add_form_refuses_what_load_config_refuses(admin_client: Client, overrides: dict[str, Any], field: str,
                                                       message: str | None) -> None:
    response = admin_client.post(f"{ENDPOINTS}add/", endpoint_form(**overrides))
    errors = form_errors(response)
    assert list(errors) == [field]
    if message is not None:
        assert errors[field] == [message]
    assert not Endpoint.objects.exists()


def test_a_yaml_error_in_the_config_does_not_quote_the_line_back(admin_client: Client) -> None:
    response = admin_client.post(f"{ENDPOINTS}add/", endpoint_form(
        provider="openai", config_text="openai_api_key: sk-typo-leak: oops"))
    assert form_errors(response) == {"config_text": [
        "Not valid YAML (line 1, column 29): mapping values are not allowed here"]}


def test_the_add_form_refuses_an_anthropic_embeddings_endpoint(admin_client: Client) -> None:
    response = admin_client.post(f"{ENDPOINTS}add/", endpoint_form(
        name="vectors", endpoint_type=EMBEDDINGS, provider="anthropic", model_name="claude-3-5-haiku",
        config_text="anthropic_api_key: $ANTHROPIC_API_KEY"))
    assert form_errors(response) == {"endpoint_type": [
        "provider 'anthropic' does not support llm/v1/embeddings; it supports llm/v1/chat, llm/v1/completions"]}
    assert "does not support llm/v1/embeddings" in response.content.decode()


def test_the_add_form_refuses_a_name_a_traffic_route_has(admin_client: Client, make_endpoint: MakeEndpoint) -> None:
    route = TrafficRoute.objects.create(name="split", task_type=CHAT)
    TrafficDestination.objects.create(route=route, endpoint=make_endpoint("a", CHAT, "mock"), traffic_percentage=100)
    response = admin_client.post(f"{ENDPOINTS}add/", endpoint_form(name="split"))
    assert form_errors(response) == {"name": [
        "A traffic route is already named 'split': names must be unique across endpoints and routes."]}


def test_the_add_form_refuses_a_duplicate_endpoint_name(admin_client: Client, make_endpoint: MakeEndpoint) -> None:
    make_endpoint("helper", CHAT, "mock")
    assert form_errors(admin_client.post(f"{ENDPOINTS}add/", endpoint_form(name="helper"))) == {
        "name": ["Endpoint with this Name already exists."]}


# -- edit ----------------------------------------------------------------------------------------------------------
def test_an_edited_model_name_is_served_by_the_next_request(admin_client: Client, client: Client,
                                                            make_endpoint: MakeEndpoint, commit: Commit) -> None:
    endpoint = make_endpoint("chat", CHAT, "mock", "mock-chat")
    assert listed(client)["chat"]["model"] == {"name": "mock-chat", "provider": "mock"}  # the table is warm
    with commit():
        response = admin_client.post(f"{ENDPOINTS}{endpoint.pk}/change/",
                                     change_form_data(admin_client, endpoint, model_name="mock-chat-v2"))
    assert response.status_code == 302, form_errors(response)
    assert listed(client)["chat"]["model"] == {"name": "mock-chat-v2", "provider": "mock"}
    assert client.get("/api/2.0/endpoints/chat").json()["model"]["name"] == "mock-chat-v2"


def test_the_change_form_refuses_a_bad_edit_and_keeps_the_endpoint(admin_client: Client,
                                                                  make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint("chat", CHAT, "mock", "mock-chat")
    response = admin_client.post(f"{ENDPOINTS}{endpoint.pk}/change/", change_form_data(
        admin_client, endpoint, config_text="latency: 5", model_name="changed"))
    assert form_errors(response) == {"config_text": [
        "model.config.latency: unknown config key 'latency'; allowed keys: chunk_delay_ms, dimensions, latency_ms, "
        "stream_chunks"]}
    endpoint.refresh_from_db()
    assert (endpoint.model_name, endpoint.config) == ("mock-chat", {})


def test_the_form_stores_the_limit_as_load_config_would(admin_client: Client) -> None:
    response = admin_client.post(f"{ENDPOINTS}add/", endpoint_form(
        limit_calls="7", limit_renewal_period="  2 Hours ", limit_key="user"))
    assert response.status_code == 302, form_errors(response)
    assert Endpoint.objects.values_list("limit_calls", "limit_renewal_period", "limit_key").get() == (
        7, "2 Hours", "user")


def test_an_endpoint_a_route_uses_cannot_change_type(admin_client: Client, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint("chat", CHAT, "mock")
    route = TrafficRoute.objects.create(name="split", task_type=CHAT)
    TrafficDestination.objects.create(route=route, endpoint=endpoint, traffic_percentage=100)
    response = admin_client.post(f"{ENDPOINTS}{endpoint.pk}/change/",
                                 change_form_data(admin_client, endpoint, endpoint_type=EMBEDDINGS))
    assert form_errors(response) == {"endpoint_type": [
        "the traffic route 'split' sends llm/v1/chat traffic to this endpoint, so it cannot become "
        "llm/v1/embeddings; change the route first"]}
    endpoint.refresh_from_db()
    assert endpoint.endpoint_type == CHAT


def test_removing_the_limit_in_the_form_clears_it(admin_client: Client, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint("chat", CHAT, "mock", limit={"calls": 5, "renewal_period": "minute", "key": "x"})
    response = admin_client.post(f"{ENDPOINTS}{endpoint.pk}/change/", change_form_data(
        admin_client, endpoint, limit_calls="", limit_renewal_period="", limit_key="x"))
    assert response.status_code == 302, form_errors(response)
    endpoint.refresh_from_db()
    assert (endpoint.limit_calls, endpoint.limit_renewal_period, endpoint.limit_key) == (None, "", None)


# -- secrets: set/unset only -----------------------------------------------------------------------------------------
@pytest.fixture
def keyed_endpoints(make_endpoint: MakeEndpoint, tmp_path: Path, settings: Any) -> dict[str, Endpoint]:
    settings.GATEWAY_SECRETS_DIR = str(tmp_path)  # where key files may be
    key_file = tmp_path / "openai.key"
    key_file.write_text("sk-file-content-never-shown\n")
    return {
        "literal": make_endpoint("literal", CHAT, "openai", "gpt-4o", config={"openai_api_key": LITERAL_KEY}),
        "env": make_endpoint("env", CHAT, "openai", "gpt-4o", config={"openai_api_key": "$OPENAI_API_KEY"}),
        "file": make_endpoint("file", CHAT, "openai", "gpt-4o", config={"openai_api_key": str(key_file)}),
    }


def test_no_admin_page_shows_a_key(admin_client: Client, keyed_endpoints: dict[str, Endpoint],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-value-never-shown")
    pages = [ENDPOINTS, *(f"{ENDPOINTS}{e.pk}/change/" for e in keyed_endpoints.values()),
             *(f"{ENDPOINTS}{e.pk}/history/" for e in keyed_endpoints.values()),
             *(f"{ENDPOINTS}{e.pk}/delete/" for e in keyed_endpoints.values())]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        for secret in (LITERAL_KEY, "sk-file-content-never-shown", "sk-env-value-never-shown", "$enc"):
            assert secret not in html, (page, secret)


@pytest.mark.parametrize(("name", "status"), [
    ("literal", "set (encrypted)"), ("env", "from environment variable $OPENAI_API_KEY"), ("file", "from file "),
])
def test_the_change_form_shows_only_whether_and_how_a_key_is_set(admin_client: Client,
                                                                 keyed_endpoints: dict[str, Endpoint], name: str,
                                                                 status: str) -> None:
    response = admin_client.get(f"{ENDPOINTS}{keyed_endpoints[name].pk}/change/")
    assert f"<div><code>openai_api_key</code>: {status}" in response.content.decode()


def test_a_provider_without_secrets_says_so(admin_client: Client, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint("chat", CHAT, "mock")
    assert "This provider takes no secrets." in admin_client.get(f"{ENDPOINTS}{endpoint.pk}/change/").content.decode()


def test_the_change_form_shows_a_literal_key_as_the_placeholder(admin_client: Client,
                                                               keyed_endpoints: dict[str, Endpoint]) -> None:
    data = change_form_data(admin_client, keyed_endpoints["literal"])
    assert data["config_text"] == f"openai_api_key: {PLACEHOLDER}"


def test_saving_the_placeholder_keeps_the_stored_key(admin_client: Client,
                                                     keyed_endpoints: dict[str, Endpoint]) -> None:
    endpoint = keyed_endpoints["literal"]
    stored = endpoint.config
    response = admin_client.post(f"{ENDPOINTS}{endpoint.pk}/change/",
                                 change_form_data(admin_client, endpoint, model_name="gpt-4.1"))
    assert response.status_code == 302, form_errors(response)
    endpoint.refresh_from_db()
    assert (endpoint.model_name, endpoint.config) == ("gpt-4.1", stored)


def test_the_placeholder_cannot_become_a_key_on_a_new_endpoint(admin_client: Client) -> None:
    response = admin_client.post(f"{ENDPOINTS}add/", endpoint_form(
        provider="openai", config_text=f"openai_api_key: {PLACEHOLDER}"))
    assert form_errors(response) == {"config_text": [
        "model.config.openai_api_key: 'openai_api_key' holds the export placeholder, not a key: write the key or a "
        "$ENV reference"]}


def test_a_new_key_typed_over_the_placeholder_replaces_the_stored_one(admin_client: Client,
                                                                     keyed_endpoints: dict[str, Endpoint]) -> None:
    endpoint = keyed_endpoints["literal"]
    response = admin_client.post(f"{ENDPOINTS}{endpoint.pk}/change/", change_form_data(
        admin_client, endpoint, config_text="openai_api_key: $NEW_OPENAI_KEY"))
    assert response.status_code == 302, form_errors(response)
    endpoint.refresh_from_db()
    assert endpoint.config == {"openai_api_key": {"$env": "NEW_OPENAI_KEY"}}


# -- enable / disable -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("action", "start", "end"), [("disable", True, False), ("enable", False, True)])
def test_the_enable_and_disable_actions_are_served_by_the_next_request(
        admin_client: Client, client: Client, make_endpoint: MakeEndpoint, commit: Commit, action: str, start: bool,
        end: bool) -> None:
    target = make_endpoint("target", CHAT, "mock", enabled=start)
    make_endpoint("bystander", CHAT, "mock")
    assert ("target" in listed(client)) is start
    with commit():
        response = admin_client.post(ENDPOINTS, {"action": action, "_selected_action": [target.pk], "index": "0"},
                                     follow=True)
    assert f"1 endpoint(s) {action}d." in response.content.decode()
    target.refresh_from_db()
    assert target.enabled is end
    assert ("target" in listed(client)) is end
    assert "bystander" in listed(client)


def test_the_enabled_column_is_editable_in_the_list_and_served_by_the_next_request(
        admin_client: Client, client: Client, make_endpoint: MakeEndpoint, commit: Commit) -> None:
    first = make_endpoint("first", CHAT, "mock")
    second = make_endpoint("second", CHAT, "mock")
    assert set(listed(client)) == {"first", "second"}
    data = {"form-TOTAL_FORMS": "2", "form-INITIAL_FORMS": "2", "form-MIN_NUM_FORMS": "0",
            "form-MAX_NUM_FORMS": "1000", "form-0-id": str(first.pk), "form-0-enabled": "on",
            "form-1-id": str(second.pk), "_save": "Save"}
    with commit():
        response = admin_client.post(ENDPOINTS, data)
    assert response.status_code == 302
    assert dict(Endpoint.objects.values_list("name", "enabled")) == {"first": True, "second": False}
    assert set(listed(client)) == {"first"}


# -- delete ------------------------------------------------------------------------------------------------------------
def test_an_operator_deletes_an_endpoint_and_the_next_request_no_longer_serves_it(
        admin_client: Client, client: Client, make_endpoint: MakeEndpoint, commit: Commit) -> None:
    endpoint = make_endpoint("doomed", CHAT, "mock")
    assert "doomed" in listed(client)
    with commit():
        response = admin_client.post(f"{ENDPOINTS}{endpoint.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Endpoint.objects.exists()
    assert listed(client) == {}
    assert client.get("/api/2.0/endpoints/doomed").status_code == 404


def test_an_endpoint_a_route_sends_traffic_to_cannot_be_deleted(admin_client: Client,
                                                               make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint("target", CHAT, "mock")
    route = TrafficRoute.objects.create(name="split", task_type=CHAT)
    TrafficDestination.objects.create(route=route, endpoint=endpoint, traffic_percentage=100)
    response = admin_client.post(f"{ENDPOINTS}{endpoint.pk}/delete/", {"post": "yes"})
    assert response.status_code == 200
    assert "would require deleting the following protected related objects" in response.content.decode()
    assert Endpoint.objects.filter(pk=endpoint.pk).exists()


# -- traffic routes --------------------------------------------------------------------------------------------
@pytest.fixture
def two_chats_and_an_embedding(make_endpoint: MakeEndpoint) -> dict[str, Endpoint]:
    return {"a": make_endpoint("a", CHAT, "mock"), "b": make_endpoint("b", CHAT, "mock"),
            "vectors": make_endpoint("vectors", EMBEDDINGS, "mock")}


def route_form(name: str, destinations: list[tuple[Endpoint, int]], task_type: str = CHAT) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name, "task_type": task_type, "routing_strategy": "TRAFFIC_SPLIT", "enabled": "on", "_save": "Save",
        "destinations-TOTAL_FORMS": str(len(destinations)), "destinations-INITIAL_FORMS": "0",
        "destinations-MIN_NUM_FORMS": "0", "destinations-MAX_NUM_FORMS": "1000",
    }
    for index, (endpoint, percentage) in enumerate(destinations):
        data[f"destinations-{index}-endpoint"] = str(endpoint.pk)
        data[f"destinations-{index}-traffic_percentage"] = str(percentage)
        data[f"destinations-{index}-position"] = str(index)
    return data


def inline_errors(response: Any) -> list[str]:
    assert response.status_code == 200, "the form was accepted"
    return [str(e) for formset in response.context["inline_admin_formsets"] for e in formset.formset.non_form_errors()]


def test_an_operator_adds_a_traffic_route_and_the_next_request_serves_it(
        admin_client: Client, client: Client, two_chats_and_an_embedding: dict[str, Endpoint], commit: Commit) -> None:
    a, b = two_chats_and_an_embedding["a"], two_chats_and_an_embedding["b"]
    assert client.get("/api/3.0/gateway/route/split").status_code == 404
    with commit():
        response = admin_client.post(f"{ROUTES}add/", route_form("split", [(a, 70), (b, 30)]))
    assert response.status_code == 302, inline_errors(response)
    route = TrafficRoute.objects.get(name="split")
    assert (route.source, [(d.endpoint.name, d.traffic_percentage) for d in route.destinations.all()]) == (
        Source.ADMIN, [("a", 70), ("b", 30)])
    assert client.get("/api/3.0/gateway/route/split").json() == {
        "name": "split", "task_type": CHAT, "routing_strategy": "TRAFFIC_SPLIT",
        "destinations": [{"name": "a", "traffic_percentage": 70}, {"name": "b", "traffic_percentage": 30}]}
    assert admin_client.get(ROUTES).context["cl"].result_list[0] == route


@pytest.mark.parametrize(("picks", "message"), [
    ([("a", 70), ("b", 20)], "For each route configuration, the traffic percentage sum of destinations must be 100, "
                             "but got invalid configuration of route 'split'."),
    ([("a", 50), ("vectors", 50)], "The route destination endpoint types in the route 'split' must have endpoint "
                                   "type 'llm/v1/chat' but got endpoint type 'llm/v1/embeddings'."),
    ([], "destinations must be a non-empty list of {name, traffic_percentage}"),
])
def test_the_route_form_checks_destinations_with_the_yaml_rules(
        admin_client: Client, two_chats_and_an_embedding: dict[str, Endpoint], picks: list[tuple[str, int]],
        message: str) -> None:
    destinations = [(two_chats_and_an_embedding[name], pct) for name, pct in picks]
    response = admin_client.post(f"{ROUTES}add/", route_form("split", destinations))
    assert inline_errors(response) == [message]
    assert not TrafficRoute.objects.exists()


def test_editing_a_route_to_a_sum_other_than_100_is_refused(admin_client: Client,
                                                            two_chats_and_an_embedding: dict[str, Endpoint]) -> None:
    a, b = two_chats_and_an_embedding["a"], two_chats_and_an_embedding["b"]
    assert admin_client.post(f"{ROUTES}add/", route_form("split", [(a, 50), (b, 50)])).status_code == 302
    route = TrafficRoute.objects.get()
    first, second = route.destinations.all()
    data = route_form("split", [(a, 50), (b, 40)])
    data.update({"destinations-INITIAL_FORMS": "2", "destinations-0-id": str(first.pk),
                 "destinations-1-id": str(second.pk), "destinations-0-route": str(route.pk),
                 "destinations-1-route": str(route.pk)})
    response = admin_client.post(f"{ROUTES}{route.pk}/change/", data)
    assert inline_errors(response) == [
        "For each route configuration, the traffic percentage sum of destinations must be 100, but got invalid "
        "configuration of route 'split'."]
    assert list(route.destinations.values_list("traffic_percentage", flat=True)) == [50, 50]


def test_the_route_form_refuses_a_name_an_endpoint_has(admin_client: Client,
                                                       two_chats_and_an_embedding: dict[str, Endpoint]) -> None:
    a = two_chats_and_an_embedding["a"]
    response = admin_client.post(f"{ROUTES}add/", route_form("b", [(a, 100)]))
    assert form_errors(response) == {"name": [
        "An endpoint is already named 'b': names must be unique across endpoints and routes."]}


# -- costs, budgets, params, fallback ----------------------------------------------------------------------------
def test_an_operator_sets_a_cost_a_budget_params_and_a_total_timeout(admin_client: Client) -> None:
    response = admin_client.post(f"{ENDPOINTS}add/", endpoint_form(
        cost_input_per_million="0.15", cost_output_per_million="0.60", budget_usd="25", budget_period="week",
        budget_action="alert", total_timeout="45", params_text="defaults: {temperature: 0.2}\nmax: {max_tokens: 512}"))
    assert response.status_code == 302, form_errors(response)
    endpoint = Endpoint.objects.get(name="helper")
    assert (str(endpoint.cost_input_per_million), str(endpoint.cost_output_per_million)) == ("0.150000", "0.600000")
    assert (str(endpoint.budget_usd), endpoint.budget_period, endpoint.budget_action) == ("25.000000", "week", "alert")
    assert endpoint.total_timeout == 45
    assert endpoint.params == {"defaults": {"temperature": 0.2}, "max": {"max_tokens": 512}}
    shown = admin_client.get(f"{ENDPOINTS}{endpoint.pk}/change/").content.decode()
    assert "max_tokens: 512" in shown


@pytest.mark.parametrize(("overrides", "field", "message"), [
    ({"cost_input_per_million": "0.15"}, "cost_output_per_million", "output_per_million_tokens is required"),
    ({"params_text": "deny: logit_bias"}, "params_text", "deny must be a list"),
    ({"params_text": "defaults: [1"}, "params_text", "Not valid YAML"),
])
def test_bad_costs_and_params_are_refused_at_their_field(admin_client: Client, overrides: dict[str, Any],
                                                         field: str, message: str) -> None:
    errors = form_errors(admin_client.post(f"{ENDPOINTS}add/", endpoint_form(**overrides)))
    assert field in errors and message in errors[field][0], errors
    assert not Endpoint.objects.exists()


def test_an_operator_adds_a_fallback_route(admin_client: Client, client: Client,
                                           two_chats_and_an_embedding: dict[str, Endpoint], commit: Commit) -> None:
    a, b = two_chats_and_an_embedding["a"], two_chats_and_an_embedding["b"]
    data = route_form("resilient", [(a, 0), (b, 0)])
    data.update({"routing_strategy": "FALLBACK", "fallback_on_text": "connect, timeout, 503",
                 "destinations-0-traffic_percentage": "", "destinations-1-traffic_percentage": ""})
    with commit():
        response = admin_client.post(f"{ROUTES}add/", data)
    assert response.status_code == 302, inline_errors(response)
    route = TrafficRoute.objects.get(name="resilient")
    assert (route.routing_strategy, route.fallback_on) == ("FALLBACK", ["connect", "timeout", "503"])
    assert client.get("/api/3.0/gateway/route/resilient").json()["destinations"] == [{"name": "a"}, {"name": "b"}]
    bad = dict(data, name="other", fallback_on_text="400")
    assert "caused by the request itself" in str(admin_client.post(f"{ROUTES}add/", bad).content)
