"""The uplink payload codec: lossless, compact, both encodings decode to the same events."""

from __future__ import annotations

import json
from typing import Any

import cbor2
import pytest

from gateway.events import Event, Priority, StoredEvent
from gateway.uplink import codec

TS = 1_763_700_000_000


def stored(i: int, body: dict[str, Any], prio: Priority = Priority.TELEMETRY, kind: str = "telemetry",
           source: str = "node:17") -> StoredEvent:
    return StoredEvent(i, i + 1, Event(source, kind, prio, body, ts_ms=TS + 1000 * i, origin=f"o{i}"))


STREETLIGHT = {"seq": 812, "records": [{"t": TS // 1000 - 5, "level": 50.5, "power": 42.3, "voltage": 230.1,
                                        "current": 0.183, "energy": 123456, "lux": 3.2, "temp": 31.25}]}
BODIES: list[dict[str, Any]] = [
    STREETLIGHT,
    {"seq": 9, "records": [{"t": TS // 1000, "hr": 72.5, "spo2": 97.0, "pi": 2.15, "quality": 2}]},
    {"seq": 3, "code": 70, "name": "spo2_low", "state": "raised", "prio": 3, "value": 86.0, "limit": 90.0,
     "unit": "%"},
    {"online": False, "reason": "silent for 900 s", "link": "ttyUSB0", "last_seen": 1_763_699_000.25},
    {"command_id": "c-1", "node_id": 17, "name": "dim", "status": "ok", "attempts": 1, "ts": 1763700000.123,
     "result": {"level": 40}, "latency_ms": 35.2},
    {"counts": {"car": 3, "person": 1}, "zone": "crossing", "camera": "north"},
    # values a scaled integer cannot carry exactly keep their own value (lossless)
    {"records": [{"lux": 3.14159, "power": -0.0, "energy": 2**60, "temp": float("inf")}], "custom": [1, "a", None]},
    {"level": True, "weird key": {"nested": {"deeper": 1.5}}},
]


def batch_of(bodies: list[dict[str, Any]]) -> list[StoredEvent]:
    return [stored(i, b) for i, b in enumerate(bodies)]


@pytest.mark.parametrize("fmt", ["cbor", "json"])
def test_round_trip_is_lossless(fmt: str) -> None:
    batch = batch_of(BODIES)
    decoded = codec.decode_batch(codec.encode_batch("gw-1", "e1", batch, fmt))
    assert [e.body for e in decoded] == [s.event.body for s in batch]
    assert [(e.source, e.seq, e.ts_ms, e.kind, e.priority) for e in decoded] == [
        (s.source, s.seq, s.event.ts_ms, s.event.kind, s.priority) for s in batch
    ]
    assert {(e.gateway, e.epoch) for e in decoded} == {("gw-1", "e1")}


def test_compact_measures_are_scaled_integers_with_labels() -> None:
    raw = cbor2.loads(codec.encode_batch("gw-1", "e1", [stored(0, STREETLIGHT)]))
    idx, seq, dt, kind, body = raw[codec.B_EVENTS][0]
    record = body[codec.KEY_LABEL["records"]][0]
    assert record[16] == 505 and record[17] == 423 and record[19] == 183 and record[24] == 3125  # protocol §6.2
    assert record[codec.T_LABEL] == -5, "record times travel relative to the batch base time"
    assert (idx, seq, dt, kind) == (0, 1, 0, 0)
    assert all(not isinstance(v, float) for v in record.values())


def test_compact_is_a_quarter_of_plain_json_or_less() -> None:
    batch = [stored(i, BODIES[i % 3], source=f"node:{i % 50}") for i in range(200)]
    compact = len(codec.encode_batch("gw-1", "e1", batch)) / len(batch)
    plain = sum(len(codec.plain_json_event("gw-1", s)) for s in batch) / len(batch)
    assert compact / plain <= 0.25, (compact, plain)


def test_json_batch_is_readable() -> None:
    doc = json.loads(codec.encode_batch("gw-1", "e1", [stored(0, STREETLIGHT)], "json"))
    assert doc["lane"] == "telemetry" and doc["events"][0]["body"]["records"][0]["power"] == 42.3


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xff\x00garbage", cbor2.dumps([1, 2]), cbor2.dumps({0: 99}), b'{"v":1}',
     cbor2.dumps({0: 1, 1: "g", 2: "e", 3: 1, 4: 0, 5: [], 6: [[0, 1, 0, 0, {}]]})],
)
def test_malformed_payloads_raise_payload_error(payload: bytes) -> None:
    with pytest.raises(codec.PayloadError):
        codec.decode_batch(payload)


def test_one_priority_per_batch() -> None:
    with pytest.raises(ValueError, match="one priority"):
        codec.encode_batch("gw", "e", [stored(0, {}), stored(1, {}, Priority.ALARM)])


def test_docs_tables_match_the_codec() -> None:
    """docs/uplink.md is the contract: its label tables must be the ones the code uses."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "uplink.md").read_text()
    measures = {
        m.group(2): (int(m.group(1)), int(m.group(3).replace("−", "-")))
        for m in re.finditer(r"^\s*\| (\d+) \| (\w+) \| [^|]* \| (−?\d+) \|$", text, re.M)
    }
    assert measures == codec.MEASURES
    keys = {
        key: int(label.replace("−", "-"))
        for label, key in re.findall(r"\| (−\d+) \| (\w+) ", text)
    }
    assert keys == codec.KEY_LABEL
    kinds = re.search(r"— 0 telemetry, (.*?) — or text", text, re.S)
    assert kinds is not None
    listed = ["telemetry"] + [w.split()[-1] for w in kinds.group(1).replace("\n", " ").split(",")]
    assert tuple(listed) == codec.KINDS


def test_docs_command_table_matches_the_router() -> None:
    """docs/uplink.md §6 lists exactly the commands (and the roles) gateway.commands.COMMANDS accepts."""
    import re
    from pathlib import Path

    from gateway.commands import COMMANDS

    text = (Path(__file__).resolve().parents[1] / "docs" / "uplink.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([a-z, ]+) \| ", text, re.M)
    assert {name: frozenset(r.strip() for r in roles.split(",")) for name, roles in rows} == dict(COMMANDS)
    birth = re.search(r'"commands": \[(.*?)\]', text)
    assert birth is not None and set(re.findall(r'"(\w+)"', birth.group(1))) <= set(COMMANDS)
