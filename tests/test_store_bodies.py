"""Delivery bodies in segment files (bot/store/bodies.py) and how the SQLite store uses them."""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.kernel.errors import StoreError
from bot.store import DeliveryState, NewDelivery
from bot.store.bodies import BodyLog, BodyRef
from bot.store.sqlite import MIGRATIONS, SqliteStore
from tests.store_support import opened


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


async def record_and_finish(store: SqliteStore, d: NewDelivery) -> None:
    """Store ``d`` and process it, as a worker would."""
    assert await store.record_delivery(d)
    (claimed,) = await store.claim_deliveries("w1", 10, 60)
    assert claimed.id == d.id
    assert await store.complete_delivery(claimed.id, "w1", jobs=[], events=[])


def rec(body: bytes) -> tuple[bytes, bytes]:
    return b'{"id": "' + body[:8] + b'"}', body


def test_bodies_round_trip_across_batches_in_one_private_segment(tmp_path: Path) -> None:
    log = BodyLog(tmp_path / "bodies")
    first, end = log.append([rec(b"alpha"), rec(b""), rec(b"gamma" * 1000)])
    second, _ = log.append([rec(b"delta")])
    log.close()

    refs = [*first, *second]
    assert [log.read(ref) for ref in refs] == [b"alpha", b"", b"gamma" * 1000, b"delta"]
    assert len({ref.segment for ref in refs}) == 1
    assert refs[3].offset > end  # the second batch starts where the first ended
    (segment,) = (tmp_path / "bodies").iterdir()
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600  # webhook bodies are private data
    assert stat.S_IMODE((tmp_path / "bodies").stat().st_mode) == 0o700


def test_a_full_segment_is_followed_by_a_new_one(tmp_path: Path) -> None:
    log = BodyLog(tmp_path, segment_bytes=10)
    refs = [ref for body in (b"0123456789", b"abc", b"def") for ref in log.append([rec(body)])[0]]
    log.close()
    assert len({ref.segment for ref in refs}) == 3  # each batch filled its segment
    assert [log.read(ref) for ref in refs] == [b"0123456789", b"abc", b"def"]
    assert log.segments() == sorted(ref.segment for ref in refs)


def test_damaged_missing_or_forged_bodies_are_clear_errors(tmp_path: Path) -> None:
    log = BodyLog(tmp_path)
    (ref,), _ = log.append([rec(b"the original body")])
    log.close()
    path = tmp_path / ref.segment
    data = path.read_bytes()
    path.write_bytes(data.replace(b"original", b"0riginal"))
    with pytest.raises(StoreError, match="damaged"):
        log.read(ref)
    path.write_bytes(data[:-3])
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
    (before,), _ = log.append([rec(b"kept")])
    assert log._fd is not None
    os.close(log._fd)  # the disk goes away under the writer: every write now fails (EBADF)
    with pytest.raises(StoreError, match="cannot write delivery bodies"):
        log.append([rec(b"lost")])
    (after,), _ = log.append([rec(b"next")])
    log.close()
    assert after.segment != before.segment
    assert (log.read(before), log.read(after)) == (b"kept", b"next")


def test_recovery_reads_complete_records_and_stops_at_a_torn_end(tmp_path: Path) -> None:
    log = BodyLog(tmp_path)
    refs, end = log.append([rec(b"one" * 100), rec(b"two" * 100)])
    assert log.recover(refs[0].segment, 0) is None  # still being written by this log
    log.close()
    (segment,) = log.segments()
    with (tmp_path / segment).open("ab") as torn:  # a batch cut short by a crash
        torn.write(b"SHB1\x05\x00\x00\x00")

    scan = log.recover(segment, 0)
    assert scan is not None
    records = scan.records
    assert [r.meta for r in records] == [rec(b"one" * 100)[0], rec(b"two" * 100)[0]]
    assert [r.body for r in records] == refs
    assert records[-1].end == end
    assert scan.size == end + 8  # the torn bytes are there, and not a record
    resumed = log.recover(segment, records[0].end)  # from an indexed end
    assert resumed is not None
    assert resumed.records == records[1:]
    at_end = log.recover(segment, end)
    assert at_end is not None
    assert at_end.records == []


def test_a_segment_another_process_is_writing_is_not_recovered(tmp_path: Path) -> None:
    writer = BodyLog(tmp_path)  # flock is per open file: a second log stands for a second process
    (ref,), _ = writer.append([rec(b"in flight")])
    reader = BodyLog(tmp_path)
    assert reader.recover(ref.segment, 0) is None
    writer.close()
    scan = reader.recover(ref.segment, 0)
    assert scan is not None
    assert [r.body for r in scan.records] == [ref]


async def test_the_store_keeps_bodies_out_of_sqlite_and_reads_them_back(tmp_path: Path) -> None:
    db = tmp_path / "shepherd.db"
    body = b'{"marker": "' + os.urandom(16).hex().encode() + b'"}'
    async with opened(SqliteStore(db)) as store:
        assert await store.record_delivery(delivery("d1", body))
        assert not await store.record_delivery(delivery("d1", body))  # a redelivery
        stored = await store.get_delivery("d1")
        assert stored is not None
        assert stored.payload == body
        (claimed,) = await store.claim_deliveries("w1", 10, 60)
        assert claimed.payload == body
    database_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("shepherd.db*") if p.is_file())
    assert body not in database_bytes
    segments = list((tmp_path / "shepherd.db-bodies").iterdir())
    assert any(body in segment.read_bytes() for segment in segments)


async def test_a_damaged_body_fails_its_delivery_and_spares_the_rest(tmp_path: Path) -> None:
    db = tmp_path / "shepherd.db"
    async with opened(SqliteStore(db)) as store:
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
        assert stats.deliveries.get(DeliveryState.FAILED) == 1
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
    async with opened(SqliteStore(db)) as store:
        assert await store.record_delivery(delivery("new", b'{"zen": "segment"}'))
        claimed = {d.id: d.payload for d in await store.claim_deliveries("w1", 10, 60)}
    assert claimed == {"old": b'{"zen": "inline"}', "new": b'{"zen": "segment"}'}


async def test_deliveries_whose_rows_a_power_cut_took_are_restored_from_the_log(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shepherd.db"
    async with opened(SqliteStore(db)) as store:
        await record_and_finish(store, delivery("done-before", b'{"n": 1}'))
        with sqlite3.connect(db) as conn:
            (indexed_to,) = conn.execute("SELECT indexed_to FROM body_segments").fetchone()
        assert await store.record_delivery(delivery("lost-1", b'{"n": 2}'))
        assert await store.record_delivery(delivery("lost-2", b'{"n": 3}'))
    # What a power cut may do to rows committed without fsync: the last ones never happened.
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM deliveries WHERE id LIKE 'lost-%'")
        conn.execute("UPDATE body_segments SET indexed_to = ?", (indexed_to,))

    for _ in range(2):  # recovery runs at every open, and restores each delivery once
        async with opened(SqliteStore(db)) as store:
            stats = await store.stats()
            assert {state: n for state, n in stats.deliveries.items() if n} == {
                "done": 1,
                "pending": 2,
            }
            lost = await store.get_delivery("lost-2")
            assert lost is not None
            assert (lost.payload, lost.event, lost.action, lost.repo) == (
                b'{"n": 3}', "check_run", "completed", "octo/repo",
            )  # fmt: skip
            assert lost.installation_id == 1
            assert not await store.record_delivery(delivery("lost-1", b'{"n": 2}'))  # redelivery


async def test_pruning_deletes_the_segments_no_row_points_into_and_no_other(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shepherd.db"
    bodies = tmp_path / "shepherd.db-bodies"
    # Every batch fills its segment.
    async with opened(SqliteStore(db, segment_bytes=1)) as store:
        month_ago = datetime.now(UTC) - timedelta(days=40)
        for name in ("a", "b", "c"):
            assert await store.record_delivery(
                replace(delivery(name, b'{"n": "' + name.encode() + b'"}'), received_at=month_ago)
            )
        claimed = await store.claim_deliveries("w1", 10, 60)
        for d in claimed:
            assert await store.complete_delivery(d.id, "w1", jobs=[], events=[])
        assert len(list(bodies.iterdir())) == 3
        with sqlite3.connect(db) as conn:
            (current,) = conn.execute(
                "SELECT body_segment FROM deliveries WHERE id = 'c'"
            ).fetchone()
        crashed = BodyLog(bodies)  # a process that logged a delivery and died before indexing it
        (unindexed,), _ = crashed.append([rec(b"acknowledged, not yet indexed")])
        crashed.close()
        live = BodyLog(bodies)  # a process that is writing right now
        (growing,), _ = live.append([rec(b"being written")])

        pruned = await store.prune_deliveries(datetime.now(UTC) - timedelta(days=30))
        live.close()

    # The first two go; the third is this store's own open segment; the others are not ours to
    # drop: one holds records only a restart re-indexes, the other is still being written.
    assert (pruned.deliveries, pruned.segments) == (3, 2)
    assert {p.name for p in bodies.iterdir()} == {current, unindexed.segment, growing.segment}
    with sqlite3.connect(db) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM body_segments")}
    assert names == {current}


async def test_a_segment_with_a_torn_end_is_marked_indexed_and_can_be_pruned(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shepherd.db"
    async with opened(SqliteStore(db)) as store:
        await record_and_finish(store, delivery("d1", b'{"n": 1}'))
    (segment,) = (tmp_path / "shepherd.db-bodies").iterdir()
    with segment.open("ab") as torn:  # the process died in the middle of its next batch
        header = b"SHB1" + (60).to_bytes(4, "little") + (9000).to_bytes(4, "little") + bytes(8)
        torn.write(header + b'{"id": "d2", "ev')

    # Recovery: nothing to restore, the torn bytes are junk for good.
    async with opened(SqliteStore(db)) as store:
        with sqlite3.connect(db) as conn:
            (indexed_to,) = conn.execute("SELECT indexed_to FROM body_segments").fetchone()
        assert indexed_to == segment.stat().st_size
        pruned = await store.prune_deliveries(datetime.now(UTC) + timedelta(days=1))
    assert (pruned.deliveries, pruned.segments) == (1, 1)
    assert not segment.exists()


async def test_the_store_threads_run_just_below_the_event_loop(tmp_path: Path) -> None:
    async with opened(SqliteStore(tmp_path / "shepherd.db")) as store:
        writer = await store._on_writer(lambda: os.getpriority(os.PRIO_PROCESS, 0))
    loop_thread = os.getpriority(os.PRIO_PROCESS, 0)
    assert writer == min(loop_thread + 2, 19)
