"""Webhook ingest throughput and latency: Shepherd (SQLite, PostgreSQL) against a bare receiver.

Run: ``.venv/bin/python bench/ingest.py [--seconds 10] [--connections 32]`` (``make bench``).

wrk (Debian package ``wrk``; installed with apt-get when missing) sends signed, real-shaped
deliveries — GitHub's ``check_run`` example padded to ~12 KB and its ``pull_request`` example
padded to ~24 KB, half each, every request with its own ``X-GitHub-Delivery`` — at a fixed number
of connections for a fixed time, one target after the other, each started fresh:

- ``bare``: bench/bare_receiver.py, aiohttp + gidgethub, verifies and routes, stores nothing;
- ``sqlite``/``postgres``: ``shepherd serve`` with 2 in-process workers, as in production (the
  workers dispatch what was stored, competing with ingest for the CPU), and with ``--workers 0``
  (ingest alone). Every 202 means the delivery was fsynced before the answer (SQLite: in its
  delivery log; PostgreSQL: the commit).

By default the server under test is pinned to CPU 0 and wrk to CPU 1 (``--no-pin`` to not), so
"req/s" reads as "per server core". Each Shepherd target is paired with a bare run just before
it, and its ratio is taken against that run: on a shared VM a neighbour's load (CPU steal, shown
per run) moves the absolute rates by a third within minutes, and a pair measured back to back
sees the same neighbour. With ``--rounds N`` the table shows each target's median round and the
median of its per-round ratios. After each durable target the bench syncs and rests
(``--cooldown``): each run writes ~400 MB, and a virtual disk's write budget (a token bucket on
cloud VMs) must refill, or the next target pays for the previous one's writes. Prints
requests/s, p50/p99 latency and each target's ratio to its bare run, then checks that every
delivery Shepherd acknowledged is in its store.
Goal (issue 2): >= 90 % of bare throughput and p99 < 25 ms at 32 connections. Prints, never
asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.store.connect import open_store  # noqa: E402 after the path set-up, so it runs from anywhere

SHARED = ROOT.parent / "shared" / "github" / "webhooks"
SECRET = "bench-webhook-secret"
VARIANTS = 64  # distinct bodies per event: different PRs and check runs, as real traffic has
SIZES = {"check_run": 12 * 1024, "pull_request": 24 * 1024}
POSTGRES_URL = os.environ.get("SHEPHERD_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1/test")
TICKS = os.sysconf("SC_CLK_TCK")
GOAL_RATIO = 0.90
GOAL_P99_MS = 25.0


@dataclass(frozen=True)
class Target:
    name: str
    command: list[str]
    env: dict[str, str]
    database_url: str | None = None  # Shepherd targets: where to count what was stored


@dataclass(frozen=True)
class Result:
    target: str
    requests: int
    seconds: float
    http_errors: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    steal: float  # share of the machine's CPU time the hypervisor gave to others meanwhile
    server_cpu: float  # CPU seconds the server process used during the measured run
    database_cpu: float  # CPU seconds PostgreSQL's processes used meanwhile
    stored: int | None = None
    acked: int = 0  # 2xx answers, warm-up included

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        """Server CPU per request, in microseconds: steadier than req/s on a noisy VM."""
        return self.server_cpu / max(self.requests, 1) * 1e6

    @property
    def database_us(self) -> float:
        return self.database_cpu / max(self.requests, 1) * 1e6


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def padded(data: dict[str, Any], size: int) -> bytes:
    """``data`` as JSON of at least ``size`` bytes: a long PR body, the way large payloads are."""
    body = json.dumps(data).encode()
    if len(body) < size:
        data = copy.deepcopy(data)
        holder = data.get("pull_request") or data["check_run"]["output"]
        key = "body" if "pull_request" in data else "text"
        holder[key] = (holder.get(key) or "") + "x" * (size - len(body))
        body = json.dumps(data).encode()
    return body


def write_bodies(directory: Path) -> Path:
    """VARIANTS signed bodies per event, and the index file the Lua script reads."""
    check_run = json.loads((SHARED / "check_run" / "completed.payload.json").read_text())
    pull = json.loads((SHARED / "pull_request" / "opened.payload.json").read_text())
    # App deliveries carry the installation; the check_run example is a repository webhook's.
    check_run["installation"] = {"id": 1}
    lines = []
    for n in range(VARIANTS):
        run = copy.deepcopy(check_run)
        run["check_run"]["id"] = 4_000_000 + n
        pr = copy.deepcopy(pull)
        pr["number"] = pr["pull_request"]["number"] = 100 + n
        pr["pull_request"]["head"]["sha"] = hashlib.sha1(str(n).encode()).hexdigest()  # noqa: S324
        for event, data in (("check_run", run), ("pull_request", pr)):
            body = padded(data, SIZES[event])
            path = directory / f"{event}-{n}.json"
            path.write_bytes(body)
            lines.append(f"{event} {sign(body)} {path}")
    index = directory / "bodies.txt"
    index.write_text("\n".join(lines) + "\n")
    return index


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing the Debian package `wrk` with apt-get ...", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        subprocess.run([*sudo, *step], check=True, env=env)
    found = shutil.which("wrk")
    if not found:
        sys.exit("bench: wrk is still missing after apt-get install wrk")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench: server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"bench: server on port {port} never became healthy:\n{log.read_text()[-3000:]}")


def pinned(command: list[str], cpu: int | None) -> list[str]:
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def run_wrk(
    wrk: str, port: int, args: argparse.Namespace, env: dict[str, str], seconds: float
) -> dict[str, Any]:
    result_file = Path(env["BENCH_RESULT"])
    command = [
        wrk,
        "-t1",  # one thread drives 32 connections easily at these rates, leaving CPU for others
        f"-c{args.connections}",
        f"-d{round(seconds)}s",
        "--timeout",
        "10s",
        "-s",
        str(ROOT / "bench" / "ingest.lua"),
        f"http://127.0.0.1:{port}",
    ]
    done = subprocess.run(
        pinned(command, args.client_cpu), env=env, check=False, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"bench: wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    data: dict[str, Any] = json.loads(result_file.read_text())
    return data


def measure(target: Target, wrk: str, index: Path, work: Path, args: argparse.Namespace) -> Result:
    port = free_port()
    log = work / f"{target.name}.log"
    command = [part.replace("{port}", str(port)) for part in target.command]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            pinned(command, args.server_cpu),
            env=target.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(proc, port, log)
        env = {
            **os.environ,
            "BENCH_BODIES": str(index),
            "BENCH_RESULT": str(work / f"{target.name}.json"),
        }
        # A short warm-up (connections, caches, the first SQLite pages), not counted in the
        # rates; its deliveries are stored too, so they count in the stored/acked check.
        warm = run_wrk(wrk, port, args, {**env, "BENCH_RUN": f"warm-{uuid.uuid4().hex[:8]}"}, 2)
        before = cpu_ticks(), process_cpu(proc.pid), postgres_cpu()
        data = run_wrk(wrk, port, args, {**env, "BENCH_RUN": uuid.uuid4().hex[:8]}, args.seconds)
        steal = stolen(before[0], cpu_ticks())
        server_cpu = process_cpu(proc.pid) - before[1]
        database_cpu = postgres_cpu() - before[2]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stored = None
    if target.database_url is not None:
        stored = asyncio.run(count_stored(target.database_url))
        # Each durable run leaves hundreds of MB of dirty pages behind; write them back now, or
        # the kernel's writeback competes with (and its fsyncs slow down) the next target. Then
        # rest: virtual disks are often rate-limited by a token bucket that a run's writes drain.
        os.sync()
        time.sleep(args.cooldown)
    return Result(
        target=target.name,
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        http_errors=int(data["http_errors"]),
        socket_errors=sum(
            int(data[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        steal=steal,
        server_cpu=server_cpu,
        database_cpu=database_cpu,
        stored=stored,
        acked=int(warm["requests"])
        - int(warm["http_errors"])
        + int(data["requests"])
        - int(data["http_errors"]),
    )


async def count_stored(url: str) -> int:
    store = open_store(url)
    await store.open()
    try:
        stats = await store.stats()
        return sum(stats.deliveries.values())
    finally:
        await store.close()


def cpu_ticks() -> list[int]:
    """The machine's CPU time counters (user, nice, system, idle, ..., steal) from /proc/stat."""
    with open("/proc/stat") as stat:
        return [int(field) for field in stat.readline().split()[1:9]]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def postgres_cpu() -> float:
    """CPU seconds used so far by this machine's PostgreSQL processes (backends, WAL writer...)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited meanwhile
            continue
        if text[text.index("(") + 1 : text.rindex(")")] == "postgres":
            total += process_cpu(int(stat.parent.name))
    return total


def stolen(before: list[int], after: list[int]) -> float:
    spent = [b - a for a, b in zip(before, after, strict=True)]
    return spent[7] / max(sum(spent), 1)


def shepherd_env(work: Path, name: str, database_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "ANTHROPIC_", "SHEPHERD_", "DATABASE_URL"))
    }
    env.update(
        GITHUB_WEBHOOK_SECRET=SECRET,
        SHEPHERD_DATA_DIR=str(work / name),
        DATABASE_URL=database_url,
        SHEPHERD_LOG_FORMAT="json",
        SHEPHERD_LOG_LEVEL="WARNING",
    )
    return env


async def postgres_schema(schema: str, *, drop: bool) -> None:
    conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        if drop:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def targets(work: Path, python: str, shepherd: str) -> list[Target]:
    found = [
        Target(
            "bare",
            [
                python,
                str(ROOT / "bench" / "bare_receiver.py"),
                "--port",
                "{port}",
                "--secret",
                SECRET,
            ],
            dict(os.environ),
        )
    ]
    for backend in ("sqlite", "postgres"):
        for workers in (2, 0):
            name = f"{backend}, {workers} workers"
            slug = f"{backend}-w{workers}"
            if backend == "sqlite":
                url = f"sqlite:///{work / slug / 'shepherd.db'}"
            else:
                url = f"{POSTGRES_URL}?schema=bench_{slug.replace('-', '_')}_{os.getpid()}"
            found.append(
                Target(
                    name,
                    [shepherd, "serve", "--port", "{port}", "--workers", str(workers)],
                    shepherd_env(work, slug, url),
                    database_url=url,
                )
            )
    return found


@dataclass(frozen=True)
class Row:
    """One target over all rounds: its median round, and its ratios to the paired bare runs."""

    result: Result
    ratios: list[float]  # per round: this target's req/s over its paired bare run's

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def summarize(runs: list[tuple[Result, Result | None]]) -> Row:
    """``runs``: one (result, paired bare result) per round; the median round by req/s."""
    results = sorted((result for result, _ in runs), key=lambda r: r.rps)
    ratios = [result.rps / bare.rps for result, bare in runs if bare is not None]
    return Row(results[len(results) // 2], ratios)


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    width = max(9, *(5 * len(row.ratios) for row in rows))  # "per round": "104% " each
    print()
    print(
        f"{args.connections} connections, {args.seconds} s per target, median of {args.rounds} "
        "round(s), bodies ~12 KB check_run / ~24 KB pull_request (half each), "
        + (
            f"server on CPU {args.server_cpu}, wrk on CPU {args.client_cpu}"
            if args.server_cpu is not None
            else "unpinned"
        )
    )
    header = (
        f"{'target':<20} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'cpu/req':>10} {'steal':>6} "
        f"{'vs bare':>8} {'per round':>{width}} {'stored/acked':>13}  goal"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        r = row.result
        errors = r.http_errors + r.socket_errors
        stored = "" if r.stored is None else f"{r.stored}/{r.acked}"
        ratio = per_round = goal = ""
        cpu = f"{r.cpu_us:.0f}" + (f"+{r.database_us:.0f}" if r.database_us >= 1 else "")
        if row.ratios:
            ratio = f"{row.ratio:.0%}"
            per_round = " ".join(f"{x:.0%}" for x in row.ratios)
            ok = row.ratio >= GOAL_RATIO and r.p99_ms < GOAL_P99_MS and errors == 0
            goal = "met" if ok else "MISSED"
        print(
            f"{r.target:<20} {r.rps:>7.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {cpu:>10} "
            f"{r.steal:>6.1%} {ratio:>8} {per_round:>{width}} {stored:>13}  {goal}"
            + (f"  ({errors} errors)" if errors else "")
        )
    print(
        f"\ngoal: >= {GOAL_RATIO:.0%} of bare req/s and p99 < {GOAL_P99_MS:.0f} ms. vs bare: the "
        "median over rounds of req/s against the bare run measured just before. cpu/req: server "
        "CPU per request in us (+ PostgreSQL's processes). steal: CPU time the hypervisor gave to other guests during the run. stored/acked: rows in the store "
        "after the run / 2xx answers counted by wrk (stored can be higher: wrk stops with "
        "requests in flight that were committed but not yet answered)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per target")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat all targets this many times, interleaved, and keep each target's median "
        "round (by req/s): on a shared machine, neighbours' load then hits every target alike",
    )
    parser.add_argument(
        "--cooldown",
        type=float,
        default=30.0,
        help="seconds of rest after each target, so one target's disk writes do not slow the "
        "next (measured here: with 10 s, SQLite right after another durable target lost ~5 points)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and wrk to CPUs")
    parser.add_argument(
        "--only", action="append", help="run only targets whose name contains this (repeatable)"
    )
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    pin = not args.no_pin and cpus >= 2 and shutil.which("taskset") is not None
    args.server_cpu, args.client_cpu = (0, 1) if pin else (None, None)

    wrk = ensure_wrk()
    python = str(ROOT / ".venv" / "bin" / "python")
    shepherd = str(ROOT / ".venv" / "bin" / "shepherd")
    runs: dict[str, list[tuple[Result, Result | None]]] = {}
    with tempfile.TemporaryDirectory(prefix="shepherd-bench-") as tmp:
        root = Path(tmp)
        bodies = root / "bodies"
        bodies.mkdir()
        index = write_bodies(bodies)
        for number in range(1, args.rounds + 1):
            work = root / f"round-{number}"
            work.mkdir()
            bare, *shepherds = targets(work, python, shepherd)
            for target in shepherds:
                if args.only and not any(o in target.name for o in args.only):
                    continue
                print(f"bench: round {number}/{args.rounds}: {target.name} ...", flush=True)
                baseline = measure(bare, wrk, index, work, args)
                runs.setdefault(bare.name, []).append((baseline, None))
                try:
                    result = measure(target, wrk, index, work, args)
                finally:
                    if target.database_url and "schema=" in target.database_url:
                        schema = target.database_url.rsplit("schema=", 1)[1]
                        asyncio.run(postgres_schema(schema, drop=True))
                runs.setdefault(target.name, []).append((result, baseline))
    print_table([summarize(pairs) for pairs in runs.values()], args)


if __name__ == "__main__":
    main()
