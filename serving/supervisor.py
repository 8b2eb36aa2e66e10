"""The start_server supervisor: runs uvicorn, watches the config file, stops the whole tree.

It imports no Django (it is exec'd by `start_server` once the database is prepared and the file
applied), so the one long-lived process that is not a worker stays small: about 20 MB instead of
the 90 MB of a Django process. A changed file is applied by `manage.py load_config --prune`, run as a
short-lived child: the same all-or-nothing import (one transaction that bumps the config version),
after which the supervisor tells its workers to rebuild their tables at once (other instances' workers
poll within GATEWAY_CONFIG_POLL_SECONDS). No worker is restarted for
a change, so no request is dropped. SIGHUP applies the file again even if it has not changed (or,
without a file, just tells the workers to rebuild). A worker that dies is replaced, after a delay that
grows while replacements keep dying (RestartBackoff). SIGTERM or SIGINT stops uvicorn and every
process under it, letting in-flight requests finish.

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
from types import FrameType
from typing import Any

import psutil
import watchfiles

from serving import sharedstore
from serving.configread import DEFAULT_MAX_BYTES, ConfigFileError, read_config_bytes

logger = logging.getLogger("serving.supervisor")

BASE_DIR = Path(__file__).resolve().parent.parent
MANAGE = str(BASE_DIR / "manage.py")
BACKLOG = 4096  # connections waiting to be accepted (1,000 streams opened within a second must all fit)
# On stop, a worker lets in-flight requests finish for 10 s (serving.worker.GRACEFUL_SHUTDOWN_SECONDS);
# we give it a little more before killing whatever is left.
STOP_GRACE_SECONDS = 15
APPLY_TIMEOUT_SECONDS = 120
POLL_SECONDS = 0.2  # how often the main loop looks for dead workers and a SIGHUP
PRUNE_TIMEOUT_SECONDS = 3600  # a first prune of a large backlog deletes in chunks; it may take a while


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    workers: int
    config_path: str | None = None
    static_root: str | None = None  # collected static files, served under /static (gateway_project.asgi)
    config_max_bytes: int = DEFAULT_MAX_BYTES  # GATEWAY_CONFIG_MAX_BYTES: a larger file is never read


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


def start_worker(listener: socket.socket, options: ServeOptions, counters_file: str | None = None,
                 snapshot_file: str | None = None) -> subprocess.Popen[bytes]:
    """One worker on the listening socket. Call it from the main thread: the worker asks for SIGTERM when
    the thread that started it ends (PR_SET_PDEATHSIG, serving.worker.stop_with_supervisor)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "gateway_project.settings")}
    if options.static_root:
        env["STATIC_ROOT"] = options.static_root
    if counters_file:
        env["GATEWAY_COUNTERS_FILE"] = counters_file
    if snapshot_file:
        env["GATEWAY_TABLE_SNAPSHOT"] = snapshot_file
    fd = listener.fileno()
    command = [sys.executable, "-m", "serving.worker", "--fd", str(fd), "--supervisor-pid", str(os.getpid())]
    # SIGUSR1 (check_config_now) must stay blocked until the worker has its handler: its default action
    # would end a worker still starting up; a signal sent meanwhile waits and is handled once unblocked.
    # A blocked mask survives fork and exec, so we block it in this thread around the spawn (a
    # `preexec_fn` would do it in the child, but is not safe in a process with threads, as this one is).
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        # Its own session: the terminal's Ctrl-C reaches only us, and we stop the workers in order.
        return subprocess.Popen(command, cwd=BASE_DIR, env=env, pass_fds=(fd,), start_new_session=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


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


def refuse_new_connections(listener: socket.socket) -> None:
    """Stop listening now, in every process that shares the socket: a new client is refused at once
    (and one still in the accept queue is reset) instead of waiting in the queue while the workers finish
    their requests, so a load balancer or a client retries elsewhere at once. Closing our descriptor
    would not do: the workers hold the same socket until they exit."""
    try:
        listener.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not listening (already shut down)


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


# -- replacing workers that die ------------------------------------------------------------------------
class RestartBackoff:
    """How long to wait before replacing a worker that died: `first` seconds, doubling with each death
    that follows quickly on the last up to `maximum`, and `first` again once a worker has lived
    `healthy_after` seconds. A worker that cannot start (broken settings, a full disk) is retried a
    few times a minute instead of five times a second, and the log stays readable; a worker killed
    after hours of service is replaced within half a second."""

    def __init__(self, first: float = 0.5, maximum: float = 30.0, healthy_after: float = 30.0) -> None:
        self.first = first
        self.maximum = maximum
        self.healthy_after = healthy_after
        self._next = first

    def delay(self, lived: float) -> float:
        """The delay before replacing a worker that died after `lived` seconds."""
        if lived >= self.healthy_after:
            self._next = self.first
        delay, self._next = self._next, min(self._next * 2, self.maximum)
        return delay


class WorkerSlot:
    """One of the N workers: the process serving in it, or, after it died, when its replacement starts."""

    def __init__(self, start: Callable[[], subprocess.Popen[bytes]],
                 clock: Callable[[], float] = time.monotonic,
                 on_exit: Callable[[int], None] = lambda pid: None) -> None:
        self._start = start
        self._clock = clock
        self._on_exit = on_exit
        self.backoff = RestartBackoff()
        self.process = start()
        self.started_at = clock()
        self.restart_at: float | None = None

    def tend(self) -> float | None:
        """Notice that the worker died (log it and schedule its replacement) or start the replacement
        once it is due. Returns when the replacement is due (None if nothing is pending)."""
        now = self._clock()
        if self.restart_at is None:
            code = self.process.poll()
            if code is None:
                return None
            lived = now - self.started_at
            self._on_exit(self.process.pid)
            delay = self.backoff.delay(lived)
            self.restart_at = now + delay
            logger.error("worker %s exited (%s) after %.1f s; starting another in %g s", self.process.pid,
                         describe_exit(code), lived, delay)
        elif now >= self.restart_at:
            dead = self.process.pid
            try:
                self.process = self._start()
            except OSError as exc:  # no process or file descriptor left: try again later
                delay = self.backoff.delay(lived=0.0)
                self.restart_at = now + delay
                logger.error("cannot start a worker in place of worker %s: %s; trying again in %g s", dead, exc, delay)
                return self.restart_at
            self.started_at, self.restart_at = now, None
            logger.info("worker %s started in place of worker %s", self.process.pid, dead)
        return self.restart_at


def describe_exit(code: int) -> str:
    """A Popen return code in words: "exit code 3", "killed by SIGKILL"."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


# -- the config watcher -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ApplyResult:
    ok: bool
    message: str


def command_env() -> dict[str, str]:
    """The environment of a management command the supervisor runs: not one of the workers whose metrics a
    scrape adds up."""
    return {key: value for key, value in os.environ.items() if key != METRICS_DIR_VARIABLE}


def load_config_subprocess(path: str) -> ApplyResult:
    """`manage.py load_config --prune PATH` in a child process (all or nothing). Django's system checks
    ran when start_server started, on the same code; skipping them here halves the child's start-up
    (0.71 → 0.40 s)."""
    try:
        done = subprocess.run([sys.executable, MANAGE, "load_config", "--skip-checks", "--prune", path], cwd=BASE_DIR,
                              capture_output=True, text=True, timeout=APPLY_TIMEOUT_SECONDS, check=False,
                              env=command_env())
    except subprocess.TimeoutExpired:
        return ApplyResult(False, f"load_config did not finish within {APPLY_TIMEOUT_SECONDS} s")
    if done.returncode == 0:
        lines = done.stdout.strip().splitlines()
        return ApplyResult(True, lines[-1] if lines else "applied")
    message = done.stderr.strip().removeprefix("CommandError: ")
    return ApplyResult(False, message or f"load_config exited with code {done.returncode}")


def prune_usage_subprocess(stop: threading.Event) -> ApplyResult:
    """`manage.py prune_usage` in a child process: usage records past GATEWAY_USAGE_RETENTION_DAYS deleted
    in chunks, off the workers. Killed when `stop` is set: a prune never outlives the server that ran it."""
    child = subprocess.Popen([sys.executable, MANAGE, "prune_usage", "--skip-checks"], cwd=BASE_DIR,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=command_env())
    deadline = time.monotonic() + PRUNE_TIMEOUT_SECONDS
    while True:
        try:
            out, err = child.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if stop.is_set() or time.monotonic() > deadline:
                child.kill()
                child.communicate()
                return ApplyResult(False, "stopped with the server" if stop.is_set()
                                   else f"prune_usage did not finish within {PRUNE_TIMEOUT_SECONDS} s")
    if child.returncode == 0:
        lines = out.strip().splitlines()
        return ApplyResult(True, lines[-1] if lines else "done")
    message = err.strip().splitlines()
    return ApplyResult(False, message[-1] if message else f"prune_usage exited with code {child.returncode}")


def prune_interval() -> float | None:
    """Seconds between two runs of prune_usage (GATEWAY_USAGE_PRUNE_HOURS, default 24; 0 or less: never,
    for an operator whose cron runs it). start_server's Django settings check validated the value."""
    hours = float(os.environ.get("GATEWAY_USAGE_PRUNE_HOURS", "24") or "24")
    return hours * 3600 if hours > 0 else None


def keep_pruning(stop: threading.Event, every: float,
                 prune: Callable[[threading.Event], ApplyResult] = prune_usage_subprocess) -> None:
    """Prune the usage ledger now, then every `every` seconds, until `stop`."""
    while not stop.is_set():
        result = prune(stop)
        if stop.is_set():
            return
        if result.ok:
            logger.info("prune_usage: %s", result.message)
        else:
            logger.error("prune_usage failed: %s", result.message)
        if stop.wait(every):
            return


class ConfigWatcher:
    """Applies valid changes of one config file; logs and skips invalid, deleted or unchanged ones.

    The file's directory is watched (and its target's, for a symlink), not the file itself, so
    editors that write a new file and rename it over the old one, and symlink swaps (Kubernetes
    ConfigMaps), are seen. Each batch of events re-reads the file and compares its content with
    what was last applied.
    """

    def __init__(self, path: str, applied_digest: str | None = None,
                 apply: Callable[[str], ApplyResult] = load_config_subprocess,
                 on_applied: Callable[[], None] = lambda: None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = os.path.abspath(path)
        self.max_bytes = max_bytes
        self._apply = apply
        self._on_applied = on_applied
        self._applied = applied_digest
        self._rejected: str | None = None
        self._missing = False
        self._lock = threading.Lock()  # the watch thread and a SIGHUP reload apply one at a time

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

    def check(self, *, force: bool = False) -> ApplyResult | None:
        """Look at the file now; apply it if it changed (or, with `force`, in any case). Logs instead of
        raising; None if skipped."""
        with self._lock:
            try:
                text = read_config_bytes(self.path, self.max_bytes)  # never blocks on a FIFO or reads /dev/zero
            except FileNotFoundError:
                if not self._missing or force:
                    logger.warning("%s deleted; the current configuration keeps serving", self.path)
                self._missing = True
                return None
            except (OSError, ConfigFileError) as exc:
                logger.error("Cannot read %s: %s; the current configuration keeps serving", self.path, exc)
                return None
            self._missing = False
            digest = hashlib.sha256(text).hexdigest()
            if digest in (self._applied, self._rejected) and not force:
                return None
            result = self._apply(self.path)
            if result.ok:
                self._applied, self._rejected = digest, None
                logger.info("Configuration updated from %s: %s", self.path, result.message)
                self._on_applied()
            else:
                self._rejected = digest
                count_reload_failure()  # before the log line: whoever reads it finds the count
                logger.error("Invalid configuration: %s\nThe previous configuration keeps serving.", result.message)
            return result

    def reload(self) -> ApplyResult | None:
        """SIGHUP: apply the file now, even if its content has not changed: to put back what an edit in the
        admin or the database changed in the file's endpoints, or after an apply that failed for a reason
        now gone (the database was down)."""
        logger.info("SIGHUP: applying %s", self.path)
        return self.check(force=True)


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


def file_digest(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Raises ConfigFileError for a file that is not regular or too large."""
    return hashlib.sha256(read_config_bytes(path, max_bytes)).hexdigest()


# -- the whole run ----------------------------------------------------------------------------------
def supervise(options: ServeOptions, applied_digest: str | None = None) -> int:
    """Serve until SIGTERM/SIGINT, then stop the workers. SIGHUP applies the config file again and tells
    the workers to rebuild their tables. Returns the exit code."""
    slots: list[WorkerSlot] = []

    def tell_workers() -> None:
        check_config_now([slot.process for slot in slots])

    watcher = ConfigWatcher(options.config_path, applied_digest, on_applied=tell_workers,
                            max_bytes=options.config_max_bytes) \
        if options.config_path else None
    try:
        listener = listen(options.host, options.port)
    except OSError as exc:
        logger.error("cannot listen on %s:%s: %s", options.host, options.port, exc.strerror or exc)
        return 1
    stop = threading.Event()
    reload_requested = threading.Event()
    previous = {sig: signal.signal(sig, _setting(event))
                for sig, event in ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGHUP, reload_requested))}
    store: CounterFile | None = None
    pruning: threading.Thread | None = None
    metrics_dir: MetricsDirectory | None = None
    # The workers' endpoint table snapshot (serving.snapshot), in a private folder of ours unless one is set.
    snapshot_dir = None if os.environ.get("GATEWAY_TABLE_SNAPSHOT") else tempfile.mkdtemp(prefix="table-snapshot-")
    snapshot_file = os.path.join(snapshot_dir, "endpoint-table") if snapshot_dir else None
    try:
        try:
            store = start_counter_store()
            metrics_dir = prepare_metrics_directory()
        except OSError as exc:
            logger.error("cannot start the counter store or the metrics directory: %s", exc)
            return 1
        counters_file = store.path if store is not None else None
        slots += [WorkerSlot(lambda: start_worker(listener, options, counters_file, snapshot_file),
                             on_exit=metrics_dir.process_dead)
                  for _ in range(options.workers)]
        if watcher is not None:
            threading.Thread(target=watcher.run, args=(stop,), name="config-watcher", daemon=True).start()
        if not wait_until_serving([slot.process for slot in slots], options.host, options.port, stop):
            if stop.is_set():
                return 0
            logger.error("the workers did not start (exit codes %s)", [slot.process.poll() for slot in slots])
            return 1
        logger.info("Serving http://%s:%s with %s uvicorn worker(s) (pids %s)", _display_host(options.host),
                    options.port, options.workers, ", ".join(str(slot.process.pid) for slot in slots))
        if watcher is not None:
            logger.info("Watching %s for changes (valid changes apply without restarting workers)", watcher.path)
        prune_every = prune_interval()
        if prune_every is not None:
            pruning = threading.Thread(target=keep_pruning, args=(stop, prune_every), name="prune-usage", daemon=True)
            pruning.start()
        reloading: threading.Thread | None = None
        wake_in = POLL_SECONDS
        while not stop.wait(wake_in):
            if reload_requested.is_set() and (reloading is None or not reloading.is_alive()):
                reload_requested.clear()  # signals received during a reload make one more after it
                reloading = threading.Thread(target=reload, args=(watcher, tell_workers), name="reload", daemon=True)
                reloading.start()
            now = time.monotonic()
            due = [at for at in (slot.tend() for slot in slots) if at is not None]
            wake_in = min([POLL_SECONDS, *(max(0.01, at - now) for at in due)])
        logger.info("Stopping...")
        return 0
    finally:
        stop.set()
        refuse_new_connections(listener)
        stop_workers([slot.process for slot in slots])
        listener.close()
        if pruning is not None:
            pruning.join(5)  # it kills a prune in progress within 0.2 s
        if store is not None:
            stop_counter_store(store)
        if metrics_dir is not None:
            metrics_dir.remove()
        if snapshot_dir is not None:
            shutil.rmtree(snapshot_dir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _setting(event: threading.Event) -> Callable[[int, FrameType | None], None]:
    """A signal handler that only sets `event` (the main loop does the work)."""
    return lambda signum, frame: event.set()


def reload(watcher: ConfigWatcher | None, tell_workers: Callable[[], None]) -> None:
    """SIGHUP: apply the config file like a change of it (its outcome is logged; the workers are told
    to rebuild their tables when it applies), or without one, just tell the workers."""
    if watcher is not None:
        watcher.reload()
    else:
        tell_workers()
        logger.info("SIGHUP: the workers were told to rebuild their endpoint tables")


@dataclass(frozen=True)
class CounterFile:
    path: str


def start_counter_store() -> CounterFile | None:
    """Without REDIS_URL, the file the workers share their counts in (serving.sharedstore), in a private
    temporary directory (0700). None with REDIS_URL: Redis holds them, for every instance."""
    if os.environ.get("REDIS_URL"):
        return None
    directory = tempfile.mkdtemp(prefix="gateway-")
    path = os.path.join(directory, "counters")
    try:
        sharedstore.create(path)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return CounterFile(path)


def stop_counter_store(store: CounterFile) -> None:
    shutil.rmtree(os.path.dirname(store.path), ignore_errors=True)


# -- the metrics' files ---------------------------------------------------------------------------------
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_reload_failures: Any = None


@dataclass(frozen=True)
class MetricsDirectory:
    """Where the workers write their metrics (prometheus_client's multiprocess mode: observability.metrics)."""

    path: str
    owned: bool  # created here (removed at the end), not the operator's own PROMETHEUS_MULTIPROC_DIR

    def process_dead(self, pid: int) -> None:
        """A worker exited: its live gauges (streams in flight, the config version it served) no longer
        count; its counters still do."""
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]

    def remove(self) -> None:
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)


def prepare_metrics_directory() -> MetricsDirectory:
    """A fresh, empty directory for this run's metrics, in PROMETHEUS_MULTIPROC_DIR for the workers: the
    operator's (emptied of the last run's files) or a private temporary one."""
    given = os.environ.get(METRICS_DIR_VARIABLE)
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                os.remove(os.path.join(given, name))
        return MetricsDirectory(given, owned=False)
    path = tempfile.mkdtemp(prefix="metrics-gateway-")
    os.environ[METRICS_DIR_VARIABLE] = path  # the workers inherit it
    return MetricsDirectory(path, owned=True)


def count_reload_failure() -> None:
    """gateway_config_reload_failures_total{source="file"}: the config file could not be applied. The same
    counter as the workers' (observability.metrics), written to this process's own file."""
    global _reload_failures
    if not os.environ.get(METRICS_DIR_VARIABLE):
        return
    try:
        if _reload_failures is None:
            from prometheus_client import Counter

            _reload_failures = Counter("gateway_config_reload_failures", "Config reloads that failed.", ["source"],
                                       registry=None)
        _reload_failures.labels("file").inc()
    except Exception:  # the metrics directory was removed: a count is not worth stopping the watcher
        logger.warning("cannot count the failed reload in the metrics", exc_info=True)


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
    parser.add_argument("--config-max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # a log file sees each line now
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    options = ServeOptions(host=args.host, port=args.port, workers=args.workers, config_path=args.config_path,
                           static_root=args.static_root, config_max_bytes=args.config_max_bytes)
    return supervise(options, args.applied_digest)


if __name__ == "__main__":
    sys.exit(main())
