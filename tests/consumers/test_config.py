"""Consumers in the config file: validated with the whole document, loaded, exported and pruned like
endpoints; and the key commands."""

from __future__ import annotations

import textwrap
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from consumers.models import Consumer, GatewayKey
from endpoints_app.models import Source
from endpoints_app.services import export_config
from tests.consumers.conftest import MakeConsumer

pytestmark = pytest.mark.django_db

CONFIG = """\
endpoints:
  - name: chat
    endpoint_type: llm/v1/chat
    model: {provider: mock, name: m, config: {}}
  - name: embed
    endpoint_type: llm/v1/embeddings
    model: {provider: mock, name: e, config: {}}
routes:
  - name: split
    task_type: llm/v1/chat
    destinations: [{name: chat, traffic_percentage: 100}]
consumers:
  - name: search-team
    description: The search service
    allow: [chat, split]
    limit: {calls: 100, renewal_period: minute}
    token_limit: {tokens: 50000, renewal_period: hour}
  - name: admin-tools
    allow: "*"
    enabled: false
"""


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(path: Path, *args: str) -> str:
    out = StringIO()
    call_command("load_config", str(path), *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_consumers_load_with_the_endpoints(tmp_path: Path) -> None:
    out = load(write(tmp_path, CONFIG))
    assert "created: consumer search-team" in out
    team = Consumer.objects.get(name="search-team")
    assert (team.description, team.allow, team.enabled) == ("The search service", ["chat", "split"], True)
    assert (team.limit_calls, team.limit_renewal_period) == (100, "minute")
    assert (team.token_limit_tokens, team.token_limit_renewal_period) == (50000, "hour")
    assert team.source == Source.YAML
    tools = Consumer.objects.get(name="admin-tools")
    assert (tools.allow, tools.enabled) == (["*"], False)


def test_the_export_round_trips_and_never_holds_a_key(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    load(path)
    call_command("create_key", "search-team", stdout=StringIO())
    exported = export_config()
    document = yaml.safe_load(exported)
    assert document["consumers"] == [
        {"name": "search-team", "description": "The search service", "allow": ["chat", "split"],
         "limit": {"calls": 100, "renewal_period": "minute"},
         "token_limit": {"tokens": 50000, "renewal_period": "hour"}},
        {"name": "admin-tools", "allow": ["*"], "enabled": False},
    ]
    assert "gwk_" not in exported
    path.write_text(exported)  # the file, as exported: loading it changes nothing
    out = load(path, "--prune")
    assert out.strip().endswith("0 created, 0 updated, 5 unchanged, 0 deleted"), out
    assert GatewayKey.objects.count() == 1


def test_a_reload_reports_unchanged_and_prune_removes_the_files_consumers_with_their_keys(
        tmp_path: Path, make_consumer: MakeConsumer) -> None:
    path = write(tmp_path, CONFIG)
    load(path)
    made_in_admin = make_consumer("from-admin", ["chat"])
    call_command("create_key", "search-team", stdout=StringIO())
    assert "unchanged: consumer search-team" in load(path)
    path.write_text(CONFIG.split("  - name: admin-tools")[0].replace("search-team", "renamed-team"))
    out = load(path, "--prune")
    assert "deleted: consumer search-team" in out and "deleted: consumer admin-tools" in out
    assert "created: consumer renamed-team" in out
    assert set(Consumer.objects.values_list("name", flat=True)) == {"renamed-team", made_in_admin.name}
    assert not GatewayKey.objects.exists()  # the pruned consumer's key went with it


@pytest.mark.parametrize(("entry", "field", "message"), [
    ("{name: team, allow: [chatt]}", "allow[0]", "there is no endpoint or route named 'chatt'; did you mean 'chat'?"),
    ("{name: team, allow: [chat, '*']}", "allow", '"*" already allows every endpoint and route'),
    ("{name: team, allow: chat}", "allow", "allow must be a list of endpoint and route names"),
    ("{name: team, alow: [chat]}", "alow", "unknown consumer key 'alow'; did you mean 'allow'?"),
    ("{name: 'team a', allow: [chat]}", "name", "invalid name 'team a'"),
    ("{name: team, limit: {calls: -1, renewal_period: minute}}", "limit.calls", "calls must be a whole number"),
    ("{name: team, token_limit: {tokens: 10, renewal_period: fortnight}}", "token_limit.renewal_period",
     "is not a period"),
    ("{name: team, token_limit: {tokens: 10}}", "token_limit.renewal_period", "is not a period"),
    ("{name: team, enabled: maybe}", "enabled", "enabled must be true or false"),
])
def test_an_invalid_consumer_is_refused_naming_the_file_the_consumer_and_the_field(
        tmp_path: Path, entry: str, field: str, message: str) -> None:
    path = write(tmp_path, CONFIG.split("consumers:")[0] + f"consumers:\n  - {entry}\n")
    with pytest.raises(CommandError) as caught:
        load(path)
    text = str(caught.value)
    assert f"{path}: consumers[0]" in text and f"field {field!r}" in text and message in text, text
    assert not Consumer.objects.exists()  # nothing half-applied


def test_duplicate_consumers_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG.split("consumers:")[0] + "consumers:\n  - {name: a}\n  - {name: a}\n")
    with pytest.raises(CommandError, match=r"consumers\[1\] 'a' field 'name': duplicate consumer name 'a'"):
        load(path)


def test_a_consumer_may_allow_endpoints_that_stay_in_the_database(tmp_path: Path, make_endpoint: object) -> None:
    from providers.shapes import CHAT

    make_endpoint("kept", CHAT, "mock", "m")  # type: ignore[operator]
    path = write(tmp_path, "endpoints: []\nconsumers:\n  - {name: team, allow: [kept]}\n")
    load(path)
    assert Consumer.objects.get(name="team").allow == ["kept"]


# -- the key commands ---------------------------------------------------------------------------------------------
def test_create_key_prints_the_key_once_alone_on_the_last_line(make_consumer: MakeConsumer) -> None:
    make_consumer("team")
    out = StringIO()
    call_command("create_key", "team", "--name", "ci job", "--expires-in", "30d", stdout=out)
    lines = out.getvalue().rstrip("\n").split("\n")
    key = lines[-1]
    record = GatewayKey.objects.get()
    assert key.startswith(record.prefix + "_") and len(key) == 53
    assert lines[0].startswith(f"Key {record.prefix} for consumer 'team' (expires ")
    assert out.getvalue().count(key) == 1
    assert (record.name, record.created_by) == ("ci job", "cli")
    assert record.expires_at is not None


def test_create_key_for_an_unknown_consumer_says_which_exist(make_consumer: MakeConsumer) -> None:
    make_consumer("team")
    with pytest.raises(CommandError, match=r"There is no consumer named 'tem' \(consumers: team\)"):
        call_command("create_key", "tem", stdout=StringIO())


def test_create_key_refuses_a_bad_duration(make_consumer: MakeConsumer) -> None:
    make_consumer("team")
    with pytest.raises(CommandError, match="--expires-in: '30 days' is not a duration"):
        call_command("create_key", "team", "--expires-in", "30 days", stdout=StringIO())


def test_revoke_key_by_prefix_or_whole_key(make_consumer: MakeConsumer) -> None:
    make_consumer("team")
    out = StringIO()
    call_command("create_key", "team", stdout=out)
    key = out.getvalue().strip().split("\n")[-1]
    done = StringIO()
    call_command("revoke_key", key[:12], stdout=done)
    assert done.getvalue().startswith(f"Revoked key {key[:12]} of consumer 'team' at ")
    assert GatewayKey.objects.get().revoked_at is not None
    call_command("revoke_key", key, stdout=StringIO())  # the whole key works too; revoking twice is harmless
    with pytest.raises(CommandError, match="There is no key with the prefix 'gwk_00000000'"):
        call_command("revoke_key", "gwk_00000000", stdout=StringIO())
