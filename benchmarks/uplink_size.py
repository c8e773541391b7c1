"""Bytes per event upstream: the compact CBOR batches vs the same events as plain JSON.

A realistic hour of one site, in the proportions it produces (scaled down with --quick):

* 200 streetlights, telemetry every 5 min (level, power, voltage, current, energy, lux, pf, driver temp);
* 4 medical nodes, vitals every second (pulse rate, SpO2, perfusion index, signal quality, quality bits);
* alarms and faults (SpO2 low, probe off, lamp failure), node state changes, command statuses;
* 2 cameras, vision counts every 10 s.

"compact" = the payloads the uplink sends (CBOR batches of up to 500 events of one priority, in arrival
order). "json" = each event as a self-describing JSON object, one per message — what a plain integration
sends. Only MQTT payload bytes are counted (topics and MQTT headers would favour batching even more).
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from typing import Any

from gateway.events import Event, Priority, StoredEvent
from gateway.uplink import codec

BASE_MS = 1_763_700_000_000


def realistic_mix(scale: float = 1.0, seed: int = 1) -> list[Event]:
    """One site-hour of events in time order (``scale`` < 1 keeps the proportions with fewer events)."""
    rnd = random.Random(seed)
    out: list[tuple[int, Event]] = []
    hour_s = max(60, int(3600 * scale))

    def at(t_s: float) -> int:
        return BASE_MS + int(t_s * 1000) + rnd.randint(0, 999)

    for node in range(1, 201):  # streetlights
        energy = rnd.randint(10_000, 900_000)
        for k, t in enumerate(range(rnd.randint(0, 299), hour_s, 300)):
            level = rnd.choice([0.0, 30.0, 50.0, 70.0, 100.0])
            power = round(level * 0.6 + rnd.uniform(0, 2), 1) if level else 0.0
            energy += int(power / 12)
            rec = {"t": (BASE_MS // 1000) + t, "level": level, "power": power,
                   "voltage": round(rnd.uniform(225, 235), 1), "current": round(power / 230, 3),
                   "energy": energy, "lux": round(rnd.uniform(0, 40), 1), "pf": round(rnd.uniform(0.9, 0.99), 2),
                   "driver_temp": round(rnd.uniform(25, 55), 2)}
            out.append((at(t), Event(f"node:{node}", "telemetry", Priority.TELEMETRY, {"seq": k + 1,
                                                                                         "records": [rec]},
                                     origin=f"{node}:1:{k + 1}")))
    for node in range(1001, 1005):  # medical, vitals every second
        for k in range(hour_s):
            rec = {"t": (BASE_MS // 1000) + k, "hr": round(rnd.uniform(55, 110), 1),
                   "spo2": round(rnd.uniform(92, 99.9), 1), "pi": round(rnd.uniform(0.5, 8), 2),
                   "sqi": rnd.randint(60, 100), "quality": 2}
            out.append((at(k), Event(f"node:{node}", "telemetry", Priority.TELEMETRY,
                                     {"seq": k + 1, "records": [rec]}, origin=f"{node}:1:{k + 1}")))
        for k in range(max(1, hour_s // 600)):  # an alarm raised and cleared every ~10 min per patient
            t = rnd.randint(0, hour_s - 30)
            for state in ("raised", "cleared"):
                body = {"seq": 10_000 + k, "code": 70, "name": "spo2_low", "state": state, "prio": 2,
                        "value": round(rnd.uniform(84, 89.9), 1), "limit": 90.0, "unit": "%"}
                out.append((at(t + (20 if state == "cleared" else 0)),
                            Event(f"node:{node}", "event", Priority.ALARM, body)))
    for k in range(max(1, hour_s // 300)):  # faults, node state, command statuses
        node = rnd.randint(1, 200)
        t = rnd.randint(0, hour_s - 1)
        out.append((at(t), Event(f"node:{node}", "event", Priority.FAULT,
                                 {"seq": 500 + k, "code": 10, "name": "lamp_failure", "state": "raised",
                                  "prio": 2, "value": 3.1, "limit": 20.0, "unit": "W"})))
        out.append((at(t), Event(f"node:{node}", "node_state", Priority.FAULT,
                                 {"online": bool(k % 2), "reason": "silent for 900 s", "link": "ttyUSB0",
                                  "last_seen": (BASE_MS + t * 1000) / 1000})))
        out.append((at(t), Event(f"node:{node}", "cmd_status", Priority.COMMAND_ACK,
                                 {"command_id": f"ops-{k}", "node_id": node, "name": "dim", "status": "ok",
                                  "attempts": 1, "ts": (BASE_MS + t * 1000) / 1000, "latency_ms": 84.2})))
    for cam in ("north", "south"):  # vision counts
        for t in range(0, hour_s, 10):
            out.append((at(t), Event(f"cam:{cam}", "vision", Priority.VISION,
                                     {"zone": "crossing", "counts": {"car": rnd.randint(0, 12),
                                                                     "person": rnd.randint(0, 6)}})))
    out.sort(key=lambda p: p[0])
    return [Event(e.source, e.kind, e.priority, e.body, ts_ms=ts, origin=e.origin) for ts, e in out]


def as_batches(events: list[Event], batch_max: int = 500) -> list[list[StoredEvent]]:
    """Group like the uplink does: per priority, in order, up to ``batch_max``; lane sequences per source."""
    seqs: dict[tuple[str, int], int] = {}
    lanes: dict[Priority, list[StoredEvent]] = {}
    batches: list[list[StoredEvent]] = []
    for i, ev in enumerate(events):
        key = (ev.source, int(ev.priority))
        seqs[key] = seqs.get(key, 0) + 1
        lane = lanes.setdefault(ev.priority, [])
        lane.append(StoredEvent(i + 1, seqs[key], ev))
        if len(lane) == batch_max:
            batches.append(lane)
            lanes[ev.priority] = []
    batches.extend(b for b in lanes.values() if b)
    return batches


def measure(events: list[Event], batch_max: int = 500) -> dict[str, Any]:
    batches = as_batches(events, batch_max)
    n = sum(len(b) for b in batches)
    compact = sum(len(codec.encode_batch("gw-0001", "6fc02e6a7614f7b9", b)) for b in batches)
    json_batched = sum(len(codec.encode_batch("gw-0001", "6fc02e6a7614f7b9", b, "json")) for b in batches)
    plain = sum(len(codec.plain_json_event("gw-0001", s)) for b in batches for s in b)
    for b in batches[:20]:  # the compact form must decode to exactly the same events
        decoded = codec.decode_batch(codec.encode_batch("gw-0001", "e", b))
        assert [d.body for d in decoded] == [s.event.body for s in b]
    by_kind: dict[str, int] = {}
    for ev in events:
        by_kind[ev.kind] = by_kind.get(ev.kind, 0) + 1
    return {
        "events": n,
        "mix": by_kind,
        "compact_bytes_per_event": round(compact / n, 1),
        "json_bytes_per_event": round(plain / n, 1),
        "json_batched_bytes_per_event": round(json_batched / n, 1),
        "ratio": round(compact / plain, 3),
        "messages_compact": len(batches),
        "messages_json": n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of an hour (same proportions)")
    parser.add_argument("--batch-max", type=int, default=500)
    args = parser.parse_args()
    events = realistic_mix(0.1 if args.quick else 1.0)
    result = measure(events, args.batch_max)
    result["target_ratio"] = 0.25
    result["cores"] = os.cpu_count()
    print(f"{result['events']} events: compact {result['compact_bytes_per_event']} B/event, "
          f"plain JSON {result['json_bytes_per_event']} B/event, ratio {result['ratio']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
