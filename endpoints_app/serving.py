"""Production serving: the work behind `start_server`.

The start_server process prepares the database, applies the config file, then runs granian (WSGI)
as a child process in its own process group and stays in the foreground as the config watcher.
A valid change to the file is applied through the same import service as `load_config`, in one
transaction that bumps the config version; every worker's poller (endpoints_app.runtime) then
rebuilds its in-memory table within GATEWAY_CONFIG_POLL_SECONDS. Workers are never restarted, so no
request is dropped. SIGTERM or SIGINT stops granian and every process under it.

Why granian's WSGI mode with many blocking threads: a WSGI request (and an SSE stream, for its whole
length) holds one thread, and those threads spend their time waiting on the upstream, so a worker
can hold hundreds of them cheaply. Granian's default (backlog/workers/2 = 256 threads per worker
with 2 workers) queues the 513th stream; with BLOCKING_THREADS per worker, 1,000 concurrent 10 s
SSE streams on 2 workers all ran at once (measured on 2 CPUs: ~500 threads and ~160 MB RSS per
worker). GRANIAN_BLOCKING_THREADS / GRANIAN_BACKPRESSURE / GRANIAN_BACKLOG override the defaults.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
import watchfiles
from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connection, connections
from django.db.migrations.executor import MigrationExecutor

from endpoints_app.models import Endpoint
from endpoints_app.services import ImportReport, apply_document, config_version, validate_text
from endpoints_app.validation import ConfigError, Issue

logger = logging.getLogger(__name__)

WSGI_APP = "gateway_project.wsgi:application"
# Concurrent requests each worker accepts, and the threads that run them (one per request or stream).
BLOCKING_THREADS = 1024
BACKLOG = 2048
# On stop, granian waits this long for in-flight requests before killing its workers; we then give
# it a little more before killing whatever is left of the tree.
WORKERS_KILL_TIMEOUT = 10
STOP_GRACE_SECONDS = WORKERS_KILL_TIMEOUT + 5
_ADVISORY_LOCK_KEY = 0x6761_7465  # "gate": serialises migrations and config imports across instances


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    workers: int
    config_path: str | None = None


# -- startup ------------------------------------------------------------------------------------------
@contextmanager
def exclusive_config_lock() -> Iterator[None]:
    """On PostgreSQL, one instance at a time migrates or imports (instances may start together)."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [_ADVISORY_LOCK_KEY])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_ADVISORY_LOCK_KEY])


def prepare_database() -> bool:
    """Apply pending migrations. Returns whether there were any."""
    executor = MigrationExecutor(connection)
    if not executor.migration_plan(executor.loader.graph.leaf_nodes()):
        return False
    call_command("migrate", interactive=False, verbosity=0)
    return True


# -- granian -------------------------------------------------------------------------------------------
def granian_command(options: ServeOptions) -> list[str]:
    """The granian command line. GRANIAN_* environment variables override the thread settings."""
    command = [sys.executable, "-m", "granian", "--interface", "wsgi", "--no-ws",
               "--host", options.host, "--port", str(options.port), "--workers", str(options.workers),
               "--workers-kill-timeout", str(WORKERS_KILL_TIMEOUT), "--respawn-failed-workers"]
    tunables = {"--blocking-threads": ("GRANIAN_BLOCKING_THREADS", BLOCKING_THREADS),
                "--backpressure": ("GRANIAN_BACKPRESSURE", BLOCKING_THREADS),
                "--backlog": ("GRANIAN_BACKLOG", BACKLOG)}
    for flag, (env_name, default) in tunables.items():
        if not os.environ.get(env_name):
            command += [flag, str(default)]
    return [*command, WSGI_APP]


def start_granian(options: ServeOptions) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "gateway_project.settings")}
    # Its own session and process group: the terminal's Ctrl-C reaches only us, and we stop the tree.
    return subprocess.Popen(granian_command(options), cwd=settings.BASE_DIR, env=env, start_new_session=True,
                            preexec_fn=_terminate_with_parent)


def _terminate_with_parent() -> None:
    """In the child, before exec: get SIGTERM if start_server dies without cleaning up (SIGKILL, OOM)."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def wait_until_serving(process: subprocess.Popen[bytes], host: str, port: int, stop: threading.Event,
                       timeout: float = 60.0) -> bool:
    """True once a worker answers HTTP; False if granian exited or we were asked to stop."""
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None and not stop.is_set():
        client = http.client.HTTPConnection(target, port, timeout=2)
        try:
            client.request("GET", "/health")
            client.getresponse().read()
            return True  # any answer (even a 400 for a Host outside ALLOWED_HOSTS) means a worker is up
        except (OSError, http.client.HTTPException):
            stop.wait(0.1)
        finally:
            client.close()
    return False


def stop_process_tree(process: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM granian (it stops its workers gracefully), then kill whatever is left of the tree."""
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            logger.warning("granian did not stop within %ss; killing it", grace)
    with suppress_missing():
        os.killpg(process.pid, signal.SIGKILL)  # its process group: workers and anything they started
    _, alive = psutil.wait_procs(tree, timeout=0.1)
    for proc in alive:
        with suppress_missing():
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    process.wait()


@contextmanager
def suppress_missing() -> Iterator[None]:
    try:
        yield
    except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
        pass


# -- the config watcher -----------------------------------------------------------------------------
class ConfigWatcher:
    """Applies valid changes of one config file; logs and skips invalid, deleted or unchanged ones.

    The file's directory is watched (and its target's, for a symlink), not the file itself, so
    editors that write a new file and rename it over the old one, and symlink swaps (Kubernetes
    ConfigMaps), are seen. Each batch of events re-reads the file and compares its content with
    what was last applied.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._applied: str | None = None
        self._rejected: str | None = None
        self._missing = False

    def load(self) -> ImportReport:
        """Apply the file as it is now (at startup). Raises ConfigError if it is missing or invalid."""
        text = read_config_text(self.path)
        report = self._apply(text)
        self._applied = _digest(text)
        return report

    def directories(self) -> list[str]:
        found = {os.path.dirname(self.path), os.path.dirname(os.path.realpath(self.path))}
        return sorted(d for d in found if os.path.isdir(d))

    def is_relevant(self, path: str) -> bool:
        """The file itself, its target, or a symlink on the way to it (other files in the
        directory, such as a SQLite database or a log, are not our business)."""
        if os.path.basename(path) in {os.path.basename(self.path), os.path.basename(os.path.realpath(self.path))}:
            return True
        return path in symlinks_on_path(self.path)

    def run(self, stop: threading.Event) -> None:
        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every batch at INFO
        self.check()  # an edit made while the server was starting
        try:
            for _changes in watchfiles.watch(*self.directories(), watch_filter=lambda _, path: self.is_relevant(path),
                                             debounce=1000, step=50, stop_event=stop, recursive=False,
                                             raise_interrupt=False):
                self.check()
        except Exception:
            logger.exception("Stopped watching %s; the current configuration keeps serving", self.path)

    def check(self) -> ImportReport | None:
        """Look at the file now; apply it if it changed and is valid. Logs instead of raising."""
        if not os.path.exists(self.path):
            if not self._missing:
                logger.warning("%s deleted; the current configuration keeps serving", self.path)
            self._missing = True
            return None
        self._missing = False
        try:
            return self._apply_if_changed()
        except ConfigError as exc:
            logger.error("Invalid configuration: %s\nThe previous configuration keeps serving.", exc)
        except DatabaseError:
            logger.exception("Could not apply %s (database error); will retry on the next change", self.path)
        finally:
            connections.close_all()  # this thread's connections; the next change opens fresh ones
        return None

    def _apply_if_changed(self) -> ImportReport | None:
        text = read_config_text(self.path)
        digest = _digest(text)
        if digest in (self._applied, self._rejected):
            return None
        try:
            report = self._apply(text)
        except ConfigError:
            self._rejected = digest
            raise
        self._applied, self._rejected = digest, None
        if report.changed:
            logger.info("Configuration updated from %s: %s created, %s updated, %s deleted (config version %s)",
                        self.path, len(report.created), len(report.updated), len(report.deleted),
                        config_version())
        else:
            logger.info("%s changed but defines the same endpoints; nothing to apply", self.path)
        return report

    def _apply(self, text: str) -> ImportReport:
        # import_config's two steps, on the text we hashed (import_config would read the file again).
        with exclusive_config_lock():
            document = validate_text(text, self.path)
            return apply_document(document, source_path=self.path, prune=True)


def read_config_text(path: str) -> str:
    if not os.path.exists(path):
        raise ConfigError([Issue("", "", f"{path} does not exist")], path)
    if os.path.isdir(path):
        raise ConfigError([Issue("", "", f"{path} is a directory, not a YAML file")], path)
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Issue("", "", f"cannot be read: {exc}")], path) from None


def symlinks_on_path(path: str) -> set[str]:
    """Every symlink met while resolving `path` (e.g. Kubernetes' `..data` for a ConfigMap file)."""
    links: set[str] = set()
    pending = [os.path.abspath(path)]
    while pending and len(links) < 40:
        current = pending.pop()
        prefix = os.sep
        for part in current.split(os.sep)[1:]:
            prefix = os.path.join(prefix, part)
            if os.path.islink(prefix) and prefix not in links:
                links.add(prefix)
                target = os.path.join(os.path.dirname(prefix), os.readlink(prefix))
                pending.append(os.path.normpath(os.path.join(target, os.path.relpath(current, prefix))))
                break
    return links


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- the whole run ----------------------------------------------------------------------------------
def serve(options: ServeOptions, report: Callable[[str], None]) -> int:
    """Prepare, serve until SIGTERM/SIGINT (or granian exits), stop the tree. Returns the exit code.

    Raises ConfigError if the config file is missing or invalid (nothing is served then)."""
    watcher = ConfigWatcher(options.config_path) if options.config_path else None
    if watcher is not None:
        read_config_text(watcher.path)  # a missing file fails before the database is touched
    with exclusive_config_lock():
        if prepare_database():
            report("Database migrated.")
    if watcher is not None:
        result = watcher.load()
        report(f"Loaded {watcher.path}: {len(result.created)} created, {len(result.updated)} updated, "
               f"{len(result.unchanged)} unchanged, {len(result.deleted)} deleted")
        for warning in result.warnings:
            report(f"warning: {warning}")
    version, endpoint_count = config_version(), Endpoint.objects.filter(enabled=True).count()
    has_admin = _has_operator()
    connections.close_all()

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    process = start_granian(options)
    try:
        if watcher is not None:
            threading.Thread(target=watcher.run, args=(stop,), name="config-watcher", daemon=True).start()
        if not wait_until_serving(process, options.host, options.port, stop):
            if stop.is_set():
                return 0
            report(f"granian did not start (exit code {process.poll()}); is port {options.port} free?")
            return 1
        base_url = f"http://{_display_host(options.host)}:{options.port}"
        threads = os.environ.get("GRANIAN_BLOCKING_THREADS") or BLOCKING_THREADS
        report(f"Serving {base_url} with {options.workers} granian WSGI worker(s) of up to {threads} concurrent "
               f"requests each (pid {process.pid}), config version {version}, {endpoint_count} enabled endpoint(s)")
        admin_hint = "" if has_admin else " (no operator account yet: run `python manage.py ensure_admin`)"
        report(f"Admin: {base_url}/admin/{admin_hint}   API docs: {base_url}/docs")
        if options.host not in _LOOPBACK and "*" not in settings.ALLOWED_HOSTS:
            report(f"Note: only Host names in ALLOWED_HOSTS are answered ({', '.join(settings.ALLOWED_HOSTS)}); "
                   "set ALLOWED_HOSTS to the names clients use.")
        if watcher is not None:
            report(f"Watching {watcher.path} for changes (valid changes apply without restarting workers)")
        if settings.GATEWAY_CONFIG_POLL_SECONDS <= 0:
            report("Warning: GATEWAY_CONFIG_POLL_SECONDS is 0, so workers will not see config changes made "
                   "elsewhere (file, admin, load_config) until they restart.")
        while not stop.wait(0.2):
            if process.poll() is not None:
                report(f"granian exited unexpectedly (exit code {process.returncode})")
                return 1
        report("Stopping...")
        return 0
    finally:
        stop.set()
        stop_process_tree(process)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _has_operator() -> bool:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.filter(is_superuser=True).exists()


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
