"""Uplink outage under load: events buffered on disk, drain rate after the broker returns, nothing lost.

Set-up: a real mosquitto (LocalBroker, persistence on), the gateway's Outbox + Uplink in this process, a
reference consumer (gateway.ops.consumer with a persistent MQTT session) in another process. A producer puts
events of the realistic mix (benchmarks/uplink_size.py) into the outbox at a steady rate for the whole run.
After a while the broker is stopped (``LocalBroker.stop``) for the outage, then started again on the same
port. We measure:

* ``buffered``: events waiting in the outbox when the broker comes back;
* ``drain_events_per_s``: events published and PUBACKed per second from the moment the uplink is online
  again until the backlog is gone (while the producer keeps going);
* ``drain_events_per_cpu_s``: the same per CPU second of this process (meaningful on a busy machine);
* ``lost``: events produced minus distinct events the consumer received (must be 0), with the consumer's
  duplicate and gap counters.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from uplink_size import realistic_mix

from gateway.broker import LocalBroker
from gateway.events import Event
from gateway.outbox import Outbox
from gateway.uplink import Uplink, UplinkSettings

CONSUMER = r"""
import asyncio, json, sys
import aiomqtt
from gateway.ops.consumer import Consumer

async def main(port):
    consumer = Consumer("cityedge")
    expected = None
    print("READY", flush=True)
    while True:
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier="bench-ops", clean_session=False,
                                      protocol=aiomqtt.ProtocolVersion.V311, max_queued_incoming_messages=0) as c:
                await c.subscribe("cityedge/#", qos=1)
                await c.subscribe("bench/done", qos=1)
                async for m in c.messages:
                    if str(m.topic) == "bench/done":
                        expected = int(m.payload)
                    else:
                        consumer.feed(str(m.topic), bytes(m.payload))
                    if expected is not None and consumer.stats.events >= expected:
                        s = consumer.stats
                        print(json.dumps({"events": s.events, "duplicates": s.duplicates, "missing": s.missing}),
                              flush=True)
                        return
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)

asyncio.run(main(int(sys.argv[1])))
"""


async def run(quick: bool) -> dict[str, Any]:
    rate = 5000  # events/s offered all along
    pre_s, outage_s = (1.0, 4.0) if quick else (3.0, 30.0)
    mix = realistic_mix(0.1, seed=3)
    tmp = Path(tempfile.mkdtemp(prefix="cityedge-outage-"))
    with LocalBroker(persistence=True) as broker:
        consumer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CONSUMER, str(broker.port), stdout=asyncio.subprocess.PIPE
        )
        assert consumer.stdout is not None
        assert (await consumer.stdout.readline()).strip() == b"READY"
        await asyncio.sleep(0.3)
        settings = UplinkSettings(url=broker.url, gateway_id="gw-bench", site="bench", batch_max=1000,
                                  backoff_min_s=0.2, backoff_max_s=1.0, max_inflight=8)
        produced = 0

        async def producer(ob: Outbox, stop: asyncio.Event) -> None:
            nonlocal produced
            per_tick = rate // 100
            next_t = time.monotonic()
            while not stop.is_set():
                events = []
                for _ in range(per_tick):
                    e = mix[produced % len(mix)]
                    events.append(Event(e.source, e.kind, e.priority, e.body, origin=f"b:{produced}"))
                    produced += 1
                await ob.put_many(events)
                next_t += 0.01
                await asyncio.sleep(max(0.0, next_t - time.monotonic()))

        async with Outbox(tmp / "outbox.db") as ob, Uplink(settings, ob) as up:
            await up.wait_online(10)
            stop = asyncio.Event()
            prod = asyncio.create_task(producer(ob, stop))
            await asyncio.sleep(pre_s)
            await broker.astop()
            t_down = time.monotonic()
            await asyncio.sleep(outage_s)
            buffered = ob.total
            await broker.astart()
            t_up = time.monotonic()
            await up.wait_online(30)
            t_online = time.monotonic()
            cpu0 = time.process_time()
            sent0 = up.stats.events
            while ob.total > rate // 50:  # backlog gone: what is left is the last 20 ms of production
                await asyncio.sleep(0.005)
            t_drained = time.monotonic()
            cpu = time.process_time() - cpu0
            drained = up.stats.events - sent0
            stop.set()
            await prod
            while ob.total:
                await asyncio.sleep(0.01)
            disk = ob.stats().disk_bytes
        async with aiomqtt.Client("127.0.0.1", broker.port) as ctl:
            await ctl.publish("bench/done", str(produced).encode(), qos=1)
        line = await asyncio.wait_for(consumer.stdout.readline(), 60)
        await consumer.wait()
        seen = json.loads(line)
    return {
        "buffered": buffered,
        "lost": produced - seen["events"],
        "drain_events_per_s": round(drained / (t_drained - t_online)),
        "drain_s": round(t_drained - t_online, 3),
        # CPU seconds this process (uplink + outbox + the ongoing producer) used for the drain: on a shared
        # machine the wall-clock rate depends on the neighbours, events per CPU second does not
        "drain_events_per_cpu_s": round(drained / cpu) if cpu > 0 else None,
        "reconnect_s": round(t_online - t_up, 3),
        "outage_s": round(t_up - t_down, 2),
        "offered_events_per_s": rate,
        "produced": produced,
        "consumer_duplicates_dropped": seen["duplicates"],
        "consumer_missing": seen["missing"],
        "outbox_disk_bytes_at_end": disk,
        "batch_max": settings.batch_max,
        "target_drain_events_per_s": 20000,
        "cores": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 s outage instead of 30 s")
    args = parser.parse_args()
    result = asyncio.run(run(args.quick))
    print(f"buffered {result['buffered']} events during a {result['outage_s']} s outage; drained at "
          f"{result['drain_events_per_s']} events/s; lost {result['lost']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
