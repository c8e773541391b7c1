"""The durable outbox: priorities, lanes, dedup, leases, quota policy, reopen (real SQLite files in tmp)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.events import Event, Priority
from gateway.outbox import Outbox, OutboxError


def ev(source: str, prio: Priority, n: int, origin: str | None = None, pad: int = 0) -> Event:
    body: dict[str, object] = {"n": n}
    if pad:
        body["pad"] = "x" * pad
    return Event(source, "telemetry", prio, body, ts_ms=1_700_000_000_000 + n, origin=origin)


async def drain(ob: Outbox, ack: bool = True) -> list[list[tuple[str, int, int, Priority]]]:
    batches: list[list[tuple[str, int, int, Priority]]] = []
    while True:
        batch = await ob.next_batch(max_events=4)
        if not batch:
            return batches
        batches.append([(s.source, s.event.body["n"], s.seq, s.priority) for s in batch])
        if ack:
            await ob.ack(s.id for s in batch)


async def test_highest_priority_first_and_in_order_per_lane(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "ob.db") as ob:
        await ob.put_many([ev("node:1", Priority.TELEMETRY, i) for i in range(5)])
        await ob.put(ev("cam:n", Priority.VISION, 100))
        await ob.put_many([ev("node:2", Priority.ALARM, 200), ev("node:1", Priority.ALARM, 201)])
        await ob.put(ev("node:1", Priority.FAULT, 300))
        await ob.put(ev("gw", Priority.COMMAND_ACK, 400))
        batches = await drain(ob)
    order = [item for b in batches for item in b]
    assert [p for *_, p in order] == sorted((p for *_, p in order), reverse=True)
    assert all(len({p for *_, p in b}) == 1 for b in batches), "a batch mixes priorities"
    telemetry = [(n, seq) for s, n, seq, p in order if p is Priority.TELEMETRY]
    assert telemetry == [(i, i + 1) for i in range(5)]  # in order, lane sequence from 1 without holes
    assert [(s, seq) for s, _, seq, p in order if p is Priority.ALARM] == [("node:2", 1), ("node:1", 1)]


async def test_duplicates_dropped_even_after_delivery(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "ob.db") as ob:
        same = ev("node:1", Priority.TELEMETRY, 1, "1:0:1")
        r = await ob.put_many([same, same])
        assert (r.stored, r.duplicates) == (1, 1)
        await drain(ob)
        assert ob.total == 0
        r = await ob.put(ev("node:1", Priority.TELEMETRY, 1, "1:0:1"))
        assert (r.stored, r.duplicates) == (0, 1)
        r = await ob.put(ev("node:1", Priority.TELEMETRY, 2))  # no origin: never a duplicate
        r2 = await ob.put(ev("node:1", Priority.TELEMETRY, 2))
        assert r.stored == r2.stored == 1
        assert ob.stats().duplicates == 2


async def test_leases_rewind_and_ack(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "ob.db") as ob:
        await ob.put_many([ev("node:1", Priority.TELEMETRY, i) for i in range(10)])
        first = await ob.next_batch(max_events=4)
        second = await ob.next_batch(max_events=4)
        assert [s.event.body["n"] for s in first] == [0, 1, 2, 3]
        assert [s.event.body["n"] for s in second] == [4, 5, 6, 7]
        assert await ob.ack(s.id for s in second) == 4  # acks may come in any order
        ob.rewind()  # connection lost: what was not acked comes again, in order
        again = await ob.next_batch(max_events=10)
        assert [s.event.body["n"] for s in again] == [0, 1, 2, 3, 8, 9]
        assert [s.seq for s in again] == [1, 2, 3, 4, 9, 10]
        assert await ob.ack(s.id for s in again) == 6
        assert await ob.ack(s.id for s in again) == 0
        assert ob.total == 0 and await ob.next_batch() == []


async def test_quota_drops_lowest_oldest_first_never_alarms(tmp_path: Path) -> None:
    path = tmp_path / "ob.db"
    async with Outbox(path, quota_bytes=20_000) as ob:
        await ob.put_many([ev("cam:n", Priority.VISION, i, pad=200) for i in range(20)])
        await ob.put_many([ev("node:1", Priority.TELEMETRY, i, pad=200) for i in range(60)])
        assert ob.stats().bytes <= 20_000
        assert ob.stats().dropped[Priority.VISION] > 0, "over quota: something must go"
        assert ob.depth()[Priority.TELEMETRY] == 60, "vision must go before telemetry"
        r = await ob.put_many([ev("node:1", Priority.ALARM, 1000 + i, pad=200) for i in range(120)])
        assert r.stored == 120 and r.dropped > 0
        depth = ob.depth()
        assert depth[Priority.ALARM] == 120, "alarms are never dropped, even beyond the quota"
        assert depth[Priority.TELEMETRY] == 0
        dropped = ob.stats().dropped
        assert dropped[Priority.VISION] == 20 and dropped[Priority.TELEMETRY] == 60
        assert dropped[Priority.ALARM] == 0
        # a telemetry event arriving when only alarms are left is the lowest and oldest candidate: dropped
        r = await ob.put(ev("node:1", Priority.TELEMETRY, 5000, pad=200))
        assert (r.stored, r.dropped) == (1, 1) and ob.depth()[Priority.TELEMETRY] == 0
    async with Outbox(path, quota_bytes=20_000) as ob:
        assert ob.stats().dropped[Priority.TELEMETRY] == 61  # counters survive a restart
        survivors = [s.event.body["n"] for s in await ob.next_batch(max_events=1000)]
        assert survivors == list(range(1000, 1120))


async def test_quota_drops_oldest_of_a_priority(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "ob.db", quota_bytes=10_000) as ob:
        for i in range(60):
            await ob.put(ev("node:1", Priority.TELEMETRY, i, pad=200))
        left = [s.event.body["n"] for s in await ob.next_batch(max_events=1000)]
        assert left == list(range(60 - len(left), 60)), "the newest telemetry is kept"


async def test_reopen_keeps_events_epoch_sequences_and_counters(tmp_path: Path) -> None:
    path = tmp_path / "ob.db"
    async with Outbox(path) as ob:
        epoch = ob.epoch
        await ob.put_many([ev("node:1", Priority.TELEMETRY, i) for i in range(3)])
        assert await ob.bump_counter("bdseq") == 1
        assert await ob.bump_counter("bdseq") == 2
    async with Outbox(path) as ob:
        assert ob.epoch == epoch and ob.total == 3
        assert await ob.wait_for_events(0.1)
        await ob.put(ev("node:1", Priority.TELEMETRY, 3))
        seqs = [s.seq for s in await ob.next_batch(max_events=10)]
        assert seqs == [1, 2, 3, 4]
        assert await ob.bump_counter("bdseq") == 3


async def test_wait_for_events_wakes_on_put(tmp_path: Path) -> None:
    import asyncio

    async with Outbox(tmp_path / "ob.db") as ob:
        assert not await ob.wait_for_events(0.05)
        waiter = asyncio.create_task(ob.wait_for_events(5))
        await asyncio.sleep(0.01)
        await ob.put(ev("node:1", Priority.ALARM, 1))
        assert await asyncio.wait_for(waiter, 2)


async def test_corrupt_database_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "ob.db"
    path.write_bytes(b"this is not a database" * 100)
    async with Outbox(path) as ob:
        await ob.put(ev("node:1", Priority.ALARM, 1))
        assert ob.total == 1
    assert list(tmp_path.glob("ob.db.corrupt-*")), "the damaged file is kept for inspection"


async def test_closed_or_unwritable_outbox_says_so(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "ob.db")
    with pytest.raises(OutboxError, match="not open"):
        await ob.put(ev("node:1", Priority.ALARM, 1))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError, match="cannot open the outbox"):
        await Outbox(blocker / "sub" / "ob.db").open()


async def test_synchronous_policy_is_applied(tmp_path: Path) -> None:
    import sqlite3

    for policy, level in (("full", 2), ("normal", 1)):
        async with Outbox(tmp_path / f"{policy}.db", synchronous=policy) as ob:
            assert ob._db is not None
            assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == level
            assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(ValueError, match="synchronous"):
        Outbox(tmp_path / "x.db", synchronous="off")
    assert sqlite3.sqlite_version_info >= (3, 35), "DELETE ... RETURNING needs SQLite 3.35"


async def test_a_bad_body_fails_its_own_put_only(tmp_path: Path) -> None:
    import asyncio

    async with Outbox(tmp_path / "ob.db") as ob:
        bad = Event("node:1", "telemetry", Priority.TELEMETRY, {1: "not a text key"})  # type: ignore[dict-item]
        good = ob.put(ev("node:2", Priority.TELEMETRY, 1))
        results = await asyncio.gather(ob.put(bad), good, return_exceptions=True)
        assert isinstance(results[0], ValueError)
        assert results[1].stored == 1 and ob.total == 1  # type: ignore[union-attr]


async def test_memory_copy_matches_the_disk_through_rewinds_overflow_and_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events handed out from the in-memory copy are exactly the rows on disk, in order, whatever happened."""
    import gateway.outbox as outbox_mod

    monkeypatch.setattr(outbox_mod, "MEM_EVENTS", 5)  # the copy overflows: the oldest come from disk
    path = tmp_path / "ob.db"
    async with Outbox(path) as ob:
        await ob.put_many([ev("node:1", Priority.TELEMETRY, i) for i in range(12)])
        first = await ob.next_batch(4)
        assert [s.event.body["n"] for s in first] == [0, 1, 2, 3]  # from disk: the copy holds 7..11 only
        ob.rewind()  # a reconnect: everything unacknowledged again, in order, without repeats
        assert [n for b in await drain(ob, ack=False) for _, n, _, _ in b] == list(range(12))
        ob.rewind()
        seen = []
        while batch := await ob.next_batch(3):
            seen += [(s.event.body["n"], s.seq) for s in batch]
            await ob.ack(s.id for s in batch)
        assert seen == [(i, i + 1) for i in range(12)]
        assert ob.total == 0
        # rows committed now are handed out without a database read
        await ob.put_many([ev("node:1", Priority.TELEMETRY, 100 + i) for i in range(3)])
        reads = 0
        real = ob._read_sync

        def counting(*a: object) -> object:
            nonlocal reads
            reads += 1
            return real(*a)  # type: ignore[arg-type]

        monkeypatch.setattr(ob, "_read_sync", counting)
        assert [s.event.body["n"] for s in await ob.next_batch(10)] == [100, 101, 102]
        assert reads == 0
    # the quota drops rows that are in the copy: they are not handed out
    async with Outbox(tmp_path / "q.db", quota_bytes=2000) as ob:
        await ob.put_many([ev("node:1", Priority.TELEMETRY, i, pad=100) for i in range(30)])
        await ob.put(ev("node:9", Priority.ALARM, 999, pad=100))
        out = [(s.priority, s.event.body["n"]) for b in [await ob.next_batch(100) for _ in range(3)] for s in b]
        assert out[0] == (Priority.ALARM, 999)
        kept = sorted(n for p, n in out if p is Priority.TELEMETRY)
        assert kept and kept[0] > 0 and kept == list(range(kept[0], 30))  # the oldest went, the rest in order
        assert len(out) == ob.total


async def test_an_alarm_is_committed_ahead_of_queued_telemetry(tmp_path: Path) -> None:
    import asyncio

    async with Outbox(tmp_path / "ob.db") as ob:
        order: list[str] = []

        async def put(name: str, events: list[Event]) -> None:
            await ob.put_many(events)
            order.append(name)

        # all three are queued while nothing is committing; the alarm goes first, alone
        tasks = [asyncio.create_task(put("telemetry", [ev("node:1", Priority.TELEMETRY, i) for i in range(200)])),
                 asyncio.create_task(put("more", [ev("node:2", Priority.TELEMETRY, i) for i in range(200)])),
                 asyncio.create_task(put("alarm", [ev("node:3", Priority.ALARM, 1)]))]
        await asyncio.gather(*tasks)
        assert order[0] == "alarm"
        assert (await ob.next_batch(10))[0].priority is Priority.ALARM


async def test_the_wal_is_checkpointed_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits never run the checkpoint themselves; a background connection copies the WAL into the file."""
    import asyncio

    import gateway.outbox as outbox_mod

    monkeypatch.setattr(outbox_mod, "CHECKPOINT_S", 0.05)
    path = tmp_path / "ob.db"
    async with Outbox(path) as ob:
        before = path.stat().st_size
        await ob.put_many([ev("node:1", Priority.TELEMETRY, i, pad=200) for i in range(400)])  # ~30 pages
        assert ob._db is not None and ob._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 1000
        for _ in range(100):
            await asyncio.sleep(0.02)
            if path.stat().st_size > before + 64 * 1024:
                break
        assert path.stat().st_size > before + 64 * 1024  # the rows reached the database file itself
        assert len(await ob.next_batch(500)) == 400
