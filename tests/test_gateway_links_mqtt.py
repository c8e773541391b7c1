"""WiFi nodes: the same frames through a real local mosquitto, answered on the node's down topic."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
from cewire import payloads

from cityedge.manifest import provision
from gateway.broker import LocalBroker
from gateway.config import LocalMqttConfig
from gateway.downlink import Downlink, SeqReservation
from gateway.events import Priority
from gateway.ingest import Ingest
from gateway.links import LinkState
from gateway.links.mqtt import MqttIngest
from gateway.nodes import NodeTracker
from gateway.outbox import Outbox
from gateway.registry import Registry
from gateway.simnode import SimNode


async def test_frames_over_local_mqtt_are_verified_stored_and_acked(tmp_path: Path) -> None:
    rec = provision(tmp_path / "nodes.json", node_id=31, role="streetlight", site="s", lat=0, lon=0)
    registry = Registry(tmp_path / "nodes.json")
    registry.load()
    tracker = NodeTracker(60)
    async with LocalBroker() as broker, Outbox(tmp_path / "ob.sqlite3") as outbox:
        downlink = Downlink(registry, tracker, SeqReservation(None))
        ingest = Ingest(registry, outbox, tracker, downlink, flush_s=0.002)
        mqtt = MqttIngest(LocalMqttConfig(True, broker.host, broker.port), ingest.feed)
        tasks = [asyncio.create_task(mqtt.run()), asyncio.create_task(ingest.run())]
        node = SimNode(31, rec.key, rec.key_id)
        try:
            async with aiomqtt.Client(broker.host, broker.port, identifier="node-31") as client:
                await client.subscribe("cityedge/node/31/down", qos=1)
                for _ in range(200):
                    if mqtt.state is LinkState.OPEN:
                        break
                    await asyncio.sleep(0.02)
                await client.publish("cityedge/node/31/up", node.hello() + node.data({payloads.L_LEVEL: 7}), qos=1)
                await client.publish("cityedge/node/31/up", b"\x03junk\x00", qos=1)  # garbage: counted, dropped
                async with asyncio.timeout(5):
                    async for msg in client.messages:
                        assert isinstance(msg.payload, bytes)
                        node.receive(msg.payload)
                        if node.pending == 0 and node.times:
                            break
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert node.pending == 0 and node.times
        assert outbox.depth()[Priority.TELEMETRY] == 1
        assert sum(ingest.stats.rejected.values()) == 1
        state = tracker.get(31)
        assert state is not None and state.link is not None and state.link.name == "mqtt:31"
