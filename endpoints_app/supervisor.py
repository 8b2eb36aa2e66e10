"""The start_server supervisor: runs granian, watches the config file, stops the whole tree.

It imports no Django (it is exec'd by `start_server` once the database is prepared and the file
applied), so the one long-lived process that is not a worker stays small: about 20 MB instead of
the 90 MB of a Django process. A changed file is applied by `manage.py load_config --prune`, run as a
short-lived child: the same all-or-nothing import (one transaction that bumps the config version;
every worker's poller rebuilds its table within GATEWAY_CONFIG_POLL_SECONDS). Workers are never
restarted, so no request is dropped. SIGTERM or SIGINT stops granian and every process under it.

Why granian's ASGI mode: an invocation spends nearly all its time waiting on the upstream. Under
ASGI a waiting invocation (or an SSE stream, for its whole length) is a suspended greenlet on the
worker's event loop (endpoints_app.fastpath, providers.asyncbridge), a few KiB, where under WSGI it
held a thread (about 120 KiB, measured: bench/README.md). So a worker accepts MAX_CONCURRENCY
requests at once; granian's default (backlog/workers) would queue the 513th of 1,000 streams on 2
workers. GRANIAN_BACKPRESSURE / GRANIAN_BACKLOG override the defaults.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

import psutil
import watchfiles

logger = logging.getLogger("endpoints_app.supervisor")

BASE_DIR = Path(__file__).resolve().parent.parent
MANAGE = str(BASE_DIR / "manage.py")
ASGI_APP = "gateway_project.asgi:application"
# Concurrent requests each worker accepts (each a coroutine), and the listen backlog.
MAX_CONCURRENCY = 4096
BACKLOG = 4096
# On stop, granian waits this long for in-flight requests before killing its workers; we then give
# it a little more before killing whatever is left of the tree.
WORKERS_KILL_TIMEOUT = 10
STOP_GRACE_SECONDS = WORKERS_KILL_TIMEOUT + 5
APPLY_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    workers: int
    config_path: str | None = None
    static_root: str | None = None  # collected static files, served by granian under /static


# -- granian -------------------------------------------------------------------------------------------
def granian_command(options: ServeOptions) -> list[str]:
    """The granian command line. GRANIAN_* environment variables override the concurrency settings."""
    command = [sys.executable, "-m", "granian", "--interface", "asgi", "--no-ws",
               "--host", options.host, "--port", str(options.port), "--workers", str(options.workers),
               "--workers-kill-timeout", str(WORKERS_KILL_TIMEOUT), "--respawn-failed-workers"]
    tunables = {"--backpressure": ("GRANIAN_BACKPRESSURE", MAX_CONCURRENCY),
                "--backlog": ("GRANIAN_BACKLOG", BACKLOG)}
    for flag, (env_name, default) in tunables.items():
        if not os.environ.get(env_name):
            command += [flag, str(default)]
    if options.static_root:
        command += ["--static-path-route", "/static", "--static-path-mount", options.static_root]
    return [*command, ASGI_APP]


def start_granian(options: ServeOptions) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "gateway_project.settings")}
    # Its own session and process group: the terminal's Ctrl-C reaches only us, and we stop the tree.
    return subprocess.Popen(granian_command(options), cwd=BASE_DIR, env=env, start_new_session=True,
                            preexec_fn=_terminate_with_parent)


def _terminate_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies without cleaning up (SIGKILL, OOM)."""
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
@dataclass(frozen=True)
class ApplyResult:
    ok: bool
    message: str


def load_config_subprocess(path: str) -> ApplyResult:
    """`manage.py load_config --prune PATH` in a child process (all or nothing)."""
    try:
        done = subprocess.run([sys.executable, MANAGE, "load_config", "--prune", path], cwd=BASE_DIR,
                              capture_output=True, text=True, timeout=APPLY_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return ApplyResult(False, f"load_config did not finish within {APPLY_TIMEOUT_SECONDS} s")
    if done.returncode == 0:
        lines = done.stdout.strip().splitlines()
        return ApplyResult(True, lines[-1] if lines else "applied")
    message = done.stderr.strip().removeprefix("CommandError: ")
    return ApplyResult(False, message or f"load_config exited with code {done.returncode}")


class ConfigWatcher:
    """Applies valid changes of one config file; logs and skips invalid, deleted or unchanged ones.

    The file's directory is watched (and its target's, for a symlink), not the file itself, so
    editors that write a new file and rename it over the old one, and symlink swaps (Kubernetes
    ConfigMaps), are seen. Each batch of events re-reads the file and compares its content with
    what was last applied.
    """

    def __init__(self, path: str, applied_digest: str | None = None,
                 apply: Callable[[str], ApplyResult] = load_config_subprocess) -> None:
        self.path = os.path.abspath(path)
        self._apply = apply
        self._applied = applied_digest
        self._rejected: str | None = None
        self._missing = False

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

    def check(self) -> ApplyResult | None:
        """Look at the file now; apply it if it changed. Logs instead of raising; None if skipped."""
        try:
            text = Path(self.path).read_bytes()
        except FileNotFoundError:
            if not self._missing:
                logger.warning("%s deleted; the current configuration keeps serving", self.path)
            self._missing = True
            return None
        except OSError as exc:
            logger.error("Cannot read %s: %s; the current configuration keeps serving", self.path, exc)
            return None
        self._missing = False
        digest = hashlib.sha256(text).hexdigest()
        if digest in (self._applied, self._rejected):
            return None
        result = self._apply(self.path)
        if result.ok:
            self._applied, self._rejected = digest, None
            logger.info("Configuration updated from %s: %s", self.path, result.message)
        else:
            self._rejected = digest
            logger.error("Invalid configuration: %s\nThe previous configuration keeps serving.", result.message)
        return result


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


def file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- the whole run ----------------------------------------------------------------------------------
def supervise(options: ServeOptions, applied_digest: str | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or granian exits), then stop the tree. Returns the exit code."""
    watcher = ConfigWatcher(options.config_path, applied_digest) if options.config_path else None
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    process = start_granian(options)
    try:
        if watcher is not None:
            threading.Thread(target=watcher.run, args=(stop,), name="config-watcher", daemon=True).start()
        if not wait_until_serving(process, options.host, options.port, stop):
            if stop.is_set():
                return 0
            logger.error("granian did not start (exit code %s); is port %s free?", process.poll(), options.port)
            return 1
        concurrency = os.environ.get("GRANIAN_BACKPRESSURE") or MAX_CONCURRENCY
        logger.info("Serving http://%s:%s with %s granian ASGI worker(s) of up to %s concurrent requests each "
                    "(pid %s)", _display_host(options.host), options.port, options.workers, concurrency, process.pid)
        if watcher is not None:
            logger.info("Watching %s for changes (valid changes apply without restarting workers)", watcher.path)
        while not stop.wait(0.2):
            if process.poll() is not None:
                logger.error("granian exited unexpectedly (exit code %s)", process.returncode)
                return 1
        logger.info("Stopping...")
        return 0
    finally:
        stop.set()
        stop_process_tree(process)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m endpoints_app.supervisor",
                                     description="Run by `manage.py start_server`; not meant to be called directly.")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--config-path")
    parser.add_argument("--applied-digest")
    parser.add_argument("--static-root")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # a log file sees each line now
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    options = ServeOptions(host=args.host, port=args.port, workers=args.workers, config_path=args.config_path,
                           static_root=args.static_root)
    return supervise(options, args.applied_digest)


if __name__ == "__main__":
    sys.exit(main())
