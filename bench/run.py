"""The benchmark: our gateway vs MLflow's gateway 3.17.2 vs direct-to-upstream, in one run.

    python bench/run.py            # the full run (about 10 minutes), numbers for bench/README.md
    python bench/run.py --smoke    # a short check (< 60 s) that every part works; exit 1 on failure

It starts a fake OpenAI upstream (bench/fake_upstream.py), our gateway (`manage.py start_server`)
and MLflow's (`mlflow gateway start`, from
the venv bench/.venv-mlflow, created on first use), both with 2 workers and the same YAML config,
then drives all three with bench/loadgen.py, alternating systems phase by phase so that machine
noise hits each of them. Server CPU is the user+system CPU of each server's whole process tree,
read with psutil before and after each phase. Results go to bench/results/<timestamp>.json and .md,
and the Markdown table is printed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
MLFLOW_VENV = BENCH / ".venv-mlflow"
MLFLOW_VERSION = "3.17.2"
RESULTS = BENCH / "results"

if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve() and VENV_PYTHON.exists() \
        and not os.environ.get("BENCH_NO_REEXEC"):
    # `python bench/run.py` from any interpreter: run under the project's venv (psutil).
    os.environ["BENCH_NO_REEXEC"] = "1"
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])

import psutil  # noqa: E402  (after the re-exec above)

CHAT_BODY = {"messages": [{"role": "user", "content": "Say hello in a few words."}], "max_tokens": 64}
KINDS: dict[str, dict[str, Any]] = {
    "chat": {"endpoint": "chat", "upstream": "/v1/chat/completions", "body": CHAT_BODY},
    "stream": {"endpoint": "chat", "upstream": "/v1/chat/completions", "body": {**CHAT_BODY, "stream": True}},
    "embeddings": {"endpoint": "embeddings", "upstream": "/v1/embeddings",
                   "body": {"input": "The quick brown fox jumps over the lazy dog."}},
}
SYSTEMS = ("direct", "ours", "ours-noledger", "mlflow")
# What `--features all` turns on for our gateway (every request-path feature): a gateway key on every
# request (GATEWAY_AUTH=keys) of a consumer with call and token limits and a budget, endpoint costs and
# budgets, the usage ledger (its records written in batches), metrics and the access log.
FEATURE_CONSUMER = ("consumers:\n  - name: bench\n    allow: ['*']\n"
                    "    limit: {calls: 100000000, renewal_period: minute}\n"
                    "    token_limit: {tokens: 1000000000000, renewal_period: hour}\n"
                    "    budget: {usd: 1000000, period: month, action: reject}\n")
FEATURE_ENDPOINT = ("    cost: {input_per_million_tokens: 0.15, output_per_million_tokens: 0.6}\n"
                    "    budget: {usd: 1000000, period: month, action: reject}\n")
IDEAL_HELD_RPS = 32 / 0.05  # concurrency 32 against a 50 ms upstream


@dataclass
class Profile:
    name: str
    c1_requests: int
    c1_warmup: int
    load_seconds: float
    concurrencies: tuple[int, ...]
    rounds: int
    held_seconds: float
    held_stream_seconds: float
    held_streams: int
    held_stream_timeout: float
    warmup_requests: int  # per system and kind, before the first memory reading
    phase_warmup: bool  # unmeasured requests before each loaded phase


FULL = Profile("full", c1_requests=1500, c1_warmup=100, load_seconds=8, concurrencies=(1, 8, 32), rounds=2,
               held_seconds=10, held_stream_seconds=10, held_streams=1000, held_stream_timeout=40,
               warmup_requests=200, phase_warmup=True)
SMOKE = Profile("smoke", c1_requests=30, c1_warmup=0, load_seconds=0.5, concurrencies=(1, 8), rounds=1,
                held_seconds=1.0, held_stream_seconds=1, held_streams=40, held_stream_timeout=10,
                warmup_requests=20, phase_warmup=False)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # inherited by every child
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2.0, headers: list[str] | None = None) -> int:
    extra = dict(header.split(": ", 1) for header in headers or [])
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=extra), timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except Exception:
        return 0


def wait_key_known(server: Server, timeout: float = 20) -> bool:
    """True once every worker knows the key just created: each worker learns it when its poller sees the
    config version move (GATEWAY_CONFIG_POLL_SECONDS), so a request right after create_key may meet one
    that has not yet. Fresh connections spread over the workers; 20 accepted in a row means all know it.
    It asks with a chat invocation, what the benchmark sends: a listing (/api/2.0/endpoints/, /v1/models) is
    a DRF view, and a worker that serves one loads DRF (about 23 MiB more per worker, measured), which the
    benchmark's load would not."""
    deadline, accepted = time.monotonic() + timeout, 0
    url = f"{server.base_url}/endpoints/{KINDS['chat']['endpoint']}/invocations"
    while accepted < 20 and time.monotonic() < deadline:
        if http_post(url, CHAT_BODY, headers=server.headers)[0] == 200:
            accepted += 1
        else:
            accepted = 0
            time.sleep(0.1)
    return accepted >= 20


def http_post(url: str, body: dict[str, Any], timeout: float = 10.0,
              headers: list[str] | None = None) -> tuple[int, bytes]:
    extra = dict(header.split(": ", 1) for header in headers or [])
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **extra})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except Exception as exc:
        return 0, str(exc).encode()


# -- the MLflow venv ---------------------------------------------------------------------------------
def mlflow_bin() -> Path:
    return MLFLOW_VENV / "bin" / "mlflow"


def mlflow_ready() -> bool:
    """The venv has the CLI and the packages its gateway runner needs (checked on disk: importing
    mlflow takes seconds)."""
    if not (mlflow_bin().exists() and (MLFLOW_VENV / "bin" / "python").exists()):
        return False
    site = list(MLFLOW_VENV.glob("lib/python3*/site-packages"))
    needed = (f"mlflow-{MLFLOW_VERSION}.dist-info", "psutil", "gunicorn", "uvicorn", "aiohttp", "fastapi")
    return bool(site) and all((site[0] / name).exists() for name in needed)


def install_mlflow(log_path: Path) -> subprocess.Popen[bytes] | None:
    """Create bench/.venv-mlflow in the background (it takes minutes); None when already there."""
    if mlflow_ready():
        return None
    log(f"installing mlflow[gateway]=={MLFLOW_VERSION} into {MLFLOW_VENV} (log: {log_path})")
    script = (f"set -e; [ -x '{MLFLOW_VENV}/bin/python' ] || '{sys.executable}' -m venv '{MLFLOW_VENV}'; "
              f"'{MLFLOW_VENV}/bin/pip' install -q 'mlflow[gateway]=={MLFLOW_VERSION}' psutil")
    handle = open(log_path, "wb")  # noqa: SIM115  (closed with the process)
    return subprocess.Popen(["bash", "-c", script], stdout=handle, stderr=subprocess.STDOUT)


# -- processes ---------------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    base_url: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    health_path: str = "/health"
    note: str = ""
    error: str | None = None
    headers: list[str] = field(default_factory=list)  # sent with every request (the gateway key)

    def tree(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_split(self) -> tuple[float, float]:
        """User and system CPU seconds of the whole process tree."""
        user = system = 0.0
        for proc in self.tree():
            try:
                times = proc.cpu_times()
                user += times.user
                system += times.system
            except psutil.NoSuchProcess:
                pass
        return user, system

    def cpu_seconds(self) -> float:
        return sum(self.cpu_split())

    def memory(self) -> dict[str, Any]:
        rss = pss = 0
        processes = []
        for proc in self.tree():
            try:
                info = proc.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", 0)
                processes.append({"pid": proc.pid, "cmd": " ".join(proc.cmdline()[:3])[:80],
                                  "rss_mib": round(info.rss / 2**20, 1)})
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        # The root is the CLI that stays in the foreground as the config watcher (start_server, mlflow).
        root_rss = processes[0]["rss_mib"] if processes else 0.0
        return {"rss_mib": round(rss / 2**20, 1), "pss_mib": round(pss / 2**20, 1),
                "rss_without_cli_mib": round(rss / 2**20 - root_rss, 1), "processes": processes}

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        tree = self.tree()  # start_server runs each worker in a process group of its own
        pgid = os.getpgid(self.process.pid)
        # SIGTERM to `mlflow gateway start` orphans gunicorn (reference §5): signal the whole group.
        for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
                time.sleep(0.3)
                if not any(p.is_running() for p in _group_members(pgid)):
                    break
            except subprocess.TimeoutExpired:
                continue
        _, alive = psutil.wait_procs(tree, timeout=3)
        for proc in alive:  # whatever the server left behind
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return members


def spawn(cmd: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    handle = open(log_path, "ab")  # noqa: SIM115
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(server: Server, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            return False
        if http_get(server.base_url + server.health_path) == 200:
            return True
        time.sleep(0.25)
    return False


def tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def write_config(workdir: Path, upstream_port: int, profile: Profile, *, features: bool = False,
                 name: str = "gateway.yaml") -> Path:
    base = f"http://127.0.0.1:{upstream_port}"

    def endpoint(name: str, endpoint_type: str, model: str, api_base: str) -> str:
        return (f"  - name: {name}\n    endpoint_type: {endpoint_type}\n    model:\n      provider: openai\n"
                f"      name: {model}\n      config:\n        openai_api_key: sk-bench-not-a-real-key\n"
                f"        openai_api_base: {api_base}\n    limit:\n      calls: 1000000\n"
                f"      renewal_period: minute\n" + (FEATURE_ENDPOINT if features else ""))

    text = ("# Written by bench/run.py: every endpoint on the fake upstream, each with a rate limit\n"
            "# high enough never to trigger (the targets are measured with limits on).\nendpoints:\n"
            + endpoint("chat", "llm/v1/chat", "gpt-4o-mini", f"{base}/v1")
            + endpoint("embeddings", "llm/v1/embeddings", "text-embedding-3-small", f"{base}/v1")
            + endpoint("chat-delay50", "llm/v1/chat", "gpt-4o-mini", f"{base}/delay/50/v1")
            + endpoint("chat-spread", "llm/v1/chat", "gpt-4o-mini",
                       f"{base}/spread/{profile.held_stream_seconds:g}/v1"))
    if features:
        text += FEATURE_CONSUMER
    # In a folder of its own, as a deployment keeps it: start_server watches the config file's folder, and
    # the logs and the SQLite database beside it would wake its watcher on every write.
    folder = workdir / "config"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def start_upstream(workdir: Path) -> Server:
    port = free_port()
    log_path = workdir / "upstream.log"
    server = Server("upstream", f"http://127.0.0.1:{port}", log_path=log_path)
    server.process = spawn([sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(port)],
                           dict(os.environ), log_path)
    if not wait_healthy(server, 15):
        raise RuntimeError(f"the fake upstream did not start:\n{tail(log_path)}")
    return server


def our_env(workdir: Path, name: str = "ours") -> dict[str, str]:
    env = dict(os.environ)
    env.update({"SECRET_KEY": secrets.token_urlsafe(50), "DEBUG": "false",
                "DATABASE_URL": f"sqlite:///{workdir / (name + '.sqlite3')}", "DJANGO_SETTINGS_MODULE":
                "gateway_project.settings", "PYTHONUNBUFFERED": "1"})
    env.pop("REDIS_URL", None)
    return env


def start_ours(workdir: Path, config: Path, extra_env: dict[str, str] | None = None, name: str = "ours",
               features: bool = False) -> Server:
    port = free_port()
    log_path = workdir / f"{name}.log"
    server = Server(name, f"http://127.0.0.1:{port}", log_path=log_path)
    env = {**our_env(workdir, name), **(extra_env or {})}
    if features:
        env["GATEWAY_AUTH"] = "keys"
    python = str(VENV_PYTHON)
    cmd = [python, "manage.py", "start_server", "--config-path", str(config), "--host", "127.0.0.1",
           "--port", str(port), "--workers", "2"]
    server.note = "manage.py start_server --workers 2"
    if extra_env:
        server.note += " with " + " ".join(f"{k}={v}" for k, v in extra_env.items())
    server.process = spawn(cmd, env, log_path)
    if not wait_healthy(server, 90):
        server.error = f"did not become healthy: {tail(log_path)}"
    elif features:
        made = subprocess.run([python, "manage.py", "create_key", "bench", "--name", "benchmark"], env=env, cwd=ROOT,
                              capture_output=True, text=True)
        if made.returncode != 0:
            server.error = f"create_key failed: {made.stderr[-300:]}"
        else:
            server.headers = [f"Authorization: Bearer {made.stdout.strip().splitlines()[-1]}"]
            if not wait_key_known(server):
                server.error = "the key made by create_key was not accepted by every worker within 20 s"
            server.note += " (every request-path feature on: a key on every request, consumer limits and budget, "
            server.note += "endpoint cost and budget, the usage ledger)"
    return server


def start_mlflow(workdir: Path, config: Path) -> Server:
    port = free_port()
    log_path = workdir / "mlflow.log"
    server = Server("mlflow", f"http://127.0.0.1:{port}", log_path=log_path,
                    note=f"mlflow gateway start --workers 2 (mlflow {MLFLOW_VERSION}, gunicorn + uvicorn workers)")
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    server.process = spawn([str(mlflow_bin()), "gateway", "start", "--config-path", str(config),
                            "--host", "127.0.0.1", "--port", str(port), "--workers", "2"], env, log_path)
    if not wait_healthy(server, 120):
        server.error = f"did not become healthy: {tail(log_path)}"
    return server


# -- phases ----------------------------------------------------------------------------------------
def target_url(system: Server, upstream: Server, kind: str, endpoint: str | None = None,
               upstream_prefix: str = "") -> str:
    spec = KINDS[kind]
    if system.name == "direct":
        return f"{upstream.base_url}{upstream_prefix}{spec['upstream']}"
    return f"{system.base_url}/endpoints/{endpoint or spec['endpoint']}/invocations"


def request_body(system: Server, kind: str) -> dict[str, Any]:
    body = dict(KINDS[kind]["body"])
    if system.name == "direct":
        body["model"] = "text-embedding-3-small" if kind == "embeddings" else "gpt-4o-mini"
    if kind == "stream" and system.name != "mlflow":
        body["stream_options"] = {"include_usage": True}  # the usage chunk loadgen counts (as OpenAI sends it)
    return body


def loadgen(url: str, body: dict[str, Any], kind: str, concurrency: int, *, requests: int = 0,
            duration: float = 0, warmup: int = 0, timeout: float = 30, ramp: float = 0,
            headers: list[str] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(BENCH / "loadgen.py"), "--url", url, "--body", json.dumps(body), "--kind", kind,
           "-c", str(concurrency), "--timeout", str(timeout), "--ramp", str(ramp), "--warmup", str(warmup)]
    for header in headers or []:
        cmd += ["--header", header]
    cmd += ["-n", str(requests), "--max-seconds", "120"] if requests else ["-d", str(duration)]
    bound = (duration or 120) + timeout + (60 if warmup else 0) + ramp + 30
    done = subprocess.run(cmd, capture_output=True, timeout=bound)
    if done.returncode != 0:
        return {"ok": 0, "errors": 1, "error_samples": {"loadgen failed": done.stderr.decode()[-500:]}}
    return dict(json.loads(done.stdout))


def measure(system: Server, upstream: Server, url: str, body: dict[str, Any], kind: str, concurrency: int,
            **kwargs: Any) -> dict[str, Any]:
    warmup = kwargs.pop("warmup", 0)
    if warmup:  # unmeasured, so that its CPU is not counted
        loadgen(url, body, kind, concurrency, requests=warmup, timeout=kwargs.get("timeout", 30),
                headers=system.headers)
    watched = system if system.name != "direct" else None
    user0, sys0 = watched.cpu_split() if watched else (0.0, 0.0)
    up0 = upstream.cpu_seconds()
    result = loadgen(url, body, kind, concurrency, headers=system.headers, **kwargs)
    user1, sys1 = watched.cpu_split() if watched else (0.0, 0.0)
    cpu = (user1 - user0) + (sys1 - sys0)
    result["upstream_cpu_s"] = round(upstream.cpu_seconds() - up0, 3)
    if watched:
        result["server_cpu_s"] = round(cpu, 3)
        result["server_user_s"], result["server_sys_s"] = round(user1 - user0, 3), round(sys1 - sys0, 3)
        requests = result.get("ok", 0) + result.get("errors", 0)
        result["server_cpu_ms_per_req"] = round(cpu * 1000 / requests, 3) if requests else None
    return result


@dataclass
class Run:
    profile: Profile
    results: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def put(self, system: str, phase: str, value: Any) -> None:
        self.results.setdefault(system, {}).setdefault(phase, []).append(value)


def check(run: Run, system: Server, phase: str, result: dict[str, Any]) -> None:
    ok, errors = result.get("ok", 0), result.get("errors", 0)
    line = (f"{system.name:6} {phase:22} ok={ok:<6} err={errors:<4} rps={result.get('rps')} "
            f"p50={result.get('latency_ms', {}).get('p50')}ms p99={result.get('latency_ms', {}).get('p99')}ms")
    if "server_cpu_ms_per_req" in result:
        line += f" cpu/req={result['server_cpu_ms_per_req']}ms"
    log(line)
    if errors:
        log(f"       errors: {result.get('error_samples')}")
    if ok == 0 or errors:
        run.failures.append(f"{system.name} {phase}: ok={ok} errors={errors} {result.get('error_samples')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a short check that the benchmark works (< 60 s)")
    parser.add_argument("--systems", default="direct,ours,mlflow",
                        help="comma-separated subset of " + ",".join(SYSTEMS))
    parser.add_argument("--rounds", type=int, help="override the number of alternating rounds")
    parser.add_argument("--skip-held", action="store_true", help="skip the held-concurrency tests")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, sqlite)")
    parser.add_argument("--phases", default="load,held",
                        help="comma-separated: load (latency, CPU, req/s), held (50 ms upstream, spread streams)")
    parser.add_argument("--ours-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for our gateway only (experiments, e.g. MALLOC_ARENA_MAX=2)")
    parser.add_argument("--features", choices=("all", "none"), default="all",
                        help="all (default): our gateway runs with every request-path feature on (a gateway key on "
                             "every request, consumer limits and budget, costs, the usage ledger); none: bare")
    args = parser.parse_args()
    profile = SMOKE if args.smoke else FULL
    if args.rounds:
        profile.rounds = args.rounds
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    extra_env = dict(item.split("=", 1) for item in args.ours_env)
    unknown = set(wanted) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    fd_limit = raise_fd_limit()
    # SIGTERM (timeout, kill) ends the run through its `finally`, which stops the servers it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    started_at = dt.datetime.now(dt.UTC)
    run = Run(profile)
    code_at_start = code_state()
    log(f"{profile.name} run; workdir {workdir}; fd limit {fd_limit}")

    installer = None
    if "mlflow" in wanted:
        if args.smoke and not mlflow_ready():
            log("smoke: bench/.venv-mlflow is not installed yet; MLflow is skipped (run the full benchmark once)")
            wanted.remove("mlflow")
        else:
            installer = install_mlflow(workdir / "mlflow-install.log")

    servers: dict[str, Server] = {}
    upstream = None
    try:
        upstream = start_upstream(workdir)
        upstream_port = int(upstream.base_url.rsplit(":", 1)[1])
        config = write_config(workdir, upstream_port, profile)
        features = args.features == "all"
        ours_config = write_config(workdir, upstream_port, profile, features=features, name="ours.yaml")
        servers["direct"] = Server("direct", upstream.base_url)
        if "ours" in wanted:
            log("starting our gateway")
            servers["ours"] = start_ours(workdir, ours_config, extra_env, features=features)
            log(f"ours: {servers['ours'].note}")
        if "ours-noledger" in wanted:  # the same, without the usage ledger: what ingesting the records costs
            servers["ours-noledger"] = start_ours(workdir, ours_config, {**extra_env, "GATEWAY_USAGE_LEDGER": "false"},
                                                  name="ours-noledger", features=features)
            log(f"ours-noledger: {servers['ours-noledger'].note}")
        if "mlflow" in wanted:
            if installer is not None:
                log("waiting for the MLflow venv install")
                if installer.wait(1800) != 0 or not mlflow_ready():
                    raise RuntimeError(f"installing MLflow failed:\n{tail(workdir / 'mlflow-install.log')}")
            log("starting MLflow's gateway")
            servers["mlflow"] = start_mlflow(workdir, config)
        systems = [servers[name] for name in SYSTEMS if name in servers and name in wanted]
        for server in systems:
            if server.error:
                run.failures.append(f"{server.name} failed to start: {server.error}")
                log(f"{server.name} FAILED TO START: {server.error}")
        systems = [s for s in systems if not s.error]

        # Functional check and warm-up on every kind.
        for server in systems:
            for kind in KINDS:
                status, body = http_post(target_url(server, upstream, kind), request_body(server, kind),
                                         headers=server.headers)
                if status != 200:
                    run.failures.append(f"{server.name} {kind}: first request answered {status}: {body[:300]!r}")
                    log(f"{server.name} {kind}: HTTP {status} {body[:300]!r}")
            if server.name != "direct":
                for kind in KINDS:
                    loadgen(target_url(server, upstream, kind), request_body(server, kind), kind, 4,
                            requests=profile.warmup_requests, headers=server.headers)
                time.sleep(1)
                run.put(server.name, "memory_after_warmup", server.memory())

        # Throughput and latency, alternating the order of systems every round.
        for round_index in range(profile.rounds if "load" in phases else 0):
            for kind in KINDS:
                for concurrency in profile.concurrencies:
                    order = systems if round_index % 2 == 0 else [systems[0], *reversed(systems[1:])]
                    for server in order:
                        phase = f"{kind}_c{concurrency}"
                        url, body = target_url(server, upstream, kind), request_body(server, kind)
                        if concurrency == 1:
                            result = measure(server, upstream, url, body, kind, 1, requests=profile.c1_requests,
                                             warmup=profile.c1_warmup)
                        else:
                            result = measure(server, upstream, url, body, kind, concurrency,
                                             duration=profile.load_seconds,
                                             warmup=concurrency * 4 if profile.phase_warmup else 0)
                        result["round"] = round_index
                        run.put(server.name, phase, result)
                        check(run, server, f"{phase} r{round_index}", result)

        for server in systems:
            if server.name != "direct":
                run.put(server.name, "memory_after_load", server.memory())

        if not args.skip_held and "held" in phases:
            # 50 ms upstream at concurrency 32, once per round (order alternating, as above); the
            # reported rate is the mean over rounds.
            for round_index in range(profile.rounds):
                order = systems if round_index % 2 == 0 else [systems[0], *reversed(systems[1:])]
                for server in order:
                    url = target_url(server, upstream, "chat", "chat-delay50", "/delay/50")
                    result = measure(server, upstream, url, request_body(server, "chat"), "chat", 32,
                                     duration=profile.held_seconds, warmup=64 if profile.phase_warmup else 0)
                    result["pct_of_ideal"] = round(100 * (result.get("rps") or 0) / IDEAL_HELD_RPS, 1)
                    result["round"] = round_index
                    run.put(server.name, "held_delay50_c32", result)
                    check(run, server, f"held_delay50_c32 r{round_index}", result)
            for server in systems:  # N concurrent streams, each spread over held_stream_seconds
                url = target_url(server, upstream, "stream", "chat-spread", f"/spread/{profile.held_stream_seconds:g}")
                result = measure(server, upstream, url, request_body(server, "stream"), "stream",
                                 profile.held_streams, requests=profile.held_streams,
                                 timeout=profile.held_stream_timeout, ramp=1.0 if not args.smoke else 0.2)
                if server.name != "direct":
                    result["memory_after"] = server.memory()
                run.put(server.name, "held_streams", result)
                check(run, server, f"held_streams_{profile.held_streams}", result)
            for server in systems:
                if server.name != "direct":
                    run.put(server.name, "memory_after_held", server.memory())
    except Exception as exc:
        run.failures.append(f"benchmark aborted: {type(exc).__name__}: {exc}")
        log(f"ABORTED: {exc}")
    finally:
        for server in servers.values():
            server.stop()
        if upstream is not None:
            upstream.stop()
        if installer is not None and installer.poll() is None:
            installer.terminate()

    finished_at = dt.datetime.now(dt.UTC)
    report = summarize(run, servers)
    document = {
        "profile": profile.name,
        "command": " ".join(["python", "bench/run.py", *sys.argv[1:]]),
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": finished_at.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "code": code_at_start,
        "systems": {name: {"note": s.note, "error": s.error} for name, s in servers.items()},
        "ours_extra_env": extra_env, "phases": sorted(phases),
        "profile_settings": profile.__dict__,
        "summary": report["summary"], "targets": report["targets"],
        "raw": run.results, "failures": run.failures,
        "logs": {name: tail(s.log_path, 30) for name, s in servers.items() if s.log_path},
    }
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ") + ("-smoke" if args.smoke else "")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(document, indent=2, default=str))
    markdown = render_markdown(document)
    (RESULTS / f"{stamp}.md").write_text(markdown)
    print(markdown)
    log(f"results: {RESULTS / (stamp + '.json')}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    if run.failures:
        log(f"{len(run.failures)} failure(s):")
        for failure in run.failures:
            log(f"  - {failure[:400]}")
    # The smoke check fails on any failure; the full run fails only when nothing could be measured.
    if args.smoke:
        return 1 if run.failures else 0
    return 0 if run.results.get("ours") else 1


# -- summary -----------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "load_average_at_end": os.getloadavg(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}


def code_state() -> dict[str, Any]:
    """Which code was measured: the tree changes under the benchmark while others work."""
    import hashlib

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    digest = hashlib.sha256()
    newest = 0.0
    for path in sorted(ROOT.glob("*/**/*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith((".venv", "bench/", "tests/")) or "/." in relative:
            continue
        digest.update(relative.encode() + b"\0" + path.read_bytes())
        newest = max(newest, path.stat().st_mtime)
    return {"git_head": git("rev-parse", "--short", "HEAD"),
            "uncommitted_files": len(git("status", "--porcelain").splitlines()),
            "source_sha256": digest.hexdigest()[:16],
            "newest_source_mtime": dt.datetime.fromtimestamp(newest, dt.UTC).isoformat(timespec="seconds")}


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 3) if present else None


def summarize(run: Run, servers: dict[str, Server]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for system in sorted(run.results, key=lambda name: name != "direct"):  # direct first: others refer to it
        phases = run.results[system]
        out: dict[str, Any] = {}
        for phase, results in phases.items():
            if phase.startswith("memory"):
                out[phase] = results[-1]["rss_mib"]
                out[phase.replace("memory", "pss")] = results[-1]["pss_mib"]
                out[phase.replace("memory", "rss_without_cli")] = results[-1].get("rss_without_cli_mib")
                continue
            out[phase] = {
                "rps": _mean([r.get("rps") for r in results]),
                "p50_ms": _mean([r.get("latency_ms", {}).get("p50") for r in results]),
                "p99_ms": _mean([r.get("latency_ms", {}).get("p99") for r in results]),
                "ttfb_p50_ms": _mean([r.get("ttfb_ms", {}).get("p50") for r in results]),
                "ttfb_p99_ms": _mean([r.get("ttfb_ms", {}).get("p99") for r in results]),
                "ok": sum(r.get("ok", 0) for r in results), "errors": sum(r.get("errors", 0) for r in results),
                "server_cpu_s": round(sum(r.get("server_cpu_s", 0) for r in results), 3),
                "server_sys_s": round(sum(r.get("server_sys_s", 0) for r in results), 3),
                "upstream_cpu_s": round(sum(r.get("upstream_cpu_s", 0) for r in results), 3),
                "loadgen_cpu_s": round(sum(r.get("loadgen_cpu_s", 0) for r in results), 3),
                "wall_s": round(sum(r.get("wall_s", 0) for r in results), 3),
            }
            if phase == "held_delay50_c32":
                out[phase]["pct_of_ideal"] = _mean([r.get("pct_of_ideal") for r in results])
                window = _mean([r.get("rps_window") for r in results])
                out[phase]["pct_of_ideal_window"] = None if window is None else round(100 * window / IDEAL_HELD_RPS, 1)
                out[phase]["mean_ms"] = _mean([r.get("latency_ms", {}).get("mean") for r in results])
        direct_held = (summary.get("direct") or {}).get("held_delay50_c32")
        if direct_held and out.get("held_delay50_c32") and direct_held.get("rps"):
            out["held_delay50_c32"]["pct_of_direct"] = round(
                100 * (out["held_delay50_c32"]["rps"] or 0) / direct_held["rps"], 1)
        for kind in KINDS:
            phases_of_kind = [v for k, v in out.items() if k.startswith(f"{kind}_c")]
            requests = sum(p["ok"] + p["errors"] for p in phases_of_kind)
            cpu = sum(p["server_cpu_s"] for p in phases_of_kind)
            if requests and system != "direct":
                out[f"{kind}_cpu_ms_per_req"] = round(cpu * 1000 / requests, 3)
                out[f"{kind}_sys_cpu_ms_per_req"] = round(
                    sum(p["server_sys_s"] for p in phases_of_kind) * 1000 / requests, 3)
        summary[system] = out
    direct = summary.get("direct", {})
    for system in ("ours", "ours-noledger", "mlflow"):
        data = summary.get(system)
        if not data:
            continue
        for kind in KINDS:
            mine, ref = data.get(f"{kind}_c1"), direct.get(f"{kind}_c1")
            if mine and ref:
                for key in ("p50_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms"):
                    if mine.get(key) is not None and ref.get(key) is not None:
                        data.setdefault(f"{kind}_added", {})[key] = round(mine[key] - ref[key], 3)
    return {"summary": summary, "targets": evaluate_targets(summary)}


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return round(ours / theirs, 3)


def evaluate_targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    ours, mlflow = summary.get("ours", {}), summary.get("mlflow", {})
    targets: list[dict[str, Any]] = []

    def relative(label: str, a: float | None, b: float | None, op: str, bound: float) -> None:
        ratio = _ratio(a, b)
        passed = None if ratio is None else (ratio <= bound if op == "<=" else ratio >= bound)
        if ratio is not None and b is not None and b < 0 and op == "<=":
            passed = a is not None and a <= b  # a negative MLflow overhead: ours must be no larger
        targets.append({"target": label, "ours": a, "mlflow": b, "ratio": ratio, "bound": f"{op} {bound}x MLflow",
                        "pass": passed})

    for kind in KINDS:
        relative(f"{kind}: server CPU per request (ms)", ours.get(f"{kind}_cpu_ms_per_req"),
                 mlflow.get(f"{kind}_cpu_ms_per_req"), "<=", 0.7)
    for kind in KINDS:
        relative(f"{kind}: added latency p50 at c=1 (ms)", ours.get(f"{kind}_added", {}).get("p50_ms"),
                 mlflow.get(f"{kind}_added", {}).get("p50_ms"), "<=", 0.7)
    relative("stream: added TTFB p50 at c=1 (ms)", ours.get("stream_added", {}).get("ttfb_p50_ms"),
             mlflow.get("stream_added", {}).get("ttfb_p50_ms"), "<=", 0.7)
    for kind in KINDS:
        relative(f"{kind}: req/s at c=32", (ours.get(f"{kind}_c32") or {}).get("rps"),
                 (mlflow.get(f"{kind}_c32") or {}).get("rps"), ">=", 1.4)
    held = ours.get("held_delay50_c32")
    if held:
        targets.append({"target": "50 ms upstream, c=32: % of ideal 640 req/s", "ours": held.get("pct_of_ideal"),
                        "mlflow": (mlflow.get("held_delay50_c32") or {}).get("pct_of_ideal"), "ratio": None,
                        "bound": ">= 95%", "pass": (held.get("pct_of_ideal") or 0) >= 95})
    streams = ours.get("held_streams")
    if streams:
        theirs = mlflow.get("held_streams") or {}
        targets.append({"target": "concurrent spread streams: errors", "ours": streams["errors"],
                        "mlflow": theirs.get("errors"), "ratio": None, "bound": "0 errors",
                        "pass": streams["errors"] == 0 and streams["ok"] > 0})
    bare = summary.get("ours-noledger", {})
    if bare:
        with_ledger, without = (ours.get("chat_c32") or {}).get("rps"), (bare.get("chat_c32") or {}).get("rps")
        ratio = _ratio(with_ledger, without)
        targets.append({"target": "usage ledger: chat req/s at c=32, with it / without it", "ours": with_ledger,
                        "mlflow": without, "ratio": ratio, "bound": ">= 0.9 (ledger costs at most 10 %)",
                        "pass": None if ratio is None else ratio >= 0.9})
    memory = ours.get("memory_after_load")
    if memory is not None:
        peak = max(memory, ours.get("memory_after_warmup") or 0, ours.get("memory_after_held") or 0)
        targets.append({"target": "RSS of all server processes (MiB, max of warm-up/load/held)", "ours": peak,
                        "mlflow": max(mlflow.get("memory_after_load") or 0, mlflow.get("memory_after_warmup") or 0,
                                      mlflow.get("memory_after_held") or 0) or None,
                        "ratio": None, "bound": "< 250 MiB", "pass": peak < 250})
    return targets


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "PASS" if value else "FAIL"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(document: dict[str, Any]) -> str:
    summary, machine = document["summary"], document["machine"]
    d, o, m = (summary.get(k, {}) for k in ("direct", "ours", "mlflow"))
    lines = [f"## Results ({document['profile']} run, {document['started_at']})", "",
             f"Command: `{document['command']}`  ",
             f"Machine: {machine['nproc']} CPUs, {machine['cpu_model']}, {machine['memory_gib']} GiB, "
             f"Python {machine['python']}, load average at end "
             f"{tuple(round(x, 2) for x in machine['load_average_at_end'])}  ",
             f"Ours: {document['systems'].get('ours', {}).get('note', 'not run')}  ",
             f"MLflow: {document['systems'].get('mlflow', {}).get('note', 'not run')}", "",
             "| metric | direct | ours | MLflow | ours/MLflow |", "|---|---:|---:|---:|---:|"]

    def row(label: str, dv: Any, ov: Any, mv: Any, ratio: bool = True) -> None:
        r = _ratio(ov, mv) if ratio and isinstance(ov, (int, float)) and isinstance(mv, (int, float)) else None
        lines.append(f"| {label} | {_fmt(dv)} | {_fmt(ov)} | {_fmt(mv)} | {_fmt(r)} |")

    def get(data: dict[str, Any], phase: str, key: str) -> Any:
        return (data.get(phase) or {}).get(key)

    for kind in KINDS:
        row(f"{kind}: p50 at c=1 (ms)", get(d, f"{kind}_c1", "p50_ms"), get(o, f"{kind}_c1", "p50_ms"),
            get(m, f"{kind}_c1", "p50_ms"))
        row(f"{kind}: **added** p50 at c=1 (ms)", None, get(o, f"{kind}_added", "p50_ms"),
            get(m, f"{kind}_added", "p50_ms"))
        row(f"{kind}: **added** p99 at c=1 (ms)", None, get(o, f"{kind}_added", "p99_ms"),
            get(m, f"{kind}_added", "p99_ms"))
        if kind == "stream":
            row("stream: **added** TTFB p50 at c=1 (ms)", None, get(o, "stream_added", "ttfb_p50_ms"),
                get(m, "stream_added", "ttfb_p50_ms"))
            row("stream: **added** TTFB p99 at c=1 (ms)", None, get(o, "stream_added", "ttfb_p99_ms"),
                get(m, "stream_added", "ttfb_p99_ms"))
        row(f"{kind}: server CPU per request (ms)", None, o.get(f"{kind}_cpu_ms_per_req"),
            m.get(f"{kind}_cpu_ms_per_req"))
        row(f"{kind}: of which kernel (system) CPU (ms)", None, o.get(f"{kind}_sys_cpu_ms_per_req"),
            m.get(f"{kind}_sys_cpu_ms_per_req"))
        for c in (8, 32):
            if f"{kind}_c{c}" in d or f"{kind}_c{c}" in o:
                row(f"{kind}: req/s at c={c}", get(d, f"{kind}_c{c}", "rps"), get(o, f"{kind}_c{c}", "rps"),
                    get(m, f"{kind}_c{c}", "rps"))
                row(f"{kind}: p99 at c={c} (ms)", get(d, f"{kind}_c{c}", "p99_ms"), get(o, f"{kind}_c{c}", "p99_ms"),
                    get(m, f"{kind}_c{c}", "p99_ms"))
    row("RSS after warm-up (MiB)", None, o.get("memory_after_warmup"), m.get("memory_after_warmup"))
    row("RSS after load (MiB)", None, o.get("memory_after_load"), m.get("memory_after_load"))
    row("RSS after held tests (MiB)", None, o.get("memory_after_held"), m.get("memory_after_held"))
    row("PSS after load (MiB)", None, o.get("pss_after_load"), m.get("pss_after_load"))
    row("RSS after load without the CLI/watcher process (MiB)", None, o.get("rss_without_cli_after_load"),
        m.get("rss_without_cli_after_load"))
    if "held_delay50_c32" in o or "held_delay50_c32" in d:
        row("50 ms upstream, c=32: req/s", get(d, "held_delay50_c32", "rps"), get(o, "held_delay50_c32", "rps"),
            get(m, "held_delay50_c32", "rps"))
        row("50 ms upstream, c=32: % of ideal 640", get(d, "held_delay50_c32", "pct_of_ideal"),
            get(o, "held_delay50_c32", "pct_of_ideal"), get(m, "held_delay50_c32", "pct_of_ideal"))
        row("50 ms upstream, c=32: % of ideal, answers counted in the window", get(d, "held_delay50_c32",
            "pct_of_ideal_window"), get(o, "held_delay50_c32", "pct_of_ideal_window"),
            get(m, "held_delay50_c32", "pct_of_ideal_window"))
        row("50 ms upstream, c=32: mean latency (ms)", get(d, "held_delay50_c32", "mean_ms"),
            get(o, "held_delay50_c32", "mean_ms"), get(m, "held_delay50_c32", "mean_ms"))
        row("50 ms upstream, c=32: % of direct", get(d, "held_delay50_c32", "pct_of_direct"),
            get(o, "held_delay50_c32", "pct_of_direct"), get(m, "held_delay50_c32", "pct_of_direct"))
        row("50 ms upstream, c=32: p99 (ms)", get(d, "held_delay50_c32", "p99_ms"),
            get(o, "held_delay50_c32", "p99_ms"), get(m, "held_delay50_c32", "p99_ms"))
        n = document["profile_settings"]["held_streams"]
        secs = document["profile_settings"]["held_stream_seconds"]
        row(f"{n} streams of {secs:g} s: completed", get(d, "held_streams", "ok"), get(o, "held_streams", "ok"),
            get(m, "held_streams", "ok"), ratio=False)
        row(f"{n} streams of {secs:g} s: errors", get(d, "held_streams", "errors"), get(o, "held_streams", "errors"),
            get(m, "held_streams", "errors"), ratio=False)
        row(f"{n} streams of {secs:g} s: TTFB p99 (ms)", get(d, "held_streams", "ttfb_p99_ms"),
            get(o, "held_streams", "ttfb_p99_ms"), get(m, "held_streams", "ttfb_p99_ms"), ratio=False)
        row(f"{n} streams of {secs:g} s: wall time (s)", get(d, "held_streams", "wall_s"),
            get(o, "held_streams", "wall_s"), get(m, "held_streams", "wall_s"), ratio=False)
    lines += ["", "| target | ours | MLflow | ratio | bound | result |", "|---|---:|---:|---:|---|---|"]
    for t in document["targets"]:
        lines.append(f"| {t['target']} | {_fmt(t['ours'])} | {_fmt(t['mlflow'])} | {_fmt(t['ratio'])} | "
                     f"{t['bound']} | {_fmt(t['pass']) if t['pass'] is not None else 'n/a'} |")
    if document["failures"]:
        lines += ["", "Failures and errors:", ""] + [f"- {f[:500]}" for f in document["failures"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
