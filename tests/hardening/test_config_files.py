"""Issue 15, items 5, 9 and 11 (nested YAML): hostile config files. A billion-laughs file, /dev/zero, a FIFO,
an oversized file, 20 KB of `[[[[`, a second `endpoints:` key: each is refused quickly, with a message that
names the line and never quotes a whole value, by load_config, start_server, its file watcher, the admin's
YAML fields and the console's import."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management.base import CommandError
from django.test import Client

from endpoints_app.configfile import ALIAS_EXPANSION_BUDGET, MAX_DEPTH
from endpoints_app.models import Endpoint
from serving.configread import ConfigFileError, read_config_bytes
from serving.supervisor import ApplyResult, ConfigWatcher
from tests.admin.test_admin import ENDPOINTS, endpoint_form, form_errors
from tests.console.test_import_export import upload
from tests.hardening.config_helpers import chat_entry, load_config
from tests.serving.conftest import ROOT, free_port, server_env

# The probe's 528 bytes: nine levels of nine aliases, 9^9 = 387 million strings once expanded, here where a
# message used to repr() the value (3 GB and 40 s, then a MemoryError).
BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)) + (
    "endpoints:\n  - name: chat\n    endpoint_type: llm/v1/chat\n    model: {provider: mock, config: {}}\n"
    "    limit: {calls: *i, renewal_period: minute}\n")
NESTED = "endpoints: " + "[" * 20_000  # 20 KB: a RecursionError before


def finishes_within(seconds: float, work: Callable[[], Any]) -> Any:
    """work()'s result or exception, or a test failure if it is still running after `seconds` (a FIFO read
    would block forever: the test must fail, not hang)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def refusal(path: Path | str, *options: str) -> str:
    with pytest.raises(CommandError) as caught:
        finishes_within(10, lambda: load_config(path, *options))
    return str(caught.value)


# -- item 5: bombs and odd files -------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_billion_laughs_file_is_refused_fast_and_small(tmp_path: Path) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 700
    tracemalloc.start()
    started = time.perf_counter()
    try:
        message = refusal(config)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"aliases expand the document by more than {ALIAS_EXPANSION_BUDGET} nodes" in message
    assert "(line 1, column 1)" in message
    assert elapsed < 2 and peak < 20 * 1024 * 1024, (elapsed, peak)  # the probe: 40 s and 3 GB


@pytest.mark.django_db
def test_aliases_within_the_budget_still_work(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("x-config: &key {openai_api_key: sk-literal-0001}\nendpoints:\n"
                      + chat_entry("a", "<<: *key") + chat_entry("b", "<<: *key"))
    load_config(config)
    assert sorted(Endpoint.objects.values_list("name", flat=True)) == ["a", "b"]


@pytest.mark.django_db
def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "loop.yaml"
    config.write_text("endpoints: &loop [*loop]\n")
    assert "an alias refers to a collection from inside itself" in refusal(config)


@pytest.mark.django_db
def test_dev_zero_a_fifo_and_a_directory_are_refused_without_being_read(tmp_path: Path) -> None:
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)  # nobody writes: a blocking open or read would never return
    assert "not a regular file (a FIFO, a socket or a device): refused" in refusal(fifo)
    assert "not a regular file (a FIFO, a socket or a device): refused" in refusal("/dev/zero")
    assert "this is a directory, not a YAML file" in refusal(tmp_path)
    assert "the file does not exist" in refusal(tmp_path / "missing.yaml")


@pytest.mark.django_db
def test_a_file_above_the_size_limit_is_refused_before_it_is_parsed(tmp_path: Path, settings: Any) -> None:
    settings.GATEWAY_CONFIG_MAX_BYTES = 1000
    config = tmp_path / "big.yaml"
    config.write_text("endpoints: []\n" + "#" * 1000 + "\n")
    assert "larger than the 1000 bytes allowed (GATEWAY_CONFIG_MAX_BYTES)" in refusal(config)
    config.write_text("endpoints: []\n")
    load_config(config)


def test_the_read_stops_at_the_limit_whatever_the_size_the_file_reports() -> None:
    """/proc files say they are empty (st_size 0) and are not: the read itself is bounded."""
    assert os.stat("/proc/self/maps").st_size == 0
    with pytest.raises(ConfigFileError, match="larger than the 64 bytes allowed"):
        read_config_bytes("/proc/self/maps", 64)


def recorder(applied: list[str]) -> Callable[[str], ApplyResult]:
    def apply(path: str) -> ApplyResult:
        applied.append(path)
        return ApplyResult(True, "applied")

    return apply


def test_the_watcher_skips_a_fifo_without_blocking(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    applied: list[str] = []
    config = tmp_path / "config.yaml"
    os.mkfifo(config)
    watcher = ConfigWatcher(str(config), apply=recorder(applied))
    assert finishes_within(5, watcher.check) is None
    assert applied == []
    assert "not a regular file" in caplog.text and "the current configuration keeps serving" in caplog.text


def test_the_watcher_skips_a_file_above_its_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    applied: list[str] = []
    config = tmp_path / "config.yaml"
    config.write_text("endpoints: []\n" * 100)
    watcher = ConfigWatcher(str(config), apply=recorder(applied), max_bytes=100)
    assert watcher.check() is None and applied == []
    assert "larger than the 100 bytes allowed" in caplog.text


def test_the_console_import_refuses_a_bomb_at_once(admin_client: Client) -> None:
    started = time.perf_counter()
    preview = upload(admin_client, BILLION_LAUGHS).context["preview"]
    assert time.perf_counter() - started < 2
    assert not preview.valid
    assert "aliases expand the document" in preview.issues[0].issues[0].message


def test_the_admins_yaml_field_refuses_a_bomb(admin_client: Client) -> None:
    response = admin_client.post(f"{ENDPOINTS}add/", endpoint_form(config_text=BILLION_LAUGHS))
    [message] = form_errors(response)["config_text"]
    assert message.startswith("Not valid YAML (line 1, column 1): aliases expand the document")
    assert not Endpoint.objects.exists()


# -- item 11: deep nesting -------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_20_kb_of_nesting_is_an_error_at_its_line_not_a_recursion_error(tmp_path: Path) -> None:
    config = tmp_path / "nested.yaml"
    config.write_text(NESTED)
    message = refusal(config)
    assert f"not a valid YAML file (line 1, column {len('endpoints: ') + MAX_DEPTH}): collections nest deeper than " \
           f"{MAX_DEPTH} levels" in message
    block = "endpoints:\n" + "".join(f"{'  ' * depth}k{depth}:\n" for depth in range(1, 100)) + "  " * 100 + "v: 1\n"
    config.write_text(block)
    assert "collections nest deeper than" in refusal(config)


@pytest.mark.django_db
def test_aliases_cannot_nest_deeper_than_the_limit_once_expanded(tmp_path: Path) -> None:
    level = "[" * 40 + "x" + "]" * 40
    config = tmp_path / "deep-aliases.yaml"
    config.write_text(f"a: &a {level}\nb: &b {level.replace('x', '*a')}\nendpoints: []\n")
    assert "with its aliases expanded, collections nest deeper than" in refusal(config)


def test_start_server_exits_2_with_a_message_for_nested_yaml_and_a_fifo(tmp_path: Path) -> None:
    nested = tmp_path / "nested.yaml"
    nested.write_text(NESTED)
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    command = [sys.executable, "manage.py", "start_server", "--port", str(free_port())]
    runs = {name: subprocess.Popen([*command, "--config-path", str(path)], cwd=ROOT,
                                   env=server_env(f"sqlite:///{tmp_path / f'{name}.sqlite3'}"),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name, path in (("nested", nested), ("fifo", fifo))}
    results = {name: process.communicate(timeout=90) for name, process in runs.items()}
    assert {name: process.returncode for name, process in runs.items()} == {"nested": 2, "fifo": 2}
    for name, reason in (("nested", "collections nest deeper than"), ("fifo", "not a regular file")):
        _, stderr = results[name]
        assert "The gateway configuration is invalid, nothing is served" in stderr and reason in stderr
        assert "Traceback" not in stderr and "RecursionError" not in stderr


# -- item 9: duplicate keys ------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_second_endpoints_key_is_refused_and_prune_deletes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("endpoints:\n" + chat_entry("chat"))
    load_config(config, "--prune")
    config.write_text("endpoints:\n" + chat_entry("chat") + "endpoints: []\n")  # last-wins emptied the config
    message = refusal(config, "--prune")
    assert "not a valid YAML file (line 9, column 1): duplicate key 'endpoints' (first at line 1); a key may appear " \
           "only once" in message
    assert list(Endpoint.objects.values_list("name", flat=True)) == ["chat"]


@pytest.mark.django_db
def test_a_duplicate_key_at_any_depth_is_refused_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("endpoints:\n" + chat_entry("chat", "openai_api_key: sk-a\n        openai_api_key: sk-b"))
    assert "(line 9, column 9): duplicate key 'openai_api_key' (first at line 8)" in refusal(config)
    config.write_text("endpoints:\n  - {name: a, name: b}\n")
    assert "(line 2, column 15): duplicate key 'name' (first at line 2)" in refusal(config)


def test_the_admin_and_the_console_refuse_duplicate_keys(admin_client: Client) -> None:
    response = admin_client.post(f"{ENDPOINTS}add/", endpoint_form(config_text="latency_ms: 1\nlatency_ms: 2\n"))
    assert form_errors(response) == {"config_text": [
        "Not valid YAML (line 2, column 1): duplicate key 'latency_ms' (first at line 1); a key may appear only once"]}
    preview = upload(admin_client, "endpoints: []\nendpoints: []\n").context["preview"]
    assert not preview.valid and "duplicate key 'endpoints'" in preview.issues[0].issues[0].message


# -- messages quote no whole value -----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_messages_quote_at_most_80_characters_of_a_value(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    huge_name = "!" * 1_000_000
    many = "[" + ", ".join(map(str, range(5000))) + "]"
    config.write_text(f"endpoints:\n  - name: '{huge_name}'\n    endpoint_type: llm/v1/chat\n"
                      f"  - name: ok\n    endpoint_type: llm/v1/chat\n    model: {{provider: mock, config: {{}}}}\n"
                      f"    limit: {{calls: {many}, renewal_period: minute}}\n")
    message = refusal(config)
    assert len(message) < 1000, len(message)
    assert "!" * 81 not in message
    assert "calls must be a whole number of 0 or more, got [0, 1, 2, 3, ...]" in message


def test_a_period_that_is_a_long_list_is_quoted_short() -> None:
    from endpoints_app.validation import EntryError, validate_limit

    with pytest.raises(EntryError) as caught:
        validate_limit({"calls": 1, "renewal_period": list(range(100_000))})
    assert caught.value.message.startswith("renewal_period [0, 1, 2, 3, 4, 5, ...] is not a period")
