"""A small asyncio HTTP/1.1 load generator for 127.0.0.1, standard library only.

Each of `--concurrency` workers holds one keep-alive connection and sends requests one after the
other, until `--requests` are done or `--duration` seconds have passed (both are always bounded:
a count run also stops after `--max-seconds`, a duration run after `--max-requests`). It records
per request the latency, the time to the first body byte (TTFB, the first SSE chunk for streams)
and validates the answer (status 200; for streams at least 21 JSON events, i.e. 20 content chunks
plus the usage chunk; for chat a `choices` key; for embeddings a 1536-float vector).

It prints one JSON object: ok, errors (with samples), requests/s, latency and TTFB percentiles in
ms, wall time and its own CPU seconds. A duration run's requests/s is the sum of each worker's
rate (its good requests over the time from its first request to its last answer); `rps_window`
is the older count of answers within the window divided by its length.

    python bench/loadgen.py --url http://127.0.0.1:8901/v1/chat/completions \
        --body '{"model": "m", "messages": [{"role": "user", "content": "hi"}]}' --requests 1000 -c 8
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

STREAM_MIN_EVENTS = 21  # 20 content chunks + OpenAI's usage chunk
EMBEDDING_MIN_COMMAS = 1535  # 1536 floats


class BadResponse(Exception):
    pass


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)  # monotonic end time of each good request
    spans: list[tuple[int, float]] = field(default_factory=list)  # per worker: good requests, seconds they took
    errors: Counter[str] = field(default_factory=Counter)
    started: int = 0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def build_request(host: str, port: int, path: str, body: bytes, headers: list[str] | None = None) -> bytes:
    extra = "".join(f"{header.strip()}\r\n" for header in headers or [])
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: bench-loadgen\r\nAccept: */*\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        return self.reader, self.writer

    def drop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, request: bytes) -> tuple[int, float, bytes]:
        """One exchange; returns (status, seconds to the first body byte from now, body)."""
        reader, writer = await self.ensure()
        start = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers: dict[bytes, bytes] = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        ttfb = 0.0
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            parts = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    break
                data = await reader.readexactly(size + 2)
                if not ttfb:
                    ttfb = time.perf_counter() - start
                parts.append(data[:-2])
            body = b"".join(parts)
        elif b"content-length" in headers:
            body = await reader.readexactly(int(headers[b"content-length"]))
            ttfb = time.perf_counter() - start
        else:
            body = await reader.read()
            ttfb = time.perf_counter() - start
            self.drop()
        if headers.get(b"connection") == b"close":
            self.drop()
        return status, ttfb, body


def validate(kind: str, status: int, body: bytes) -> None:
    if status != 200:
        raise BadResponse(f"HTTP {status}: {body[:160].decode('utf-8', 'replace')}")
    if kind == "stream":
        events = body.count(b"data: {") + body.count(b"data:{")
        if b'"error"' in body:
            raise BadResponse(f"stream error event: {body[-200:].decode('utf-8', 'replace')}")
        if events < STREAM_MIN_EVENTS:
            raise BadResponse(f"stream had {events} JSON events, expected >= {STREAM_MIN_EVENTS}")
    elif kind == "chat":
        if b'"choices"' not in body:
            raise BadResponse("chat response without choices")
    elif kind == "embeddings" and body.count(b",") < EMBEDDING_MIN_COMMAS:
        raise BadResponse("embeddings response shorter than 1536 floats")


async def worker(index: int, args: argparse.Namespace, request: bytes, results: Results, host: str, port: int,
                 deadline: float, budget: list[int]) -> None:
    if args.ramp > 0:
        await asyncio.sleep(args.ramp * index / args.concurrency)
    connection = Connection(host, port)
    first_start = last_end = 0.0
    done = 0
    try:
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            results.started += 1
            start = time.perf_counter()
            if not first_start:
                first_start = start
            try:
                async with asyncio.timeout(args.timeout):
                    status, ttfb, body = await connection.send(request)
                validate(args.kind, status, body)
            except TimeoutError:
                results.errors[f"timeout after {args.timeout:g} s"] += 1
                connection.drop()
                continue
            except BadResponse as exc:
                results.errors[str(exc)[:200]] += 1
                continue
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                results.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
                connection.drop()
                continue
            last_end = time.perf_counter()
            done += 1
            results.latencies.append(last_end - start)
            results.ttfbs.append(ttfb)
            results.finished.append(time.monotonic())
    finally:
        connection.drop()
        if done and last_end > first_start:
            results.spans.append((done, last_end - first_start))


async def run(args: argparse.Namespace) -> dict[str, object]:
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loadgen only targets loopback addresses")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = build_request(host, port, path, args.body.encode(), args.header)

    if args.warmup:
        warm = Results()
        await asyncio.gather(*(worker(i, argparse.Namespace(**{**vars(args), "ramp": 0}), request, warm, host, port,
                                      time.monotonic() + 30, [args.warmup // args.concurrency + 1])
                               for i in range(args.concurrency)))

    results = Results()
    max_seconds = args.duration if args.duration else args.max_seconds
    budget = [args.requests if args.requests else args.max_requests]
    cpu0 = time.process_time()
    started = time.perf_counter()
    deadline = time.monotonic() + max_seconds
    await asyncio.gather(*(worker(i, args, request, results, host, port, deadline, budget)
                           for i in range(args.concurrency)))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    ok = len(results.latencies)
    errors = sum(results.errors.values())
    # The rate of a duration run is each worker's own rate, summed: the good requests it completed
    # over the time from sending its first to receiving its last answer. Every worker sends its next
    # request as soon as it has an answer, so this is exact. Counting the answers within the window
    # instead (rps_window) loses up to one request per worker: with 32 workers and a 50 ms upstream,
    # up to 0.5 % of a 10 s run, depending on where the deadline falls in their cycle.
    window = sum(1 for end in results.finished if end <= deadline) / args.duration if args.duration else None
    spans_rate = sum(count / span for count, span in results.spans)
    rps = spans_rate if args.duration else (ok / wall if wall > 0 else 0.0)
    return {
        "url": args.url, "kind": args.kind, "concurrency": args.concurrency,
        "ok": ok, "errors": errors, "error_samples": dict(results.errors.most_common(5)),
        "wall_s": round(wall, 3), "rps": round(rps, 1),
        "rps_window": None if window is None else round(window, 1),
        "latency_ms": {"p50": ms(percentile(results.latencies, 50)), "p90": ms(percentile(results.latencies, 90)),
                       "p99": ms(percentile(results.latencies, 99)),
                       "mean": ms(sum(results.latencies) / ok) if ok else None,
                       "max": ms(max(results.latencies)) if ok else None},
        "ttfb_ms": {"p50": ms(percentile(results.ttfbs, 50)), "p99": ms(percentile(results.ttfbs, 99)),
                    "max": ms(max(results.ttfbs)) if ok else None},
        "loadgen_cpu_s": round(cpu, 3),
    }


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="JSON request body")
    parser.add_argument("--kind", choices=("chat", "stream", "embeddings", "any"), default="any",
                        help="how to validate each answer")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-n", "--requests", type=int, default=0, help="stop after this many requests")
    parser.add_argument("-d", "--duration", type=float, default=0, help="or stop after this many seconds")
    parser.add_argument("--max-seconds", type=float, default=120, help="time bound for a count run")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="count bound for a duration run")
    parser.add_argument("--timeout", type=float, default=30, help="per-request timeout in seconds")
    parser.add_argument("--ramp", type=float, default=0, help="spread the workers' starts over this many seconds")
    parser.add_argument("--warmup", type=int, default=0, help="unrecorded requests first")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="an extra request header (e.g. the gateway key), repeatable")
    args = parser.parse_args(argv)
    if not args.requests and not args.duration:
        parser.error("give --requests or --duration")
    raise_fd_limit()
    json.dump(asyncio.run(run(args)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
