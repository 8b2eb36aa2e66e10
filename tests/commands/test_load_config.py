"""`manage.py load_config PATH [--dry-run] [--prune]`: MLflow's YAML schema, validated in full before
anything is written, then upserted in one transaction with a report of what changed."""
from __future__ import annotations

import os
import textwrap
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, ManagementUtility, call_command
from django.db import connections

from endpoints_app.models import ConfigState, Endpoint, Source, TrafficDestination, TrafficRoute
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.conftest import MakeEndpoint

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
INVALID = FIXTURES / "invalid"


def load(path: Path | str, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("load_config", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def load_error(path: Path | str, *args: str) -> str:
    with pytest.raises(CommandError) as caught:
        load(path, *args)
    return str(caught.value)


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def database_state() -> dict[str, list[Any]]:
    """Every config row, every column: equal before and after means nothing changed."""
    return {
        "endpoints": list(Endpoint.objects.order_by("pk").values()),
        "routes": list(TrafficRoute.objects.order_by("pk").values()),
        "destinations": list(TrafficDestination.objects.order_by("pk").values()),
        "state": list(ConfigState.objects.order_by("pk").values()),
    }


def summary(endpoint: Endpoint) -> tuple[Any, ...]:
    return (endpoint.name, endpoint.endpoint_type, endpoint.provider, endpoint.model_name, endpoint.config)


# -- the shipped examples load as written --------------------------------------------------------------
def test_it_loads_the_first_mlflow_seed_example_as_written() -> None:
    out, err = load(FIXTURES / "seed_example_1.yaml")
    assert [summary(e) for e in Endpoint.objects.all()] == [
        ("completions", COMPLETIONS, "openai", "gpt-3.5-turbo", {"openai_api_key": {"$env": "OPENAI_API_KEY"}}),
        ("chat", CHAT, "openai", "gpt-4", {"openai_api_key": {"$env": "OPENAI_API_KEY"}}),
        ("chat_3.5", CHAT, "openai", "gpt-3.5-turbo", {"openai_api_key": {"$env": "OPENAI_API_KEY"}}),
        ("embeddings", EMBEDDINGS, "openai", "text-embedding-ada-002", {"openai_api_key": {"$env": "OPENAI_API_KEY"}}),
    ]
    assert out.splitlines() == ["created: completions", "created: chat", "created: chat_3.5", "created: embeddings",
                                "4 created, 0 updated, 0 unchanged, 0 deleted"]
    assert err == ""


def test_it_loads_the_second_mlflow_seed_example_as_written() -> None:
    load(FIXTURES / "seed_example_2.yaml")
    assert [summary(e) for e in Endpoint.objects.all()] == [
        ("completions", COMPLETIONS, "openai", "gpt-3.5-turbo", {"openai_api_key": {"$env": "OPENAI_API_KEY"}}),
        ("completions-gpt4", COMPLETIONS, "openai", "gpt-4", {"openai_api_key": {"$env": "OPENAI_API_KEY"}}),
    ]


def test_it_loads_the_quickstart_with_its_limit_and_traffic_route() -> None:
    load(FIXTURES / "quickstart.yaml")
    assert list(Endpoint.objects.values_list("name", "provider")) == [
        ("chat", "mock"), ("completions", "mock"), ("embeddings", "mock"), ("chat-b", "mock")]
    chat = Endpoint.objects.get(name="chat")
    assert (chat.limit_calls, chat.limit_renewal_period, chat.limit_key) == (600, "minute", None)
    assert Endpoint.objects.get(name="embeddings").config == {"dimensions": 8}
    route = TrafficRoute.objects.get()
    assert (route.name, route.task_type, route.routing_strategy) == ("chat-split", CHAT, "TRAFFIC_SPLIT")
    assert [(d.endpoint.name, d.traffic_percentage) for d in route.destinations.all()] == [("chat", 80), ("chat-b", 20)]


def test_loaded_endpoints_are_marked_as_coming_from_their_file() -> None:
    load(FIXTURES / "seed_example_2.yaml")
    assert set(Endpoint.objects.values_list("source", "source_path")) == {
        (Source.YAML, str(FIXTURES / "seed_example_2.yaml"))}


def test_the_loaded_endpoints_are_served_by_the_api(client: Any) -> None:
    load(FIXTURES / "quickstart.yaml")
    listed = client.get("/api/2.0/endpoints/").json()["endpoints"]
    assert [(e["name"], e["endpoint_type"], e["model"]) for e in listed] == [
        ("chat", CHAT, {"name": "mock-chat", "provider": "mock"}),
        ("completions", COMPLETIONS, {"name": "mock-completions", "provider": "mock"}),
        ("embeddings", EMBEDDINGS, {"name": "mock-embeddings", "provider": "mock"}),
        ("chat-b", CHAT, {"name": "mock-chat-b", "provider": "mock"}),
    ]
    assert listed[0]["limit"] == {"calls": 600, "key": None, "renewal_period": "minute"}


# -- the report: created, updated, unchanged, deleted ----------------------------------------------------------
def test_loading_the_same_file_again_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, (FIXTURES / "everything.yaml").read_text())
    load(path)
    before = database_state()
    out, _ = load(path)
    assert out.splitlines() == ["unchanged: gpt", "unchanged: azure-chat", "unchanged: groq-chat",
                                "unchanged: mock-chat", "unchanged: retired", "unchanged: chat-split",
                                "unchanged: paused-split", "0 created, 0 updated, 7 unchanged, 0 deleted"]
    assert database_state() == before


def test_it_reports_each_created_updated_and_unchanged_name(tmp_path: Path) -> None:
    path = write(tmp_path, """
        endpoints:
          - {name: a, endpoint_type: llm/v1/chat, model: {provider: mock, name: one}}
          - {name: b, endpoint_type: llm/v1/chat, model: {provider: mock, name: one}}
    """)
    load(path)
    write(tmp_path, """
        endpoints:
          - {name: a, endpoint_type: llm/v1/chat, model: {provider: mock, name: one}}
          - {name: b, endpoint_type: llm/v1/chat, model: {provider: mock, name: two}}
          - {name: c, endpoint_type: llm/v1/chat, model: {provider: mock, name: one}}
    """)
    out, _ = load(path)
    assert out.splitlines() == ["created: c", "updated: b", "unchanged: a",
                                "1 created, 1 updated, 1 unchanged, 0 deleted"]
    assert Endpoint.objects.get(name="b").model_name == "two"


def test_a_literal_key_loaded_twice_is_unchanged_although_its_ciphertext_differs(tmp_path: Path) -> None:
    path = write(tmp_path, """
        endpoints:
          - name: gpt
            endpoint_type: llm/v1/chat
            model: {provider: openai, name: gpt-4o, config: {openai_api_key: sk-literal-0001}}
    """)
    load(path)
    out, _ = load(path)
    assert out.splitlines() == ["unchanged: gpt", "0 created, 0 updated, 1 unchanged, 0 deleted"]


def test_prune_deletes_what_this_file_loaded_before_and_no_longer_has(tmp_path: Path,
                                                                      make_endpoint: MakeEndpoint) -> None:
    make_endpoint("made-in-admin", CHAT, "mock")
    other = write(tmp_path, "endpoints: [{name: other-file, endpoint_type: llm/v1/chat, model: {provider: mock}}]",
                  "other.yaml")
    load(other)
    path = write(tmp_path, (FIXTURES / "quickstart.yaml").read_text())
    load(path)
    write(tmp_path, """
        endpoints:
          - name: chat
            endpoint_type: llm/v1/chat
            model: {provider: mock, name: mock-chat}
            limit: {calls: 600, renewal_period: minute}
    """)
    out, _ = load(path, "--prune")
    assert out.splitlines() == ["unchanged: chat", "deleted: chat-split", "deleted: completions", "deleted: embeddings",
                                "deleted: chat-b", "0 created, 0 updated, 1 unchanged, 4 deleted"]
    assert sorted(Endpoint.objects.values_list("name", flat=True)) == ["chat", "made-in-admin", "other-file"]
    assert not TrafficRoute.objects.exists()


def test_without_prune_endpoints_missing_from_the_file_are_kept(tmp_path: Path) -> None:
    path = write(tmp_path, (FIXTURES / "quickstart.yaml").read_text())
    load(path)
    write(tmp_path, "endpoints: []")
    out, _ = load(path)
    assert out.splitlines() == ["0 created, 0 updated, 0 unchanged, 0 deleted"]
    assert Endpoint.objects.count() == 4


def test_prune_refuses_to_delete_an_endpoint_another_files_route_sends_traffic_to(tmp_path: Path) -> None:
    first = write(tmp_path, "endpoints: [{name: a, endpoint_type: llm/v1/chat, model: {provider: mock}}]", "a.yaml")
    load(first)
    write(tmp_path, """
        endpoints: []
        routes:
          - {name: to-a, task_type: llm/v1/chat, destinations: [{name: a, traffic_percentage: 100}]}
    """, "b.yaml")
    load(tmp_path / "b.yaml")
    write(tmp_path, "endpoints: []", "a.yaml")
    before = database_state()
    assert load_error(first, "--prune").endswith("cannot prune endpoint 'a': traffic routes still send traffic to it")
    assert database_state() == before


def test_dry_run_reports_the_changes_and_writes_nothing() -> None:
    before = database_state()
    out, _ = load(FIXTURES / "quickstart.yaml", "--dry-run")
    assert out.splitlines() == [
        "[dry run] would have created: chat", "[dry run] would have created: completions",
        "[dry run] would have created: embeddings", "[dry run] would have created: chat-b",
        "[dry run] would have created: chat-split",
        "[dry run] would have 5 created, 0 updated, 0 unchanged, 0 deleted (dry run: nothing was changed)",
    ]
    assert database_state() == before


def test_dry_run_names_what_it_would_leave_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path, (FIXTURES / "seed_example_2.yaml").read_text())
    load(path)
    out, _ = load(path, "--dry-run")
    assert out.splitlines()[:2] == ["[dry run] would have left unchanged: completions",
                                    "[dry run] would have left unchanged: completions-gpt4"]


def test_dry_run_with_prune_deletes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, (FIXTURES / "quickstart.yaml").read_text())
    load(path)
    write(tmp_path, "endpoints: []")
    before = database_state()
    out, _ = load(path, "--dry-run", "--prune")
    assert out.splitlines()[-1] == "[dry run] would have 0 created, 0 updated, 0 unchanged, 5 deleted (dry run: " \
                                   "nothing was changed)"
    assert database_state() == before


def test_a_change_bumps_the_config_version_and_a_no_op_does_not(tmp_path: Path) -> None:
    path = write(tmp_path, (FIXTURES / "seed_example_2.yaml").read_text())
    load(path)
    version = ConfigState.objects.get().version
    assert version > 0
    load(path)
    assert ConfigState.objects.get().version == version
    write(tmp_path, (FIXTURES / "seed_example_2.yaml").read_text().replace("gpt-4", "gpt-4o"))
    load(path)
    assert ConfigState.objects.get().version > version


# -- MLflow 2.x spellings ---------------------------------------------------------------------------------
def test_it_accepts_mlflow_2_routes_and_route_type_with_a_warning() -> None:
    out, err = load(FIXTURES / "mlflow2_routes.yaml")
    assert list(Endpoint.objects.values_list("name", "endpoint_type")) == [
        ("completions", COMPLETIONS), ("embeddings", EMBEDDINGS)]
    assert not TrafficRoute.objects.exists()
    assert err.splitlines() == [
        "warning: 'routes' as the list of endpoints is deprecated (MLflow 2.x); rename it to 'endpoints'",
        "warning: endpoint 'completions': 'route_type' is deprecated (MLflow 2.x); write 'endpoint_type'",
        "warning: endpoint 'embeddings': 'route_type' is deprecated (MLflow 2.x); write 'endpoint_type'",
    ]
    assert out.splitlines()[-1] == "2 created, 0 updated, 0 unchanged, 0 deleted"


# -- every error: non-zero exit, file + entry + field named, nothing changed ------------------------------
INVALID_FILES = [
    ("not_yaml.yaml", "not a valid YAML file (line 10, column 10): expected ',' or ']', but got ':'"),
    ("no_endpoints.yaml", "field 'endpoints': the 'endpoints' list is required (it may be empty: [])"),
    ("bad_name.yaml", "endpoints[1] 'Space Name' field 'name': invalid name 'Space Name'"),
    ("duplicate_name.yaml", "routes[0] 'chat' field 'name': duplicate name 'chat' (also endpoints[0] 'chat')"),
    ("unknown_endpoint_type.yaml", "endpoints[1] 'images' field 'endpoint_type': The endpoint_type 'llm/v1/images' "
                                   "is not supported"),
    ("unknown_provider.yaml", "endpoints[1] 'gpt' field 'model.provider': The provider 'openia' is not supported."),
    ("missing_api_key.yaml", "endpoints[1] 'gpt' field 'model.config.openai_api_key': 'openai_api_key' is required"),
    ("unknown_config_key.yaml", "endpoints[1] 'gpt' field 'model.config.temperature': unknown config key "
                                "'temperature'"),
    ("negative_calls.yaml", "endpoints[1] 'limited' field 'limit.calls': calls must be a whole number of 0 or more, "
                            "got -1"),
    ("bad_renewal_period.yaml", "endpoints[1] 'limited' field 'limit.renewal_period': renewal_period 'fortnight' is "
                                "not a period"),
    ("route_sum_not_100.yaml", "routes[0] 'split' field 'destinations': For each route configuration, the traffic "
                               "percentage sum of destinations must be 100, but got invalid configuration of route "
                               "'split'."),
    ("route_unknown_destination.yaml", "routes[0] 'split' field 'destinations[1].name': The route destination name "
                                       "must be a endpoint name, but the route 'split' has an invalid destination "
                                       "name 'zz'."),
    ("route_wrong_type.yaml", "routes[0] 'split' field 'destinations[1].name': The route destination endpoint types "
                              "in the route 'split' must have endpoint type 'llm/v1/chat' but got endpoint type "
                              "'llm/v1/embeddings'."),
]


def test_every_invalid_fixture_has_a_case() -> None:
    assert sorted(p.name for p in INVALID.glob("*.yaml")) == sorted(name for name, _ in INVALID_FILES)


@pytest.mark.parametrize(("name", "message"), INVALID_FILES)
def test_an_invalid_file_changes_nothing_and_names_file_entry_and_field(name: str, message: str) -> None:
    load(FIXTURES / "quickstart.yaml")
    before = database_state()
    error = load_error(INVALID / name)
    assert error.startswith(f"Invalid configuration, nothing was changed:\n{INVALID / name}: {message}")
    assert database_state() == before


def test_an_error_in_the_last_entry_leaves_an_empty_database_empty() -> None:
    before = database_state()
    load_error(INVALID / "route_wrong_type.yaml")
    assert database_state() == before == {"endpoints": [], "routes": [], "destinations": [], "state": []}


def test_an_invalid_file_exits_non_zero_on_the_command_line(capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # run_from_argv closes every connection when it ends, the test's transaction included (PostgreSQL).
    monkeypatch.setattr(connections, "close_all", lambda: None)
    with pytest.raises(SystemExit) as caught:
        ManagementUtility(["manage.py", "load_config", str(INVALID / "bad_name.yaml")]).execute()
    assert caught.value.code == 1
    assert f"{INVALID / 'bad_name.yaml'}: endpoints[1] 'Space Name' field 'name'" in capsys.readouterr().err
    assert not Endpoint.objects.exists()


@pytest.mark.parametrize("name", ["Space Name", "bang!name", "query?name", "redirect#name", "bracket[]name", ""])
def test_it_refuses_each_name_mlflow_refuses(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"endpoints: [{{name: {name!r}, endpoint_type: llm/v1/chat, model: {{provider: mock}}}}]")
    assert "endpoints[0]" in load_error(path) and "field 'name'" in load_error(path)
    assert not Endpoint.objects.exists()


def test_a_missing_file_is_named() -> None:
    assert load_error("/nonexistent/gateway.yaml") == (
        "Invalid configuration, nothing was changed:\n/nonexistent/gateway.yaml: the file does not exist")


@pytest.mark.parametrize(("provider", "key", "canonical"), [
    ("OpenAI", "openai_api_key", "openai"), ("OPENAI", "openai_api_key", "openai"),
    ("openai_compatible", "api_key", "openai-compatible"), ("Openai-Compatible", "api_key", "openai-compatible"),
    ("Anthropic", "anthropic_api_key", "anthropic"),
])
def test_provider_names_ignore_case_and_dash_or_underscore(tmp_path: Path, provider: str, key: str,
                                                          canonical: str) -> None:
    path = write(tmp_path, f"""
        endpoints:
          - {{name: e, endpoint_type: llm/v1/chat, model: {{provider: {provider}, config: {{{key}: $KEY}}}}}}
    """)
    load(path)
    assert Endpoint.objects.get().provider == canonical


@pytest.mark.parametrize(("period", "calls"), [("second", 1), ("minutes", 0), ("hour", 5), ("days", 5),
                                               ("month", 5), ("year", 5), ("5 minutes", 10), ("2 hours", 3)])
def test_it_accepts_every_renewal_period_mlflow_accepts(tmp_path: Path, period: str, calls: int) -> None:
    path = write(tmp_path, f"""
        endpoints:
          - name: e
            endpoint_type: llm/v1/chat
            model: {{provider: mock}}
            limit: {{calls: {calls}, renewal_period: {period}}}
    """)
    load(path)
    assert Endpoint.objects.values_list("limit_calls", "limit_renewal_period").get() == (calls, period)


def test_it_refuses_an_endpoint_type_the_provider_does_not_serve_at_load_time(tmp_path: Path) -> None:
    path = write(tmp_path, """
        endpoints:
          - name: claude
            endpoint_type: llm/v1/chat
            model: {provider: anthropic, name: claude-3-5-haiku, config: {anthropic_api_key: $ANTHROPIC_API_KEY}}
          - name: vectors
            endpoint_type: llm/v1/embeddings
            model: {provider: anthropic, name: claude-3-5-haiku, config: {anthropic_api_key: $ANTHROPIC_API_KEY}}
    """)
    assert load_error(path).endswith(
        "endpoints[1] 'vectors' field 'endpoint_type': provider 'anthropic' does not support llm/v1/embeddings; "
        "it supports llm/v1/chat, llm/v1/completions")
    assert not Endpoint.objects.exists()


# -- names stay unique across endpoints and routes, whoever made them -----------------------------------------
def test_a_route_may_send_traffic_to_endpoints_another_file_loaded(tmp_path: Path) -> None:
    load(write(tmp_path, "endpoints: [{name: a, endpoint_type: llm/v1/chat, model: {provider: mock}}]", "a.yaml"))
    load(write(tmp_path, """
        endpoints: [{name: b, endpoint_type: llm/v1/chat, model: {provider: mock}}]
        routes:
          - name: ab
            task_type: llm/v1/chat
            destinations: [{name: a, traffic_percentage: 50}, {name: b, traffic_percentage: 50}]
    """, "b.yaml"))
    route = TrafficRoute.objects.get(name="ab")
    assert [d.endpoint.name for d in route.destinations.all()] == ["a", "b"]


def test_an_endpoint_may_not_take_the_name_of_an_existing_route(tmp_path: Path, make_endpoint: MakeEndpoint) -> None:
    target = make_endpoint("target", CHAT, "mock")
    route = TrafficRoute.objects.create(name="taken", task_type=CHAT)
    TrafficDestination.objects.create(route=route, endpoint=target, traffic_percentage=100)
    before = database_state()
    path = write(tmp_path, "endpoints: [{name: taken, endpoint_type: llm/v1/chat, model: {provider: mock}}]")
    assert load_error(path).endswith("endpoints[0] 'taken' field 'name': a traffic route named 'taken' already exists: "
                                     "names must be unique across endpoints and routes")
    assert database_state() == before


def test_a_route_may_not_take_the_name_of_an_existing_endpoint(tmp_path: Path, make_endpoint: MakeEndpoint) -> None:
    make_endpoint("taken", CHAT, "mock")
    path = write(tmp_path, """
        endpoints: [{name: a, endpoint_type: llm/v1/chat, model: {provider: mock}}]
        routes: [{name: taken, task_type: llm/v1/chat, destinations: [{name: a, traffic_percentage: 100}]}]
    """)
    assert load_error(path).endswith("routes[0] 'taken' field 'name': an endpoint named 'taken' already exists: names "
                                     "must be unique across endpoints and routes")
    assert not TrafficRoute.objects.exists()


def test_a_file_may_not_change_the_type_of_an_endpoint_an_admin_route_uses(tmp_path: Path) -> None:
    path = write(tmp_path, "endpoints: [{name: a, endpoint_type: llm/v1/chat, model: {provider: mock}}]")
    load(path)
    route = TrafficRoute.objects.create(name="admin-split", task_type=CHAT)
    TrafficDestination.objects.create(route=route, endpoint=Endpoint.objects.get(name="a"), traffic_percentage=100)
    before = database_state()
    write(tmp_path, "endpoints: [{name: a, endpoint_type: llm/v1/embeddings, model: {provider: mock}}]")
    assert load_error(path).endswith(
        "endpoints[0] 'a' field 'endpoint_type': the traffic route 'admin-split' sends llm/v1/chat traffic to this "
        "endpoint, so it cannot become llm/v1/embeddings; change the route first")
    assert database_state() == before


def test_with_prune_a_file_may_turn_its_own_route_into_an_endpoint(tmp_path: Path) -> None:
    path = write(tmp_path, """
        endpoints: [{name: a, endpoint_type: llm/v1/chat, model: {provider: mock}}]
        routes: [{name: r, task_type: llm/v1/chat, destinations: [{name: a, traffic_percentage: 100}]}]
    """)
    load(path)
    write(tmp_path, "endpoints: [{name: r, endpoint_type: llm/v1/chat, model: {provider: mock}}]")
    assert "a traffic route named 'r' already exists" in load_error(path)
    out, _ = load(path, "--prune")
    assert out.splitlines() == ["created: r", "deleted: r", "deleted: a",
                                "1 created, 0 updated, 0 unchanged, 2 deleted"]
    assert list(Endpoint.objects.values_list("name", flat=True)) == ["r"]
    assert not TrafficRoute.objects.exists()


def test_load_config_reads_a_relative_path_from_the_working_directory(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, (FIXTURES / "seed_example_2.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    load("gateway.yaml")
    assert Endpoint.objects.filter(source_path=os.path.join(tmp_path, "gateway.yaml")).count() == 2
