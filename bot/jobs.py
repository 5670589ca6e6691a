"""Job kinds and their runners: the registry the worker dispatches leased jobs through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bot.observability import Metrics
from bot.settings import Settings
from bot.store import EventSpec, Job, Store


@dataclass(frozen=True)
class JobResult:
    #: ``fixed``, ``rerun``, ``handoff``, ``noop`` (the Outcome kinds) or a kind-specific word.
    outcome: str
    result: dict[str, Any] | None = None
    events: list[EventSpec] = field(default_factory=list)


@dataclass
class JobDeps:
    """The I/O edges a job may use, built once per process."""

    settings: Settings
    store: Store
    metrics: Metrics

    @classmethod
    def build(cls, settings: Settings, store: Store, metrics: Metrics) -> JobDeps:
        return cls(settings=settings, store=store, metrics=metrics)

    async def close(self) -> None:
        return None


JobRunner = Callable[[Job, JobDeps], Awaitable[JobResult]]

#: kind → runner. Explicit: a new job kind is one line here.
JOB_RUNNERS: dict[str, JobRunner] = {}
