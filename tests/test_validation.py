"""The one validator (endpoints_app/validation.py), table by table: every rule a YAML file, the admin
and load_config share, with the field each error names and MLflow's wording where MLflow has one."""
from __future__ import annotations

import warnings
from typing import Any

import pytest

from endpoints_app.validation import (
    ConfigError,
    DestinationSpec,
    EntryError,
    LimitSpec,
    RouteSpec,
    TimeoutSpec,
    parse_yaml,
    validate_document,
    validate_endpoint,
    validate_limit,
    validate_route,
    validate_timeouts,
)
from providers import registry
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS


def mock_chat(name: str = "chat", **overrides: Any) -> dict[str, Any]:
    """A chat endpoint on the built-in mock provider, as a YAML entry."""
    entry: dict[str, Any] = {"name": name, "endpoint_type": CHAT,
                             "model": {"provider": "mock", "name": "mock-chat", "config": {}}}
    entry.update(overrides)
    return entry


def openai_chat(name: str = "gpt", **config: Any) -> dict[str, Any]:
    """A chat endpoint on OpenAI with its key as a $ENV reference."""
    return {"name": name, "endpoint_type": CHAT, "model": {
        "provider": "openai", "name": "gpt-4o", "config": {"openai_api_key": "$OPENAI_API_KEY", **config}}}


def split_route(name: str = "split", destinations: Any = None, **overrides: Any) -> dict[str, Any]:
    route: dict[str, Any] = {"name": name, "task_type": CHAT, "destinations": destinations if destinations is not None
                             else [{"name": "a", "traffic_percentage": 60}, {"name": "b", "traffic_percentage": 40}]}
    route.update(overrides)
    return route


def entry_error(raw: Any) -> tuple[str, str]:
    with pytest.raises(EntryError) as caught:
        validate_endpoint(raw)
    return caught.value.field, caught.value.message


def document_error(doc: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        validate_document(doc, "gateway.yaml")
    return caught.value


# -- names ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["chat", "chat_3.5", "gpt-4o-mini", "A.b-C_9", "0"])
def test_it_accepts_names_made_of_ascii_letters_digits_and_dot_dash_underscore(name: str) -> None:
    spec, _ = validate_endpoint(mock_chat(name))
    assert spec.name == name


@pytest.mark.parametrize("name", ["Space Name", "bang!name", "query?name", "redirect#name", "bracket[]name",
                                  "slash/name", "ünïcode", "trailing\n"])
def test_it_refuses_the_names_mlflow_refuses(name: str) -> None:
    field, message = entry_error(mock_chat(name))
    assert field == "name"
    assert f"invalid name {name!r}" in message


@pytest.mark.parametrize(("name", "message"), [
    ("", "a non-empty name is required"),
    (None, "a non-empty name is required"),
    (42, "the name must be a string, got 42"),
])
def test_it_refuses_a_missing_or_non_string_name(name: Any, message: str) -> None:
    assert entry_error(mock_chat(name)) == ("name", message)


# -- endpoint types and providers -------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint_type", [CHAT, COMPLETIONS, EMBEDDINGS])
def test_it_accepts_the_three_endpoint_types(endpoint_type: str) -> None:
    spec, _ = validate_endpoint(mock_chat(endpoint_type=endpoint_type))
    assert spec.endpoint_type == endpoint_type


@pytest.mark.parametrize("endpoint_type", ["llm/v1/chat/", "llm/v2/chat", "chat", None, ["llm/v1/chat"]])
def test_it_refuses_any_other_endpoint_type(endpoint_type: Any) -> None:
    field, message = entry_error(mock_chat(endpoint_type=endpoint_type))
    assert field == "endpoint_type"
    assert "is not supported; use one of llm/v1/completions, llm/v1/chat, llm/v1/embeddings" in message


@pytest.mark.parametrize(("written", "canonical"), [
    ("openai", "openai"), ("OpenAI", "openai"), ("OPENAI", "openai"),
    ("openai_compatible", "openai-compatible"), ("OpenAI-Compatible", "openai-compatible"),
])
def test_it_matches_providers_ignoring_case_and_dash_or_underscore(written: str, canonical: str) -> None:
    key = "openai_api_key" if canonical == "openai" else "api_key"
    raw = {"name": "e", "endpoint_type": CHAT, "model": {"provider": written, "config": {key: "$KEY"}}}
    spec, _ = validate_endpoint(raw)
    assert spec.provider == canonical


@pytest.mark.parametrize("provider", ["openia", "open ai", "azure-openai", 7])
def test_it_refuses_an_unknown_provider_and_lists_the_known_ones(provider: Any) -> None:
    field, message = entry_error({"name": "e", "endpoint_type": CHAT, "model": {"provider": provider, "config": {}}})
    assert field == "model.provider"
    assert message.startswith(f"The provider '{provider}' is not supported.")
    assert message.endswith(f"Known providers: {', '.join(registry.names())}")
    assert {"openai", "mock", "anthropic"} <= set(registry.names())


def test_it_refuses_a_missing_provider() -> None:
    assert entry_error({"name": "e", "endpoint_type": CHAT, "model": {"name": "x"}})[0] == "model.provider"


def test_it_refuses_a_missing_model() -> None:
    assert entry_error({"name": "e", "endpoint_type": CHAT}) == (
        "model", "model must be a mapping with provider, name and config")


# -- provider config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "field", "message"), [
    ({"name": "e", "endpoint_type": CHAT, "model": {"provider": "openai", "name": "gpt-4o"}},
     "model.config", "A config must be supplied when setting a provider. The provider entry for openai is incorrect."),
    (openai_chat(openai_api_key=None), "model.config.openai_api_key", "'openai_api_key' is required"),
    (openai_chat(openai_api_key="   "), "model.config.openai_api_key", "'openai_api_key' is required"),
    (openai_chat(temperature=0.7), "model.config.temperature",
     "unknown config key 'temperature'; allowed keys: openai_api_base, openai_api_key, openai_api_type, "
     "openai_api_version, openai_deployment_name, openai_organization"),
    (openai_chat(openai_api_type="bedrock"), "model.config.openai_api_type",
     "'openai_api_type' must be one of openai, azure, azuread; got 'bedrock'"),
    (openai_chat(openai_deployment_name="dep"), "model.config.openai_deployment_name",
     "You can only specify a value for 'openai_deployment_name' if 'openai_api_type' is 'azure' or 'azuread'. "
     "Found type: 'openai'"),
    (openai_chat(openai_api_type="azure"), "model.config.openai_api_base",
     "OpenAI route configuration must specify 'openai_api_base', 'openai_deployment_name', and "
     "'openai_api_version' if 'openai_api_type' is 'azure'"),
    (openai_chat(openai_api_key=12345), "model.config.openai_api_key",
     "'openai_api_key': the api key provided is not a string. Please provide either an environment variable key "
     "($NAME), a path to a file containing the api key, or the api key itself"),
    (openai_chat(openai_api_key="$"), "model.config.openai_api_key",
     "'openai_api_key': '$' is not a valid environment variable reference"),
    (openai_chat(openai_api_key={"$enc": "not-a-token"}), "model.config.openai_api_key",
     "The stored key for openai_api_key cannot be decrypted: was SECRET_KEY or GATEWAY_ENCRYPTION_KEY changed?"),
    (openai_chat(openai_api_base=8080), "model.config.openai_api_base",
     "'openai_api_base' must be a string URL or a $ENV reference"),
    (mock_chat(model={"provider": "mock", "config": ["latency_ms", 5]}), "model.config",
     "must be a mapping of config keys"),
    (mock_chat(model={"provider": "mock", "config": {"latency_ms": -1}}), "model.config.latency_ms",
     "'latency_ms' must be at least 0, got -1"),
    (mock_chat(model={"provider": "mock", "config": {"latency_ms": float("nan")}}), "model.config.latency_ms",
     "'latency_ms' must be a number, got nan"),
    (mock_chat(model={"provider": "mock", "config": {"latency_ms": float("inf")}}), "model.config.latency_ms",
     "'latency_ms' must be a number, got inf"),
    (mock_chat(model={"provider": "mock", "config": {"stream_chunks": 1.5}}), "model.config.stream_chunks",
     "'stream_chunks' must be a whole number, got 1.5"),
    (mock_chat(model={"provider": "mock", "config": {}, "temperature": 0}), "model.temperature",
     "unknown model key; use provider, name and config"),
    (mock_chat(model={"provider": "mock", "name": 4, "config": {}}), "model.name", "the model name must be a string"),
])
def test_it_checks_each_providers_config_keys(raw: dict[str, Any], field: str, message: str) -> None:
    assert entry_error(raw) == (field, message)


def test_it_stores_an_env_reference_as_a_reference() -> None:
    spec, _ = validate_endpoint(openai_chat(openai_api_key="${OPENAI_API_KEY}", openai_api_base="$OPENAI_BASE"))
    assert spec.config == {"openai_api_key": {"$env": "OPENAI_API_KEY"}, "openai_api_base": {"$env": "OPENAI_BASE"}}


def test_it_lower_cases_the_openai_api_type_as_mlflow_does() -> None:
    spec, _ = validate_endpoint(openai_chat(openai_api_type="OpenAI"))
    assert spec.config["openai_api_type"] == "openai"


def test_it_lets_a_provider_without_required_keys_omit_the_config() -> None:
    spec, _ = validate_endpoint({"name": "e", "endpoint_type": CHAT, "model": {"provider": "mock"}})
    assert spec.config == {}


def test_it_refuses_an_endpoint_type_the_provider_does_not_serve() -> None:
    raw = {"name": "vectors", "endpoint_type": EMBEDDINGS,
           "model": {"provider": "anthropic", "name": "claude-3-5-haiku", "config": {"anthropic_api_key": "$KEY"}}}
    assert entry_error(raw) == (
        "endpoint_type", "provider 'anthropic' does not support llm/v1/embeddings; it supports llm/v1/chat, "
        "llm/v1/completions")


# -- limits ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    (None, None),
    ({"calls": 0, "renewal_period": "minute"}, LimitSpec(0, "minute")),
    ({"calls": 10, "renewal_period": "second"}, LimitSpec(10, "second")),
    ({"calls": 10, "renewal_period": "hours"}, LimitSpec(10, "hours")),
    ({"calls": 10, "renewal_period": "day"}, LimitSpec(10, "day")),
    ({"calls": 10, "renewal_period": "month"}, LimitSpec(10, "month")),
    ({"calls": 10, "renewal_period": "years"}, LimitSpec(10, "years")),
    ({"calls": 5, "renewal_period": "5 minutes"}, LimitSpec(5, "5 minutes")),
    ({"calls": 5, "renewal_period": " Minute "}, LimitSpec(5, "Minute")),
    ({"calls": 5, "renewal_period": "minute", "key": "user"}, LimitSpec(5, "minute", "user")),
])
def test_it_accepts_limits_in_the_limits_library_words(raw: Any, expected: LimitSpec | None) -> None:
    assert validate_limit(raw) == expected


@pytest.mark.parametrize(("raw", "field", "message"), [
    ({"calls": -1, "renewal_period": "minute"}, "limit.calls", "calls must be a whole number of 0 or more, got -1"),
    ({"calls": 1.5, "renewal_period": "minute"}, "limit.calls", "calls must be a whole number of 0 or more, got 1.5"),
    ({"calls": True, "renewal_period": "minute"}, "limit.calls", "calls must be a whole number of 0 or more, got True"),
    ({"renewal_period": "minute"}, "limit.calls", "calls must be a whole number of 0 or more, got None"),
    ({"calls": 5, "renewal_period": "fortnight"}, "limit.renewal_period",
     "renewal_period 'fortnight' is not a period: use second, minute, hour, day, month or year, optionally plural "
     "and with a count, e.g. '5 minutes'"),
    ({"calls": 5, "renewal_period": "0 minutes"}, "limit.renewal_period", None),
    ({"calls": 5, "renewal_period": "week"}, "limit.renewal_period", None),
    ({"calls": 5}, "limit.renewal_period", None),
    ({"calls": 5, "renewal_period": "minute", "key": 3}, "limit.key", "key must be a string"),
    ({"calls": 5, "renewal_period": "minute", "burst": 3}, "limit.burst",
     "unknown limit key; use calls, renewal_period and key"),
    ("5/minute", "limit", "limit must be a mapping with calls and renewal_period"),
])
def test_it_refuses_bad_limits(raw: Any, field: str, message: str | None) -> None:
    with pytest.raises(EntryError) as caught:
        validate_limit(raw)
    assert caught.value.field == field
    if message is not None:
        assert caught.value.message == message


# -- timeouts (our extension) ------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    (None, TimeoutSpec()),
    ({"connect": 2, "read": 30.5, "retries": 0}, TimeoutSpec(2.0, 30.5, 0)),
    ({"retries": 10}, TimeoutSpec(retries=10)),
])
def test_it_accepts_timeouts(raw: Any, expected: TimeoutSpec) -> None:
    assert validate_timeouts(raw) == expected


@pytest.mark.parametrize(("raw", "field"), [
    ({"connect": 0}, "timeouts.connect"), ({"read": -1}, "timeouts.read"), ({"read": float("nan")}, "timeouts.read"),
    ({"connect": float("inf")}, "timeouts.connect"), ({"connect": "5s"}, "timeouts.connect"),
    ({"retries": 11}, "timeouts.retries"), ({"retries": 1.5}, "timeouts.retries"), ({"total": 0}, "timeouts.total"),
        ({"totl": 3}, "timeouts.totl"),
    ([1, 2], "timeouts"),
])
def test_it_refuses_bad_timeouts(raw: Any, field: str) -> None:
    with pytest.raises(EntryError) as caught:
        validate_timeouts(raw)
    assert caught.value.field == field


def test_it_refuses_a_non_boolean_enabled() -> None:
    assert entry_error(mock_chat(enabled="no")) == ("enabled", "enabled must be true or false")


# -- traffic routes (MLflow §1.5 messages) -------------------------------------------------------------------
TYPES = {"a": CHAT, "b": CHAT, "vectors": EMBEDDINGS}


def test_it_accepts_a_traffic_split_summing_to_100() -> None:
    route = validate_route(split_route(), TYPES)
    assert [(d.name, d.traffic_percentage) for d in route.destinations] == [("a", 60), ("b", 40)]
    assert route.routing_strategy == "TRAFFIC_SPLIT"
    assert route.enabled is True


@pytest.mark.parametrize(("raw", "field", "message"), [
    (split_route(destinations=[{"name": "zz", "traffic_percentage": 100}]), "destinations[0].name",
     "The route destination name must be a endpoint name, but the route 'split' has an invalid destination name 'zz'."),
    (split_route(destinations=[{"name": ["a"], "traffic_percentage": 100}]), "destinations[0].name",
     "The route destination name must be a endpoint name, but the route 'split' has an invalid destination name "
     "'['a']'."),
    (split_route(destinations=[{"name": "a", "traffic_percentage": 50}, {"name": "vectors", "traffic_percentage": 50}]),
     "destinations[1].name", "The route destination endpoint types in the route 'split' must have endpoint type "
     "'llm/v1/chat' but got endpoint type 'llm/v1/embeddings'."),
    (split_route(destinations=[{"name": "a", "traffic_percentage": 101}]), "destinations[0].traffic_percentage",
     "The route destination traffic percentage must between 0 and 100."),
    (split_route(destinations=[{"name": "a", "traffic_percentage": -1}, {"name": "b", "traffic_percentage": 101}]),
     "destinations[0].traffic_percentage", "The route destination traffic percentage must between 0 and 100."),
    (split_route(destinations=[{"name": "a", "traffic_percentage": 60}, {"name": "b", "traffic_percentage": 30}]),
     "destinations", "For each route configuration, the traffic percentage sum of destinations must be 100, but got "
     "invalid configuration of route 'split'."),
    (split_route(destinations=[]), "destinations",
     "destinations must be a non-empty list of {name, traffic_percentage}"),
    (split_route(routing_strategy="ROUND_ROBIN"), "routing_strategy",
     "routing_strategy must be 'TRAFFIC_SPLIT' or 'FALLBACK', got 'ROUND_ROBIN'"),
    (split_route(task_type="llm/v1/images"), "task_type", None),
    (split_route(name="split route"), "name", None),
])
def test_it_refuses_bad_routes_with_mlflows_messages(raw: dict[str, Any], field: str, message: str | None) -> None:
    with pytest.raises(EntryError) as caught:
        validate_route(raw, TYPES)
    assert caught.value.field == field
    if message is not None:
        assert caught.value.message == message


# -- whole documents ----------------------------------------------------------------------------------------
def test_it_accepts_an_empty_endpoints_list() -> None:
    assert validate_document({"endpoints": []}).endpoints == []


@pytest.mark.parametrize(("doc", "message"), [
    (None, "gateway.yaml: field 'endpoints': the 'endpoints' list is required (it may be empty: [])"),
    ({"routes": []}, "gateway.yaml: field 'endpoints': the 'endpoints' list is required (it may be empty: [])"),
    ([mock_chat()], "gateway.yaml: the top level must be a mapping with an 'endpoints' list"),
    ({"endpoints": mock_chat()}, "gateway.yaml: field 'endpoints': 'endpoints' must be a list"),
    ({"endpoints": [], "routes": {"a": 1}}, "gateway.yaml: field 'routes': 'routes' must be a list"),
])
def test_it_refuses_a_document_without_an_endpoints_list(doc: Any, message: str) -> None:
    assert str(document_error(doc)) == message


def test_it_names_the_file_the_entry_index_and_name_and_the_field() -> None:
    doc = {"endpoints": [mock_chat("ok"), mock_chat("broken", limit={"calls": 1, "renewal_period": "fortnight"})]}
    assert str(document_error(doc)).startswith(
        "gateway.yaml: endpoints[1] 'broken' field 'limit.renewal_period': renewal_period 'fortnight' is not a period")


def test_it_lists_every_issue_of_the_document_at_once() -> None:
    doc = {"endpoints": [mock_chat("Space Name"), mock_chat("ok", endpoint_type="llm/v1/images"),
                         mock_chat("fine"), mock_chat("fine")]}
    error = document_error(doc)
    assert [(i.location, i.field) for i in error.issues] == [
        ("endpoints[0] 'Space Name'", "name"), ("endpoints[1] 'ok'", "endpoint_type"), ("endpoints[3] 'fine'", "name"),
    ]


def test_it_refuses_duplicate_names_across_endpoints_and_routes() -> None:
    doc = {"endpoints": [mock_chat("a"), mock_chat("b")],
           "routes": [split_route("a"), split_route("split"), split_route("split")]}
    error = document_error(doc)
    assert [(i.location, i.message) for i in error.issues] == [
        ("routes[0] 'a'",
         "duplicate name 'a' (also endpoints[0] 'a'): names must be unique across endpoints and routes"),
        ("routes[2] 'split'",
         "duplicate name 'split' (also routes[1] 'split'): names must be unique across endpoints and routes"),
    ]


def test_it_refuses_names_already_taken_by_the_other_kind_in_the_database() -> None:
    doc = {"endpoints": [mock_chat("a"), mock_chat("taken-by-route")], "routes": [split_route("taken-by-endpoint")]}
    taken_by_route = RouteSpec("taken-by-route", CHAT, (DestinationSpec("b", 100),))
    with pytest.raises(ConfigError) as caught:
        validate_document(doc, "g.yaml", extra_endpoint_types={"b": CHAT, "taken-by-endpoint": CHAT},
                          existing_routes={"taken-by-route": taken_by_route})
    assert [(i.location, i.message) for i in caught.value.issues] == [
        ("endpoints[1] 'taken-by-route'",
         "a traffic route named 'taken-by-route' already exists: names must be unique across endpoints and routes"),
        ("routes[0] 'taken-by-endpoint'",
         "an endpoint named 'taken-by-endpoint' already exists: names must be unique across endpoints and routes"),
    ]


def test_an_endpoint_may_not_change_type_under_a_route_the_file_leaves_alone() -> None:
    existing = {"split": RouteSpec("split", CHAT, (DestinationSpec("a", 50), DestinationSpec("b", 50)))}
    doc = {"endpoints": [mock_chat("a"), mock_chat("b", endpoint_type=EMBEDDINGS)]}
    with pytest.raises(ConfigError) as caught:
        validate_document(doc, "g.yaml", existing_routes=existing)
    assert str(caught.value) == (
        "g.yaml: endpoints[1] 'b' field 'endpoint_type': the traffic route 'split' sends llm/v1/chat traffic to this "
        "endpoint, so it cannot become llm/v1/embeddings; change the route first")


def test_an_endpoint_may_change_type_with_the_route_that_uses_it() -> None:
    existing = {"split": RouteSpec("split", CHAT, (DestinationSpec("a", 100),))}
    doc = {"endpoints": [mock_chat("a", endpoint_type=EMBEDDINGS)],
           "routes": [split_route(task_type=EMBEDDINGS, destinations=[{"name": "a", "traffic_percentage": 100}])]}
    document = validate_document(doc, existing_routes=existing)
    assert document.routes[0].task_type == EMBEDDINGS


def test_routes_may_send_traffic_to_endpoints_outside_the_file() -> None:
    doc = {"endpoints": [mock_chat("a")], "routes": [split_route()]}
    document = validate_document(doc, extra_endpoint_types={"b": CHAT})
    assert [r.name for r in document.routes] == ["split"]


def test_it_tells_mlflow_2_routes_from_traffic_routes_by_their_shape() -> None:
    legacy = {"routes": [{"name": "chat", "route_type": CHAT, "model": {"provider": "mock", "config": {}}}]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        document = validate_document(legacy)
    assert [(e.name, e.endpoint_type) for e in document.endpoints] == [("chat", CHAT)]
    assert document.routes == []
    assert document.warnings == [
        "'routes' as the list of endpoints is deprecated (MLflow 2.x); rename it to 'endpoints'",
        "endpoint 'chat': 'route_type' is deprecated (MLflow 2.x); write 'endpoint_type'",
    ]
    assert [w.category for w in caught] == [FutureWarning, FutureWarning]


def test_it_warns_about_route_type_in_an_endpoints_list() -> None:
    doc = {"endpoints": [{"name": "c", "route_type": COMPLETIONS, "model": {"provider": "mock"}}]}
    with pytest.warns(FutureWarning, match="'route_type' is deprecated"):
        document = validate_document(doc)
    assert document.endpoints[0].endpoint_type == COMPLETIONS


def test_it_refuses_an_endpoint_written_among_traffic_routes() -> None:
    doc = {"endpoints": [mock_chat("a")], "routes": [mock_chat("b")]}
    assert str(document_error(doc)) == (
        "gateway.yaml: routes[0] 'b': looks like an endpoint: MLflow 2.x 'routes' lists cannot be mixed with "
        "'endpoints'; move it under 'endpoints'")


@pytest.mark.parametrize("text", ["endpoints: [", "endpoints:\n  - name: a\n bad: indent\n", "a: b: c"])
def test_it_refuses_text_that_is_not_yaml_and_says_where(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "gateway.yaml")
    assert str(caught.value).startswith("gateway.yaml: not a valid YAML file (line ")


def test_an_unknown_endpoint_key_is_ignored_with_a_warning_that_suggests_the_right_one() -> None:
    from endpoints_app.validation import validate_endpoint as validate

    spec, notes = validate({"name": "e", "endpoint_type": "llm/v1/chat", "limits": {"calls": 1},
                            "model": {"provider": "mock", "name": "m", "config": {}}})
    assert spec.limit is None
    assert notes == ["endpoint 'e': unknown key 'limits' is ignored; did you mean 'limit'?"]
