"""The webhook endpoint: every way a delivery can arrive, and what is stored for each."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app.web import STORE, create_app
from bot.kernel.settings import Settings
from bot.store import DeliveryState
from bot.store.connect import open_store
from tests.conftest import load_payload, sign, webhook_headers

Client = TestClient[web.Request, web.Application]
PING = json.dumps(load_payload("ping", "payload.json")).encode()


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> Client:
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


async def post(client: Client, body: bytes, headers: dict[str, str]) -> Any:
    return await client.post("/webhook", data=body, headers=headers)


async def test_signed_delivery_is_stored_before_202(client: Client) -> None:
    headers = webhook_headers("ping", PING, delivery="d-1")
    resp = await post(client, PING, headers)
    assert resp.status == 202
    assert (await resp.json()) == {"delivery": "d-1", "status": "accepted"}
    stored = await client.app[STORE].get_delivery("d-1")
    assert stored is not None
    assert stored.payload == PING
    assert stored.event == "ping"
    assert stored.state == DeliveryState.PENDING


async def test_redelivery_answers_200_and_is_stored_once(client: Client) -> None:
    headers = webhook_headers("ping", PING, delivery="dup")
    first, second = await asyncio.gather(post(client, PING, headers), post(client, PING, headers))
    assert sorted([first.status, second.status]) == [200, 202]
    third = await post(client, PING, headers)
    assert third.status == 200
    assert (await third.json())["status"] == "duplicate"
    stats = await client.app[STORE].stats()
    assert sum(stats.deliveries.values()) == 1


@pytest.mark.parametrize(
    ("mutate", "status", "slug"),
    [
        (lambda h: h.pop("X-Hub-Signature-256"), 401, "signature-missing"),
        (lambda h: h.update({"X-Hub-Signature-256": sign(b"other")}), 401, "signature-invalid"),
        (lambda h: h.update({"X-Hub-Signature-256": "sha1=abc"}), 401, "signature-invalid"),
        (
            lambda h: h.update({"X-Hub-Signature-256": sign(PING, "wrong")}),
            401,
            "signature-invalid",
        ),
        (lambda h: h.pop("X-GitHub-Event"), 400, "header-missing"),
        (lambda h: h.pop("X-GitHub-Delivery"), 400, "header-missing"),
        (
            lambda h: h.update({"Content-Type": "application/x-www-form-urlencoded"}),
            415,
            "unsupported-media-type",
        ),
    ],
    ids=["unsigned", "forged", "sha1-only", "wrong-secret", "no-event", "no-delivery", "form"],
)
async def test_rejected_deliveries_get_a_problem_and_store_nothing(
    client: Client, mutate: Any, status: int, slug: str
) -> None:
    headers = webhook_headers("ping", PING)
    mutate(headers)
    resp = await post(client, PING, headers)
    assert resp.status == status
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["type"].endswith("/" + slug)
    assert problem["status"] == status
    assert {"title", "detail", "retryable"} <= problem.keys()
    assert "Traceback" not in json.dumps(problem)
    stats = await client.app[STORE].stats()
    assert sum(stats.deliveries.values()) == 0


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b"\xff\xfe", b"\xef\xbb\xbf{}"],
    ids=["syntax", "array", "bytes", "bom"],
)
async def test_malformed_json_is_400(client: Client, body: bytes) -> None:
    resp = await post(client, body, webhook_headers("ping", body))
    assert resp.status == 400
    assert (await resp.json())["type"].endswith("/malformed-json")
    assert sum((await client.app[STORE].stats()).deliveries.values()) == 0


async def test_oversized_body_is_413(aiohttp_client: Any, make_settings: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(max_body_bytes=1024)))
    body = json.dumps({"zen": "x" * 4096}).encode()
    resp = await post(client, body, webhook_headers("ping", body))
    assert resp.status == 413
    assert (await resp.json())["type"].endswith("/payload-too-large")
    assert sum((await client.app[STORE].stats()).deliveries.values()) == 0


async def test_oversized_chunked_body_is_413(aiohttp_client: Any, make_settings: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(max_body_bytes=1024)))
    body = json.dumps({"zen": "x" * 4096}).encode()

    async def chunks() -> Any:  # no Content-Length: the limit must hold while reading
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    resp = await post(client, chunks(), webhook_headers("ping", body))
    assert resp.status == 413


async def test_problem_as_markdown_when_asked(client: Client) -> None:
    headers = webhook_headers("ping", PING)
    del headers["X-Hub-Signature-256"]
    headers["Accept"] = "text/markdown"
    resp = await post(client, PING, headers)
    assert resp.status == 401
    assert resp.content_type == "text/markdown"
    assert "Signature missing" in await resp.text()


async def test_unknown_route_is_a_problem(client: Client) -> None:
    resp = await client.get("/nope")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"


async def test_health_ready_and_metrics(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"]["store"] == "ok"
    await post(client, PING, webhook_headers("ping", PING))
    metrics = await (await client.get("/metrics")).text()
    assert 'shepherd_deliveries_total{event="ping",result="accepted"} 1.0' in metrics
    assert 'shepherd_queue_depth{kind="deliveries"} 1.0' in metrics


async def test_readyz_fails_when_the_store_is_down(client: Client) -> None:
    await client.app[STORE].close()
    resp = await client.get("/readyz")
    assert resp.status == 503
    problem = await resp.json()
    assert problem["retryable"] is True
    assert "store" in problem["detail"]


async def test_store_outage_answers_503_retryable(client: Client) -> None:
    await client.app[STORE].close()
    resp = await post(client, PING, webhook_headers("ping", PING))
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "30"
    assert (await resp.json())["retryable"] is True


async def test_without_a_secret_every_delivery_is_refused_until_an_app_is_registered(
    aiohttp_client: Any, make_settings: Any
) -> None:
    client = await aiohttp_client(create_app(make_settings(github_webhook_secret=None)))
    for headers in (webhook_headers("ping", PING), {"Content-Type": "application/json"}):
        resp = await post(client, PING, headers)
        assert resp.status == 503
        problem = await resp.json()
        assert problem["type"].endswith("/not-configured")
        assert "setup page" in problem["detail"]
    assert sum((await client.app[STORE].stats()).deliveries.values()) == 0


async def test_sqlite_file_lives_in_the_data_dir(settings: Settings) -> None:
    store = open_store(settings.effective_database_url)
    await store.open()
    await store.close()
    assert (settings.data_dir / "shepherd.db").exists()


async def test_unverified_requests_cannot_mint_metric_labels(client: Client) -> None:
    for n in range(3):
        headers = webhook_headers(f"made-up-{n}", PING)
        headers["X-Hub-Signature-256"] = sign(PING, "not-the-secret")
        assert (await post(client, PING, headers)).status == 401
    metrics = await (await client.get("/metrics")).text()
    assert "made-up" not in metrics
    assert 'shepherd_deliveries_total{event="unverified",result="bad_signature"} 3.0' in metrics
