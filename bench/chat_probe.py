"""A quick side-by-side of chat CPU per request (about 5 minutes), for trying a change before a full run.

    python bench/chat_probe.py all bare mlflow direct
    python bench/chat_probe.py "before+all=ROOT=/tmp/wt-before" all mlflow     # another checkout, side by side
    python bench/chat_probe.py --held direct all                                # the 50 ms upstream phase only

Each system gets non-stream chat at c=1 (--n requests), then c=8 and c=32 (--secs each), in --rounds
rounds whose order alternates; server CPU per request (psutil, the server's whole process tree) is summed
over the three, as run.py sums its chat phases. With --held, each gets the 50 ms upstream at c=32 for 8 s
instead, and its rate is printed against the ideal 640 req/s. It uses run.py's upstream, servers and
load generator.

A system is `mlflow`, `direct`, `bare` (our gateway on the bare config), `all` (every request-path feature,
as run.py's default), or `NAME=ENV=V;ENV=V` (ours with that environment: bare, or every feature when NAME
ends in `+all`); `ROOT=<dir>` in that environment runs the gateway from another checkout (a `git worktree`
with a `.venv` link), to compare two versions of the code in one run on a noisy machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # (re-execs under .venv when needed)


def start(name: str, work: Path, upstream: bench.Server, bare: Path, every: Path) -> bench.Server:
    if name == "mlflow":
        return bench.start_mlflow(work, bare)
    if name == "direct":
        return bench.Server("direct", upstream.base_url)
    label, _, assignments = name.partition("=")
    features = label == "all" or label.endswith("+all")
    env = dict(item.split("=", 1) for item in assignments.split(";") if item)
    root = env.pop("ROOT", None)
    spawn = bench.spawn
    if root:  # the other checkout's manage.py, with its own code
        bench.spawn = lambda cmd, environ, log, cwd=bench.ROOT: spawn(cmd, environ, log, Path(root))  # type: ignore[assignment]
    try:
        return bench.start_ours(work, every if features else bare, env, name=label.replace("+", "_"),
                                features=features)
    finally:
        bench.spawn = spawn


def chat_round(server: bench.Server, upstream: bench.Server, args: argparse.Namespace) -> tuple[float, Any]:
    """(server CPU ms per request over c=1, 8 and 32; p50 at c=1)."""
    url, body = bench.target_url(server, upstream, "chat"), bench.request_body(server, "chat")
    cpu = requests = 0.0
    p50 = None
    for concurrency in (1, 8, 32):
        if concurrency == 1:
            result = bench.measure(server, upstream, url, body, "chat", 1, requests=args.n, warmup=100)
            p50 = result.get("latency_ms", {}).get("p50")
        else:
            result = bench.measure(server, upstream, url, body, "chat", concurrency, duration=args.secs, warmup=50)
        if result.get("errors"):
            print(f"{server.name}: errors {result.get('error_samples')}", flush=True)
        cpu += result.get("server_cpu_s", 0)
        requests += result.get("ok", 0) + result.get("errors", 0)
    return (cpu * 1000 / requests if requests else 0.0), p50


def held_round(server: bench.Server, upstream: bench.Server) -> float:
    url = bench.target_url(server, upstream, "chat", "chat-delay50", "/delay/50")
    result = bench.measure(server, upstream, url, bench.request_body(server, "chat"), "chat", 32, duration=8,
                           warmup=64)
    rps = float(result.get("rps") or 0)
    latency = result.get("latency_ms", {})
    print(f"  {server.name}: {rps:.1f} req/s ({100 * rps / bench.IDEAL_HELD_RPS:.2f} % of ideal), mean "
          f"{latency.get('mean')} ms, p99 {latency.get('p99')} ms, server CPU {result.get('server_cpu_ms_per_req')} ms "
          "per request", flush=True)
    return rps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=800, help="requests at c=1")
    parser.add_argument("--secs", type=float, default=4, help="seconds at c=8 and at c=32")
    parser.add_argument("--held", action="store_true", help="the 50 ms upstream phase at c=32 instead")
    parser.add_argument("systems", nargs="+")
    args = parser.parse_args()
    bench.raise_fd_limit()
    work = Path(tempfile.mkdtemp(prefix="chat-probe-"))
    upstream = bench.start_upstream(work)
    port = int(upstream.base_url.rsplit(":", 1)[1])
    bare = bench.write_config(work, port, bench.FULL, name="bare.yaml")
    every = bench.write_config(work, port, bench.FULL, features=True, name="all.yaml")
    servers: dict[str, bench.Server] = {}
    try:
        for name in args.systems:
            servers[name] = start(name, work, upstream, bare, every)
            if servers[name].error:
                print(f"{name}: {servers[name].error}", file=sys.stderr)
                return 1
        results: dict[str, list[float]] = {name: [] for name in servers}
        latencies: dict[str, list[float]] = {name: [] for name in servers}
        for round_index in range(args.rounds):
            print(f"round {round_index}", flush=True)
            for name in (list(servers) if round_index % 2 == 0 else list(reversed(servers))):
                if args.held:
                    results[name].append(held_round(servers[name], upstream))
                    continue
                if name == "direct":
                    _, p50 = chat_round(servers[name], upstream, args)
                    latencies[name].append(p50 or 0.0)
                    continue
                cpu, p50 = chat_round(servers[name], upstream, args)
                results[name].append(cpu)
                latencies[name].append(p50 or 0.0)
                print(f"  {name}: {cpu:.3f} ms CPU per request, p50 at c=1 {p50} ms", flush=True)
        print()
        if args.held:
            for name, rates in results.items():
                print(f"{name:40s} {statistics.mean(rates):7.1f} req/s "
                      f"({100 * statistics.mean(rates) / bench.IDEAL_HELD_RPS:.2f} % of ideal)")
            return 0
        mlflow = statistics.mean(results["mlflow"]) if results.get("mlflow") else None
        direct = statistics.mean(latencies["direct"]) if latencies.get("direct") else None
        for name, cpus in results.items():
            if not cpus:
                continue
            line = f"{name:40s} {statistics.mean(cpus):.3f} ms CPU per request"
            p50 = statistics.mean(latencies[name])
            if mlflow:
                line += f", {statistics.mean(cpus) / mlflow:.3f}x MLflow's"
            if mlflow and direct is not None and name != "mlflow":
                added, theirs = p50 - direct, statistics.mean(latencies["mlflow"]) - direct
                line += f", added latency p50 {added:.3f} ms ({added / theirs:.3f}x)"
            print(line)
        return 0
    finally:
        for server in servers.values():
            server.stop()
        upstream.stop()


if __name__ == "__main__":
    sys.exit(main())
