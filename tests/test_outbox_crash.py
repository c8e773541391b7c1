"""SIGKILL the outbox's writer at random moments, many times: nothing it reported durable may be lost.

A child process puts batches (alarms and telemetry, each numbered in its own series) and prints ``P`` lines
once a put has returned (= durable), and ``A`` lines *before* it acks a batch (as the uplink does after a
PUBACK). The parent kills it with SIGKILL at a random moment, reopens the same file and checks that every
event reported durable is either still stored or was acked, that nothing is stored twice and that the lane
sequences keep counting up across the crashes. A power cut is not simulated here: it is covered by
``synchronous=FULL`` (every commit fsyncs the WAL), see gateway/outbox.py.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gateway.events import Event, Priority
from gateway.outbox import Outbox

CHILD = r"""
import asyncio, random, sys
from gateway.events import Event, Priority
from gateway.outbox import Outbox

async def main(path, base):
    rnd = random.Random(base)
    async with Outbox(path) as ob:
        print("READY", flush=True)
        n = {"a": base, "t": base}
        while True:
            kind = "a" if rnd.random() < 0.2 else "t"
            prio = Priority.ALARM if kind == "a" else Priority.TELEMETRY
            k = rnd.randint(1, 60)
            evs = [Event("node:%d" % (i % 3), "telemetry", prio, {"k": kind, "n": n[kind] + i},
                         origin="%s:%d" % (kind, n[kind] + i)) for i in range(k)]
            await ob.put_many(evs)
            print("P", kind, n[kind], n[kind] + k - 1, flush=True)
            n[kind] += k
            if rnd.random() < 0.5:
                batch = await ob.next_batch(max_events=rnd.randint(1, 80))
                if batch:
                    print("A", " ".join(s.event.origin for s in batch), flush=True)
                    await ob.ack(s.id for s in batch)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_sigkill_at_random_moments_loses_nothing_durable(tmp_path: Path) -> None:
    path = tmp_path / "ob.db"
    rnd = random.Random(1234)
    durable: set[str] = set()
    acked: set[str] = set()
    rounds = 12
    for r in range(rounds):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str((r + 1) * 1_000_000)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(rnd.uniform(0.02, 0.35))
        proc.send_signal(signal.SIGKILL)
        # read through the same buffered reader as the READY line: communicate(timeout=...) would read the
        # pipe's fd directly and miss what that reader had already buffered (and we would "lose" its lines)
        out = proc.stdout.read()
        assert proc.wait(timeout=10) == -signal.SIGKILL
        complete = out[: out.rfind("\n") + 1]  # a line cut by the kill is not a report
        for line in complete.splitlines():
            parts = line.split()
            if parts[0] == "P":
                durable.update(f"{parts[1]}:{i}" for i in range(int(parts[2]), int(parts[3]) + 1))
            elif parts[0] == "A":
                acked.update(parts[1:])
    assert len(durable) > 1000, "the writer made too little progress to prove anything"

    db = sqlite3.connect(path)
    stored = [row[0] for row in db.execute("SELECT origin FROM events")]
    lanes = db.execute("SELECT source, prio, seq FROM events ORDER BY id").fetchall()
    db.close()
    assert len(stored) == len(set(stored)), "an event was stored twice"
    lost = durable - set(stored) - acked
    assert not lost, f"{len(lost)} durable events lost, e.g. {sorted(lost)[:5]}"
    last: dict[tuple[str, int], int] = {}
    for source, prio, seq in lanes:
        assert seq > last.get((source, prio), 0), "a lane sequence went backwards after a crash"
        last[(source, prio)] = seq

    async def reopen() -> None:
        async with Outbox(path) as ob:
            assert ob.total == len(stored)
            r = await ob.put(Event("node:0", "telemetry", Priority.TELEMETRY, {}, origin=stored[0]))
            assert r.duplicates == 1  # the dedup memory survived the kills too

    asyncio.run(reopen())
