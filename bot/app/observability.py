"""Prometheus metrics and structured logging.

Metrics live in a per-app ``CollectorRegistry`` (no module-level state), so two apps in one test
process never share counters. Every log line carries the delivery id, job id, installation, repo
and PR of the work it belongs to, taken from context variables set where that work starts.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LOG_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("shepherd_log_context", default=None)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach fields (delivery_id, job_id, installation, repo, pr) to every log line inside."""
    current = _LOG_CONTEXT.get() or {}
    token = _LOG_CONTEXT.set({**current, **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _LOG_CONTEXT.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.shepherd = _LOG_CONTEXT.get() or {}
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "shepherd", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = getattr(record, "shepherd", {})
        suffix = " ".join(f"{k}={v}" for k, v in context.items())
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        if suffix:
            line += f"  [{suffix}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is one line per webhook; our own ingest log carries more.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class Metrics:
    """The Prometheus metrics of one Shepherd process."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, list(labels), registry=r)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(name, doc, list(labels), registry=r)

        self.deliveries = counter(
            "shepherd_deliveries_total",
            "Webhook deliveries received, by event and result.",
            "event", "result",
        )  # fmt: skip
        self.handler_runs = counter(
            "shepherd_handler_runs_total",
            "Handler invocations, by handler and result.",
            "handler", "result",
        )  # fmt: skip
        self.jobs = counter(
            "shepherd_jobs_total", "Jobs finished, by kind and outcome.", "kind", "outcome"
        )
        self.job_duration = Histogram(
            "shepherd_job_duration_seconds",
            "Job run time, by kind.",
            ["kind"],
            registry=r,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
        )
        self.fixer_runs = counter(
            "shepherd_fixer_runs_total", "Fixer runs, by fixer and result.", "fixer", "result"
        )
        self.budget_exhausted = counter(
            "shepherd_budget_exhausted_total", "Budgets found spent, by budget.", "budget"
        )
        self.repair_outcomes = counter(
            "shepherd_repair_outcomes_total",
            "Repairs finished, by trigger (workflow_job, check_run, command, resume, ...) and "
            "outcome (fixed, rerun, handoff, noop).",
            "trigger", "outcome",
        )  # fmt: skip
        self.llm_tokens = counter(
            "shepherd_llm_tokens_total",
            "LLM tokens, by kind (input, output, cache_read, cache_write).",
            "kind",
        )
        self.github_calls = counter(
            "shepherd_github_api_calls_total",
            "GitHub API calls, by method and status.",
            "method", "status",
        )  # fmt: skip
        self.github_rate_remaining = gauge(
            "shepherd_github_rate_limit_remaining", "Last seen x-ratelimit-remaining."
        )
        self.queue_depth = gauge(
            "shepherd_queue_depth", "Queued work, by kind (deliveries, jobs).", "kind"
        )
        self.queue_age = gauge(
            "shepherd_queue_oldest_age_seconds", "Age of the oldest runnable job."
        )

    # The GitHub client reports through this narrow hook, so it never imports prometheus.
    def observe_call(self, method: str, status: int) -> None:
        self.github_calls.labels(method, str(status)).inc()

    def observe_rate_limit(self, remaining: int) -> None:
        self.github_rate_remaining.set(remaining)

    def render(self) -> bytes:
        return generate_latest(self.registry)
