"""The supervisor's config watcher in-process: which file events matter (the file, its target, the
symlinks on the way: a Kubernetes ConfigMap swaps a `..data` symlink), and what a check applies or
skips. The end-to-end tests (test_start_server) run it with the real `load_config` child."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from endpoints_app.models import Endpoint
from endpoints_app.services import import_config
from endpoints_app.validation import ConfigError
from serving.supervisor import BASE_DIR, ApplyResult, ConfigWatcher, load_config_subprocess, symlinks_on_path
from tests.serving.conftest import config_text, mock_endpoint


def configmap(base: Path, version: str, text: str) -> None:
    """Kubernetes' layout: config.yaml → ..data/config.yaml, ..data → ..<version>/ (swapped atomically)."""
    (base / f"..{version}").mkdir()
    (base / f"..{version}" / "config.yaml").write_text(text)
    (base / "..data_tmp").symlink_to(f"..{version}")
    os.replace(base / "..data_tmp", base / "..data")
    if not (base / "config.yaml").is_symlink():
        (base / "config.yaml").symlink_to("..data/config.yaml")


def test_it_knows_the_symlinks_on_the_way_to_the_file(tmp_path: Path) -> None:
    configmap(tmp_path, "v1", "endpoints: []\n")
    path = str(tmp_path / "config.yaml")
    assert symlinks_on_path(path) == {path, str(tmp_path / "..data")}
    watcher = ConfigWatcher(path)
    assert watcher.is_relevant(str(tmp_path / "..data"))
    assert watcher.is_relevant(path)
    assert not watcher.is_relevant(str(tmp_path / "gateway.sqlite3"))
    assert not watcher.is_relevant(str(tmp_path / "server.log"))


def test_the_watch_loop_reacts_to_a_symlink_swap_and_not_to_other_files(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    configmap(tmp_path, "v1", "endpoints: []\n")
    checks: list[float] = []
    watcher = ConfigWatcher(str(tmp_path / "config.yaml"))
    monkeypatch.setattr(watcher, "check", lambda: checks.append(time.monotonic()))
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(0.5)  # the initial check, and the watch in place
        assert len(checks) == 1
        (tmp_path / "unrelated.log").write_text("noise")
        time.sleep(0.5)
        assert len(checks) == 1
        configmap(tmp_path, "v2", "endpoints: []\n# v2\n")
        deadline = time.monotonic() + 3
        while len(checks) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(checks) == 2
    finally:
        stop.set()
        thread.join(10)


def _in_process(path: str) -> ApplyResult:
    """What `manage.py load_config --prune` does, without a child process (the test database)."""
    try:
        report = import_config(path, prune=True)
    except ConfigError as exc:
        return ApplyResult(False, str(exc))
    return ApplyResult(True, f"{len(report.created)} created, {len(report.deleted)} deleted")


@pytest.mark.django_db(transaction=True)
def test_a_check_applies_a_swapped_configmap_and_skips_what_it_has_seen(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    configmap(tmp_path, "v1", config_text(mock_endpoint("first")))
    watcher = ConfigWatcher(str(tmp_path / "config.yaml"), apply=_in_process)
    first = watcher.check()
    assert first is not None and first.ok
    assert watcher.check() is None  # unchanged

    configmap(tmp_path, "v2", config_text(mock_endpoint("second")))
    second = watcher.check()
    assert second is not None and second.message == "1 created, 1 deleted"
    assert list(Endpoint.objects.values_list("name", flat=True)) == ["second"]

    configmap(tmp_path, "v3", "endpoints: [")
    broken = watcher.check()
    assert broken is not None and not broken.ok
    assert watcher.check() is None  # the same invalid content is reported once
    assert caplog.text.count("Invalid configuration:") == 1
    assert list(Endpoint.objects.values_list("name", flat=True)) == ["second"]


def test_the_load_config_child_reports_an_invalid_file_without_touching_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'gateway.sqlite3'}")
    migrated = subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=BASE_DIR,
                              capture_output=True, text=True, check=False)
    assert migrated.returncode == 0, migrated.stderr
    config = tmp_path / "bad.yaml"
    config.write_text("endpoints:\n- name: x\n  endpoint_type: llm/v1/chat\n  model: {provider: nope, config: {}}\n")
    result = load_config_subprocess(str(config))
    assert not result.ok
    assert "The provider 'nope' is not supported" in result.message
    assert result.message.startswith("Invalid configuration, nothing was changed")
