"""The reference consumer: duplicates, gaps, late arrivals, restarts, GeoJSON; `cityedge ops tail` for real."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.broker import LocalBroker
from gateway.events import Event, Priority, StoredEvent
from gateway.ops.consumer import Consumer
from gateway.outbox import Outbox
from gateway.uplink import Uplink, UplinkSettings, codec
from gateway.uplink.codec import encode_state

TOPIC = "cityedge/s1/gw1/ev/telemetry"


def batch(*seqs: int, epoch: str = "e1", source: str = "node:17", body: dict[str, Any] | None = None) -> bytes:
    events = [StoredEvent(i, seq, Event(source, "telemetry", Priority.TELEMETRY, body or {"seq": seq},
                                        ts_ms=1_763_700_000_000 + seq)) for i, seq in enumerate(seqs)]
    return codec.encode_batch("gw1", epoch, events)


def kinds(records: list[dict[str, Any]]) -> list[str]:
    return [r["type"] for r in records]


def test_duplicates_dropped_gaps_reported_late_arrivals_delivered() -> None:
    c = Consumer()
    assert kinds(c.feed(TOPIC, batch(1, 2, 3))) == ["event"] * 3
    assert c.feed(TOPIC, batch(2, 3)) == [], "a resent batch is dropped"
    records = c.feed(TOPIC, batch(4, 7))
    assert kinds(records) == ["event", "gap", "event"]
    assert records[1] | {} == {"type": "gap", "site": "s1", "gw": "gw1", "src": "node:17", "lane": "telemetry",
                               "from": 5, "to": 6, "missing": 2}
    late = c.feed(TOPIC, batch(5))
    assert kinds(late) == ["event"] and late[0]["late"] is True
    assert c.feed(TOPIC, batch(5)) == []
    assert (c.stats.events, c.stats.duplicates, c.stats.missing, c.stats.late) == (6, 3, 1, 1)
    # another lane, another source and a new outbox epoch all count on their own
    assert kinds(c.feed(TOPIC, batch(1, source="node:18"))) == ["event"]
    assert kinds(c.feed(TOPIC, batch(1, epoch="e2"))) == ["event"]


def test_malformed_and_foreign_messages() -> None:
    c = Consumer(site="s1")
    assert kinds(c.feed(TOPIC, b"\xffjunk")) == ["error"]
    assert c.feed("cityedge/s2/gw1/ev/telemetry", batch(1)) == [], "other sites are filtered out"
    assert c.feed("somebody/else", b"x") == []
    alarm_topic = "cityedge/s1/gw1/ev/alarm"
    assert kinds(c.feed(alarm_topic, batch(1))) == ["error"], "lane of the topic and of the payload differ"
    assert c.stats.malformed == 2


def test_states_restarts_stale_deaths_and_geojson() -> None:
    c = Consumer()
    nodes = [{"id": 17, "name": "lamp-17", "role": "streetlight", "lat": 52.5, "lon": 13.4},
             {"id": 18, "name": "no position", "role": "medical"}]
    state = "cityedge/s1/gw1/state"
    r = c.feed(state, encode_state({"online": True, "bdSeq": 4, "epoch": "e1", "nodes": nodes}))
    assert r[0]["online"] and r[0]["nodes"] == 2 and "reconnected" not in r[0]
    c.feed(TOPIC, batch(1, body={"seq": 1, "records": [{"t": 1, "lux": 3.5, "power": 40.0}]}))
    c.feed("cityedge/s1/gw1/ev/alarm", codec.encode_batch("gw1", "e1", [StoredEvent(
        1, 1, Event("node:17", "event", Priority.ALARM, {"name": "lamp_failure", "state": "raised"}))]))
    geo = c.geojson()
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 1  # node 18 has no position
    props = geo["features"][0]["properties"]
    assert geo["features"][0]["geometry"] == {"type": "Point", "coordinates": [13.4, 52.5]}
    assert props["state"] == "online" and props["last_lux"] == 3.5 and props["alarms"] == ["lamp_failure"]
    # the will of an older session arriving late does not take the gateway offline
    r = c.feed(state, encode_state({"online": False, "bdSeq": 3}))
    assert r[0].get("stale") is True and c.gateways[("s1", "gw1")].online
    r = c.feed(state, encode_state({"online": False, "bdSeq": 4, "reason": "connection lost"}))
    assert c.geojson()["features"][0]["properties"]["state"] == "unreachable"
    r = c.feed(state, encode_state({"online": True, "bdSeq": 5, "epoch": "e1", "nodes": nodes}))
    assert r[0]["reconnected"] is True and c.stats.restarts == 1
    c.feed("cityedge/s1/gw1/ev/fault", codec.encode_batch("gw1", "e1", [StoredEvent(
        1, 1, Event("node:17", "node_state", Priority.FAULT, {"online": False}))]))
    assert c.geojson()["features"][0]["properties"]["state"] == "offline"


@pytest.mark.timeout(60)
async def test_ops_tail_cli_against_a_real_broker(tmp_path: Path) -> None:
    geo = tmp_path / "site.geojson"
    lines = tmp_path / "events.jsonl"
    nodes = [{"id": 17, "name": "lamp-17", "role": "streetlight", "lat": 48.2, "lon": 16.37}]
    with LocalBroker() as broker:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cityedge", "ops", "tail", "--broker", broker.url, "--site", "s1",
            "--json-out", str(lines), "--geojson", str(geo), "--count", "20", "--duration", "30",
            stderr=subprocess.PIPE, env=env,
        )
        assert proc.stderr is not None
        assert b"listening" in await asyncio.wait_for(proc.stderr.readline(), 20)
        async with Outbox(tmp_path / "ob.db") as ob:
            s = UplinkSettings(url=broker.url, gateway_id="gw1", site="s1", batch_ms=0, batch_max=5)
            async with Uplink(s, ob, nodes=lambda: nodes) as up:
                await up.wait_online(5)
                await ob.put_many(Event("node:17", "telemetry", Priority.TELEMETRY,
                                        {"seq": i, "records": [{"lux": 2.5}]}) for i in range(20))
                rc = await asyncio.wait_for(proc.wait(), 30)
        summary = (await proc.stderr.read()).decode()
    assert rc == 0, summary
    assert "events 20, duplicates dropped 0, missing 0" in summary
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    events = [r for r in records if r["type"] == "event"]
    assert [e["body"]["seq"] for e in events] == list(range(20))
    assert any(r["type"] == "state" and r["online"] for r in records)
    doc = json.loads(geo.read_text())
    assert doc["features"][0]["geometry"]["coordinates"] == [16.37, 48.2]
    assert doc["features"][0]["properties"]["last_lux"] == 2.5


def test_ops_tail_unreachable_broker_is_a_sentence_not_a_traceback() -> None:
    from cityedge.cli import main

    with LocalBroker() as broker:
        port = broker.port
    rc = main(["ops", "tail", "--broker", f"mqtt://127.0.0.1:{port}", "--duration", "2"])
    assert rc == 1


def test_from_start_counts_a_missing_beginning_as_a_gap() -> None:
    late_joiner, since_start = Consumer(), Consumer(from_start=True)
    assert kinds(late_joiner.feed(TOPIC, batch(5, 6))) == ["event", "event"]
    records = since_start.feed(TOPIC, batch(5, 6))
    assert kinds(records) == ["gap", "event", "event"] and records[0]["from"] == 1 and records[0]["to"] == 4
