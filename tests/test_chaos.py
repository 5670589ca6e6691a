"""Chaos: two ``serve`` and three ``worker`` processes on PostgreSQL, faults everywhere.

One GitHub simulator (in this process, on 127.0.0.1) owns real bare repositories with 24 PRs, each
failing CI on unused imports (the ``af-ruff-check-unused-imports`` scenario). A few hundred signed
deliveries for them — pull_request opened/synchronize, the failed workflow_job (some also a
second attempt), check_suite completed, ``/shepherd`` comments — go to both servers in random
order, with redeliveries of the same GUID mixed in. Meanwhile the simulator answers some calls
with 5xx, secondary rate limits (403 + retry-after) or slowly, worker processes are SIGKILLed and
restarted, and one server is SIGKILLed mid-burst and restarted; what it never acknowledged is
sent again, as GitHub's redelivery would.

Once faults stop and the queues drain, the invariants of issue 7 must hold:
- every acknowledged delivery is done, and its handlers' effects (events in the PR's log, jobs)
  exist exactly once: the expected effects are computed by running the same routers in this
  process on the same payload;
- one Shepherd push per PR (one ``git/update-ref`` that moved the branch, one commit with the
  ``Shepherd-Job`` trailer on it);
- one ``shepherd`` check run per head SHA (``checks/create`` succeeded at most once per SHA, later
  writes edited it) and one sticky comment per PR;
- no job stuck: nothing queued or running, dead jobs only with a recorded error.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from bot.app.observability import Metrics
from bot.app.worker import dispatch_delivery
from bot.kernel.settings import Settings
from bot.reporting.summary import STICKY_MARKER
from bot.store import DeliveryState, StoredDelivery
from handlers import ROUTERS
from handlers.context import HandlerContext
from tests.conftest import WEBHOOK_SECRET, webhook_headers
from tests.e2e_support import World, scenario_files, scenario_log
from tests.ghsim import GitHubSim, SimJob, SimPull, SimRun, init_bare_repo, start_simulator
from tests.proc_support import ShepherdProcess, shepherd_env, stop_all
from tests.store_support import opened, postgres_admin, store_url

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

RUFF = "af-ruff-check-unused-imports"
REPOS = 3
PRS_PER_REPO = 8
SECOND_ATTEMPT_EVERY = 3  # every third PR also gets a failed re-run (attempt 2) of the same SHA
REDELIVERY_SHARE = 0.4
SENDERS = 16
WORKER_KILLS = 6
KILL_INTERVAL = 2.5
FAULT_INTERVAL = 0.15
#: After the last delivery, faults and kills go on this long while jobs run.
CHAOS_TAIL = 8.0
QUIESCE_TIMEOUT = 75.0
REQUEST_TIMEOUT = 15.0

#: Operations the jobs call; faults are injected on these at random.
FAULT_TARGETS = (
    "apps/create-installation-access-token",
    "pulls/get",
    "pulls/list-files",
    "repos/get-content",
    "repos/compare-commits",
    "checks/list-for-ref",
    "checks/create",
    "checks/update",
    "issues/list-comments",
    "issues/create-comment",
    "issues/update-comment",
    "issues/add-labels",
    "actions/download-job-logs-for-workflow-run",
    "actions/get-job-for-workflow-run",
    "git/create-blob",
    "git/create-tree",
    "git/create-commit",
    "git/update-ref",
    "reactions/create-for-issue-comment",
)
SECONDARY_LIMIT = {
    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you "
    "try again.",
    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
}


@dataclass(frozen=True)
class Delivery:
    id: str
    event: str
    body: bytes


@dataclass
class Expected:
    """What one delivery's handlers decide, from running the routers on it in this process."""

    events: Counter[tuple[str, int, str]]
    job_keys: frozenset[str]


@dataclass
class Ledger:
    statuses: dict[str, list[int | None]] = field(default_factory=dict)

    def note(self, delivery_id: str, status: int | None) -> None:
        self.statuses.setdefault(delivery_id, []).append(status)

    def acknowledged(self, delivery_id: str) -> bool:
        return any(s is not None and 200 <= s < 300 for s in self.statuses.get(delivery_id, []))


@dataclass
class PullCase:
    world: World
    pull: SimPull
    run: SimRun
    job: SimJob
    head: str


class Clock:
    """Phase durations, printed so a slow run shows where the time went."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name], self._last = now - self._last, now


def _delivery(event: str, payload: dict[str, Any]) -> Delivery:
    return Delivery(str(uuid.uuid4()), event, json.dumps(payload).encode())


def build_world(sim: GitHubSim, tmp_path: Path, settings: Settings) -> list[PullCase]:
    """Three repositories with eight PRs each, every PR failing ruff on its head."""
    cases: list[PullCase] = []
    for r in range(REPOS):
        bare, base_sha = init_bare_repo(
            tmp_path / "remote" / "acme" / f"svc{r}.git", {"README.md": f"service {r}\n"}
        )
        repo = sim.add_repo("acme", f"svc{r}", git_dir=bare)
        # World's payload builders need no server or worker: those are the processes here.
        world = World(sim, repo, bare, base_sha, cast(Any, None), cast(Any, None), settings)
        for j in range(PRS_PER_REPO):
            number = 100 * (r + 1) + j
            # A file of its own, so no two PRs share a head commit.
            files = {**scenario_files(RUFF), f"notes/pr{number}.md": f"PR {number}\n"}
            pull = world.open_pull(f"feature-{number}", files, number=number)
            run, job = world.fail_job(pull.head_sha, "lint", scenario_log(RUFF))
            cases.append(PullCase(world, pull, run, job, pull.head_sha))
    return cases


def build_deliveries(cases: list[PullCase]) -> list[Delivery]:
    deliveries: list[Delivery] = []
    for n, case in enumerate(cases):
        w, pull = case.world, case.pull
        deliveries += [
            _delivery("pull_request", w.pull_request_event(pull, "opened")),
            _delivery("pull_request", w.pull_request_event(pull, "synchronize")),
            _delivery("workflow_job", w.workflow_job_event(case.run, case.job)),
            _delivery("check_suite", w.check_suite_event(pull, case.head, conclusion="failure")),
            _delivery("issue_comment", w.comment_event(pull.number, "/shepherd help")),
            _delivery("issue_comment", w.comment_event(pull.number, "/shepherd explain")),
        ]
        if n % SECOND_ATTEMPT_EVERY == 0:
            deliveries.append(
                _delivery("workflow_job", w.workflow_job_event(case.run, case.job, attempt=2))
            )
    return deliveries


async def expected_effects(deliveries: list[Delivery], settings: Settings) -> dict[str, Expected]:
    out: dict[str, Expected] = {}
    for d in deliveries:
        data = json.loads(d.body)
        stored = StoredDelivery(
            id=d.id,
            event=d.event,
            action=data.get("action"),
            installation_id=(data.get("installation") or {}).get("id"),
            repo=(data.get("repository") or {}).get("full_name"),
            payload=d.body,
            received_at=datetime.now(UTC),
            state=DeliveryState.PENDING,
            attempts=0,
            error=None,
        )
        ctx = HandlerContext.for_delivery(stored, settings)
        errors = await dispatch_delivery(stored, ROUTERS, ctx, Metrics())
        assert not errors, errors
        out[d.id] = Expected(
            Counter((e.repo, e.pr, e.kind) for e in ctx.events),
            frozenset(j.key for j in ctx.jobs),
        )
    return out


async def send_all(
    servers: list[ShepherdProcess],
    sends: list[Delivery],
    ledger: Ledger,
    *,
    on_ack: Any = None,
) -> None:
    """Send with ``SENDERS`` connections, spread over the servers; no answer is noted as None."""
    queue: asyncio.Queue[tuple[int, Delivery]] = asyncio.Queue()
    for item in enumerate(sends):
        queue.put_nowait(item)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            n, d = queue.get_nowait()
            server = servers[n % len(servers)]
            status: int | None
            try:
                async with session.post(
                    f"{server.url}/webhook",
                    data=d.body,
                    headers=webhook_headers(d.event, d.body, delivery=d.id, secret=WEBHOOK_SECRET),
                    timeout=timeout,
                ) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = None  # the server was killed mid-request, or is down
            ledger.note(d.id, status)
            if on_ack is not None and status is not None and 200 <= status < 300:
                await on_ack()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=SENDERS)) as session:
        await asyncio.gather(*(sender(session) for _ in range(SENDERS)))


async def inject_faults(sim: GitHubSim, rng: random.Random, stop: asyncio.Event) -> int:
    """Every ``FAULT_INTERVAL``: one 5xx, secondary rate limit, or slow answer on a random call."""
    injected = 0
    while not stop.is_set():
        target = rng.choice(FAULT_TARGETS)
        kind = rng.random()
        if kind < 0.4:
            sim.inject(target, status=rng.choice((500, 502, 503)))
        elif kind < 0.7:
            sim.inject(target, status=403, headers={"retry-after": "1"}, body=SECONDARY_LIMIT)
        else:
            sim.inject(target, delay=rng.uniform(0.2, 1.0))
        injected += 1
        await asyncio.sleep(FAULT_INTERVAL)
    # Faults not yet triggered must not fire after the chaos phase.
    for fault in sim.faults:
        fault.times = 0
    return injected


async def kill_workers(
    workers: list[ShepherdProcess], rng: random.Random, stop: asyncio.Event
) -> int:
    kills = 0
    while not stop.is_set() and kills < WORKER_KILLS:
        await asyncio.sleep(KILL_INTERVAL * rng.uniform(0.6, 1.4))
        victim = rng.choice(workers)
        await victim.kill()
        kills += 1
        await asyncio.sleep(0.3)
        await victim.start()
    return kills


async def wait_quiescent(url: str, processes: list[ShepherdProcess]) -> None:
    """Until no delivery is pending or processing and no job is queued or running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + QUIESCE_TIMEOUT
    async with opened(url) as store:
        while True:
            stats = await store.stats()
            busy = {
                **{f"deliveries {k}": v for k, v in stats.deliveries.items()},
                **{f"jobs {k}": v for k, v in stats.jobs.items()},
            }
            busy = {
                k: v
                for k, v in busy.items()
                if v and k.split()[1] in ("pending", "processing", "queued", "running")
            }
            if not busy:
                return
            for p in processes:
                if not p.alive:
                    pytest.fail(f"{p.name} died:\n{p.log_tail()}")
            if loop.time() > deadline:
                pytest.fail(f"not quiescent after {QUIESCE_TIMEOUT:.0f} s: {busy}")
            await asyncio.sleep(0.25)


def _schema(url: str) -> str:
    return url.rsplit("schema=", 1)[1]


async def test_chaos_many_processes_faults_and_kills(tmp_path: Path) -> None:
    rng = random.Random(7)
    sim, base_url = await start_simulator()
    settings = Settings(
        github_webhook_secret=WEBHOOK_SECRET,
        data_dir=tmp_path / "unused",
        repair_debounce_seconds=0,
        log_format="text",
    )
    processes: list[ShepherdProcess] = []
    try:
        cases = build_world(sim, tmp_path, settings)
        deliveries = build_deliveries(cases)
        expected = await expected_effects(deliveries, settings)
        by_id = {d.id: d for d in deliveries}

        async with store_url("postgres", tmp_path) as url:

            def env(name: str) -> dict[str, str]:
                return shepherd_env(
                    {
                        "GITHUB_APP_ID": str(sim.app_id),
                        "GITHUB_PRIVATE_KEY": str(sim.private_key_pem),
                        "GITHUB_API_URL": base_url,
                        "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
                        "DATABASE_URL": url,
                        # Its own data dir per process, as on separate machines; a restarted
                        # worker finds what its killed predecessor left behind.
                        "SHEPHERD_DATA_DIR": str(tmp_path / "data" / name),
                        "SHEPHERD_LOG_FORMAT": "json",
                        "SHEPHERD_REPAIR_DEBOUNCE": "0",
                        "SHEPHERD_SETTLE_TIMEOUT": "2",
                        "SHEPHERD_SETTLE_POLL": "0.2",
                        "SHEPHERD_JOB_LEASE": "5",
                        "SHEPHERD_DELIVERY_LEASE": "3",
                        "SHEPHERD_SHUTDOWN_GRACE": "10",
                    }
                )

            logs = tmp_path / "logs"
            servers = [ShepherdProcess.serve(f"serve{i}", env(f"serve{i}"), logs) for i in (1, 2)]
            workers = [
                ShepherdProcess.worker(f"worker{i}", env(f"worker{i}"), logs) for i in (1, 2, 3)
            ]
            processes = servers + workers
            # The first start migrates the schema; the others then start together.
            clock = Clock()
            await servers[0].start()
            await asyncio.gather(*(p.start() for p in processes[1:]))
            clock.lap("start")

            # Redeliveries (same GUID) mixed in; the shuffle puts events out of order.
            sends = deliveries + rng.sample(deliveries, int(len(deliveries) * REDELIVERY_SHARE))
            rng.shuffle(sends)
            ledger = Ledger()
            stop_chaos = asyncio.Event()
            faults = asyncio.create_task(inject_faults(sim, rng, stop_chaos))
            killer = asyncio.create_task(kill_workers(workers, rng, stop_chaos))

            acks = 0
            victim = servers[1]

            async def on_ack() -> None:
                nonlocal acks
                acks += 1
                if acks == len(sends) // 3:
                    await victim.kill()

            await send_all(servers, sends, ledger, on_ack=on_ack)
            assert victim.exit_codes == [-9], "the server was not killed mid-burst"
            unanswered = [d for d in deliveries if not ledger.acknowledged(d.id)]
            assert unanswered, "the server kill cost no delivery: nothing was tested"
            await victim.start()
            # GitHub's redelivery of what got no 2xx, plus duplicates of acknowledged ones.
            again = unanswered + rng.sample(
                [d for d in deliveries if ledger.acknowledged(d.id)], 20
            )
            rng.shuffle(again)
            await send_all(servers, again, ledger)
            clock.lap("send")

            await asyncio.sleep(CHAOS_TAIL)
            stop_chaos.set()
            injected = await faults
            kills = await killer
            clock.lap("chaos tail")
            await wait_quiescent(url, processes)
            clock.lap("quiesce")
            codes = await stop_all(processes)
            clock.lap("stop")

            # The chaos really happened: faults were answered, not just queued.
            hit = Counter(
                "5xx" if r.status >= 500 else "rate limit"
                for r in sim.requests
                if r.status >= 500 or r.status == 403
            )
            print(
                f"chaos: {len(sends) + len(again)} sends of {len(deliveries)} deliveries, "
                f"{len(unanswered)} unanswered at the server kill, {injected} faults injected, "
                f"answered {dict(hit)}, {kills} worker kills; "
                f"timings {', '.join(f'{k} {v:.1f}s' for k, v in clock.laps.items())}"
            )
            assert injected > 50, injected
            assert kills >= 3, kills
            # Which injected faults fire depends on which calls the workers make meanwhile:
            # enough of both kinds, not a fixed share of each (4 rate limits of 14 was seen).
            assert sum(hit.values()) > 10, hit
            assert hit["5xx"] >= 2, hit
            assert hit["rate limit"] >= 2, hit
            assert set(codes.values()) == {0}, codes
            await assert_deliveries_exactly_once(url, by_id, expected, ledger)
            jobs = await assert_no_job_stuck(url)
        assert_github_effects(sim, cases, jobs)
        sim.assert_no_violations()
    finally:
        for p in processes:
            await p.kill()
        await sim.close()


async def assert_deliveries_exactly_once(
    url: str, by_id: dict[str, Delivery], expected: dict[str, Expected], ledger: Ledger
) -> None:
    for delivery_id, statuses in ledger.statuses.items():
        answered = [s for s in statuses if s is not None]
        assert set(answered) <= {200, 202}, (delivery_id, statuses)
        assert answered.count(202) <= 1, f"{delivery_id} accepted twice: {statuses}"
        assert ledger.acknowledged(delivery_id), f"{delivery_id} never acknowledged: {statuses}"
    async with opened(url) as store:
        logs: dict[tuple[str, int], list[Any]] = {}
        for exp in expected.values():
            for repo, pr, _ in exp.events:
                if (repo, pr) not in logs:
                    logs[(repo, pr)] = await store.list_events(repo, pr)
        for delivery_id, d in by_id.items():
            stored = await store.get_delivery(delivery_id)
            assert stored is not None, f"{d.event} {delivery_id} acknowledged but not stored"
            assert stored.state == DeliveryState.DONE, (delivery_id, stored.state, stored.error)
            got = Counter(
                (e.repo, e.pr, e.kind)
                for log in logs.values()
                for e in log
                if e.delivery_id == delivery_id
            )
            assert got == expected[delivery_id].events, (
                f"{d.event} {delivery_id}: handler events {dict(got)}, "
                f"expected {dict(expected[delivery_id].events)}"
            )
            for key in expected[delivery_id].job_keys:
                assert await store.find_job(key) is not None, f"{delivery_id}: no job {key}"
        stats = await store.stats()
        assert sum(stats.deliveries.values()) == len(by_id)


async def assert_no_job_stuck(url: str) -> list[Any]:
    """Every job done or dead (with its reason); returns the jobs table for later messages."""
    admin = await postgres_admin()
    try:
        # The schema name is ours: store_url generated it.
        columns = "id, kind, key, state, attempts, outcome, result, error"
        table = f'"{_schema(url)}".jobs'
        rows = await admin.fetch(f"SELECT {columns} FROM {table} ORDER BY id")  # noqa: S608
    finally:
        await admin.close()
    assert rows, "no jobs at all"
    states = Counter(r["state"] for r in rows)
    assert states.keys() <= {"done", "dead"}, states
    for r in rows:
        if r["state"] == "dead":
            assert r["error"], f"job {r['key']} is dead without a reason"
    # Every repair job for the original heads ran to an end (dead ones are not silently lost).
    assert any(r["kind"] == "repair" and r["state"] == "done" for r in rows)
    return list(rows)


def _branch_log(case: PullCase) -> list[str]:
    out = subprocess.run(
        [
            "git",
            "log",
            "--format=%B%x00",
            f"{case.head}..refs/heads/{case.pull.head_ref}",
        ],
        cwd=case.world.bare,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [m for m in out.split("\x00") if m.strip()]


def _repair_jobs(jobs: list[Any], case: PullCase) -> list[str]:
    """The repair jobs of a PR's head, for failure messages."""
    return [
        f"{r['key']}: {r['state']} after {r['attempts']} attempt(s), {r['outcome']}: "
        f"{(json.loads(r['result']) if r['result'] else {}).get('title')} {r['error'] or ''}"
        for r in jobs
        if r["kind"] == "repair" and case.head in r["key"]
    ]


def assert_github_effects(sim: GitHubSim, cases: list[PullCase], jobs: list[Any]) -> None:
    # One push per PR: one successful ref update per branch, one trailer commit on it.
    moved = Counter(
        r.path.split("/git/refs/", 1)[1] for r in sim.calls("git/update-ref") if r.status == 200
    )
    for case in cases:
        branch = f"heads/{case.pull.head_ref}"
        assert moved[branch] == 1, (
            f"{case.pull.head_ref}: {moved[branch]} pushes; {_repair_jobs(jobs, case)}"
        )
        commits = _branch_log(case)
        trailers = [m for m in commits if "Shepherd-Job:" in m]
        assert len(commits) == len(trailers) == 1, (case.pull.head_ref, commits)

    # One shepherd check run per head SHA: created once, edited thereafter.
    created = Counter(
        (r.path.split("/")[3], r.json["head_sha"])
        for r in sim.calls("checks/create")
        if r.status == 201
    )
    assert all(n == 1 for n in created.values()), {k: n for k, n in created.items() if n > 1}
    runs = Counter(
        (r["_repo"], r["head_sha"]) for r in sim.check_runs.values() if r["name"] == "shepherd"
    )
    assert all(n == 1 for n in runs.values()), runs
    for case in cases:
        assert runs[(case.world.repo.full_name, case.head)] == 1, case.pull.head_ref

    # One sticky comment per PR.
    sticky = Counter(
        (c["_repo"], c["_issue"]) for c in sim.comments.values() if STICKY_MARKER in c["body"]
    )
    for case in cases:
        key = (case.world.repo.full_name, case.pull.number)
        assert sticky[key] == 1, f"{key}: {sticky[key]} sticky comments"
