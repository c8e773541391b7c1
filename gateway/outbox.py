"""The durable outbox: events wait here, on disk, until the upstream broker has acknowledged them.

Guarantees (see also docs/uplink.md, "Outbox"):

* **Durable before acknowledged.** :meth:`Outbox.put_many` returns only after the events are committed to
  SQLite in WAL mode with ``synchronous=FULL``: every commit fsyncs the write-ahead log, so a committed event
  survives a process kill *and* a power cut. (``synchronous=NORMAL`` in WAL mode only syncs at checkpoints
  and may lose the last commits on power loss — not acceptable when a node deletes a record as soon as we
  ACK it.) Commits are batched: all puts and acks waiting when the writer becomes free share one
  transaction and one fsync (group commit), so throughput grows with load instead of collapsing.
* **Priorities.** :meth:`next_batch` hands out the highest :class:`~gateway.events.Priority` first and, within
  one priority, in insertion order — so events of one source and priority (a *lane*) leave in order.
* **Deleted only after PUBACK.** Rows leave the table only through :meth:`ack`, which the uplink calls with a
  batch's ids once the broker's PUBACK has arrived. After a reconnect the uplink calls :meth:`rewind` and the
  unacknowledged rows are handed out again (at-least-once; the lane sequence lets the consumer drop repeats).
* **Duplicates dropped.** An event whose ``origin`` was stored within the last ``dedup_window`` origins is
  not stored again (counted as a duplicate), even if it was already delivered and deleted.
* **Disk quota.** The stored events' bytes are kept under ``quota_bytes``. When a put goes over it, the
  oldest events of the lowest priority are dropped first (vision, then telemetry, then command statuses,
  then faults). Alarms are never dropped: if only alarms remain they are kept beyond the quota. Drops are
  counted per priority, persisted, and show up upstream as gaps in the lane sequence. The quota counts the
  event rows (body, source, origin + ~48 bytes); the dedup memory adds at most ``dedup_window`` × ~40 bytes,
  and the file keeps its high-water size after a drain (SQLite reuses the free pages), so size the disk for
  quota + dedup memory + 16 MiB of WAL.
* **Corruption.** A database that fails ``PRAGMA quick_check`` at open is moved aside (``*.corrupt-<time>``)
  and a fresh one is started, so a damaged SD card does not stop the agent; the event is logged.

Bodies are stored in the uplink's compact CBOR form (:func:`gateway.uplink.codec.pack_body`): the quota
holds 4-5 times more events than JSON would, and the CBOR uplink copies them into batches without
re-encoding. Read back, an event's body is a lazily decoded mapping equal to the original.

All SQLite work runs on one dedicated thread, so the event loop never blocks on fsync. Events just
committed are also kept in memory (up to ``MEM_EVENTS`` per priority), so the uplink normally reads them
without touching the database or waiting behind the next commit: an alarm committed now is handed out at
once. The database is read only after :meth:`rewind` (a reconnect), at start-up, or when the memory copy
was cut short (a long outage, a quota drop).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cityedge.errors import CityedgeError
from gateway.events import Event, Priority, StoredEvent
from gateway.uplink.codec import PackedBody, pack_body

log = logging.getLogger(__name__)

ROW_OVERHEAD = 48  # bytes counted per row on top of body/source/origin (ids, index entries, page slack)
DEFAULT_QUOTA = 256 * 1024 * 1024
DEFAULT_DEDUP_WINDOW = 200_000
_CHUNK = 500  # ids per DELETE ... IN (...) statement (SQLite's variable limit is 32766 since 3.32)
# rows per multi-row INSERT: one statement step (one GIL round trip for the writer thread) per chunk instead
# of one per row; chunk sizes are powers of two so that few distinct statements are prepared and cached
_ROW_CHUNKS = (256, 64, 16, 4, 1)
CHECKPOINT_S = 1.0  # the WAL is copied into the database this often, on its own connection and thread
# SQLite's own checkpoint on the committing connection, only if the background one falls far behind (pages)
INLINE_CHECKPOINT_PAGES = 16384
MEM_EVENTS = 20_000  # committed events kept in memory per priority for the uplink (see the module doc)
_INSERT_EVENTS = "INSERT INTO events (prio, source, seq, kind, ts_ms, origin, body, size) VALUES "

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    prio   INTEGER NOT NULL,
    source TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    kind   TEXT    NOT NULL,
    ts_ms  INTEGER NOT NULL,
    origin TEXT,
    body   BLOB    NOT NULL,
    size   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_prio ON events (prio, id);
CREATE TABLE IF NOT EXISTS seen (origin TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS lanes (
    source TEXT NOT NULL, prio INTEGER NOT NULL, last_seq INTEGER NOT NULL, PRIMARY KEY (source, prio)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""


class OutboxError(CityedgeError):
    """The outbox cannot be opened or written (disk full, permissions, closed)."""


@dataclass(frozen=True)
class PutResult:
    """What a put did: ``stored`` new events, ``duplicates`` skipped, ``dropped`` by the quota policy."""

    stored: int = 0
    duplicates: int = 0
    dropped: int = 0


@dataclass
class OutboxStats:
    """A snapshot for metrics and the birth message."""

    depth: dict[Priority, int]
    bytes: int
    quota_bytes: int
    dropped: dict[Priority, int]
    duplicates: int
    epoch: str
    disk_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.depth.values())


@dataclass
class _Job:
    puts: list[tuple[Event, bytes]] | None
    acks: list[int] | None
    future: asyncio.Future[Any]
    urgent: bool = False  # holds an alarm: committed ahead of the jobs queued before it


@dataclass
class _Written:
    """What one group commit did, for the event loop to apply to the in-memory copy."""

    results: list[Any]
    rows: list[tuple[StoredEvent, int]]  # new rows (with their counted size), in id order
    dropped: bool  # the quota policy deleted rows (some may be in the memory copy)
    last_id: int


def _multi_rows(db: sqlite3.Connection, head: str, width: int, rows: Sequence[tuple[Any, ...]],
                tail: str = "") -> None:
    """``executemany`` as a few multi-row statements (see ``_ROW_CHUNKS``)."""
    i, n = 0, len(rows)
    for size in _ROW_CHUNKS:
        marks = "(" + ",".join("?" * width) + ")"
        sql = head + ",".join([marks] * size) + tail
        while n - i >= size:
            db.execute(sql, [v for row in rows[i : i + size] for v in row])
            i += size


class Outbox:
    """A durable, prioritised event queue in one SQLite file. Use ``async with Outbox(path) as ob:``.

    ``quota_bytes``: how many bytes of events may wait (see the module doc for the overflow policy).
    ``dedup_window``: how many recent origins are remembered for duplicate detection.
    ``synchronous``: ``"full"`` (default, survives power cuts) or ``"normal"`` (survives a killed process only).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        quota_bytes: int = DEFAULT_QUOTA,
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
        synchronous: str = "full",
    ) -> None:
        if quota_bytes <= 0:
            raise ValueError("quota_bytes must be positive")
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', got {synchronous!r}")
        self.synchronous = synchronous
        self.path = Path(path)
        self.quota_bytes = quota_bytes
        self.dedup_window = dedup_window
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._jobs: list[_Job] = []
        self._wake = asyncio.Event()
        self._data = asyncio.Event()
        self._urgent = asyncio.Event()  # set when a FAULT or ALARM was stored: the uplink stops waiting
        self._writer: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._ckpt_executor: ThreadPoolExecutor | None = None
        self._ckpt_db: sqlite3.Connection | None = None
        self._busy = False
        self._depth: dict[Priority, int] = dict.fromkeys(Priority, 0)
        self._bytes = 0
        self._dropped: dict[Priority, int] = dict.fromkeys(Priority, 0)
        self._duplicates = 0
        self._lanes: dict[tuple[str, int], int] = {}
        self._cursor: dict[Priority, int] = dict.fromkeys(Priority, 0)
        # the memory copy: every committed row of a priority with id > _mem_from[prio] that is not leased yet
        self._mem: dict[Priority, collections.deque[tuple[StoredEvent, int]]] = {
            p: collections.deque() for p in Priority
        }
        self._mem_from: dict[Priority, int] = dict.fromkeys(Priority, 0)
        self._last_id = 0
        self._seen_since_prune = 0
        self.epoch = ""
        self.commits = 0

    # ------------------------------------------------------------------ life cycle
    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open (or create) the database, check it, and start the writer."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._open_sync)
        except (sqlite3.Error, OSError) as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise OutboxError(
                f"cannot open the outbox {self.path}: {exc}",
                hint="check that the state directory exists, is writable by the agent and the disk is not full",
            ) from exc
        self._writer = asyncio.create_task(self._write_loop(), name="outbox-writer")
        self._ckpt_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-ckpt")
        self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name="outbox-checkpoint")
        if self.total:
            self._data.set()

    async def close(self) -> None:
        """Finish pending writes, checkpoint the WAL and close the file."""
        if self._writer is not None:
            self._wake.set()
            # let queued and running puts and acks reach the disk and their callers
            while (self._jobs or self._busy) and not self._writer.done():
                await asyncio.sleep(0.001)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
            self._checkpointer = None
        if self._ckpt_executor is not None:
            await asyncio.get_running_loop().run_in_executor(self._ckpt_executor, self._close_ckpt_sync)
            self._ckpt_executor.shutdown(wait=True)
            self._ckpt_executor = None
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._close_sync)
            self._executor.shutdown(wait=True)
            self._executor = None

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db: sqlite3.Connection | None = None
        try:
            db = self._connect()
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.OperationalError:
            raise  # locked, I/O error, no permission: not a damaged file, never moved aside
        except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
            ok = str(exc)
        if ok != "ok":
            if db is not None:
                db.close()
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("outbox %s failed its integrity check (%s); moved aside to %s", self.path, ok, aside)
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    src.rename(Path(str(aside) + suffix))
            db = self._connect()
        assert db is not None
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
        if row is None:
            self.epoch = secrets.token_hex(8)
            with db:
                db.execute("INSERT INTO meta VALUES ('epoch', ?)", (self.epoch,))
        else:
            self.epoch = str(row[0])
        for prio, count, size in db.execute("SELECT prio, count(*), sum(size) FROM events GROUP BY prio"):
            self._depth[Priority(prio)] = count
            self._bytes += size or 0
        for key, value in db.execute("SELECT key, value FROM meta WHERE key LIKE 'dropped.%'"):
            self._dropped[Priority(int(key.split(".")[1]))] = int(value)
        row = db.execute("SELECT value FROM meta WHERE key='duplicates'").fetchone()
        self._duplicates = int(row[0]) if row else 0
        self._lanes = {(s, p): q for s, p, q in db.execute("SELECT source, prio, last_seq FROM lanes")}
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        self._last_id = max(int(row[0]) if row else 0, db.execute("SELECT max(id) FROM events").fetchone()[0] or 0)
        self._mem_from = dict.fromkeys(Priority, self._last_id)  # what is on disk now is read from disk
        # Checkpoints (WAL -> database file, with an fsync of the file) would otherwise run inside whichever
        # commit crosses 1000 WAL pages, and an alarm queued behind that commit would wait for it too.
        db.execute(f"PRAGMA wal_autocheckpoint={INLINE_CHECKPOINT_PAGES}")
        self._db = db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: fsync the WAL on every commit (see the module doc). NORMAL, for media where fsync is too slow:
        # still safe against a killed process, but a power cut may lose the last commits.
        db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA journal_size_limit=16777216")  # truncate the WAL after checkpoints to 16 MiB
        return db

    async def _checkpoint_loop(self) -> None:
        """Copy committed WAL pages into the database in the background (PASSIVE: never blocks a commit)."""
        loop = asyncio.get_running_loop()
        done_at = self.commits
        while True:
            await asyncio.sleep(CHECKPOINT_S)
            if self.commits == done_at or self._ckpt_executor is None:
                continue
            done_at = self.commits
            try:
                await loop.run_in_executor(self._ckpt_executor, self._checkpoint_sync)
            except sqlite3.Error as exc:  # the next round (or SQLite's inline checkpoint) tries again
                log.warning("outbox checkpoint failed: %s", exc)

    def _checkpoint_sync(self) -> None:
        if self._ckpt_db is None:
            self._ckpt_db = self._connect()
            self._ckpt_db.execute("PRAGMA wal_autocheckpoint=0")
        self._ckpt_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def _close_ckpt_sync(self) -> None:
        if self._ckpt_db is not None:
            self._ckpt_db.close()
            self._ckpt_db = None

    def _close_sync(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None

    # ------------------------------------------------------------------ writing
    async def put(self, event: Event) -> PutResult:
        """Store one event durably (see :meth:`put_many`)."""
        return await self.put_many((event,))

    async def put_many(self, events: Iterable[Event]) -> PutResult:
        """Store events durably; returns once they are committed and fsynced (or were duplicates/dropped)."""
        batch = list(events)
        if not batch:
            return PutResult()
        # packed here, in the caller's context: a body that cannot be encoded fails this caller's put only,
        # not everybody's puts that would have shared the commit
        packed = [ev.body.packed if type(ev.body) is PackedBody else pack_body(ev.body, ev.ts_ms) for ev in batch]
        # alarms only: such a commit may go ahead of earlier jobs without reordering any other lane
        urgent = all(ev.priority is Priority.ALARM for ev in batch)
        return await self._submit(_Job(list(zip(batch, packed)), None, self._new_future(), urgent))

    async def ack(self, ids: Iterable[int]) -> int:
        """Delete delivered events (call only after the broker's PUBACK). Returns how many rows went."""
        idl = list(ids)
        if not idl:
            return 0
        return await self._submit(_Job(None, idl, self._new_future()))

    def _new_future(self) -> asyncio.Future[Any]:
        if self._writer is None:
            raise OutboxError(f"the outbox {self.path} is not open")
        return asyncio.get_running_loop().create_future()

    async def _submit(self, job: _Job) -> Any:
        self._jobs.append(job)
        self._wake.set()
        return await job.future

    def _take_jobs(self) -> list[_Job]:
        """The next group commit: alarms alone if any wait (a small, fast commit), else everything queued."""
        jobs = self._jobs
        if len(jobs) > 1 and any(j.urgent for j in jobs):
            self._jobs = [j for j in jobs if not j.urgent]
            return [j for j in jobs if j.urgent]
        self._jobs = []
        return jobs

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._jobs:
                jobs = self._take_jobs()
                self._busy = True
                try:
                    written = await loop.run_in_executor(self._executor, self._write_sync, jobs)
                except Exception as exc:  # disk full, I/O error: every waiting caller learns it
                    log.error("outbox write failed: %s", exc)
                    err = OutboxError(f"outbox {self.path}: write failed: {exc}", hint="check free disk space")
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(err)
                    continue
                finally:
                    self._busy = False
                self._remember(written)
                results = written.results
                for job, result in zip(jobs, results):
                    if not job.future.done():
                        job.future.set_result(result)
                if any(isinstance(r, PutResult) and r.stored for r in results):
                    self._data.set()
                    if any(e.priority >= Priority.FAULT for job in jobs if job.puts for e, _ in job.puts):
                        self._urgent.set()

    def _remember(self, written: _Written) -> None:
        """Apply a commit to the memory copy (on the event loop, so readers see whole commits only)."""
        mem, cursor = self._mem, self._cursor
        for item in written.rows:
            prio = item[0].event.priority
            q = mem[prio]
            q.append(item)
            if len(q) > MEM_EVENTS:  # a long outage: the oldest are read from the database when their turn comes
                self._mem_from[prio] = max(self._mem_from[prio], q.popleft()[0].id)
        if written.dropped:  # the quota policy deleted rows that may be in the copy: read from disk again
            for prio in Priority:
                mem[prio].clear()
                self._mem_from[prio] = max(self._mem_from[prio], written.last_id, cursor[prio])

    def _write_sync(self, jobs: Sequence[_Job]) -> _Written:
        db = self._db
        assert db is not None
        results: list[Any] = []
        lanes_touched: dict[tuple[str, int], int] = {}
        depth = dict(self._depth)
        nbytes = self._bytes
        dropped = dict(self._dropped)
        duplicates = self._duplicates
        new_rows: list[tuple[StoredEvent, int]] = []
        last_id = self._last_id
        any_dropped = False
        db.execute("BEGIN IMMEDIATE")
        try:
            for job in jobs:
                if job.acks is not None:
                    gone = 0
                    for i in range(0, len(job.acks), _CHUNK):
                        chunk = job.acks[i : i + _CHUNK]
                        marks = ",".join("?" * len(chunk))
                        # one aggregate row per priority, then one DELETE: a few statement steps, not one per row
                        for prio, count, size in db.execute(
                            f"SELECT prio, count(*), sum(size) FROM events WHERE id IN ({marks}) GROUP BY prio",
                            chunk,
                        ).fetchall():
                            depth[Priority(prio)] -= count
                            nbytes -= size
                            gone += count
                        db.execute(f"DELETE FROM events WHERE id IN ({marks})", chunk)
                    results.append(gone)
                    continue
                assert job.puts is not None
                fresh, dups = self._dedup(db, job.puts)
                duplicates += dups
                rows = []
                for ev, body in fresh:
                    prio = ev.priority
                    key = (ev.source, int(prio))
                    seq = lanes_touched.get(key, self._lanes.get(key, 0)) + 1
                    lanes_touched[key] = seq
                    size = len(body) + len(ev.source) + len(ev.origin or "") + ROW_OVERHEAD
                    rows.append((int(prio), ev.source, seq, ev.kind, ev.ts_ms, ev.origin, body, size))
                    depth[prio] += 1
                    nbytes += size
                    # AUTOINCREMENT ids: the next after the largest ever used; only this thread writes
                    last_id += 1
                    kept = ev if type(ev.body) is PackedBody else Event(
                        ev.source, ev.kind, prio, PackedBody(body, ev.ts_ms), ev.ts_ms, ev.origin)
                    new_rows.append((StoredEvent(last_id, seq, kept), size))
                _multi_rows(db, _INSERT_EVENTS, 8, rows)
                if rows and db.execute("SELECT last_insert_rowid()").fetchone()[0] != last_id:
                    raise sqlite3.DatabaseError("outbox row ids are not consecutive")  # cannot happen; be sure
                drop = 0
                if nbytes > self.quota_bytes:
                    drop, freed = self._enforce_quota(db, nbytes - self.quota_bytes, depth, dropped)
                    nbytes -= freed
                    any_dropped = any_dropped or drop > 0
                results.append(PutResult(len(rows), dups, drop))
            if lanes_touched:
                _multi_rows(db, "INSERT INTO lanes VALUES ", 3, [(s, p, q) for (s, p), q in lanes_touched.items()],
                            " ON CONFLICT(source, prio) DO UPDATE SET last_seq=excluded.last_seq")
            if dropped != self._dropped:
                db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [(f"dropped.{int(p)}", n) for p, n in dropped.items()],
                )
            if duplicates != self._duplicates:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('duplicates', ?)", (duplicates,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        # only now, with the commit done, does the in-memory picture change
        self._lanes.update(lanes_touched)
        self._depth, self._bytes, self._dropped, self._duplicates = depth, nbytes, dropped, duplicates
        self._last_id = last_id
        self.commits += 1
        return _Written(results, new_rows, any_dropped, last_id)

    def _dedup(
        self, db: sqlite3.Connection, events: list[tuple[Event, bytes]]
    ) -> tuple[list[tuple[Event, bytes]], int]:
        keyed = [ev.origin for ev, _ in events if ev.origin is not None]
        if not keyed:
            return events, 0
        known: set[str] = set()
        for i in range(0, len(keyed), _CHUNK):
            chunk = keyed[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            known.update(r[0] for r in db.execute(f"SELECT origin FROM seen WHERE origin IN ({marks})", chunk))
        fresh: list[tuple[Event, bytes]] = []
        new_origins: list[tuple[str]] = []
        for item in events:
            origin = item[0].origin
            if origin is not None:
                if origin in known:
                    continue
                known.add(origin)
                new_origins.append((origin,))
            fresh.append(item)
        if new_origins:
            _multi_rows(db, "INSERT INTO seen (origin) VALUES ", 1, new_origins)
            self._seen_since_prune += len(new_origins)
            if self._seen_since_prune >= 4096:  # prune now and then, not on every put
                self._seen_since_prune = 0
                last = db.execute("SELECT max(rowid) FROM seen").fetchone()[0] or 0
                db.execute("DELETE FROM seen WHERE rowid <= ?", (last - self.dedup_window,))
        return fresh, len(events) - len(fresh)

    def _enforce_quota(
        self, db: sqlite3.Connection, excess: int, depth: dict[Priority, int], dropped: dict[Priority, int]
    ) -> tuple[int, int]:
        """Drop lowest-priority, oldest rows until ``excess`` bytes are freed. Never ALARM."""
        freed = 0
        count = 0
        for prio in sorted(Priority):
            if prio is Priority.ALARM or freed >= excess:
                break
            while freed < excess and depth[prio] > 0:
                victims: list[int] = []
                for rid, size in db.execute(
                    "SELECT id, size FROM events WHERE prio=? ORDER BY id LIMIT ?", (int(prio), _CHUNK)
                ):
                    victims.append(rid)
                    freed += size
                    if freed >= excess:
                        break
                if not victims:
                    break
                marks = ",".join("?" * len(victims))
                db.execute(f"DELETE FROM events WHERE id IN ({marks})", victims)
                depth[prio] -= len(victims)
                dropped[prio] += len(victims)
                count += len(victims)
        if count:
            log.warning("outbox quota %d bytes reached: dropped %d lowest-priority events", self.quota_bytes, count)
        return count, freed

    # ------------------------------------------------------------------ reading
    async def wait_for_events(self, timeout: float | None = None) -> bool:
        """Wait until there may be events to read; False on timeout."""
        if self._unread_possible():
            return True
        self._data.clear()
        try:
            await asyncio.wait_for(self._data.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_urgent(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a FAULT or ALARM to be stored; True if one was (the flag is cleared)."""
        if not self._urgent.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), timeout)
        was = self._urgent.is_set()
        self._urgent.clear()
        return was

    def note_urgent(self) -> None:
        """Raise the urgent flag again (for a waiter that consumed it without reading)."""
        self._urgent.set()

    def _unread_possible(self) -> bool:
        return self._data.is_set() and self.total > 0

    async def next_batch(self, max_events: int = 500, max_bytes: int = 256 * 1024) -> list[StoredEvent]:
        """Hand out the next events of the highest priority that has unread ones, oldest first.

        Rows handed out are *leased*: later calls skip them until :meth:`rewind`. All events of one
        batch have the same priority. Returns ``[]`` when nothing is waiting.
        """
        if self._executor is None:
            raise OutboxError(f"the outbox {self.path} is not open")
        loop = asyncio.get_running_loop()
        for prio in sorted(Priority, reverse=True):
            while self._cursor[prio] < self._mem_from[prio]:  # older rows than the memory copy: from disk
                cursor, upto = self._cursor[prio], self._mem_from[prio]  # rows up to ``upto`` are committed now
                rows, complete = await loop.run_in_executor(
                    self._executor, self._read_sync, prio, cursor, max_events, max_bytes
                )
                if self._cursor[prio] != cursor:  # rewound (or read by another caller) meanwhile: look again
                    continue
                if rows:
                    self._cursor[prio] = rows[-1].id
                if complete:  # nothing more on disk up to the copy's start (as it was): continue from there
                    self._cursor[prio] = max(self._cursor[prio], upto)
                if rows:
                    return rows
            batch = self._take_mem(prio, max_events, max_bytes)
            if batch:
                return batch
        self._data.clear()
        return []

    def _take_mem(self, prio: Priority, max_events: int, max_bytes: int) -> list[StoredEvent]:
        q = self._mem[prio]
        cursor = self._cursor[prio]
        while q and q[0][0].id <= cursor:  # read from disk already (after a rewind)
            q.popleft()
        out: list[StoredEvent] = []
        total = 0
        while q and len(out) < max_events:
            stored, size = q[0]
            if out and total + size > max_bytes:
                break
            total += size
            out.append(stored)
            q.popleft()
        if out:
            self._cursor[prio] = out[-1].id
        return out

    def _read_sync(
        self, prio: Priority, after: int, max_events: int, max_bytes: int
    ) -> tuple[list[StoredEvent], bool]:
        """Rows of ``prio`` after id ``after``; and whether that was all of them (nothing cut by a limit)."""
        db = self._db
        assert db is not None
        out: list[StoredEvent] = []
        total = 0
        fetched = 0
        for rid, source, seq, kind, ts_ms, origin, body, size in db.execute(
            "SELECT id, source, seq, kind, ts_ms, origin, body, size FROM events "
            "WHERE prio=? AND id>? ORDER BY id LIMIT ?",
            (int(prio), after, max_events),
        ):
            fetched += 1
            if out and total + size > max_bytes:
                return out, False
            total += size
            ev = Event(source, kind, prio, PackedBody(body, ts_ms), ts_ms, origin)
            out.append(StoredEvent(rid, seq, ev))
        return out, fetched < max_events

    def rewind(self) -> None:
        """Forget the leases: every unacknowledged row will be handed out again (after a reconnect)."""
        self._cursor = dict.fromkeys(Priority, 0)
        for prio in Priority:  # leased rows left the memory copy: all from disk up to the copy's start
            q = self._mem[prio]
            self._mem_from[prio] = max(self._mem_from[prio], q[0][0].id - 1 if q else self._last_id)
        if self.total:
            self._data.set()

    # ------------------------------------------------------------------ bookkeeping
    async def bump_counter(self, name: str) -> int:
        """Increment a persistent counter (e.g. the uplink's birth/death sequence) and return the new value."""
        if self._executor is None:
            raise OutboxError(f"the outbox {self.path} is not open")

        def bump() -> int:
            db = self._db
            assert db is not None
            with db:
                db.execute("BEGIN IMMEDIATE")
                row = db.execute("SELECT value FROM meta WHERE key=?", (f"counter.{name}",)).fetchone()
                value = (int(row[0]) if row else 0) + 1
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"counter.{name}", value))
            return value

        return await asyncio.get_running_loop().run_in_executor(self._executor, bump)

    def depth(self) -> dict[Priority, int]:
        """Events waiting, by priority."""
        return dict(self._depth)

    @property
    def total(self) -> int:
        """Events waiting, all priorities."""
        return sum(self._depth.values())

    def stats(self) -> OutboxStats:
        """Depth, bytes, drops and duplicates for metrics and the uplink birth."""
        disk = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                disk += os.stat(str(self.path) + suffix).st_size
        return OutboxStats(
            depth=self.depth(),
            bytes=self._bytes,
            quota_bytes=self.quota_bytes,
            dropped=dict(self._dropped),
            duplicates=self._duplicates,
            epoch=self.epoch,
            disk_bytes=disk,
        )
