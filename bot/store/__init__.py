"""Durable store of webhook deliveries, jobs and the per-PR event log.

``bot.store.connect.open_store(url)`` picks the backend from ``DATABASE_URL``: ``sqlite:///absolute/path.db`` (the
embedded default) or ``postgresql://...`` (several processes and machines). Both implement the
``Store`` protocol of ``bot.store.base`` and pass the same test-suite.
"""

from __future__ import annotations

from bot.store.base import (
    DeliveryState,
    DeliverySummary,
    EventSpec,
    GroupCommitter,
    Job,
    JobSpec,
    JobState,
    NewDelivery,
    OutcomeCount,
    PrActivity,
    PrEvent,
    Pruned,
    Scope,
    Store,
    StoredDelivery,
    StoreStats,
)

__all__ = [
    "DeliveryState",
    "DeliverySummary",
    "EventSpec",
    "GroupCommitter",
    "Job",
    "JobSpec",
    "JobState",
    "NewDelivery",
    "OutcomeCount",
    "PrActivity",
    "PrEvent",
    "Pruned",
    "Scope",
    "Store",
    "StoreStats",
    "StoredDelivery",
]
