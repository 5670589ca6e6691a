"""Shared fixtures. The narrow seams are faked here, once; everything else is real."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.kernel.settings import Settings

# Fixtures that live beside their support code: the GitHub simulator and the end-to-end world.
pytest_plugins = ["tests.ghsim", "tests.e2e_support", "tests.ghweb", "tests.webui_support"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
WEBHOOK_SECRET = "test-webhook-secret"
TEST_DATABASE_URL = os.environ.get(
    "SHEPHERD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session", autouse=True)
def shared_jobenv_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One warm pool of job environments for the whole run, as one Shepherd host has: the
    scenario repositories share their setup (``pip install -r requirements-dev.txt``), which
    is then downloaded once, not once per test. Subprocesses inherit it. Tests of the pool
    itself pass a pool of their own."""
    pool = tmp_path_factory.mktemp("jobenv-pool")
    os.environ["SHEPHERD_JOBENV_POOL"] = str(pool)
    return pool


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    assert SHARED.is_dir(), f"test data not found at {SHARED} (clone next to ../shared)"
    return SHARED


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_headers(
    event: str, body: bytes, *, delivery: str | None = None, secret: str = WEBHOOK_SECRET
) -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(body, secret),
        "Content-Type": "application/json",
    }


def load_payload(event: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SHARED / "github" / "webhooks" / event / name).read_text())
    return data


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "github_webhook_secret": WEBHOOK_SECRET,
            "workers": 0,
            "repair_debounce_seconds": 0,
            "log_format": "text",
            "retention_days": 0,  # no hourly prune job among the jobs a test counts
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()
