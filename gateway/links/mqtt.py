"""Nodes on WiFi: the same COBS-framed frames, carried by a local MQTT broker instead of a UART.

A node publishes its frames (one or more, each COBS-encoded with its 0x00 delimiter) to
``cityedge/node/<node id>/up``; the gateway subscribes to the wildcard and answers on
``cityedge/node/<node id>/down``. MQTT is only a pipe here: frames are authenticated by their MAC as on
serial, and the topic's node id only chooses the reply topic (a frame's own node id decides whose it is).

Each node behind the broker appears to the agent as its own :class:`MqttNodeLink`, so ACKs and commands go
back to the right topic. The client reconnects with capped exponential backoff, like the serial links.
"""

from __future__ import annotations

import asyncio
import logging

import aiomqtt

from gateway.config import LocalMqttConfig
from gateway.links.base import Backoff, DataCallback, LinkState, LinkStats
from gateway.systemd import Heartbeat

log = logging.getLogger(__name__)

MAX_QUEUE = 10_000  # downlink messages waiting for the broker; beyond that they are dropped and counted


class MqttNodeLink:
    """The link to one WiFi node: sending publishes to its down topic through the shared client."""

    def __init__(self, ingest: MqttIngest, topic_node: str) -> None:
        self.name = f"mqtt:{topic_node}"
        self.topic = ingest.config.down_topic.format(node=topic_node)
        self._ingest = ingest
        self.stats = ingest.stats  # shared: opens/reconnects are the client's

    @property
    def state(self) -> LinkState:
        return self._ingest.state

    def send(self, data: bytes) -> bool:
        return self._ingest.enqueue(self.topic, data)


class MqttIngest:
    """Subscribes to the nodes' up topic on the local broker and feeds frames to the agent."""

    def __init__(self, config: LocalMqttConfig, on_data: DataCallback, heartbeat: Heartbeat | None = None,
                 client_id: str = "cityedge-gateway-local") -> None:
        self.config = config
        self.on_data = on_data
        self.heartbeat = heartbeat
        self.client_id = client_id
        self.name = "mqtt"
        self.state = LinkState.STARTING
        self.stats = LinkStats()
        self._links: dict[str, MqttNodeLink] = {}
        self._out: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(MAX_QUEUE)
        self._backoff = Backoff(0.5, 30.0)
        prefix, _, suffix = config.up_topic.partition("+")
        self._prefix, self._suffix = prefix, suffix

    def enqueue(self, topic: str, data: bytes) -> bool:
        if self.state is not LinkState.OPEN:
            self.stats.dropped_out += len(data)
            return False
        try:
            self._out.put_nowait((topic, data))
        except asyncio.QueueFull:
            self.stats.dropped_out += len(data)
            return False
        return True

    def _link_for(self, topic: str) -> MqttNodeLink | None:
        if not (topic.startswith(self._prefix) and topic.endswith(self._suffix)):
            return None
        node = topic[len(self._prefix) : len(topic) - len(self._suffix)]
        if not node or "/" in node:
            return None
        link = self._links.get(node)
        if link is None:
            if len(self._links) >= 65536:  # a flood of made-up topics must not grow memory without bound
                return None
            link = self._links[node] = MqttNodeLink(self, node)
        return link

    async def run(self) -> None:
        """Connect, subscribe, feed; reconnect after failures — until cancelled."""
        try:
            while True:
                try:
                    await self._session()
                except aiomqtt.MqttError as exc:
                    self.stats.disconnects += 1
                    self.stats.last_error = str(exc)
                    log.warning("local MQTT %s:%d: %s", self.config.host, self.config.port, exc)
                except Exception as exc:  # a bug must not end WiFi ingest for good
                    self.stats.restarts += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("local MQTT ingest crashed, restarting")
                self.state = LinkState.BACKOFF
                delay = self._backoff.next()
                end = asyncio.get_running_loop().time() + delay
                while (left := end - asyncio.get_running_loop().time()) > 0:
                    self._beat()
                    await asyncio.sleep(min(left, 1.0))
        finally:
            self.state = LinkState.STOPPED

    def _beat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.beat()

    async def _session(self) -> None:
        async with aiomqtt.Client(self.config.host, self.config.port, identifier=self.client_id,
                                  keepalive=30) as client:
            await client.subscribe(self.config.up_topic, qos=1)
            self.state = LinkState.OPEN
            self.stats.opens += 1
            self._backoff.reset()
            log.info("local MQTT ingest on %s:%d %s", self.config.host, self.config.port, self.config.up_topic)
            sender = asyncio.create_task(self._send_loop(client))
            beater = asyncio.create_task(self._beat_loop())
            try:
                async for msg in client.messages:
                    if sender.done():
                        sender.result()  # re-raise what ended the sender
                    link = self._link_for(str(msg.topic))
                    payload = msg.payload
                    if link is None or not isinstance(payload, bytes | bytearray):
                        continue
                    self.stats.bytes_in += len(payload)
                    self.on_data(link, bytes(payload))
            finally:
                for task in (sender, beater):
                    task.cancel()
                await asyncio.gather(sender, beater, return_exceptions=True)
                self.state = LinkState.BACKOFF

    async def _beat_loop(self) -> None:
        while True:
            self._beat()
            await asyncio.sleep(1.0)

    async def _send_loop(self, client: aiomqtt.Client) -> None:
        while True:
            topic, data = await self._out.get()
            await client.publish(topic, data, qos=0)
            self.stats.bytes_out += len(data)

