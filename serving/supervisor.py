"""The start_server supervisor: runs uvicorn, watches the config file, stops the whole tree.

It imports no Django (it is exec'd by `start_server` once the database is prepared and the file
applied), so the one long-lived process that is not a worker stays small: about 20 MB instead of
the 90 MB of a Django process. A changed file is applied by `manage.py load_config --prune`, run as a
short-lived child: the same all-or-nothing import (one transaction that bumps the config version),
after which the supervisor tells its workers to rebuild their tables at once (other instances' workers
poll within GATEWAY_CONFIG_POLL_SECONDS). Workers are never
restarted, so no request is dropped. SIGTERM or SIGINT stops uvicorn and every process under it.

Why ASGI, and why uvicorn: an invocation spends nearly all its time waiting on the upstream. Under
ASGI a waiting invocation (or an SSE stream, for its whole length) is a suspended greenlet on the
worker's event loop (serving.app, serving.bridge), a few KiB, where under WSGI it
held a thread (about 120 KiB, measured: bench/README.md). uvicorn (uvloop, httptools) runs the HTTP
protocol on that same loop; granian's ASGI mode hands every request between its Rust threads and
the Python loop, and cost 0.61-0.68 ms of CPU per proxied chat where uvicorn cost 0.43 ms, measured
side by side on the benchmark's fake upstream. The supervisor binds the port and starts the workers
itself (serving.worker), restarting any that dies: uvicorn's multi-worker mode would add a
parent process and a multiprocessing resource tracker, about 40 MiB, for the same job.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import watchfiles

from serving.store import StoreServer

logger = logging.getLogger("serving.supervisor")

BASE_DIR = Path(__file__).resolve().parent.parent
MANAGE = str(BASE_DIR / "manage.py")
BACKLOG = 4096  # connections waiting to be accepted (1,000 streams opened within a second must all fit)
# On stop, a worker lets in-flight requests finish for 10 s (serving.worker.GRACEFUL_SHUTDOWN_SECONDS);
# we give it a little more before killing whatever is left.
STOP_GRACE_SECONDS = 15
APPLY_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    workers: int
    config_path: str | None = None
    static_root: str | None = None  # collected static files, served under /static (gateway_project.asgi)


# -- the workers ---------------------------------------------------------------------------------------
def listen(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on (OSError if the address is taken)."""
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(address)
    listener.listen(BACKLOG)
    listener.set_inheritable(True)
    return listener


def start_worker(listener: socket.socket, options: ServeOptions, counters_socket: str | None = None
                 ) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "gateway_project.settings")}
    if options.static_root:
        env["STATIC_ROOT"] = options.static_root
    if counters_socket:
        env["GATEWAY_COUNTERS_SOCKET"] = counters_socket
    fd = listener.fileno()
    # Its own session: the terminal's Ctrl-C reaches only us, and we stop the workers in order.
    return subprocess.Popen([sys.executable, "-m", "serving.worker", "--fd", str(fd)], cwd=BASE_DIR,
                            env=env, pass_fds=(fd,), start_new_session=True, preexec_fn=_terminate_with_parent)


def _terminate_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies without cleaning up (SIGKILL, OOM).
    SIGUSR1 (check_config_now) stays blocked until the worker has its handler: its default action would
    end a worker still starting up. A signal sent meanwhile waits, and is handled once unblocked."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def wait_until_serving(workers: list[subprocess.Popen[bytes]], host: str, port: int, stop: threading.Event,
                       timeout: float = 60.0) -> bool:
    """True once a worker answers HTTP; False if a worker exited or we were asked to stop."""
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(w.poll() is None for w in workers) and not stop.is_set():
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


def stop_workers(workers: list[subprocess.Popen[bytes]], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM every worker (each finishes its in-flight requests), then kill whatever is left of each
    one's process group."""
    trees = []
    for worker in workers:
        try:
            trees += [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for worker in workers:
        try:
            worker.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("worker %s did not stop within %ss; killing it", worker.pid, grace)
        with suppress_missing():
            os.killpg(worker.pid, signal.SIGKILL)  # its process group: anything it started
    _, alive = psutil.wait_procs(trees, timeout=0.1)
    for proc in alive:
        with suppress_missing():
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    for worker in workers:
        worker.wait()


def check_config_now(workers: list[subprocess.Popen[bytes]]) -> None:
    """Tell our workers the config version has moved (SIGUSR1, serving.worker), so they rebuild
    their table now instead of at their next poll. Other instances see it at their next poll."""
    for worker in list(workers):
        if worker.poll() is None:
            with suppress_missing():
                worker.send_signal(signal.SIGUSR1)


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
    """`manage.py load_config --prune PATH` in a child process (all or nothing). Django's system checks
    ran when start_server started, on the same code; skipping them here halves the child's start-up
    (0.71 → 0.40 s)."""
    try:
        done = subprocess.run([sys.executable, MANAGE, "load_config", "--skip-checks", "--prune", path], cwd=BASE_DIR,
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
                 apply: Callable[[str], ApplyResult] = load_config_subprocess,
                 on_applied: Callable[[], None] = lambda: None) -> None:
        self.path = os.path.abspath(path)
        self._apply = apply
        self._on_applied = on_applied
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
            self._on_applied()
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
    """Serve until SIGTERM/SIGINT, then stop the workers. Returns the exit code."""
    workers: list[subprocess.Popen[bytes]] = []
    watcher = ConfigWatcher(options.config_path, applied_digest, on_applied=lambda: check_config_now(workers)) \
        if options.config_path else None
    try:
        listener = listen(options.host, options.port)
    except OSError as exc:
        logger.error("cannot listen on %s:%s: %s", options.host, options.port, exc.strerror or exc)
        return 1
    stop = threading.Event()
    store = start_counter_store()
    counters_socket = store.path if store is not None else None
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    workers += [start_worker(listener, options, counters_socket) for _ in range(options.workers)]
    try:
        if watcher is not None:
            threading.Thread(target=watcher.run, args=(stop,), name="config-watcher", daemon=True).start()
        if not wait_until_serving(workers, options.host, options.port, stop):
            if stop.is_set():
                return 0
            logger.error("the workers did not start (exit codes %s)", [w.poll() for w in workers])
            return 1
        logger.info("Serving http://%s:%s with %s uvicorn worker(s) (pids %s)", _display_host(options.host),
                    options.port, options.workers, ", ".join(str(w.pid) for w in workers))
        if watcher is not None:
            logger.info("Watching %s for changes (valid changes apply without restarting workers)", watcher.path)
        while not stop.wait(0.2):
            for index, worker in enumerate(workers):
                if worker.poll() is not None and not stop.is_set():
                    logger.error("worker %s exited (code %s); starting another", worker.pid, worker.returncode)
                    workers[index] = start_worker(listener, options, counters_socket)
        logger.info("Stopping...")
        return 0
    finally:
        stop.set()
        stop_workers(workers)
        listener.close()
        if store is not None:
            store.stop()
            shutil.rmtree(os.path.dirname(store.path), ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def start_counter_store() -> StoreServer | None:
    """Without REDIS_URL, the store the workers share their counts in (serving.store), on a Unix socket
    in a private temporary directory. None with REDIS_URL: Redis holds them, for every instance."""
    if os.environ.get("REDIS_URL"):
        return None
    store = StoreServer(os.path.join(tempfile.mkdtemp(prefix="gateway-"), "counters.sock"))
    store.start()
    return store


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.supervisor",
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
