"""Our upstream client against the maintained asyncio clients, on the gateway's own work.

Each client POSTs the benchmark's chat request (the body our OpenAI adapter sends upstream) to the
fake upstream (bench/fake_upstream.py) and reads the whole answer, on a uvloop event loop in a process
of its own: first N requests one after another, then N requests from 32 concurrent tasks, all over
keep-alive connections. It reports the client process's CPU time per request (user + system, from
getrusage; the upstream runs in another process) and its rate. Clients run in turn, in a different
order each round; the table gives the median over rounds, and the spread.

    .venv/bin/python bench/client_compare.py                  # 3 rounds of 10,000 requests per phase
    .venv/bin/python bench/client_compare.py --requests 2000 --rounds 1

aiohttp and httpx are not requirements of the gateway: install them to compare
(`.venv/bin/pip install aiohttp httpx`); a client that is not installed is skipped.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ("ours", "aiohttp", "httpx")
CONCURRENCY = 32
WARM_UP = 500
# What the gateway sends upstream for the benchmark's chat (bench/run.py's CHAT_BODY through the openai adapter).
BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello in a few words."}],
                   "max_tokens": 64, "n": 1}, separators=(",", ":")).encode()
HEADERS = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}

Send = Callable[[], Awaitable[int]]


# -- one client, in its own process -----------------------------------------------------------------------
async def make_sender(client: str, url: str) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """A coroutine function sending one request and reading the whole answer (returns its length), and a closer."""
    if client == "ours":
        sys.path.insert(0, str(ROOT))
        from serving.httpclient import AsyncPool

        pool = AsyncPool(maxsize=64)

        async def send_ours() -> int:
            response = await pool.request("POST", url, HEADERS, BODY, connect_timeout=10, read_timeout=30)
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
            return len(body)

        async def close_ours() -> None:
            pool.close()

        return send_ours, close_ours
    if client == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64),
                                        timeout=aiohttp.ClientTimeout(connect=10, sock_read=30))

        async def send_aiohttp() -> int:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}")
                return len(body)

        return send_aiohttp, session.close
    if client == "httpx":
        import httpx

        http = httpx.AsyncClient(limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
                                 timeout=httpx.Timeout(30, connect=10))

        async def send_httpx() -> int:
            response = await http.post(url, content=BODY, headers=HEADERS)
            if response.status_code != 200:
                raise RuntimeError(f"status {response.status_code}")
            return len(response.content)

        return send_httpx, http.aclose
    raise ValueError(client)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(send: Send, requests: int, concurrency: int) -> dict[str, float]:
    async def worker(count: int) -> None:
        for _ in range(count):
            await send()

    shares = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]
    cpu, wall = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker(share) for share in shares))
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    return {"cpu_us_per_request": cpu / requests * 1e6, "requests_per_second": requests / wall}


async def run_client(client: str, url: str, requests: int) -> dict[str, Any]:
    send, close = await make_sender(client, url)
    try:
        for _ in range(WARM_UP):  # connections opened, code paths warm
            await send()
        await asyncio.gather(*(send() for _ in range(CONCURRENCY)))
        return {"sequential": await measure(send, requests, 1),
                "concurrent": await measure(send, requests, CONCURRENCY)}
    finally:
        await close()


def child(client: str, url: str, requests: int) -> None:
    import uvloop

    print(json.dumps(uvloop.run(run_client(client, url, requests))))


# -- the orchestrator -------------------------------------------------------------------------------------
def installed(client: str) -> bool:
    if client == "ours":
        return True
    try:
        __import__(client)
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_upstream() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    ready = Path(tempfile.mkdtemp(prefix="client-compare-")) / "ready"
    process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(port),
                                "--ready-file", str(ready)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the fake upstream did not start")
        time.sleep(0.05)
    return process, f"http://127.0.0.1:{port}/v1/chat/completions"


def orchestrate(requests: int, rounds: int, clients: list[str]) -> None:
    available = [client for client in clients if installed(client)]
    for client in clients:
        if client not in available:
            print(f"skipping {client}: not installed", file=sys.stderr)
    upstream, url = start_upstream()
    results: dict[str, list[dict[str, Any]]] = {client: [] for client in available}
    try:
        for round_index in range(rounds):
            order = available[round_index % len(available):] + available[:round_index % len(available)]
            for client in order:
                output = subprocess.run([sys.executable, __file__, "--child", client, "--url", url,
                                         "--requests", str(requests)], capture_output=True, text=True, check=True)
                results[client].append(json.loads(output.stdout))
                print(f"round {round_index + 1}: {client} done", file=sys.stderr)
    finally:
        upstream.terminate()
        upstream.wait(10)
    report(results, requests, rounds)


def report(results: dict[str, list[dict[str, Any]]], requests: int, rounds: int) -> None:
    def cell(client: str, phase: str, key: str) -> tuple[float, str]:
        values = [run[phase][key] for run in results[client]]
        median = statistics.median(values)
        spread = f" ({min(values):.0f} to {max(values):.0f})" if len(values) > 1 else ""
        return median, f"{median:.0f}{spread}"

    load = os.getloadavg()
    print(f"\n{requests} requests per phase, {rounds} round(s), median (min to max); "
          f"Python {sys.version.split()[0]}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print("| client | CPU µs/request, sequential | over ours | CPU µs/request, c=32 | over ours "
          "| req/s, sequential | req/s, c=32 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for client in results:
        version = "" if client == "ours" else f" {__import__(client).__version__}"
        cells = [f"{client}{version}"]
        for phase in ("sequential", "concurrent"):
            value, text = cell(client, phase, "cpu_us_per_request")
            base = cell("ours", phase, "cpu_us_per_request")[0] if "ours" in results else None
            cells += [text, "" if base is None or client == "ours" else f"{value - base:+.0f}"]
        cells += [cell(client, phase, "requests_per_second")[1] for phase in ("sequential", "concurrent")]
        print(f"| {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000, help="measured requests per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--child", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.requests)
    else:
        orchestrate(args.requests, args.rounds, [c for c in args.clients.split(",") if c])


if __name__ == "__main__":
    main()
