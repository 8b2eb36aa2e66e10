"""Infrastructure faults under load (issue 15): what each costs the clients.

Starts the fake upstream (bench/fake_upstream.py) and `manage.py start_server --workers 2` on PostgreSQL
and on Redis reached through a TCP proxy of this script's own (so that Redis can be killed and frozen
without touching the machine's Redis, which others use), runs a steady load (chat calls on a limited
endpoint, so that every call counts in Redis, and streams), and injects one fault at a time:

    baseline               nothing
    worker kill            SIGKILL one worker (the supervisor starts another)
    database blocked       ALTER DATABASE ... ALLOW_CONNECTIONS false, backends terminated, then SIGHUP:
      + reload             the workers rebuild their tables while the database is away
    Redis killed           the Redis proxy closes every connection and refuses new ones
    Redis frozen           the Redis proxy holds every connection and forwards nothing
    upstream down          the fake upstream is killed, then started again
    config churn           the watched file rewritten every 0.25 s, every other version invalid
    SIGTERM during streams the supervisor stopped while streams are open (graceful: they finish)

and prints, per fault: requests, errors (and their kinds), the worst latency of a chat call and of a
stream (each stream is spread over 1 s by the fake upstream).

    python bench/faults.py [--database hupstream_db] [--redis-db 4] [--seconds 6]

It needs PostgreSQL on 127.0.0.1:5432 (user postgres, the database is created if missing) and Redis on
127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
CHAT = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
STREAM = json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- a TCP proxy that can refuse, cut and freeze ---------------------------------------------------------------
class Proxy:
    """Forwards 127.0.0.1:port to a target; `kill()` closes every connection and refuses new ones until
    `revive()`; `freeze()` holds every connection silent (nothing forwarded) until `thaw()` closes them."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.frozen = False

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pair = (writer, upstream_writer)
        self.pairs.add(pair)
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer),
                             return_exceptions=True)
        self.pairs.discard(pair)
        for w in pair:
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            while self.frozen:
                await asyncio.sleep(0.05)
            writer.write(data)
            await writer.drain()
        writer.close()

    def _cut_all(self) -> None:
        for pair in list(self.pairs):
            for w in pair:
                w.transport.abort()
        self.pairs.clear()

    async def kill(self) -> None:
        assert self.server is not None
        self.server.close()
        self._cut_all()
        await self.server.wait_closed()

    async def revive(self) -> None:
        await self.start()

    def freeze(self) -> None:
        self.frozen = True

    def thaw(self) -> None:
        self._cut_all()
        self.frozen = False


# -- the load ------------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    started: float
    seconds: float
    error: str  # "" when the answer was right
    stream: bool


@dataclass
class Load:
    port: int
    outcomes: list[Outcome] = field(default_factory=list)
    running: bool = True

    async def one(self, path: str, body: bytes, stream: bool) -> None:
        started = time.monotonic()
        error = ""
        try:
            async with asyncio.timeout(30):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                             "Content-Type: application/json\r\n"
                             f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
                answer = await reader.read()
                writer.close()
            head, _, rest = answer.partition(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/1.1 ") else "no answer"
            if status != "200":
                error = f"HTTP {status}"
            elif stream and (b"data: [DONE]" not in rest or b'"error"' in rest):
                error = "stream cut" if b"data: [DONE]" not in rest else "stream error event"
            elif not stream and b'"choices"' not in rest:
                error = "bad body"
        except TimeoutError:
            error = "timeout"
        except OSError as exc:
            error = type(exc).__name__
        self.outcomes.append(Outcome(started, time.monotonic() - started, error, stream))

    async def loop(self, path: str, body: bytes, stream: bool) -> None:
        while self.running:
            await self.one(path, body, stream)
            await asyncio.sleep(0.02)


# -- the gateway and its upstream ------------------------------------------------------------------------------------
CONFIG = """endpoints:
  - name: chat
    endpoint_type: llm/v1/chat
    model:
      provider: openai
      name: gpt-4o-mini
      config: {{openai_api_key: sk-fake, openai_api_base: "{base}/v1"}}
    limit: {{calls: 100000, renewal_period: minute}}
    timeouts: {{connect: 2, read: 10, retries: 0}}
  - name: stream
    endpoint_type: llm/v1/chat
    model:
      provider: openai
      name: gpt-4o-mini
      config: {{openai_api_key: sk-fake, openai_api_base: "{base}/spread/1/v1"}}
    timeouts: {{connect: 2, read: 10, retries: 0}}
"""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.folder = Path(tempfile.mkdtemp(prefix="gateway-faults-"))
        self.config = self.folder / "gateway.yaml"
        self.upstream_port = free_port()
        self.port = free_port()
        self.upstream: subprocess.Popen[bytes] | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.redis = Proxy(REDIS)

    # processes
    def start_upstream(self) -> None:
        self.upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port",
                                          str(self.upstream_port)], stderr=subprocess.DEVNULL)
        wait_for_port(self.upstream_port)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(DJANGO_SETTINGS_MODULE="gateway_project.settings",
                   DATABASE_URL=f"postgres://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{self.args.database}",
                   REDIS_URL=f"redis://127.0.0.1:{self.redis.port}/{self.args.redis_db}",
                   SECRET_KEY="faults-bench-" + "k" * 40, GATEWAY_CONFIG_POLL_SECONDS="0.5",
                   GATEWAY_RATE_LIMIT_TIMEOUT="0.5", LOG_LEVEL="WARNING", STATIC_ROOT=str(self.folder / "static"))
        return env

    def start_server(self) -> None:
        self.config.write_text(CONFIG.format(base=f"http://127.0.0.1:{self.upstream_port}"))
        log = (self.folder / "server.log").open("wb")
        self.server = subprocess.Popen(
            [sys.executable, "manage.py", "start_server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "2", "--config-path", str(self.config)], cwd=ROOT, env=self.env(), stdout=log,
            stderr=subprocess.STDOUT)
        wait_for_port(self.port, timeout=120)
        time.sleep(2)

    def workers(self) -> list[int]:
        assert self.server is not None
        found = []
        for process in psutil.Process(self.server.pid).children(recursive=True):
            try:
                if "serving.worker" in " ".join(process.cmdline()):
                    found.append(process.pid)
            except psutil.Error:
                pass
        return sorted(found)

    def stop(self) -> None:
        for process in (self.server, self.upstream):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()

    # faults
    async def worker_kill(self) -> None:
        os.kill(self.workers()[0], signal.SIGKILL)
        await asyncio.sleep(self.args.seconds)

    async def database_blocked(self) -> None:
        await asyncio.to_thread(admin, f'ALTER DATABASE "{self.args.database}" ALLOW_CONNECTIONS false')
        await asyncio.to_thread(
            admin, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.args.database}'")
        try:
            assert self.server is not None
            self.server.send_signal(signal.SIGHUP)  # the file is applied again (it fails), and
            for pid in self.workers():  # the workers are told to rebuild, as after any applied change
                os.kill(pid, signal.SIGUSR1)
            await asyncio.sleep(self.args.seconds / 2)
            victim = self.workers()[0]
            os.kill(victim, signal.SIGKILL)  # its replacement starts during the outage: it serves from the snapshot
            before = set(self.workers())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until the replacement has started up (its table built)
                log = (self.folder / "server.log").read_text(errors="replace")
                new = set(self.workers()) - before
                started = [log.find(f"Started server process [{pid}]") for pid in new]
                if new and min(started) >= 0 and "Application startup complete." in log[max(started):]:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(self.args.seconds / 2)  # and serves, the database still away
        finally:
            await asyncio.to_thread(admin, f'ALTER DATABASE "{self.args.database}" ALLOW_CONNECTIONS true')
        await asyncio.sleep(1)

    async def redis_killed(self) -> None:
        await self.redis.kill()
        await asyncio.sleep(self.args.seconds)
        await self.redis.revive()

    async def redis_frozen(self) -> None:
        self.redis.freeze()
        await asyncio.sleep(self.args.seconds)
        self.redis.thaw()

    async def upstream_down(self) -> None:
        assert self.upstream is not None
        self.upstream.kill()
        self.upstream.wait()
        await asyncio.sleep(self.args.seconds)
        await asyncio.to_thread(self.start_upstream)  # off the loop: the Redis proxy runs on it

    async def config_churn(self) -> None:
        valid = self.config.read_text()
        for index in range(20):
            self.config.write_text(valid if index % 2 else valid.replace("provider: openai", "provider: nope", 1))
            await asyncio.sleep(0.25)
        self.config.write_text(valid)
        await asyncio.sleep(1)

    async def sigterm_during_streams(self, load: Load) -> None:
        await asyncio.sleep(0.3)  # streams (1 s each) are open
        assert self.server is not None
        self.server.send_signal(signal.SIGTERM)
        load.running = False
        await asyncio.sleep(3)


def admin(sql: str) -> None:
    with psycopg.connect(f"postgres://postgres@{POSTGRES[0]}:{POSTGRES[1]}/postgres", autocommit=True) as connection:
        connection.execute(sql)


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after {timeout} s")


Row = tuple[str, int, int, str, float, float]


def summary(name: str, outcomes: list[Outcome]) -> Row:
    errors = Counter(o.error for o in outcomes if o.error)
    worst_call = max((o.seconds for o in outcomes if not o.stream), default=0.0)
    worst_stream = max((o.seconds for o in outcomes if o.stream), default=0.0)
    kinds = ", ".join(f"{kind} x{count}" for kind, count in errors.most_common()) or "-"
    return name, len(outcomes), sum(errors.values()), kinds, worst_call * 1000, worst_stream * 1000


async def run(args: argparse.Namespace) -> list[Row]:
    bench = Bench(args)
    admin(f'ALTER DATABASE "{args.database}" ALLOW_CONNECTIONS true') if database_exists(args.database) \
        else admin(f'CREATE DATABASE "{args.database}"')
    await bench.redis.start()
    bench.start_upstream()
    rows = []
    try:
        await asyncio.to_thread(bench.start_server)
        warm = Load(bench.port)
        for _ in range(20):  # each worker builds its table and opens its connections
            await warm.one("/endpoints/chat/invocations", CHAT, False)
        faults: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("baseline", lambda: asyncio.sleep(args.seconds)),
            ("worker kill (SIGKILL)", bench.worker_kill),
            ("database blocked + reload + worker restart", bench.database_blocked),
            ("Redis killed", bench.redis_killed),
            ("Redis frozen", bench.redis_frozen),
            ("upstream down", bench.upstream_down),
            ("config churn (20 rewrites, half invalid)", bench.config_churn),
        ]
        for name, inject in faults:
            load = Load(bench.port)
            tasks = [asyncio.create_task(load.loop("/endpoints/chat/invocations", CHAT, False)) for _ in range(3)]
            tasks.append(asyncio.create_task(load.loop("/endpoints/stream/invocations", STREAM, True)))
            await asyncio.sleep(0.5)
            await inject()
            load.running = False
            await asyncio.gather(*tasks)
            rows.append(summary(name, load.outcomes))
            print(format_row(rows[-1]), file=sys.stderr, flush=True)
        load = Load(bench.port)
        tasks = [asyncio.create_task(load.loop("/endpoints/stream/invocations", STREAM, True)) for _ in range(4)]
        await bench.sigterm_during_streams(load)
        await asyncio.gather(*tasks)
        rows.append(summary("SIGTERM during streams", load.outcomes))
    finally:
        bench.stop()
        admin(f'ALTER DATABASE "{args.database}" ALLOW_CONNECTIONS true')
    print(f"(server log: {bench.folder / 'server.log'})", file=sys.stderr)
    return rows


def database_exists(name: str) -> bool:
    with psycopg.connect(f"postgres://postgres@{POSTGRES[0]}:{POSTGRES[1]}/postgres", autocommit=True) as connection:
        return connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def format_row(row: Row) -> str:
    name, requests, errors, kinds, worst_call, worst_stream = row
    return f"| {name} | {requests} | {errors} | {kinds} | {worst_call:.0f} | {worst_stream:.0f} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="hupstream_db", help="PostgreSQL database (created if missing)")
    parser.add_argument("--redis-db", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0, help="how long each fault lasts")
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args))
    print("| fault | requests | errors | error kinds | worst chat call (ms) | worst 1 s stream (ms) |")
    print("|---|---:|---:|---|---:|---:|")
    for row in rows:
        print(format_row(row))


if __name__ == "__main__":
    main()
