"""The aiohttp application: ``/webhook``, ``/healthz``, ``/readyz``, ``/metrics``, and the web
UI's pages (``bot/webui``: App registration, sign-in, ``/status``).

Ingest does the minimum GitHub needs before its 10-second timeout: verify the signature on the
raw bytes, store the delivery durably, answer 202. Everything else happens in workers. The
webhook secret is read from the settings on every delivery, so the secret of an App registered
through the setup page applies to the very next one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import orjson
from aiohttp import web
from gidgethub import ValidationFailure
from gidgethub.sansio import validate_event

from bot.app.observability import Metrics
from bot.app.worker import IngestGauge, WorkerPool
from bot.github.webhooks import read_envelope
from bot.kernel.errors import PayloadError, StoreError
from bot.kernel.problems import PROBLEM_JSON, Problem
from bot.kernel.settings import Settings
from bot.store import NewDelivery, Store
from bot.store.connect import open_store
from bot.webui.app import add_web_ui

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", Metrics)
WORKERS = web.AppKey("workers", WorkerPool)
INGEST = web.AppKey("ingest", IngestGauge)

_MAX_DELIVERY_ID = 100
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ProblemError(Exception):
    """Raised inside a request handler to answer with a problem document."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.title)
        self.problem = problem


def problem_response(request: web.Request, problem: Problem) -> web.Response:
    """Render a problem as RFC 9457 JSON, or as markdown when the client asks for it."""
    headers = {}
    if problem.retry_after is not None:
        headers["Retry-After"] = str(int(problem.retry_after))
    accept = request.headers.get("Accept", "")
    if "text/markdown" in accept and PROBLEM_JSON not in accept:
        return web.Response(
            status=problem.status,
            text=problem.to_markdown(),
            content_type="text/markdown",
            headers=headers,
        )
    return web.Response(
        status=problem.status,
        body=json.dumps(problem.to_json()).encode(),
        content_type=PROBLEM_JSON,
        headers=headers,
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProblemError as exc:
        return problem_response(request, exc.problem)
    except web.HTTPRequestEntityTooLarge:
        return problem_response(request, _too_large(request.app[SETTINGS].max_body_bytes))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(
            request, Problem.of(f"http-{exc.status}", exc.reason, exc.status, exc.text or "")
        )
    except Exception:
        # The one place that turns an unexpected error into a response: log it with the
        # traceback, but never send the traceback to the client.
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem_response(
            request,
            Problem.of("internal", "Internal error", 500, "The error was logged.", retryable=True),
        )


def _too_large(limit: int) -> Problem:
    return Problem.of(
        "payload-too-large",
        "Payload too large",
        413,
        f"Webhook bodies are limited to {limit} bytes.",
    )


async def webhook(request: web.Request) -> web.Response:
    gauge = request.app[INGEST]
    gauge.in_flight += 1
    try:
        return await _ingest(request)
    finally:
        gauge.in_flight -= 1


async def _ingest(request: web.Request) -> web.Response:
    """Verify, record durably, answer: GitHub waits 10 s and never retries a failed delivery."""
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    secret = settings.github_webhook_secret
    if secret is None:  # no App yet: the setup page at / registers one
        raise ProblemError(
            Problem.of(
                "not-configured",
                "Webhook secret not set",
                503,
                "No GitHub App is configured yet; register one from this server's setup page.",
            )
        )
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise ProblemError(_too_large(settings.max_body_bytes))
    body = await request.read()
    event = request.headers.get("X-GitHub-Event", "")
    _verify_signature(request, body, secret.get_secret_value(), metrics)
    if request.content_type != "application/json":
        metrics.deliveries.labels(event or "unknown", "bad_content_type").inc()
        raise ProblemError(
            Problem.of(
                "unsupported-media-type",
                "Unsupported media type",
                415,
                f"Expected application/json, got {request.content_type!r}; set the App's "
                "webhook content type to application/json.",
            )
        )
    delivery_id = _delivery_id(request, event)
    try:
        envelope = read_envelope(body)
    except PayloadError as exc:
        metrics.deliveries.labels(event, "malformed").inc()
        raise ProblemError(Problem.of("malformed-json", "Malformed JSON", 400, str(exc))) from None
    delivery = NewDelivery(
        id=delivery_id,
        event=event,
        action=envelope.action,
        installation_id=envelope.installation_id,
        repo=envelope.repo,
        payload=body,
        received_at=datetime.now(UTC),
    )
    inserted = await _record(request, delivery)
    metrics.deliveries.labels(event, "accepted" if inserted else "duplicate").inc()
    return web.Response(
        body=orjson.dumps(
            {"delivery": delivery_id, "status": "accepted" if inserted else "duplicate"}
        ),
        status=202 if inserted else 200,
        content_type="application/json",
    )


def _verify_signature(request: web.Request, body: bytes, secret: str, metrics: Metrics) -> None:
    """``X-Hub-Signature-256`` over the raw body, before anything else reads it."""
    signature = request.headers.get("X-Hub-Signature-256")
    if not signature:
        # Unverified requests never name a label: a label per attacker-chosen event name would
        # grow the metrics without bound.
        metrics.deliveries.labels("unverified", "unsigned").inc()
        raise ProblemError(
            Problem.of(
                "signature-missing",
                "Signature missing",
                401,
                "Deliveries must carry X-Hub-Signature-256 (HMAC-SHA256 of the body).",
            )
        )
    try:
        validate_event(body, signature=signature, secret=secret)
    except ValidationFailure:
        metrics.deliveries.labels("unverified", "bad_signature").inc()
        raise ProblemError(
            Problem.of(
                "signature-invalid",
                "Signature invalid",
                401,
                "X-Hub-Signature-256 does not match the body and the configured secret.",
            )
        ) from None


def _delivery_id(request: web.Request, event: str) -> str:
    delivery_id = request.headers.get("X-GitHub-Delivery", "")
    missing = [
        name
        for name, value in (("X-GitHub-Event", event), ("X-GitHub-Delivery", delivery_id))
        if not value
    ]
    if missing:
        raise ProblemError(
            Problem.of("header-missing", "Header missing", 400, f"Missing {', '.join(missing)}.")
        )
    if len(delivery_id) > _MAX_DELIVERY_ID or not delivery_id.isprintable():
        raise ProblemError(
            Problem.of(
                "header-invalid", "Invalid delivery id", 400, "X-GitHub-Delivery is malformed."
            )
        )
    return delivery_id


async def _record(request: web.Request, delivery: NewDelivery) -> bool:
    """Store the delivery; whether it is new (a redelivery carries the same GUID)."""
    try:
        return await request.app[STORE].record_delivery(delivery)
    except StoreError as exc:
        log.warning("could not store delivery %s: %s", delivery.id, exc)
        request.app[METRICS].deliveries.labels(delivery.event, "store_unavailable").inc()
        raise ProblemError(
            Problem.of(
                "store-unavailable",
                "Store unavailable",
                503,
                "The delivery was not stored; redeliver it later.",
                retryable=True,
                retry_after=30,
            )
        ) from exc


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        await request.app[STORE].ping()
        checks["store"] = "ok"
    except StoreError as exc:
        checks["store"] = f"unreachable: {exc}"
    checks["workers"] = request.app[WORKERS].health()
    if all(v == "ok" for v in checks.values()):
        return web.json_response({"status": "ready", "checks": checks})
    detail = "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
    return problem_response(
        request, Problem.of("not-ready", "Not ready", 503, detail, retryable=True, retry_after=5)
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    try:
        stats = await request.app[STORE].stats()
    except StoreError:
        log.warning("metrics scrape: store unavailable")
    else:
        metrics.queue_depth.labels("deliveries").set(stats.deliveries_pending)
        metrics.queue_depth.labels("jobs").set(stats.jobs_queued)
        metrics.queue_age.set(stats.oldest_queued_job_age)
    return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    metrics: Metrics | None = None,
    workers: int | None = None,
    setup_token: str | None = None,
) -> web.Application:
    """The app factory, used by ``shepherd serve`` and by tests through ``aiohttp_client``.

    Without a webhook secret (no App registered yet) every delivery is refused with 503 until
    the setup page registers one; ``setup_token`` is the secret part of that page's link.
    """
    # One byte over the limit so aiohttp's own check maps to our 413 problem.
    app = web.Application(
        client_max_size=settings.max_body_bytes + 1, middlewares=[problem_middleware]
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics or Metrics()
    the_store = store or open_store(settings.effective_database_url)
    app[STORE] = the_store
    app[INGEST] = IngestGauge()
    app[WORKERS] = WorkerPool(
        store=the_store,
        settings=settings,
        metrics=app[METRICS],
        count=settings.workers if workers is None else workers,
        ingest=app[INGEST],
    )

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        await app[STORE].open()
        yield
        await app[STORE].close()

    async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
        await app[WORKERS].start()
        yield
        await app[WORKERS].stop()

    app.cleanup_ctx.extend([store_ctx, workers_ctx])
    app.router.add_post("/webhook", webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    add_web_ui(
        app,
        settings=settings,
        store=the_store,
        on_configured=app[WORKERS].use_github_app,
        setup_token=setup_token,
    )
    return app
