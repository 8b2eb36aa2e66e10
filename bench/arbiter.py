"""Our supervisor (`manage.py start_server`) against gunicorn's arbiter running the same application.

    .venv/bin/pip install gunicorn uvicorn-worker   # for this measurement only (not in requirements)
    .venv/bin/python bench/arbiter.py [--requests 4000] [--rounds 2]

Each system serves gateway_project.asgi:application with 2 workers on one SQLite database prepared
with `manage.py migrate` and `manage.py load_config` (two endpoints on the built-in `mock` provider:
`chat`, and `limited` with a limit of 10^9 calls a minute, so that every call is counted but none
refused). No REDIS_URL. The systems run one at a time, in alternating order over the rounds:

- ours: `manage.py start_server --workers 2` (the supervisor, its counter store and config watcher);
- gunicorn: `gunicorn -k uvicorn_worker.UvicornWorker -w 2 gateway_project.asgi:application`;
- gunicorn+ours: the same, with our workers' uvicorn settings (serving.worker's coalescing httptools
  protocol, uvloop, no access log), so that it differs from ours only in the process supervising the
  workers.

Per system and round: RSS of the supervising process and of the whole tree (and PSS, which counts a
shared page once) at rest after a warm-up; the supervising process's CPU over --rest-seconds at
rest; server CPU per request (user+system of the process tree, psutil, before and after) for
--requests chat calls at concurrency 8 (bench/loadgen.py) to `chat` and to `limited`; what SIGHUP
does under load (worker pids before and after, failed requests); how long a SIGKILLed worker takes
to be replaced by one that answers. Prints a JSON document and a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
BODY = {"messages": [{"role": "user", "content": "Say hello in a few words."}], "max_tokens": 64}
CONFIG = """endpoints:
  - name: chat
    endpoint_type: llm/v1/chat
    model: {provider: mock, name: mock-chat, config: {}}
  - name: limited
    endpoint_type: llm/v1/chat
    model: {provider: mock, name: mock-chat, config: {}}
    limit: {calls: 1000000000, renewal_period: minute}
"""

try:  # gunicorn's uvicorn worker with our workers' protocol (only where uvicorn-worker is installed)
    from uvicorn_worker import UvicornWorker

    class CoalescingUvicornWorker(UvicornWorker):
        CONFIG_KWARGS = {"loop": "uvloop", "http": "serving.worker:CoalescingHttpToolsProtocol", "ws": "none",
                         "access_log": False}
except ImportError:  # pragma: no cover
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, timeout: float = 2) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return dict(json.loads(response.read()))
    except (OSError, ValueError):
        return None


class System:
    def __init__(self, name: str, command: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.log = workdir / f"{name}-{self.port}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.root = psutil.Process(self.process.pid)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def workers(self) -> set[int]:
        pids = set()
        for child in self.tree()[1:]:
            try:
                command = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if "load_config" not in command:  # ours runs one to apply the file
                pids.add(child.pid)
        return pids

    def cpu(self) -> float:
        total = 0.0
        for proc in self.tree():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def process_cpu(self, pid: int) -> float:
        try:
            return float(sum(psutil.Process(pid).cpu_times()[:2]))
        except psutil.NoSuchProcess:
            return 0.0

    def memory(self) -> dict[str, float]:
        rss = pss = 0
        for proc in self.tree():
            info = proc.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", 0)
        return {"root_rss_mib": round(self.root.memory_info().rss / 2**20, 1), "tree_rss_mib": round(rss / 2**20, 1),
                "tree_pss_mib": round(pss / 2**20, 1), "processes": len(self.tree())}

    def wait_healthy(self, workers: int = 2, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-2000:]}")
            if get(self.url("/health")) and len(self.workers()) == workers:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become healthy:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        tree = self.tree()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            pass
        _, alive = psutil.wait_procs(tree, timeout=5)
        for proc in alive:
            proc.kill()


def loadgen(url: str, requests: int = 0, duration: float = 0, concurrency: int = 8) -> dict[str, Any]:
    command = [PYTHON, str(BENCH / "loadgen.py"), "--url", url, "--body", json.dumps(BODY), "--kind", "chat",
               "-c", str(concurrency), "--timeout", "10"]
    command += ["-n", str(requests)] if requests else ["-d", str(duration)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    return dict(json.loads(done.stdout))


def measure_load(system: System, endpoint: str, requests: int) -> dict[str, Any]:
    url = system.url(f"/endpoints/{endpoint}/invocations")
    loadgen(url, requests=300)  # warm-up, not counted
    before = system.cpu()
    workers_before = {pid: system.process_cpu(pid) for pid in system.workers()}
    result = loadgen(url, requests=requests)
    cpu = system.cpu() - before
    done = result["ok"] + result["errors"]
    split = sorted(round(system.process_cpu(pid) - used, 2) for pid, used in workers_before.items())
    return {"cpu_ms_per_request": round(cpu * 1000 / done, 3), "rps": result["rps"], "errors": result["errors"],
            "p50_ms": result["latency_ms"]["p50"], "worker_cpu_s": split}


def measure_sighup(system: System) -> dict[str, Any]:
    """SIGHUP one second into a 6 s load at concurrency 4; then which workers serve."""
    before = system.workers()
    log_start = len(system.log.read_bytes())
    started = time.monotonic()
    load = subprocess.Popen([PYTHON, str(BENCH / "loadgen.py"), "--url", system.url("/endpoints/chat/invocations"),
                             "--body", json.dumps(BODY), "--kind", "chat", "-c", "4", "-d", "6", "--timeout", "10"],
                            stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    system.root.send_signal(signal.SIGHUP)
    output, _ = load.communicate(timeout=60)
    result = json.loads(output)
    deadline = started + 30
    while len(system.workers()) != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    after = system.workers()
    log = system.log.read_bytes()[log_start:].decode(errors="replace")
    return {"workers_replaced": len(before - after), "ok": result["ok"], "errors": result["errors"],
            "error_samples": result["error_samples"],
            "log": [line for line in log.splitlines() if "SIGHUP" in line or "Configuration" in line
                    or "Hang up" in line or "Booting worker" in line][:6]}


def measure_worker_kill(system: System) -> dict[str, Any]:
    """Seconds from SIGKILL of one worker until a new worker answers /health."""
    before = system.workers()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < 60:
        new = system.workers() - before
        if new:
            for _ in range(20):
                body = get(system.url("/health"))
                if body and body.get("pid") in new:
                    return {"seconds_until_a_new_worker_answers": round(time.monotonic() - killed, 2)}
        time.sleep(0.02)
    return {"seconds_until_a_new_worker_answers": None}


def idle_cpu(system: System, seconds: float) -> dict[str, float]:
    root0, tree0 = sum(system.root.cpu_times()[:2]), system.cpu()
    time.sleep(seconds)
    root1, tree1 = sum(system.root.cpu_times()[:2]), system.cpu()
    return {"root_cpu_ms_per_s": round((root1 - root0) * 1000 / seconds, 2),
            "tree_cpu_ms_per_s": round((tree1 - tree0) * 1000 / seconds, 2)}


def prepare(workdir: Path) -> tuple[dict[str, str], Path]:
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update(SECRET_KEY=secrets.token_urlsafe(50), DEBUG="false", DJANGO_SETTINGS_MODULE="gateway_project.settings",
               DATABASE_URL=f"sqlite:///{workdir / 'gateway.sqlite3'}", STATIC_ROOT=str(workdir / "static"),
               PYTHONUNBUFFERED="1")
    config = workdir / "gateway.yaml"
    config.write_text(CONFIG)
    for command in (["migrate", "-v", "0"], ["load_config", str(config)], ["collectstatic", "--no-input", "-v", "0"]):
        subprocess.run([PYTHON, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True)
    return env, config


def commands(config: Path) -> dict[str, list[str]]:
    gunicorn = [str(Path(PYTHON).parent / "gunicorn"), "-w", "2", "-b", "127.0.0.1:{port}", "--graceful-timeout", "10"]
    return {
        "ours": [PYTHON, "manage.py", "start_server", "--config-path", str(config), "--host", "127.0.0.1",
                 "--port", "{port}", "--workers", "2"],
        "gunicorn": [*gunicorn, "-k", "uvicorn_worker.UvicornWorker", "gateway_project.asgi:application"],
        "gunicorn+ours": [*gunicorn, "-k", "bench.arbiter.CoalescingUvicornWorker", "gateway_project.asgi:application"],
    }


def run_system(name: str, command: list[str], env: dict[str, str], workdir: Path, args: argparse.Namespace
               ) -> dict[str, Any]:
    system = System(name, command, env, workdir)
    try:
        system.wait_healthy()
        loadgen(system.url("/endpoints/chat/invocations"), requests=300)
        time.sleep(5)
        result: dict[str, Any] = {"memory": system.memory(), "idle": idle_cpu(system, args.rest_seconds)}
        result["chat"] = measure_load(system, "chat", args.requests)
        result["limited"] = measure_load(system, "limited", args.requests)
        result["sighup"] = measure_sighup(system)
        system.wait_healthy()
        result["worker_kill"] = measure_worker_kill(system)
        return result
    finally:
        system.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rest-seconds", type=float, default=20)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-arbiter-"))
    try:
        env, config = prepare(workdir)
        systems = commands(config)
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
        for round_number in range(args.rounds):
            order = list(systems) if round_number % 2 == 0 else list(reversed(systems))
            for name in order:
                print(f"round {round_number + 1}: {name}", file=sys.stderr)
                results[name].append(run_system(name, systems[name], env, workdir, args))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({"args": vars(args), "load_average": os.getloadavg(), "results": results}, indent=1))
    print(table(results))


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    def values(name: str, *path: str) -> str:
        found = []
        for run in results[name]:
            value: Any = run
            for key in path:
                value = value[key]
            found.append(value)
        return " / ".join(str(v) for v in found)

    rows = [("supervising process RSS, MiB", ("memory", "root_rss_mib")),
            ("whole tree RSS, MiB", ("memory", "tree_rss_mib")),
            ("whole tree PSS, MiB", ("memory", "tree_pss_mib")),
            ("supervising process CPU at rest, ms/s", ("idle", "root_cpu_ms_per_s")),
            ("server CPU per chat, ms", ("chat", "cpu_ms_per_request")),
            ("server CPU per limited chat, ms", ("limited", "cpu_ms_per_request")),
            ("chat req/s at c=8", ("chat", "rps")),
            ("SIGHUP under load: workers replaced", ("sighup", "workers_replaced")),
            ("SIGHUP under load: failed requests", ("sighup", "errors")),
            ("SIGKILLed worker: s until a new one answers", ("worker_kill", "seconds_until_a_new_worker_answers"))]
    names = list(results)
    lines = ["| per round | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(values(name, *path) for name in names) + " |" for label, path in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
