"""What metrics, the access log and tracing cost per request, in one run.

    python bench/observability_cost.py                 # about 2 minutes
    python bench/observability_cost.py --requests 500  # a quick check

First the hook alone: what invoke.finish adds per request (observability.reports hands the usage records
to observability.metrics.record_batch and observability.accesslog.log_batch, a batch at a time: here
batches of 1 and of 50), in a fresh process per mode, in microseconds per record (the best of 5 slices,
beside a yardstick: an empty function call through a lambda, to read the numbers by on a loaded machine).
Then whole requests: the fake upstream (bench/fake_upstream.py) and
four `start_server --workers 2` side by side on the same YAML (bench/run.py's helpers), driven with
non-stream chat at concurrency 8 by bench/loadgen.py, system after system in alternating rounds so
that machine noise hits each of them:

    off          GATEWAY_METRICS=false GATEWAY_ACCESS_LOG=false
    metrics      metrics on (the default), no access log
    metrics+log  metrics and the access log (the defaults; the log goes to the server's log file)
    +tracing     the defaults and OpenTelemetry spans to a local OTLP/HTTP receiver in this process

Server CPU is the user+system CPU of each server's process tree (psutil) over the measured requests.
The table (median over the rounds) is printed and written to bench/results/observability-<time>.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (
    RESULTS,
    ROOT,
    VENV_PYTHON,
    Profile,
    Server,
    log,
    measure,
    raise_fd_limit,
    request_body,
    start_ours,
    start_upstream,
    target_url,
    write_config,
)

VARIANTS: dict[str, dict[str, str]] = {
    "off": {"GATEWAY_METRICS": "false", "GATEWAY_ACCESS_LOG": "false"},
    "metrics": {"GATEWAY_ACCESS_LOG": "false"},
    "metrics+log": {},
    "+tracing": {},  # OTEL_EXPORTER_OTLP_ENDPOINT added once the receiver listens
}
PROFILE = Profile("observability", c1_requests=0, c1_warmup=0, load_seconds=0, concurrencies=(8,), rounds=3,
                  held_seconds=0, held_stream_seconds=1, held_streams=0, held_stream_timeout=10, warmup_requests=0,
                  phase_warmup=True)

HOOK = """
import os, sys, time, logging, tempfile
if sys.argv[1] == "multiprocess":
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="hook-metrics-")
os.environ.setdefault("SECRET_KEY", "x" * 50)
os.environ["DJANGO_SETTINGS_MODULE"] = "gateway_project.settings"
import django
django.setup()
from observability import accesslog, metrics
from usage.ledger import Entry
entry = Entry(time.time(), "0123456789abcdef01234567", "endpoints", "team-a", "", "chat", "", "chat", "openai",
              "gpt-4o-mini", False, 200, "", "", 12, 28, 40, 3.2, None, 11000000, 0, 0)
access = logging.getLogger("gateway.access")
access.handlers[:] = [accesslog.HoldingStreamHandler(open(os.devnull, "w"))]
access.propagate = False
n = int(sys.argv[2])
one = [(entry, "chat", 0.0021)]
batch = one * 50
def run(label, call, per=1):
    for _ in range(1000):
        call()
    best = float("inf")
    for _ in range(5):  # the best of 5 slices: the machine's noise only ever adds
        start = time.perf_counter()
        for _ in range(n // 5):
            call()
        best = min(best, (time.perf_counter() - start) / (n // 5) / per)
    print(f"{label}\\t{best * 1e6:.2f}")
def nothing():
    pass
run("(yardstick: an empty function call)", lambda: nothing())
run("metrics.record_batch (batch of 1)", lambda: metrics.record_batch(one))
run("metrics.record_batch (per record, batch of 50)", lambda: metrics.record_batch(batch), 50)
access.setLevel(logging.WARNING)
run("accesslog.log_batch (logger off)", lambda: accesslog.log_batch(one))
access.setLevel(logging.INFO)
run("accesslog.log_batch (text, batch of 1)", lambda: accesslog.log_batch(one))
run("accesslog.log_batch (text, per record, batch of 50)", lambda: accesslog.log_batch(batch), 50)
from django.conf import settings
settings.GATEWAY_LOG_FORMAT = "json"
run("accesslog.log_batch (json, per record, batch of 50)", lambda: accesslog.log_batch(batch), 50)
"""


def hook_cost(calls: int) -> list[tuple[str, str, float]]:
    """(mode, what, µs per call) for the hook, in a fresh process per mode."""
    out = []
    for mode in ("plain", "multiprocess"):
        done = subprocess.run([str(VENV_PYTHON), "-c", HOOK, mode, str(calls)], cwd=ROOT, capture_output=True,
                              text=True, check=True)
        for line in done.stdout.strip().splitlines():
            what, micros = line.split("\t")
            out.append((mode, what, float(micros)))
    return out


class Receiver:
    """A local OTLP/HTTP endpoint that accepts every export (200) and counts them."""

    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(size)
                receiver.exports += 1
                receiver.bytes += size
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="measured requests per system and round")
    parser.add_argument("--rounds", type=int, default=PROFILE.rounds)
    parser.add_argument("--hook-calls", type=int, default=200_000)
    args = parser.parse_args()
    raise_fd_limit()
    hook = hook_cost(args.hook_calls)
    for mode, what, micros in hook:
        log(f"hook ({mode}) {what}: {micros:.2f} µs/call")

    workdir = Path(tempfile.mkdtemp(prefix="bench-observability-"))
    receiver = Receiver()
    servers: dict[str, Server] = {}
    upstream = start_upstream(workdir)
    try:
        config = write_config(workdir, int(upstream.base_url.rsplit(":", 1)[1]), PROFILE)
        for name, env in VARIANTS.items():
            if name == "+tracing":
                env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "NO_PROXY": "127.0.0.1"}
            servers[name] = start_ours(workdir, config, env, name=name.replace("+", "plus-"))
            if servers[name].error:
                raise RuntimeError(f"{name}: {servers[name].error}")
            servers[name].name = "ours"  # target_url and request_body treat it as our gateway
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        for round_ in range(args.rounds):
            for name, server in servers.items():
                result = measure(server, upstream, target_url(server, upstream, "chat"),
                                 request_body(server, "chat"), "chat", 8, requests=args.requests,
                                 warmup=200)
                if result.get("errors") or not result.get("ok"):
                    raise RuntimeError(f"{name}: {result.get('error_samples')}")
                results[name].append(result)
                log(f"round {round_ + 1} {name:12} rps={result['rps']} cpu/req={result['server_cpu_ms_per_req']} ms")
        time.sleep(1)  # the last batch of spans
        table = render(results, hook, args, receiver)
        print(table)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"observability-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}.md"
        path.write_text(table)
        log(f"written to {path}")
        return 0
    finally:
        for server in servers.values():
            server.stop()
        upstream.stop()


def render(results: dict[str, list[dict[str, Any]]], hook: list[tuple[str, str, float]], args: argparse.Namespace,
           receiver: Receiver) -> str:
    base = statistics.median(r["server_cpu_ms_per_req"] for r in results["off"])
    lines = [f"Chat (non-stream), concurrency 8, {args.requests} requests per system and round, {args.rounds} rounds "
             f"(medians); {os.cpu_count()} cores.", "",
             "| system | server CPU ms/req | vs off | req/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        cpu = statistics.median(r["server_cpu_ms_per_req"] for r in rows)
        lines.append(f"| {name} | {cpu:.3f} | {cpu - base:+.3f} | {statistics.median(r['rps'] for r in rows):.0f} | "
                     f"{statistics.median(r['latency_ms']['p50'] for r in rows):.2f} | "
                     f"{statistics.median(r['latency_ms']['p99'] for r in rows):.2f} |")
    lines += ["", f"The OTLP receiver got {receiver.exports} exports ({receiver.bytes / 1e6:.1f} MB).", "",
              f"The hook alone ({args.hook_calls} calls, µs per call):", "", "| mode | call | µs |", "|---|---|---|"]
    lines += [f"| {mode} | {what} | {micros:.2f} |" for mode, what, micros in hook]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
