"""Crash safety: SIGKILL ``shepherd serve`` mid-burst, restart it, and lose or repeat nothing.

The server runs as a real subprocess (``.venv/bin/shepherd serve``), once on SQLite and once on
PostgreSQL. A few hundred signed deliveries of real payloads, some of them duplicates, go in
concurrently; when about half are acknowledged the process is killed with SIGKILL. It is started
again, everything that never got a 2xx is sent again (as GitHub's redelivery would) plus more
duplicates, and once the queue drains the server is stopped with SIGTERM.

"Processed exactly once" is observed through what processing leaves behind: every pull_request
and issue_comment delivery targets its own PR number, so its handler's decision (``pr.push`` or
``command.received``) must be in that PR's event log exactly once, from that delivery; every
job-producing delivery has its own job key, so the jobs table holds exactly one job per key.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import random
import signal
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from bot.store import DeliveryState, Store
from bot.store.episodes import EventKind
from tests.conftest import REPO_ROOT, TEST_DATABASE_URL, load_payload, webhook_headers
from tests.store_support import opened

pytestmark = pytest.mark.slow

SHEPHERD = REPO_ROOT / ".venv" / "bin" / "shepherd"
DISTINCT_DELIVERIES = 300
DUPLICATES_PER_PHASE = 30
SENDERS = 32
#: Short, so deliveries a killed worker held are dispatched again within seconds of the restart.
DELIVERY_LEASE_SECONDS = 3
SHUTDOWN_GRACE_SECONDS = 10
START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 15.0
DRAIN_TIMEOUT = 60.0


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery and the trace its processing must leave in the store."""

    id: str
    event: str
    body: bytes
    repo: str | None = None
    pr: int | None = None  # the PR whose event log gets exactly one entry from this delivery
    event_kind: str | None = None
    job_key: str | None = None
    #: A job several deliveries enqueue once between them (the base branch's prewarm).
    shared_job_key: str | None = None


@dataclass
class Ledger:
    """What the sender saw: every status (or None for no answer) per delivery id."""

    statuses: dict[str, list[int | None]] = field(default_factory=dict)

    def note(self, delivery_id: str, status: int | None) -> None:
        self.statuses.setdefault(delivery_id, []).append(status)

    def acknowledged(self, delivery_id: str) -> bool:
        return any(s is not None and 200 <= s < 300 for s in self.statuses.get(delivery_id, []))


def _sha(n: int) -> str:
    return hashlib.sha1(f"crash-{n}".encode()).hexdigest()  # noqa: S324 (a commit-id shape)


def make_deliveries(count: int) -> list[Delivery]:
    """Real payloads from ../shared, each given its own PR number / SHA / comment id."""
    pull = load_payload("pull_request", "opened.payload.json")
    comment = load_payload("issue_comment", "created.with-installation.payload.json")
    job = load_payload("workflow_job", "completed.failure.with-organization.payload.json")
    ping = load_payload("ping", "payload.json")
    deliveries: list[Delivery] = []
    for n in range(count):
        delivery_id = str(uuid.uuid4())
        kind = n % 4
        if kind == 0:
            data = copy.deepcopy(pull)
            number = 10_000 + n
            data["number"] = data["pull_request"]["number"] = number
            data["pull_request"]["head"]["sha"] = _sha(n)
            repo = data["repository"]["full_name"]
            deliveries.append(
                Delivery(
                    delivery_id,
                    "pull_request",
                    json.dumps(data).encode(),
                    repo=repo,
                    pr=number,
                    event_kind=EventKind.PUSH,
                    job_key=f"triage:{repo}#{number}@{_sha(n)}/opened",
                    shared_job_key=f"prewarm:{repo}@{data['pull_request']['base']['sha']}",
                )
            )
        elif kind == 1:
            data = copy.deepcopy(comment)
            number = 10_000 + n
            data["issue"]["number"] = number
            # The example comments on an issue; a PR's issue carries this link.
            data["issue"]["pull_request"] = {
                "url": f"https://api.github.com/repos/Codertocat/Hello-World/pulls/{number}"
            }
            data["comment"]["id"] = 900_000 + n
            data["comment"]["body"] = "/shepherd help"
            repo = data["repository"]["full_name"]
            deliveries.append(
                Delivery(
                    delivery_id,
                    "issue_comment",
                    json.dumps(data).encode(),
                    repo=repo,
                    pr=number,
                    event_kind="command.received",
                    job_key=f"command:{repo}#{number}/c{900_000 + n}",
                )
            )
        elif kind == 2:
            data = copy.deepcopy(job)
            # The organization example has no installation (a repository webhook); as an App
            # delivery it would, and only then does the handler enqueue.
            data["installation"] = {"id": 1}
            data["workflow_job"]["head_sha"] = _sha(n)
            repo = data["repository"]["full_name"]
            attempt = data["workflow_job"]["run_attempt"]
            deliveries.append(
                Delivery(
                    delivery_id,
                    "workflow_job",
                    json.dumps(data).encode(),
                    repo=repo,
                    job_key=f"repair:{repo}@{_sha(n)}/{attempt}",
                )
            )
        else:
            deliveries.append(Delivery(delivery_id, "ping", json.dumps(ping).encode()))
    return deliveries


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(data_dir: Path, database_url: str) -> dict[str, str]:
    # No GitHub App credentials (jobs are recorded only) and nothing inherited that could change
    # that; the webhook secret is the one the tests sign with.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "ANTHROPIC_", "SHEPHERD_", "DATABASE_URL"))
    }
    env.update(
        GITHUB_WEBHOOK_SECRET="test-webhook-secret",
        SHEPHERD_DATA_DIR=str(data_dir),
        DATABASE_URL=database_url,
        SHEPHERD_LOG_FORMAT="json",
        SHEPHERD_DELIVERY_LEASE=str(DELIVERY_LEASE_SECONDS),
        SHEPHERD_SHUTDOWN_GRACE=str(SHUTDOWN_GRACE_SECONDS),
        SHEPHERD_RETENTION_DAYS="0",  # the jobs counted below are the deliveries' own
    )
    return env


@dataclass
class Server:
    proc: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


async def start_server(tmp_path: Path, database_url: str, name: str, *, workers: int = 2) -> Server:
    port = free_port()
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(SHEPHERD),
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            env=server_env(tmp_path / "data", database_url),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    server = Server(proc, port, log)
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT
    async with aiohttp.ClientSession() as session:
        while True:
            if proc.returncode is not None:
                pytest.fail(f"shepherd serve exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                async with session.get(
                    f"{server.url}/healthz", timeout=aiohttp.ClientTimeout(total=2)
                ) as response:
                    if response.status == 200:
                        return server
            except (aiohttp.ClientError, TimeoutError):
                pass  # not listening yet
            if asyncio.get_running_loop().time() > deadline:
                proc.kill()
                await proc.wait()
                pytest.fail(f"shepherd serve did not become healthy:\n{server.log_tail()}")
            await asyncio.sleep(0.1)


async def send_all(
    url: str,
    sends: Iterable[Delivery],
    ledger: Ledger,
    *,
    kill_after: int | None = None,
    kill: asyncio.subprocess.Process | None = None,
) -> None:
    """Send concurrently with ``SENDERS`` connections; SIGKILL ``kill`` after ``kill_after`` acks."""
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    for item in sends:
        queue.put_nowait(item)
    acked = 0
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal acked
        while not queue.empty():
            d = queue.get_nowait()
            status: int | None
            try:
                async with session.post(
                    f"{url}/webhook",
                    data=d.body,
                    headers=webhook_headers(d.event, d.body, delivery=d.id),
                    timeout=timeout,
                ) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = None  # killed mid-request, or refused after the kill
            ledger.note(d.id, status)
            if status is not None and 200 <= status < 300:
                acked += 1
                if kill is not None and kill_after is not None and acked == kill_after:
                    kill.send_signal(signal.SIGKILL)

    connector = aiohttp.TCPConnector(limit=SENDERS)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(sender(session) for _ in range(SENDERS)))


async def wait_until_drained(store: Store, server: Server) -> None:
    deadline = asyncio.get_running_loop().time() + DRAIN_TIMEOUT
    while True:
        stats = await store.stats()
        busy = stats.deliveries.get(DeliveryState.PENDING, 0) + stats.deliveries.get(
            DeliveryState.PROCESSING, 0
        )
        if busy == 0:
            return
        if server.proc.returncode is not None:
            pytest.fail(f"the restarted server died:\n{server.log_tail()}")
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{busy} deliveries still pending after {DRAIN_TIMEOUT:.0f} s")
        await asyncio.sleep(0.2)


async def stop_server(server: Server) -> int:
    server.proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(server.proc.wait(), SHUTDOWN_GRACE_SECONDS + 10)
    except TimeoutError:
        server.proc.kill()
        await server.proc.wait()
        pytest.fail(f"shepherd serve ignored SIGTERM:\n{server.log_tail()}")


@asynccontextmanager
async def database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """An empty store's DATABASE_URL: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'shepherd.db'}"
        return
    try:
        admin = await asyncpg.connect(TEST_DATABASE_URL, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {TEST_DATABASE_URL} ({exc}); start it with "
            "`service postgresql start` (the crash test must run on both backends).",
            pytrace=False,
        )
    schema = f"test_crash_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in TEST_DATABASE_URL else "?"
    try:
        yield f"{TEST_DATABASE_URL}{separator}schema={schema}"
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_sigkill_mid_burst_loses_and_repeats_nothing(backend: str, tmp_path: Path) -> None:
    assert SHEPHERD.exists(), f"{SHEPHERD} missing: run `make test` (it creates the venv)"
    deliveries = make_deliveries(DISTINCT_DELIVERIES)
    by_id = {d.id: d for d in deliveries}
    rng = random.Random(2)
    ledger = Ledger()

    async with database(backend, tmp_path) as url:
        # Phase 1: a burst with duplicates mixed in, killed with SIGKILL at half acknowledged.
        first = await start_server(tmp_path, url, "first")
        burst = deliveries + rng.sample(deliveries, DUPLICATES_PER_PHASE)
        rng.shuffle(burst)
        await send_all(
            first.url, burst, ledger, kill_after=DISTINCT_DELIVERIES // 2, kill=first.proc
        )
        assert await asyncio.wait_for(first.proc.wait(), 10) == -signal.SIGKILL
        unanswered = [d for d in deliveries if not ledger.acknowledged(d.id)]
        acked_before_kill = [d for d in deliveries if ledger.acknowledged(d.id)]
        assert len(acked_before_kill) >= DISTINCT_DELIVERIES // 3, "killed too early to matter"
        assert unanswered, "every delivery was answered before the kill: nothing was tested"

        # Phase 2: restart; GitHub-style redelivery of everything unanswered, plus duplicates.
        second = await start_server(tmp_path, url, "second")
        exit_code: int | None = None
        try:
            duplicates = rng.sample(acked_before_kill, DUPLICATES_PER_PHASE)
            redeliveries = unanswered + duplicates
            rng.shuffle(redeliveries)
            after = Ledger()
            await send_all(second.url, redeliveries, after)
            # Acknowledged before the crash means stored before the crash: a duplicate now.
            assert {after.statuses[d.id][0] for d in duplicates} == {200}, after.statuses
            # Unanswered ones were either lost (202 now) or stored just before the kill (200).
            assert {after.statuses[d.id][0] for d in unanswered} <= {200, 202}
            for delivery_id, statuses in after.statuses.items():
                ledger.statuses.setdefault(delivery_id, []).extend(statuses)
            async with opened(url) as store:
                await wait_until_drained(store, second)
        finally:
            if second.proc.returncode is None:
                exit_code = await stop_server(second)
        assert exit_code == 0, f"SIGTERM exit code {exit_code}:\n{second.log_tail()}"

        await assert_exactly_once(url, by_id, ledger)


async def assert_exactly_once(url: str, by_id: dict[str, Delivery], ledger: Ledger) -> None:
    # Every distinct delivery was acknowledged by the end, and ingest accepted each at most once.
    for delivery_id, statuses in ledger.statuses.items():
        answered = [s for s in statuses if s is not None]
        assert all(s in (200, 202) for s in answered), (delivery_id, statuses)
        assert answered.count(202) <= 1, f"{delivery_id} accepted twice: {statuses}"
        assert ledger.acknowledged(delivery_id), f"{delivery_id} never acknowledged: {statuses}"
    async with opened(url) as store:
        job_keys = Counter(d.job_key for d in by_id.values() if d.job_key is not None)
        assert all(n == 1 for n in job_keys.values())
        for d in by_id.values():
            stored = await store.get_delivery(d.id)
            assert stored is not None, f"{d.event} {d.id} was acknowledged but is not stored"
            assert stored.payload == d.body, f"{d.id}: payload bytes differ"
            assert stored.state == DeliveryState.DONE, (d.id, stored.state, stored.error)
            if d.pr is not None:
                assert d.repo is not None
                log = await store.list_events(d.repo, d.pr)
                assert [(e.kind, e.delivery_id) for e in log] == [(d.event_kind, d.id)], (
                    f"{d.event} {d.id}: processed {len(log)} times: {log}"
                )
            if d.job_key is not None:
                job = await store.find_job(d.job_key)
                assert job is not None, f"{d.event} {d.id}: job {d.job_key} missing"
                assert job.payload["delivery_id"] == d.id
        stats = await store.stats()
        assert sum(stats.deliveries.values()) == len(by_id)
        # No job beyond one per key: the upserts of a re-dispatched delivery made nothing new.
        shared = {d.shared_job_key for d in by_id.values() if d.shared_job_key is not None}
        assert sum(stats.jobs.values()) == len(job_keys) + len(shared)


async def test_sqlite_serve_and_a_worker_process_share_one_store(tmp_path: Path) -> None:
    """``serve --workers 0`` ingests and a separate ``shepherd worker`` dispatches, one SQLite file.

    The worker starts while serve is appending to its delivery log: the worker's start-up
    recovery must leave serve's growing segment alone, and every delivery is processed once.
    """
    deliveries = make_deliveries(120)
    by_id = {d.id: d for d in deliveries}
    ledger = Ledger()
    url = f"sqlite:///{tmp_path / 'data' / 'shepherd.db'}"
    server = await start_server(tmp_path, url, "serve", workers=0)
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as out:
        worker = await asyncio.create_subprocess_exec(
            str(SHEPHERD),
            "worker",
            "--workers",
            "2",
            env=server_env(tmp_path / "data", url),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        await send_all(server.url, deliveries, ledger)
        async with opened(url) as store:
            await wait_until_drained(store, server)
        assert worker.returncode is None, worker_log.read_text()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker_exit = await asyncio.wait_for(worker.wait(), SHUTDOWN_GRACE_SECONDS + 10)
        server_exit = await stop_server(server)
    assert (worker_exit, server_exit) == (0, 0), worker_log.read_text()
    await assert_exactly_once(url, by_id, ledger)
    for log in (worker_log, server.log):
        assert "restored" not in log.read_text(), log.read_text()
