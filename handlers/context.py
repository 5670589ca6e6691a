"""What a webhook handler receives besides the event: a place to put its decisions.

Handlers do no I/O. They parse the event, decide, and call ``enqueue``/``record``; the worker
commits the delivery, the jobs and the events in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.kernel.settings import Settings
from bot.kernel.target import JobRequest
from bot.store import EventSpec, JobSpec, StoredDelivery


@dataclass
class HandlerContext:
    delivery_id: str
    #: The App's bot login (``<slug>[bot]``): the loop guard and comment filters use it.
    bot_login: str
    app_slug: str
    repair_debounce: timedelta
    now: datetime
    jobs: list[JobSpec] = field(default_factory=list)
    events: list[EventSpec] = field(default_factory=list)

    @classmethod
    def for_delivery(cls, delivery: StoredDelivery, settings: Settings) -> HandlerContext:
        return cls(
            delivery_id=delivery.id,
            bot_login=settings.bot_login,
            app_slug=settings.app_slug,
            repair_debounce=timedelta(seconds=settings.repair_debounce_seconds),
            now=datetime.now(UTC),
        )

    def enqueue(
        self,
        request: JobRequest,
        key: str,
        *,
        concurrency_key: str | None = None,
        delay: timedelta = timedelta(0),
    ) -> None:
        """Queue the job that runs ``request`` (its kind is the request's ``KIND``)."""
        self.jobs.append(
            JobSpec(
                kind=request.KIND,
                key=key,
                # The delivery id rides along for tracing; requests do not read it.
                payload={**request.payload(), "delivery_id": self.delivery_id},
                concurrency_key=concurrency_key,
                run_after=self.now + delay,
            )
        )

    def record(self, repo: str, pr: int, kind: str, **data: Any) -> None:
        """Append a decision to the PR's event log (rendered later by ``/shepherd explain``)."""
        self.events.append(
            EventSpec(repo=repo, pr=pr, kind=kind, data=data, delivery_id=self.delivery_id)
        )
