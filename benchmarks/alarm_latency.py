"""Alarm latency: a medical alarm frame arriving at the gateway → delivered by the upstream broker.

Same real site as the ingest benchmark (gateway_site.py: agent process on one core, pty serial links,
SQLite outbox with fsync, real mosquitto, a subscriber): while 200 streetlight nodes on 8 serial buses keep
a telemetry load of 5,000 frames/s, a medical node on its own port (a ward's USB link) raises a
high-priority alarm (EVENT, desaturation) every 50 ms. The clock
starts when the alarm frame is written to the gateway's serial port and stops when the subscriber receives
it from the broker. Alarms overtake telemetry at every hop (commit at once, ``alarm`` lane first upstream).

    python benchmarks/alarm_latency.py --quick      # < 1 minute
Last line: {"p50_ms": ..., "p99_ms": ..., "background_fps": ..., "cores": N, ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cewire import PRIO_HIGH, codes, payloads
from gateway_site import BenchSite

from gateway.uplink import codec

TARGET_P99_MS = 50.0
# the same benchmark on the same machine before the outbox/ingest/uplink work of 2026-11-21 (commit a7dff25)
BASELINE = {"p50_ms": 34.28, "p99_ms": 191.99, "durable_p50_ms": 21.6, "durable_p99_ms": 160.02, "load_avg_1m": 3.74,
            "commit": "a7dff25"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run(seconds: float, background_fps: int, alarm_every_s: float) -> dict[str, object]:
    sent_at: dict[int, float] = {}
    unacked_at: dict[int, float] = {}
    latencies: list[float] = []
    ack_latencies: list[float] = []  # alarm frame in -> its ACK back at the node (= durable at the gateway)

    def on_event(ev: codec.UplinkEvent, now: float) -> None:
        if ev.kind == "event" and ev.source == f"node:{medic_id}":
            t = sent_at.pop(int(ev.body.get("seq", -1)), None)
            if t is not None:
                latencies.append((now - t) * 1000.0)

    site = BenchSite(nodes=200, medical=1, ports=8, window=8, on_event=on_event)
    medic_id = 9000
    async with site:
        lights = [n for n in site.nodes.values() if n.role == "streetlight"]
        medic = site.nodes[medic_id]

        def acked() -> None:
            now = time.perf_counter()
            for seq in [s for s in unacked_at if s <= medic.acked[0]]:
                ack_latencies.append((now - unacked_at.pop(seq)) * 1000.0)

        site.after_answers = acked
        tick = 0.01
        credit = 0.0
        last = time.perf_counter()
        start = time.perf_counter()
        delivered0 = site.delivered
        next_alarm = start + 0.5
        i = 0
        loop = asyncio.get_running_loop()
        while (now := time.perf_counter()) - start < seconds:
            credit += background_fps * (now - last)  # by the clock: sleeps overshoot on a busy machine
            last = now
            while credit >= 1:
                node = lights[i % len(lights)]
                i += 1
                if node.pending < 8:
                    site.send(node.node_id, node.data({payloads.L_LEVEL: 500, payloads.L_POWER: 423}))
                    credit -= 1
                elif all(n.pending >= 8 for n in lights[:16]):
                    break  # the gateway is behind: do not queue beyond the nodes' windows
            if now >= next_alarm:
                next_alarm = now + alarm_every_s
                wire = medic.event(codes.DESATURATION, prio=PRIO_HIGH, value=780, label=payloads.L_SPO2)
                site.send(medic_id, wire)
                site._writable(site.port_of[medic_id])  # written now, so the clock starts at the port
                sent_at[medic.next_seq[0] - 1] = unacked_at[medic.next_seq[0] - 1] = time.perf_counter()
            await asyncio.sleep(max(0.0, tick - (time.perf_counter() - now)))
        elapsed = time.perf_counter() - start
        await asyncio.sleep(1.0)  # let the last alarms arrive
        del loop
        bg = (site.delivered - delivered0 - len(latencies)) / elapsed
    if not latencies:
        raise SystemExit("no alarm was delivered")
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "background_fps": round(bg),
        "cores": os.cpu_count(),
        "alarms": len(latencies),
        # where the time goes: the first hop (frame in -> durable, ACK back at the node) ...
        "durable_p50_ms": round(statistics.median(ack_latencies), 2) if ack_latencies else None,
        "durable_p99_ms": round(percentile(ack_latencies, 99), 2) if ack_latencies else None,
        "alarms_lost": len(sent_at),
        "max_ms": round(max(latencies), 2),
        "target_background_fps": background_fps,
        "target_p99_ms": TARGET_P99_MS,
        "baseline": BASELINE,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="15 s of load (under a minute in all)")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--background-fps", type=int, default=5000)
    args = ap.parse_args()
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    print(json.dumps(asyncio.run(run(seconds, args.background_fps, 0.05))))


if __name__ == "__main__":
    main()
