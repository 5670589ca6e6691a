"""``shepherd replay PAYLOAD.json --event NAME [--dry-run]``: one webhook payload, locally.

The payload goes through the same path as a delivery from GitHub: stored, dispatched through
``handlers.ROUTERS``, its jobs run by a worker. With ``--dry-run`` everything runs against a
throwaway store and the GitHub client records its writes instead of making them (reads still go
to GitHub when credentials are configured), so an operator sees exactly what Shepherd would do.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bot.app.jobs import JobDeps
from bot.app.observability import Metrics
from bot.app.worker import WorkerPool, dispatch_delivery
from bot.github.client import PlannedWrite
from bot.kernel import JSONObject
from bot.kernel.errors import ConfigError
from bot.kernel.settings import Settings
from bot.store import DeliveryState, NewDelivery, Store, StoredDelivery
from bot.store.connect import open_store
from handlers.context import HandlerContext

MAX_ROUNDS = 200


@dataclass
class ReplayReport:
    delivery_id: str
    jobs: list[JSONObject] = field(default_factory=list)
    events: list[JSONObject] = field(default_factory=list)
    writes: list[PlannedWrite] = field(default_factory=list)
    github: bool = False

    def render(self) -> str:
        lines = [f"delivery {self.delivery_id}"]
        if not self.jobs:
            lines.append("  handlers created no work")
        for job in self.jobs:
            lines.append(
                f"  job {job['kind']} {job['key']}: {job['state']} {job['outcome'] or ''}".rstrip()
            )
            if job.get("error"):
                lines.append(f"    error: {job['error']}")
        for event in self.events:
            lines.append(f"  event {event['repo']}#{event['pr']} {event['kind']}")
        if not self.github:
            lines.append(
                "  (GitHub credentials not configured: jobs were recorded, not run against GitHub)"
            )
        for write in self.writes:
            body = json.dumps(write.body)[:300] if write.body is not None else ""
            lines.append(f"  would {write.method} {write.path} {body}".rstrip())
        return "\n".join(lines)


def _load(path: Path) -> tuple[bytes, JSONObject]:
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return raw, data


async def replay(path: Path, event: str, *, settings: Settings, dry_run: bool) -> ReplayReport:
    raw, data = _load(path)
    if dry_run:
        scratch = Path(tempfile.mkdtemp(prefix="shepherd-replay-"))
        settings = settings.model_copy(update={"data_dir": scratch, "database_url": None})
    settings = settings.model_copy(update={"repair_debounce_seconds": 0})
    store: Store = open_store(settings.effective_database_url)
    await store.open()
    metrics = Metrics()
    deps = JobDeps.build(settings, store, metrics)
    writes: list[PlannedWrite] = []
    if dry_run and deps.github is not None:
        deps.github.dry_run = writes
    pool = WorkerPool(store=store, settings=settings, metrics=metrics, count=0, deps=deps)
    installation = data.get("installation")
    repository = data.get("repository")
    delivery = NewDelivery(
        id=f"replay-{uuid.uuid4()}",
        event=event,
        action=data.get("action") if isinstance(data.get("action"), str) else None,
        installation_id=installation.get("id") if isinstance(installation, dict) else None,
        repo=repository.get("full_name") if isinstance(repository, dict) else None,
        payload=raw,
        received_at=datetime.now(UTC),
    )
    report = ReplayReport(delivery_id=delivery.id, writes=writes, github=deps.github is not None)
    # The handlers are pure: run them once here to learn which job keys this payload makes.
    preview = HandlerContext.for_delivery(_stored(delivery), settings)
    await dispatch_delivery(_stored(delivery), pool.routers, preview, metrics)
    try:
        await store.record_delivery(delivery)
        for _ in range(MAX_ROUNDS):
            if not await pool.run_once("replay"):
                break
        report.jobs, report.events = await _decisions(store, data, [j.key for j in preview.jobs])
    finally:
        await pool.stop()
        await store.close()
    return report


def _stored(d: NewDelivery) -> StoredDelivery:
    return StoredDelivery(
        id=d.id,
        event=d.event,
        action=d.action,
        installation_id=d.installation_id,
        repo=d.repo,
        payload=d.payload,
        received_at=d.received_at,
        state=DeliveryState.PENDING,
        attempts=0,
        error=None,
    )


async def _decisions(
    store: Store, data: JSONObject, keys: list[str]
) -> tuple[list[JSONObject], list[JSONObject]]:
    jobs: list[JSONObject] = []
    pending = list(keys)
    while pending:
        job = await store.find_job(pending.pop(0))
        if job is not None:
            if job.result and isinstance(job.result.get("routed_to"), str):
                pending.append(job.result["routed_to"])  # re-enqueued under the PR's key
                continue
            jobs.append(
                {
                    "kind": job.kind,
                    "key": job.key,
                    "state": job.state.value,
                    "outcome": job.outcome,
                    "error": job.error,
                }
            )
    events: list[JSONObject] = []
    repository = data.get("repository") or {}
    numbers = {
        n
        for n in (
            data.get("number"),
            (data.get("issue") or {}).get("number"),
            (data.get("pull_request") or {}).get("number"),
        )
        if isinstance(n, int)
    }
    for number in sorted(numbers):
        for e in await store.list_events(str(repository.get("full_name", "")), number):
            events.append({"repo": e.repo, "pr": e.pr, "kind": e.kind})
    return jobs, events
