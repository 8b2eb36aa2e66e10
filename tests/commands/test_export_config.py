"""`manage.py export_config [--output PATH] [--reveal-secrets]`: the database written back as MLflow's
YAML schema, stable under a round trip (export → load into an empty database → export again)."""
from __future__ import annotations

import stat
import textwrap
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command

from endpoints_app.models import ConfigState, Endpoint, TrafficRoute
from providers.secrets import PLACEHOLDER
from providers.shapes import CHAT, COMPLETIONS
from tests.conftest import MakeEndpoint

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def export(*args: str) -> str:
    out = StringIO()
    call_command("export_config", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def load(path: Path) -> None:
    call_command("load_config", str(path), stdout=StringIO(), stderr=StringIO())


def empty_the_database() -> None:
    TrafficRoute.objects.all().delete()
    Endpoint.objects.all().delete()
    ConfigState.objects.all().delete()


def round_trip(tmp_path: Path, first: str) -> str:
    """Write `first`, load it into an empty database, export again."""
    exported = tmp_path / "exported.yaml"
    exported.write_text(first)
    empty_the_database()
    load(exported)
    return export()


@pytest.mark.parametrize("fixture", ["seed_example_1.yaml", "seed_example_2.yaml", "quickstart.yaml",
                                     "everything.yaml", "mlflow2_routes.yaml"])
def test_an_export_loaded_into_an_empty_database_exports_identically(tmp_path: Path, fixture: str) -> None:
    load(FIXTURES / fixture)
    first = export()
    assert round_trip(tmp_path, first) == first


def test_it_writes_every_feature_back_in_mlflows_schema() -> None:
    load(FIXTURES / "everything.yaml")
    assert export() == textwrap.dedent("""\
        endpoints:
        - name: gpt
          endpoint_type: llm/v1/chat
          model:
            provider: openai
            name: gpt-4o-mini
            config:
              openai_api_key: $OPENAI_API_KEY
              openai_organization: acme
          limit:
            calls: 100
            renewal_period: 5 minutes
            key: user
          timeouts:
            connect: 2.5
            read: 60.0
            retries: 1
        - name: azure-chat
          endpoint_type: llm/v1/chat
          model:
            provider: openai
            name: gpt-4o
            config:
              openai_api_key: $AZURE_OPENAI_KEY
              openai_api_type: azure
              openai_api_base: https://acme.openai.azure.com
              openai_api_version: '2024-06-01'
              openai_deployment_name: gpt4o-prod
        - name: groq-chat
          endpoint_type: llm/v1/chat
          model:
            provider: openai-compatible
            name: llama-3.1-8b-instant
            config:
              api_key: $GROQ_API_KEY
              api_base: $GROQ_API_BASE
        - name: mock-chat
          endpoint_type: llm/v1/chat
          model:
            provider: mock
            name: mock-chat
            config:
              latency_ms: 5.0
              stream_chunks: 3
          limit:
            calls: 0
            renewal_period: day
        - name: retired
          endpoint_type: llm/v1/completions
          model:
            provider: mock
            config: {}
          enabled: false
        routes:
        - name: chat-split
          task_type: llm/v1/chat
          destinations:
          - name: gpt
            traffic_percentage: 75
          - name: mock-chat
            traffic_percentage: 25
          routing_strategy: TRAFFIC_SPLIT
        - name: paused-split
          task_type: llm/v1/chat
          destinations:
          - name: gpt
            traffic_percentage: 100
          routing_strategy: TRAFFIC_SPLIT
          enabled: false
        """)


def test_an_empty_database_exports_an_empty_endpoints_list() -> None:
    assert export() == "endpoints: []\n"


def test_a_disabled_traffic_route_stays_disabled_through_a_round_trip(tmp_path: Path) -> None:
    load(FIXTURES / "everything.yaml")
    round_trip(tmp_path, export())
    assert dict(TrafficRoute.objects.values_list("name", "enabled")) == {"chat-split": True, "paused-split": False}
    assert dict(Endpoint.objects.values_list("name", "enabled"))["retired"] is False


def test_admin_made_endpoints_round_trip_with_their_limits_and_timeouts(tmp_path: Path,
                                                                       make_endpoint: MakeEndpoint) -> None:
    make_endpoint("fast", CHAT, "mock", "m1", config={"latency_ms": 1}, limit={"calls": 3, "renewal_period": "hours"},
                  timeouts={"connect": 1, "read": 9, "retries": 0})
    make_endpoint("slow", COMPLETIONS, "openai", "gpt-3.5-turbo-instruct", config={"openai_api_key": "$OPENAI_API_KEY"},
                  enabled=False)
    first = export()
    assert yaml.safe_load(first)["endpoints"][0]["timeouts"] == {"connect": 1.0, "read": 9.0, "retries": 0}
    assert round_trip(tmp_path, first) == first


def test_a_key_file_is_exported_as_its_path(tmp_path: Path, make_endpoint: MakeEndpoint, settings: Any) -> None:
    settings.GATEWAY_SECRETS_DIR = str(tmp_path)  # where key files may be
    key_file = tmp_path / "openai.key"
    key_file.write_text("sk-from-file\n")
    make_endpoint("gpt", CHAT, "openai", "gpt-4o", config={"openai_api_key": str(key_file)})
    exported = export()
    assert yaml.safe_load(exported)["endpoints"][0]["model"]["config"] == {"openai_api_key": str(key_file)}
    assert "sk-from-file" not in exported


def test_a_literal_key_is_exported_as_a_placeholder(make_endpoint: MakeEndpoint) -> None:
    make_endpoint("gpt", CHAT, "openai", "gpt-4o", config={"openai_api_key": "sk-literal-secret-0042"})
    exported = export()
    assert yaml.safe_load(exported)["endpoints"][0]["model"]["config"] == {"openai_api_key": PLACEHOLDER}
    assert "sk-literal-secret-0042" not in exported


def test_reveal_secrets_writes_the_literal_key(make_endpoint: MakeEndpoint) -> None:
    make_endpoint("gpt", CHAT, "openai", "gpt-4o", config={"openai_api_key": "sk-literal-secret-0042"})
    exported = yaml.safe_load(export("--reveal-secrets"))
    assert exported["endpoints"][0]["model"]["config"] == {"openai_api_key": "sk-literal-secret-0042"}


def test_a_revealed_export_round_trips_into_an_empty_database(tmp_path: Path, make_endpoint: MakeEndpoint) -> None:
    make_endpoint("gpt", CHAT, "openai", "gpt-4o", config={"openai_api_key": "sk-literal-secret-0042"})
    first = export("--reveal-secrets")
    exported = tmp_path / "exported.yaml"
    exported.write_text(first)
    empty_the_database()
    load(exported)
    assert export("--reveal-secrets") == first


def test_the_placeholder_loaded_back_keeps_the_stored_key(tmp_path: Path, make_endpoint: MakeEndpoint) -> None:
    make_endpoint("gpt", CHAT, "openai", "gpt-4o", config={"openai_api_key": "sk-literal-secret-0042"})
    exported = tmp_path / "exported.yaml"
    exported.write_text(export())
    out = StringIO()
    call_command("load_config", str(exported), stdout=out)
    assert out.getvalue().splitlines()[-1] == "0 created, 1 updated, 0 unchanged, 0 deleted"  # now owned by the file
    revealed = yaml.safe_load(export("--reveal-secrets"))
    assert revealed["endpoints"][0]["model"]["config"] == {"openai_api_key": "sk-literal-secret-0042"}


def test_the_placeholder_is_refused_where_no_key_is_stored(tmp_path: Path, make_endpoint: MakeEndpoint) -> None:
    make_endpoint("gpt", CHAT, "openai", "gpt-4o", config={"openai_api_key": "sk-literal-secret-0042"})
    exported = tmp_path / "exported.yaml"
    exported.write_text(export())
    empty_the_database()
    with pytest.raises(CommandError) as caught:
        load(exported)
    assert str(caught.value).endswith(
        "endpoints[0] 'gpt' field 'model.config.openai_api_key': 'openai_api_key' holds the export placeholder, not a "
        "key: write the key or a $ENV reference")


def test_output_writes_a_file_only_its_owner_can_read(tmp_path: Path) -> None:
    load(FIXTURES / "seed_example_2.yaml")
    target = tmp_path / "out.yaml"
    err = StringIO()
    call_command("export_config", "--output", str(target), stdout=StringIO(), stderr=err)
    assert target.read_text() == export()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert err.getvalue() == f"wrote {target}\n"


def test_output_to_an_unwritable_place_is_a_command_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"^Cannot write .*/missing/out\.yaml: No such file or directory$"):
        call_command("export_config", "--output", str(tmp_path / "missing" / "out.yaml"))
