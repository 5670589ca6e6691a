"""The SQLite store's delivery log: append-only segment files, fsynced once per batch.

Why not a BLOB column: measured on one core, an 18 KB body costs SQLite ~50 µs of CPU per
delivery (overflow pages, WAL frames with checksums, then the same bytes copied again by every
checkpoint) — a quarter of a whole request. Appending the batch to a file is one ``write`` and
one ``fdatasync``.

Each record is a header, the delivery's metadata (JSON) and its body, exactly as received::

    "SHB1" | metadata length | body length | CRC-32 of metadata | CRC-32 of body   (5 x 4 bytes)
    metadata (JSON: id, event, action, installation_id, repo, received_at)
    body

The log is what makes a delivery durable: once ``append`` returns, the batch survives a power
cut. The row that indexes a record (and says where its body is) is then committed without an
fsync of its own (see ``SqliteStore``), so a batch costs one fsync, not two. A power cut may
lose such rows; ``recover`` finds the records past what the database durably indexed and lets
the store insert them again, so no acknowledged delivery is lost, and none is indexed twice.

Each process appends to segments of its own (named by start time, pid and a random tag) and holds
an exclusive ``flock`` on the one it is writing, so recovery in another process (a ``worker``
starting beside a running ``serve``) never reads a segment that is still growing. Segments are
never rewritten; like the rows that point into them, they are kept.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.kernel.errors import StoreError

log = logging.getLogger(__name__)

#: A new segment is started once the current one reaches this size.
SEGMENT_BYTES = 64 * 1024 * 1024
_SEGMENT_NAME = re.compile(r"\A[0-9]{13}-[0-9]+-[0-9a-f]{8}\.seg\Z")
_HEADER = struct.Struct("<4sIIII")
_MAGIC = b"SHB1"
#: How much of a segment recovery reads at once.
_SCAN_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class BodyRef:
    """Where one body is: the row stores these four values instead of the bytes."""

    segment: str
    offset: int  # of the body itself, past its record's header and metadata
    length: int
    crc: int


@dataclass(frozen=True)
class Record:
    """One record found by ``recover``: its metadata, where its body is, where the next starts."""

    meta: bytes
    body: BodyRef
    end: int


@dataclass(frozen=True)
class Scan:
    """What ``recover`` found past a segment's indexed end, and how long the file is."""

    records: list[Record]
    size: int


class BodyLog:
    """Append-only segments in one directory. ``append`` is called from one thread only."""

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self._segment_bytes = segment_bytes
        self._fd: int | None = None
        self._name = ""
        self._size = 0

    def append(self, records: Sequence[tuple[bytes, bytes]]) -> tuple[list[BodyRef], int]:
        """Write (metadata, body) records at the end of this process's segment and fdatasync.

        Returns where each body is, and the segment's end after the batch. Raises StoreError.
        """
        fd = self._fd
        if fd is None or self._size >= self._segment_bytes:
            fd = self._start_segment()
        refs: list[BodyRef] = []
        parts: list[bytes] = []
        offset = self._size
        for meta, body in records:
            crc = zlib.crc32(body)
            parts += (_HEADER.pack(_MAGIC, len(meta), len(body), zlib.crc32(meta), crc), meta, body)
            offset += _HEADER.size + len(meta)
            refs.append(BodyRef(self._name, offset, len(body), crc))
            offset += len(body)
        data = memoryview(b"".join(parts))
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fdatasync(fd)
        except OSError as exc:
            # The segment may now end in a partial record; recovery stops there, and the next
            # batch starts a fresh segment so that no offset is computed past it. Complete
            # records before the tear are indexed at the next open: stored although answered
            # 503, so their redelivery is a duplicate and each is still processed once.
            self._close_segment()
            raise StoreError(f"cannot write delivery bodies to {self.directory}: {exc}") from exc
        self._size = offset
        return refs, offset

    def read(self, ref: BodyRef) -> bytes:
        """The body ``ref`` names, checked against its CRC-32."""
        path = self._path(ref.segment)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.pread(fd, ref.length, ref.offset)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(f"cannot read a delivery body from {path}: {exc}") from exc
        if len(data) != ref.length or zlib.crc32(data) != ref.crc:
            raise StoreError(
                f"delivery body at {path}:{ref.offset} is damaged "
                f"(expected {ref.length} bytes with CRC-32 {ref.crc:08x})"
            )
        return data

    def segments(self) -> list[str]:
        """The names of every segment in the directory, sorted (by start time, to the ms)."""
        try:
            names = [p.name for p in self.directory.iterdir() if _SEGMENT_NAME.match(p.name)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list {self.directory}: {exc}") from exc
        return sorted(names)

    def recover(self, segment: str, start: int) -> Scan | None:
        """The complete records of ``segment`` from ``start``, or None while a process writes it.

        Reading stops at the first record that is incomplete or fails its checks: the torn end
        of a batch whose fdatasync never returned, so nobody was told it was stored. No process
        appends to the segment any more, so those bytes stay junk for good.
        """
        if segment == self._name and self._fd is not None:
            return None  # our own, still growing
        fd = self._lock(segment)
        return None if fd is None else self._scan(fd, segment, start)

    def drop(self, segment: str, indexed_to: int) -> bool:
        """Delete ``segment`` if no process writes it and rows indexed all of it; say if it did.

        Called only for segments no row points into. ``indexed_to`` short of the file's size means
        records a crash left unindexed: the next ``open`` restores them, so the file stays.
        """
        if segment == self._name and self._fd is not None:
            return False
        fd = self._lock(segment)
        if fd is None:
            return False
        path = self._path(segment)
        try:
            if os.fstat(fd).st_size != indexed_to:
                return False
            path.unlink()  # under the lock: recovery elsewhere waits for it, then finds no file
            self._fsync_directory()
        except OSError as exc:
            raise StoreError(f"cannot delete {path}: {exc}") from exc
        finally:
            os.close(fd)
        return True

    def _lock(self, segment: str) -> int | None:
        """An fd holding ``segment``'s exclusive lock, or None if it is being written or gone."""
        path = self._path(segment)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None  # pruned by another process since it was listed
        except OSError as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None  # another live process is appending to it
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {path}: {exc}") from exc
        return fd

    def close(self) -> None:
        self._close_segment()

    def _scan(self, fd: int, segment: str, start: int) -> Scan:
        try:
            return Scan(self._records(fd, segment, start), os.fstat(fd).st_size)
        except OSError as exc:
            raise StoreError(f"cannot read {self._path(segment)}: {exc}") from exc
        finally:
            os.close(fd)  # releases the lock

    @staticmethod
    def _records(fd: int, segment: str, start: int) -> list[Record]:
        found: list[Record] = []
        buffer, base = b"", start  # ``buffer`` holds the segment's bytes from offset ``base``
        while True:
            chunk = os.pread(fd, _SCAN_CHUNK, base + len(buffer))
            buffer += chunk
            at = 0
            while len(buffer) - at >= _HEADER.size:
                magic, meta_len, body_len, meta_crc, body_crc = _HEADER.unpack_from(buffer, at)
                if magic != _MAGIC or meta_len == 0:  # every record carries its metadata
                    return found
                body_at = at + _HEADER.size + meta_len
                end = body_at + body_len
                if end > len(buffer):
                    break  # the rest is in the next chunk, or this is the torn end
                meta = buffer[at + _HEADER.size : body_at]
                if zlib.crc32(meta) != meta_crc or zlib.crc32(buffer[body_at:end]) != body_crc:
                    return found
                found.append(
                    Record(meta, BodyRef(segment, base + body_at, body_len, body_crc), base + end)
                )
                at = end
            buffer, base = buffer[at:], base + at
            if not chunk:
                return found

    def _path(self, segment: str) -> Path:
        if not _SEGMENT_NAME.match(segment):
            raise StoreError(f"invalid body segment name {segment!r}")
        return self.directory / segment

    def _start_segment(self) -> int:
        self._close_segment()
        name = f"{time.time_ns() // 1_000_000:013d}-{os.getpid()}-{secrets.token_hex(4)}.seg"
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(
                self.directory / name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                0o600,
            )
        except OSError as exc:
            raise StoreError(f"cannot create a body segment in {self.directory}: {exc}") from exc
        try:
            # Held while this process may append, so no other process recovers a growing file.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The new file's directory entry must survive a crash too, or fsynced records in it
            # would be unreachable: fsync the directory once per segment.
            self._fsync_directory()
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot create a body segment in {self.directory}: {exc}") from exc
        self._fd, self._name, self._size = fd, name, 0
        return fd

    def _fsync_directory(self) -> None:
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _close_segment(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:  # everything acknowledged was fsynced already: nothing is lost
                log.warning("closing body segment %s failed: %s", self._name, exc)
