"""Helpers for tests that need a real store: a fresh SQLite file or a fresh PostgreSQL schema.

PostgreSQL must be running (see DESIGN.md): when it is not, the tests that need it FAIL, saying how
to start it, instead of silently skipping the backend that production uses at scale.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from bot.store import Store, open_store

BACKENDS = ["sqlite", "postgres"]

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url() -> str:
    return os.environ.get("SHEPHERD_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


async def postgres_admin() -> Any:
    """A plain asyncpg connection to the test database, or a test failure explaining the fix."""
    try:
        return await asyncpg.connect(postgres_url(), timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {postgres_url()} ({exc}). Start it with "
            "`service postgresql start` (or `pg_ctlcluster 15 main start`), make sure database "
            "`test` exists (`createdb -U postgres test`), or point SHEPHERD_TEST_POSTGRES_URL at "
            "another server.",
            pytrace=False,
        )


@asynccontextmanager
async def store_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A DATABASE_URL for an empty store of ``backend``, removed afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'shepherd.db'}"
        return
    schema = f"test_store_{uuid.uuid4().hex[:12]}"
    admin = await postgres_admin()
    try:
        yield f"{postgres_url()}?schema={schema}"
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


StoreT = TypeVar("StoreT", bound=Store)


@asynccontextmanager
async def opened(target: str | StoreT) -> AsyncIterator[Store | StoreT]:
    """Open the store at a DATABASE_URL (or one built by the test), closed afterwards."""
    store = open_store(target) if isinstance(target, str) else target
    await store.open()
    try:
        yield store
    finally:
        await store.close()
