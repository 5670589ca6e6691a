"""Delivery bodies in segment files (bot/store/bodies.py) and how the SQLite store uses them."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.errors import StoreError
from bot.store import DeliveryState, NewDelivery, SqliteStore
from bot.store.bodies import BodyLog, BodyRef
from bot.store.sqlite import MIGRATIONS


def delivery(delivery_id: str, payload: bytes) -> NewDelivery:
    return NewDelivery(
        id=delivery_id,
        event="check_run",
        action="completed",
        installation_id=1,
        repo="octo/repo",
        payload=payload,
        received_at=datetime.now(UTC),
    )


def test_bodies_round_trip_across_batches_in_one_private_segment(tmp_path: Path) -> None:
    log = BodyLog(tmp_path / "bodies")
    first = log.append([b"alpha", b"", b"gamma" * 1000])
    second = log.append([b"delta"])
    log.close()

    refs = [*first, *second]
    assert [log.read(ref) for ref in refs] == [b"alpha", b"", b"gamma" * 1000, b"delta"]
    assert len({ref.segment for ref in refs}) == 1
    assert [ref.offset for ref in refs] == [0, 5, 5, 5005]  # contiguous, no framing bytes
    (segment,) = (tmp_path / "bodies").iterdir()
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600  # webhook bodies are private data
    assert stat.S_IMODE((tmp_path / "bodies").stat().st_mode) == 0o700
    assert segment.read_bytes() == b"alpha" + b"gamma" * 1000 + b"delta"


def test_a_full_segment_is_followed_by_a_new_one(tmp_path: Path) -> None:
    log = BodyLog(tmp_path, segment_bytes=10)
    refs = [ref for body in (b"0123456789", b"abc", b"def") for ref in log.append([body])]
    log.close()
    assert refs[0].segment != refs[1].segment  # the first filled its segment
    assert refs[1].segment == refs[2].segment
    assert [log.read(ref) for ref in refs] == [b"0123456789", b"abc", b"def"]


def test_damaged_missing_or_forged_bodies_are_clear_errors(tmp_path: Path) -> None:
    log = BodyLog(tmp_path)
    (ref,) = log.append([b"the original body"])
    log.close()
    path = tmp_path / ref.segment
    path.write_bytes(b"the 0riginal body")
    with pytest.raises(StoreError, match="damaged"):
        log.read(ref)
    path.write_bytes(b"the orig")
    with pytest.raises(StoreError, match="damaged"):
        log.read(ref)
    path.unlink()
    with pytest.raises(StoreError, match="cannot read"):
        log.read(ref)
    with pytest.raises(StoreError, match="invalid body segment name"):
        log.read(BodyRef("../../etc/passwd", 0, 10, 0))


def test_a_failed_write_is_an_error_and_the_next_batch_starts_a_fresh_segment(
    tmp_path: Path,
) -> None:
    log = BodyLog(tmp_path)
    (before,) = log.append([b"kept"])
    assert log._fd is not None
    os.close(log._fd)  # the disk goes away under the writer: every write now fails (EBADF)
    with pytest.raises(StoreError, match="cannot write delivery bodies"):
        log.append([b"lost"])
    (after,) = log.append([b"next"])
    log.close()
    assert after.segment != before.segment
    assert after.offset == 0
    assert (log.read(before), log.read(after)) == (b"kept", b"next")


async def test_the_store_keeps_bodies_out_of_sqlite_and_reads_them_back(tmp_path: Path) -> None:
    db = tmp_path / "shepherd.db"
    body = b'{"marker": "' + os.urandom(16).hex().encode() + b'"}'
    store = SqliteStore(db)
    await store.open()
    try:
        assert await store.record_delivery(delivery("d1", body))
        assert not await store.record_delivery(delivery("d1", body))  # a redelivery
        stored = await store.get_delivery("d1")
        assert stored is not None
        assert stored.payload == body
        (claimed,) = await store.claim_deliveries("w1", 10, 60)
        assert claimed.payload == body
    finally:
        await store.close()
    database_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("shepherd.db*") if p.is_file())
    assert body not in database_bytes
    segments = list((tmp_path / "shepherd.db-bodies").iterdir())
    assert any(body in segment.read_bytes() for segment in segments)


async def test_a_damaged_body_fails_its_delivery_and_spares_the_rest(tmp_path: Path) -> None:
    db = tmp_path / "shepherd.db"
    store = SqliteStore(db)
    await store.open()
    try:
        assert await store.record_delivery(delivery("bad", b'{"n": "bad"}'))
        assert await store.record_delivery(delivery("good", b'{"n": "good"}'))
        (segment,) = (tmp_path / "shepherd.db-bodies").iterdir()
        segment.write_bytes(segment.read_bytes().replace(b'"bad"', b'"BAD"'))

        claimed = await store.claim_deliveries("w1", 10, 60)
        assert [d.id for d in claimed] == ["good"]
        good = await store.get_delivery("good")
        assert good is not None
        assert good.state is DeliveryState.PROCESSING
        with pytest.raises(StoreError, match="damaged"):
            await store.get_delivery("bad")
        stats = await store.stats()
        assert stats.deliveries.get("failed") == 1
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:
        (error,) = conn.execute("SELECT error FROM deliveries WHERE id = 'bad'").fetchone()
    assert "damaged" in error


async def test_rows_written_before_segments_existed_keep_their_inline_bodies(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shepherd.db"
    with sqlite3.connect(db) as conn:  # a database as the first release left it
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (1, 0)")
        conn.execute(
            """INSERT INTO deliveries (id, event, payload, received_at, updated_at)
               VALUES ('old', 'ping', ?, 1, 1)""",
            (b'{"zen": "inline"}',),
        )
    store = SqliteStore(db)
    await store.open()
    try:
        assert await store.record_delivery(delivery("new", b'{"zen": "segment"}'))
        claimed = {d.id: d.payload for d in await store.claim_deliveries("w1", 10, 60)}
    finally:
        await store.close()
    assert claimed == {"old": b'{"zen": "inline"}', "new": b'{"zen": "segment"}'}
