"""Scale-out on PostgreSQL: jobs/s with 1, 2 and 4 ``shepherd worker`` processes, and webhook
ingest with 2 ``shepherd serve`` processes.

Run: ``.venv/bin/python bench/scale.py [--seconds 8]``. About two minutes. Prints, never asserts.

Jobs: triage jobs (the real ``triage`` runner: get the PR, read config/.gitattributes/CODEOWNERS
at the base, list files, compare, labels, sticky comment, check run) over PRs in the GitHub
simulator, which answers every API call after a fixed 50 ms — the time a job spends waiting on
GitHub, as real ones do. Each worker process runs 2 worker loops (the default). The worker
processes start first and idle on an empty queue; then the jobs are enqueued at once and the jobs
finished in a fixed window (after a short warm-up) are counted. A fresh schema per run.

Ingest: bench/ingest.py's wrk load (signed ~12/24 KB deliveries, each its own GUID) against one
``serve --workers 0`` with 32 connections, then against two at once with 16 connections each
(two wrk processes; a load balancer would split the same way). Every 202 is a committed row.
Unpinned: on a small machine the servers, PostgreSQL, wrk and the simulator share the cores, and
the numbers say so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# After the path set-up, so it runs from anywhere.
from bench import ingest  # noqa: E402
from bot.store import JobSpec, JobState  # noqa: E402
from bot.store.connect import open_store  # noqa: E402
from tests.ghsim import GitHubSim, commit_files, init_bare_repo, start_simulator  # noqa: E402
from tests.proc_support import ShepherdProcess, shepherd_env, stop_all  # noqa: E402

GITHUB_DELAY = 0.050
WORKER_COUNTS = (1, 2, 4)
LOOPS_PER_PROCESS = 2
JOBS = 400  # more than the fastest configuration finishes in the window
DISTINCT_HEADS = 40  # PRs share these commits round-robin: setting up 400 commits takes long
WARMUP = 1.5
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class JobRate:
    processes: int
    done: int
    seconds: float
    machine_busy: float  # share of all CPUs busy during the window
    sim_cpu: float  # CPUs' worth used by the simulator (this process and its git children)

    @property
    def rate(self) -> float:
        return self.done / self.seconds


@dataclass(frozen=True)
class Ingest:
    servers: int
    requests: int
    seconds: float
    errors: int
    p99_ms: float
    stored: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat (Linux)."""
    with open("/proc/stat") as stat:
        fields = [float(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def own_cpu() -> float:
    """CPU seconds of this process and its waited-for children (the simulator's git calls)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def build_sim_world(sim: GitHubSim, work: Path) -> list[tuple[int, str]]:
    """One repository with ``JOBS`` open PRs; their (number, head SHA)."""
    bare, base_sha = init_bare_repo(
        work / "remote" / "acme" / "fleet.git",
        {
            "README.md": "fleet\n",
            ".github/CODEOWNERS": "* @acme/core\n/docs/ @acme/docs\n",
            ".gitattributes": "gen/** linguist-generated\n",
        },
    )
    repo = sim.add_repo("acme", "fleet", git_dir=bare)
    heads = []
    for n in range(DISTINCT_HEADS):
        files = {f"src/mod{n}.py": f"VALUE = {n}\n" * (n + 1), f"docs/page{n}.md": "text\n"}
        heads.append((f"change-{n}", commit_files(bare, f"change-{n}", files, f"Change {n}")))
    pulls = []
    for number in range(1, JOBS + 1):
        branch, sha = heads[number % DISTINCT_HEADS]
        sim.add_pull(
            repo, head_ref=branch, head_sha=sha, base_sha=base_sha, number=number, user="alice"
        )
        pulls.append((number, sha))
    return pulls


async def wait_ready(worker: ShepherdProcess) -> None:
    """Until the worker process logged that its loops run (the imports take seconds)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while "worker(s) running" not in (worker.log.read_text() if worker.log.exists() else ""):
        if not worker.alive or time.monotonic() > deadline:
            sys.exit(f"bench: {worker.name} did not start:\n{worker.log_tail()}")
        await asyncio.sleep(0.1)


async def measure_jobs(
    processes: int,
    sim: GitHubSim,
    base_url: str,
    pulls: list[tuple[int, str]],
    work: Path,
    seconds: float,
) -> JobRate:
    url = f"{ingest.POSTGRES_URL}?schema=bench_scale_{processes}_{uuid.uuid4().hex[:8]}"
    store = open_store(url)
    await store.open()  # migrates before the workers start
    env = shepherd_env(
        {
            "GITHUB_APP_ID": str(sim.app_id),
            "GITHUB_PRIVATE_KEY": str(sim.private_key_pem),
            "GITHUB_API_URL": base_url,
            "GITHUB_WEBHOOK_SECRET": ingest.SECRET,
            "DATABASE_URL": url,
            "SHEPHERD_LOG_FORMAT": "json",
            "SHEPHERD_SHUTDOWN_GRACE": "5",
        }
    )
    workers = [
        ShepherdProcess.worker(
            f"jobs{processes}-w{i}",
            {**env, "SHEPHERD_DATA_DIR": str(work / f"jobs{processes}-w{i}")},
            work / "logs",
            workers=LOOPS_PER_PROCESS,
        )
        for i in range(processes)
    ]
    try:
        await asyncio.gather(*(w.start() for w in workers))
        await asyncio.gather(*(wait_ready(w) for w in workers))
        for number, sha in pulls:
            await store.upsert_job(
                JobSpec(
                    kind="triage",
                    key=f"triage:acme/fleet#{number}@{sha}/{processes}",
                    payload={
                        "installation": 1,
                        "repo": "acme/fleet",
                        "pr": number,
                        "sha": sha,
                        "action": "opened",
                    },
                    concurrency_key=f"acme/fleet#{number}",
                )
            )
        await asyncio.sleep(WARMUP)
        start_done = (await store.stats()).jobs.get(JobState.DONE, 0)
        started, busy0, cpu0 = time.monotonic(), machine_cpu(), own_cpu()
        await asyncio.sleep(seconds)
        stats = await store.stats()
        elapsed = time.monotonic() - started
        busy1, cpu1 = machine_cpu(), own_cpu()
        machine_busy = (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1])
        sim_cpu = (cpu1 - cpu0) / elapsed
        done = stats.jobs.get(JobState.DONE, 0) - start_done
        if stats.jobs.get(JobState.QUEUED, 0) == 0:
            print(f"bench: {processes} worker(s) ran out of jobs; raise JOBS", flush=True)
        bad = {k: v for k, v in stats.jobs.items() if k in (JobState.FAILED, JobState.DEAD) and v}
        if bad:
            print(f"bench: {processes} worker(s): jobs {bad}; see {work / 'logs'}", flush=True)
    finally:
        with contextlib.suppress(AssertionError):
            await stop_all(workers, grace=15)
        await store.close()
        await ingest.postgres_schema(url.rsplit("schema=", 1)[1], drop=True)
    return JobRate(processes, done, elapsed, machine_busy, sim_cpu)


async def measure_ingest(servers: int, seconds: float, work: Path, index: Path) -> Ingest:
    wrk = ingest.ensure_wrk()
    url = f"{ingest.POSTGRES_URL}?schema=bench_ingest_{servers}_{uuid.uuid4().hex[:8]}"
    store = open_store(url)
    await store.open()
    procs = [
        ShepherdProcess.serve(
            f"ingest{servers}-s{i}",
            shepherd_env(
                {
                    "GITHUB_WEBHOOK_SECRET": ingest.SECRET,
                    "SHEPHERD_DATA_DIR": str(work / f"ingest{servers}-s{i}"),
                    "DATABASE_URL": url,
                    "SHEPHERD_LOG_FORMAT": "json",
                    "SHEPHERD_LOG_LEVEL": "WARNING",
                }
            ),
            work / "logs",
            workers=0,
        )
        for i in range(servers)
    ]
    connections = 32 // servers
    try:
        await asyncio.gather(*(p.start() for p in procs))

        async def drive(proc: ShepherdProcess, duration: float, tag: str) -> dict[str, object]:
            args = argparse.Namespace(connections=connections, client_cpu=None)
            env = {
                **os.environ,
                "BENCH_BODIES": str(index),
                "BENCH_RESULT": str(work / f"{proc.name}-{tag}.json"),
                "BENCH_RUN": f"{proc.name}-{tag}-{uuid.uuid4().hex[:8]}",
            }
            assert proc.port is not None
            return await asyncio.to_thread(ingest.run_wrk, wrk, proc.port, args, env, duration)

        await asyncio.gather(*(drive(p, 2, "warm") for p in procs))
        results = await asyncio.gather(*(drive(p, seconds, "run") for p in procs))
    finally:
        with contextlib.suppress(AssertionError):
            await stop_all(procs, grace=30)
    stored = sum((await store.stats()).deliveries.values())
    await store.close()
    await ingest.postgres_schema(url.rsplit("schema=", 1)[1], drop=True)
    return Ingest(
        servers=servers,
        requests=sum(int(r["requests"]) for r in results),  # type: ignore[call-overload]
        seconds=max(float(r["duration_us"]) for r in results) / 1e6,  # type: ignore[arg-type]
        errors=sum(
            int(r[k])  # type: ignore[call-overload]
            for r in results
            for k in ("http_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
        ),
        p99_ms=max(float(r["p99_us"]) for r in results) / 1000,  # type: ignore[arg-type]
        stored=stored,
    )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="shepherd-scale-") as tmp:
        work = Path(tmp)
        sim, base_url = await start_simulator()
        try:
            pulls = build_sim_world(sim, work)
            # Every API answer waits 50 ms (log downloads are not API calls and are not slowed).
            sim.inject("*", delay=GITHUB_DELAY, times=None)
            rates = []
            for n in WORKER_COUNTS:
                print(f"bench: triage jobs, {n} worker process(es) ...", flush=True)
                rates.append(await measure_jobs(n, sim, base_url, pulls, work, args.seconds))
            calls = len(sim.requests)
        finally:
            await sim.close()
        bodies = work / "bodies"
        bodies.mkdir()
        index = ingest.write_bodies(bodies)
        ingests = []
        for n in (1, 2):
            print(f"bench: ingest, {n} serve process(es) ...", flush=True)
            ingests.append(await measure_ingest(n, args.seconds, work, index))

    cpus = os.cpu_count() or 1
    print()
    print(
        f"Jobs: triage over simulated GitHub ({GITHUB_DELAY * 1000:.0f} ms per API call), "
        f"{LOOPS_PER_PROCESS} loops per worker process, PostgreSQL, {args.seconds:.0f} s window, "
        f"{cpus} CPU(s); {calls} simulated API calls in all"
    )
    header = (
        f"{'worker processes':>16} {'jobs':>6} {'jobs/s':>8} {'vs 1':>6} {'per process':>12} "
        f"{'CPUs busy':>10} {'sim CPU':>8}"
    )
    print(header)
    print("-" * len(header))
    base = rates[0].rate
    for r in rates:
        print(
            f"{r.processes:>16} {r.done:>6} {r.rate:>8.1f} {r.rate / base:>5.2f}x "
            f"{r.rate / r.processes:>12.1f} {r.machine_busy:>10.0%} {r.sim_cpu:>8.2f}"
        )
    print(
        "CPUs busy: all cores, everything on the machine; sim CPU: cores' worth the simulator "
        "(OpenAPI validation, git) used. Near 100 % busy, the machine, not the queue, is the limit."
    )
    print()
    print("Ingest: shepherd serve --workers 0 on PostgreSQL, 32 connections in all, unpinned")
    header = f"{'serve processes':>16} {'req/s':>8} {'vs 1':>6} {'p99 ms':>8} {'errors':>7} {'stored':>8}"
    print(header)
    print("-" * len(header))
    base = ingests[0].rate
    for i in ingests:
        print(
            f"{i.servers:>16} {i.rate:>8.0f} {i.rate / base:>5.2f}x {i.p99_ms:>8.1f} "
            f"{i.errors:>7} {i.stored:>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
