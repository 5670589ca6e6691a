"""Helpers for tests that need a real store: a fresh SQLite file or a fresh PostgreSQL schema.

PostgreSQL must be running (see DESIGN.md): when it is not, the tests that need it FAIL, saying how
to start it, instead of silently skipping the backend that production uses at scale.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

import asyncpg
import pytest

from bot.store import Store
from bot.store.connect import open_store
from tests.conftest import TEST_DATABASE_URL

BACKENDS = ["sqlite", "postgres"]


def postgres_url() -> str:
    return TEST_DATABASE_URL


async def postgres_admin() -> Any:
    """A plain asyncpg connection to the test database, or a test failure explaining the fix."""
    try:
        return await asyncpg.connect(postgres_url(), timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {postgres_url()} ({exc}). Start it with "
            "`service postgresql start` (or `pg_ctlcluster 15 main start`), make sure database "
            "`test` exists (`createdb -U postgres test`), or point SHEPHERD_TEST_DATABASE_URL at "
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


@overload
def opened(target: str) -> AbstractAsyncContextManager[Store]: ...


@overload
def opened(target: StoreT) -> AbstractAsyncContextManager[StoreT]: ...


def opened(target: str | Store) -> AbstractAsyncContextManager[Store]:
    """Open the store at a DATABASE_URL (or one built by the test), closed afterwards."""
    return _opened(open_store(target) if isinstance(target, str) else target)


@asynccontextmanager
async def _opened(store: StoreT) -> AsyncIterator[StoreT]:
    await store.open()
    try:
        yield store
    finally:
        await store.close()
