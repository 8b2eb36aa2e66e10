"""Where our gateway's per-request CPU goes: py-spy on its workers under chat load.

    .venv/bin/pip install py-spy        # once
    python bench/profile_gateway.py [--seconds 20] [--concurrency 8] [--kind chat]
    python bench/profile_gateway.py --delay50 --concurrency 32   # the 50 ms upstream phase

Starts the fake upstream and our gateway exactly as bench/run.py does, drives non-stream chat at
concurrency 8, and samples every process of the server with `py-spy record --subprocesses --gil`
(only samples that hold the GIL: Python CPU, including C extensions called from Python). It writes
the collapsed stacks to bench/results/profile-<timestamp>.txt and prints a summary: samples grouped
by the part of the request they belong to, and the functions with the most self time.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # re-execs under .venv when needed

# A sample goes to the group of its innermost frame that matches one (groups checked in this order).
GROUPS = (
    ("upstream HTTP client (serving/httpclient.py and the seam, serving/upstream.py)", ("serving/httpclient.py",
                                                                                       "serving/upstream.py")),
    ("async bridge (greenlet switches)", ("serving/bridge.py", "greenlet")),
    ("rate limit (ratelimit.py)", ("serving/ratelimit.py",)),
    ("request validation (schemas.py, pydantic)", ("endpoints_app/schemas.py", "pydantic")),
    ("response rendering (errors.json_response, HttpResponse)", ("json_response", "sse_response", "events (",
                                                                 "django/http/response.py")),
    ("HTTP server (uvicorn, serving/worker.py)", ("uvicorn/", "serving/worker.py")),
    ("ASGI fast path (serving/app.py, ASGIRequest)", ("serving/app.py",
                                                                 "django/core/handlers/asgi.py")),
    ("Django request handling and middleware", ("django/",)),
    ("provider translation (providers/*)", ("providers/",)),
    ("our view and runtime (other endpoints_app code)", ("endpoints_app/",)),
    ("the rest of the request path (serving, usage, observability)", ("serving/", "usage/", "observability/")),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop")),
)


def group_of(stack: list[str]) -> str:
    for frame in reversed(stack):  # innermost first
        for label, patterns in GROUPS:
            if any(p in frame for p in patterns):
                return label
    return "other (threads, poller, interpreter)"


def summarize(collapsed: Path, top: int = 20) -> str:
    groups: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack_text.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        total += count
        groups[group_of(frames)] += count
        if frames:
            leaves[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples\n"
    lines = [f"{total} samples holding the GIL", "", "By part of the request (its innermost frame that has one):", ""]
    lines += [f"  {100 * n / total:5.1f}%  {label}" for label, n in groups.most_common()]
    lines += ["", f"Top {top} functions by self time:", ""]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in leaves.most_common(top)]
    lines += ["", "Inclusive time of selected functions:", ""]
    for needle in ("endpoint_invocations", "validate_request", "prepare (", "hit (", "post_json", "send_json",
                   "_request (", "urlopen", "parse_chat", "json_response", "get_response", "__call__ (django",
                   "process_request", "process_response"):
        matched = [(frame, n) for frame, n in inclusive.items() if needle in frame]
        if matched:
            frame, n = max(matched, key=lambda item: item[1])
            lines.append(f"  {100 * n / total:5.1f}%  {frame}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kind", choices=tuple(bench.KINDS), default="chat")
    parser.add_argument("--delay50", action="store_true",
                        help="chat through the 50 ms upstream (the held phase of bench/run.py; use -c 32)")
    parser.add_argument("--features", choices=("all", "none"), default="all",
                        help="as bench/run.py's: every request-path feature on (default), or none")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(bench.ROOT / ".venv" / "bin" / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    bench.raise_fd_limit()
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    collapsed = bench.RESULTS / f"profile-{stamp}.txt"
    upstream = ours = None
    try:
        upstream = bench.start_upstream(workdir)
        features = args.features == "all"
        config = bench.write_config(workdir, int(upstream.base_url.rsplit(":", 1)[1]), bench.FULL, features=features,
                                    name="ours.yaml")
        ours = bench.start_ours(workdir, config, features=features)
        if ours.error:
            print(ours.error, file=sys.stderr)
            return 1
        url, body = bench.target_url(ours, upstream, args.kind), bench.request_body(ours, args.kind)
        if args.delay50:
            args.kind = "chat"
            url, body = bench.target_url(ours, upstream, "chat", "chat-delay50"), bench.request_body(ours, "chat")
        bench.loadgen(url, body, args.kind, args.concurrency, requests=500, headers=ours.headers)  # warm-up
        assert ours.process is not None
        spy = subprocess.Popen([py_spy, "record", "--pid", str(ours.process.pid), "--subprocesses", "--gil",
                                "--nolineno", "--nonblocking", "--rate", "200", "--format", "raw",
                                "--duration", str(int(args.seconds) + 2), "--output", str(collapsed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.5)
        result = bench.measure(ours, upstream, url, body, args.kind, args.concurrency, duration=args.seconds)
        _, spy_err = spy.communicate(timeout=args.seconds + 60)
        if spy.returncode != 0:
            print(spy_err.decode()[-2000:], file=sys.stderr)
            return 1
    finally:
        for server in (ours, upstream):
            if server is not None:
                server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"code: {bench.code_state()}")
    print(f"ours ({ours.note}), {args.kind} at c={args.concurrency} for {args.seconds:g} s under py-spy: "
          f"{result.get('rps')} req/s, server CPU {result.get('server_cpu_ms_per_req')} ms/request "
          f"(inflated by sampling), errors {result.get('errors')}")
    print(summarize(collapsed))
    print(f"collapsed stacks: {collapsed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
