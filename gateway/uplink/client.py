"""The uplink: sends the outbox to the operations center's broker and takes commands back.

One :class:`Uplink` owns one MQTT connection (aiomqtt). Each session:

1. bumps the persistent birth/death sequence ``bdSeq`` (kept in the outbox database) and connects with
   a retained *will* ``{"online": false, "bdSeq": n}`` on the state topic — MQTT 5 first, MQTT 3.1.1 if the
   broker refuses version 5; TLS (CA + client certificate) and username/password as configured;
2. rewinds the outbox (everything not yet acknowledged goes again) and publishes a retained *birth*
   ``{"online": true, "bdSeq": n, …}`` with the agent's state and the site's nodes;
3. subscribes to its command topics (QoS 1) and hands authorised commands to ``on_command``;
4. sends batches — highest priority first, in order per lane — as QoS 1 messages, up to ``max_inflight``
   at once, and acknowledges each batch in the outbox only when the broker's PUBACK for it has arrived.

When the connection drops, the session ends and a new one starts after a capped exponential backoff with
jitter. :meth:`Uplink.aclose` publishes an orderly death and disconnects. The wire format is in
docs/uplink.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cityedge import __version__
from gateway.commands import COMMANDS, DEFAULT_TIMEOUT_S, CommandRequest, CommandResult, CommandStatus
from gateway.events import Event, Priority, StoredEvent, now_ms
from gateway.outbox import Outbox
from gateway.uplink import codec
from gateway.uplink.topics import Topics

log = logging.getLogger(__name__)

URGENT_INFLIGHT = 4  # batches of alarms/faults in flight beyond ``max_inflight`` (which telemetry may fill)

CommandHandler = Callable[[CommandRequest], Awaitable[Any] | None]
NodesProvider = Callable[[], Iterable[Mapping[str, Any]]]


class UplinkState(enum.StrEnum):
    CONNECTING = "connecting"
    ONLINE = "online"
    BACKOFF = "backoff"
    STOPPED = "stopped"


@dataclass(frozen=True)
class UplinkSettings:
    """Everything the uplink needs; build it from the gateway config with :meth:`from_gateway_config`."""

    url: str  # mqtt://host[:1883] or mqtts://host[:8883]
    gateway_id: str
    site: str = "default"
    client_id: str | None = None  # default: "cityedge-<gateway_id>"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_prefix: str = "cityedge"
    format: str = codec.CBOR
    batch_max: int = 500  # events per MQTT message
    batch_bytes: int = 256 * 1024  # stored bytes per MQTT message (roughly; compact payloads are smaller)
    batch_ms: float = 20.0  # how long a short batch of telemetry/vision waits for company (never alarms)
    keepalive_s: int = 30
    max_inflight: int = 8  # batches published and not yet acknowledged
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    publish_timeout_s: float = 30.0  # a PUBACK that takes longer ends the session (and the batch goes again)
    protocol: str = "auto"  # "auto" (MQTT 5, falling back to 3.1.1), "5" or "3.1.1"
    allowed_commands: frozenset[str] = frozenset(COMMANDS)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"uplink url must be mqtt://host[:port] or mqtts://host[:port], got {self.url!r}")
        if self.format not in codec.CONTENT_TYPES:
            raise ValueError(f"uplink format must be cbor or json, got {self.format!r}")
        if self.protocol not in ("auto", "5", "3.1.1"):
            raise ValueError(f"uplink protocol must be auto, 5 or 3.1.1, got {self.protocol!r}")
        Topics(self.topic_prefix, self.site, self.gateway_id)  # validates the topic levels

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @classmethod
    def from_gateway_config(cls, config: Any, *, site: str | None = None, **overrides: Any) -> UplinkSettings:
        """From :class:`gateway.config.GatewayConfig` (its ``[uplink]`` section and ``gateway_id``)."""
        up = config.uplink
        values: dict[str, Any] = {
            "url": up.url,
            "gateway_id": config.gateway_id,
            "site": site or up.site or "default",
            "client_id": up.client_id,
            "username": up.username,
            "password": up.password,
            "ca_file": up.ca_file,
            "cert_file": up.cert_file,
            "key_file": up.key_file,
            "topic_prefix": up.topic_prefix,
            "format": up.format,
            "batch_max": up.batch_max,
            "batch_ms": up.batch_ms,
            "keepalive_s": up.keepalive_s,
        }
        allowed = up.allowed_commands
        if allowed is not None:
            values["allowed_commands"] = frozenset(allowed)
        values.update(overrides)
        return cls(**values)

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS context: the configured CA (or the system's), the client certificate if configured."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Capped exponential backoff with "equal jitter": a delay in [cap/2, cap], cap = min(high, low·2^n)."""
    cap = min(high, low * (2 ** min(attempt, 30)))
    return cap / 2 + rng.uniform(0, cap / 2)


@dataclass
class UplinkStats:
    connects: int = 0
    disconnects: int = 0
    batches: int = 0
    events: int = 0
    bytes: int = 0
    commands: int = 0
    commands_rejected: int = 0
    births: int = 0
    bd_seq: int = 0
    protocol: str = ""
    last_error: str = ""
    last_publish_ms: int = 0


def command_result_event(result: CommandResult) -> Event:
    """The outbox event that carries a command's final status upstream (lane ``ack``)."""
    return Event(
        f"node:{result.node_id}" if result.node_id else "gw",
        "cmd_status",
        Priority.COMMAND_ACK,
        result.as_dict(),
        origin=f"cmd:{result.command_id}",
    )


class _Closing(Exception):
    """Internal: ends a session because aclose() was called."""


class Uplink:
    """The uplink to the operations center. ``async with Uplink(settings, outbox) as up: ...``.

    ``on_command(request)``: called for each authorised command (e.g. ``CommandRouter.submit``); whoever
    handles it reports the final status (``command_result_event``); commands the uplink itself refuses
    (malformed, not allowed, unknown target) get a ``rejected``/``invalid`` status here.
    ``nodes()``: the site's nodes for the birth message (id, name, role, lat, lon, ...).
    ``agent_state()``: extra fields for the birth (links, version, ...). ``heartbeat()``: called while the
    uplink makes progress (connected and sending, or backing off on schedule).
    """

    def __init__(
        self,
        settings: UplinkSettings,
        outbox: Outbox,
        *,
        on_command: CommandHandler | None = None,
        nodes: NodesProvider | None = None,
        agent_state: Callable[[], Mapping[str, Any]] | None = None,
        heartbeat: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.topics = Topics(settings.topic_prefix, settings.site, settings.gateway_id)
        self.on_command = on_command
        self.nodes = nodes
        self.agent_state = agent_state
        self.heartbeat = heartbeat or (lambda: None)
        self.rng = rng or random.Random()
        self.state = UplinkState.STOPPED
        self.stats = UplinkStats()
        self.started_ms = now_ms()
        self._protocol = {"5": aiomqtt.ProtocolVersion.V5, "3.1.1": aiomqtt.ProtocolVersion.V311}.get(
            settings.protocol, aiomqtt.ProtocolVersion.V5
        )
        self._closing = asyncio.Event()
        self._rebirth = asyncio.Event()
        self._online = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._command_tasks: set[asyncio.Future[Any]] = set()

    # ------------------------------------------------------------------ life cycle
    async def __aenter__(self) -> Uplink:
        self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def start(self) -> None:
        """Run the uplink in a background task (reconnecting forever until :meth:`aclose`)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="uplink")

    async def aclose(self, timeout: float = 5.0) -> None:
        """Publish an orderly death, disconnect and stop."""
        self._closing.set()
        if self._task is not None:
            # online: let the session publish its orderly death; otherwise there is nothing to wait for
            wait = timeout if self.state is UplinkState.ONLINE else 0.05
            try:
                await asyncio.wait_for(asyncio.shield(self._task), wait)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        for task in list(self._command_tasks):
            task.cancel()
        self.state = UplinkState.STOPPED

    async def wait_online(self, timeout: float | None = None) -> None:
        """Wait until a session is up (birth published, commands subscribed)."""
        await asyncio.wait_for(self._online.wait(), timeout)

    def request_rebirth(self) -> None:
        """Publish the birth again (the node list changed, or the operations center asked)."""
        self._rebirth.set()

    # ------------------------------------------------------------------ sessions
    async def run(self) -> None:
        """Connect, send, reconnect with backoff; returns after :meth:`aclose`."""
        attempt = 0
        while not self._closing.is_set():
            self.state = UplinkState.CONNECTING
            self.heartbeat()
            started = time.monotonic()
            try:
                await self._session()
            except _Closing:
                break
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
                self._note_error(exc)
            self._online.clear()
            if self._closing.is_set():
                break
            if time.monotonic() - started > 10 and self.stats.births:  # it was working: retry soon
                attempt = 0
            delay = backoff_delay(attempt, self.settings.backoff_min_s, self.settings.backoff_max_s, self.rng)
            attempt += 1
            self.state = UplinkState.BACKOFF
            log.info("uplink: reconnecting to %s in %.1f s", self.settings.url, delay)
            deadline = time.monotonic() + delay
            while (left := deadline - time.monotonic()) > 0 and not self._closing.is_set():
                self.heartbeat()  # waiting on schedule is progress, not a hang
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), min(left, 1.0))
        self.state = UplinkState.STOPPED
        self._online.clear()

    def _note_error(self, exc: BaseException) -> None:
        if self.state is UplinkState.ONLINE:
            self.stats.disconnects += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("uplink to %s: %s", self.settings.url, self.stats.last_error)

    def _client(self, bd_seq: int) -> aiomqtt.Client:
        s = self.settings
        v5 = self._protocol == aiomqtt.ProtocolVersion.V5
        death = codec.encode_state(self._death(bd_seq))
        return aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.client_id or f"cityedge-{s.gateway_id}",
            protocol=self._protocol,
            will=aiomqtt.Will(self.topics.state, death, qos=1, retain=True),
            username=s.username,
            password=s.password,
            tls_context=s.ssl_context(),
            keepalive=s.keepalive_s,
            clean_session=None if v5 else True,
            timeout=s.publish_timeout_s,
            max_inflight_messages=max(20, s.max_inflight * 2),
        )

    async def _session(self) -> None:
        bd_seq = await self.outbox.bump_counter("bdseq")
        self.stats.bd_seq = bd_seq
        client = self._client(bd_seq)
        try:
            await client.__aenter__()
        except aiomqtt.MqttCodeError as exc:
            if self.settings.protocol == "auto" and self._protocol == aiomqtt.ProtocolVersion.V5 and _refuses_v5(exc):
                log.warning("uplink: %s refuses MQTT 5; using MQTT 3.1.1", self.settings.url)
                self._protocol = aiomqtt.ProtocolVersion.V311
                client = self._client(bd_seq)
                await client.__aenter__()
            else:
                raise
        try:
            await self._connected(client, bd_seq)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.__aexit__(None, None, None), 2.0)

    async def _connected(self, client: aiomqtt.Client, bd_seq: int) -> None:
        self.stats.connects += 1
        self.stats.protocol = "5" if self._protocol == aiomqtt.ProtocolVersion.V5 else "3.1.1"
        self.outbox.rewind()  # what was in flight on the last connection goes again
        await self._publish_birth(client, bd_seq)
        await client.subscribe(self.topics.commands, qos=1)
        self.state = UplinkState.ONLINE
        self._online.set()
        log.info("uplink online: %s (MQTT %s, bdSeq %d)", self.settings.url, self.stats.protocol, bd_seq)
        receiver = asyncio.create_task(self._receive(client), name="uplink-commands")
        try:
            await self._send(client, bd_seq, receiver)
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await receiver

    def _birth(self, bd_seq: int) -> dict[str, Any]:
        st = self.outbox.stats()
        doc: dict[str, Any] = {
            "v": codec.FORMAT_VERSION,
            "online": True,
            "bdSeq": bd_seq,
            "gw": self.settings.gateway_id,
            "site": self.settings.site,
            "epoch": self.outbox.epoch,
            "ts": now_ms(),
            "started": self.started_ms,
            "format": self.settings.format,
            "mqtt": self.stats.protocol,
            "agent": {"version": __version__, **(dict(self.agent_state()) if self.agent_state else {})},
            "outbox": {
                "depth": {p.lane: n for p, n in st.depth.items()},
                "dropped": {p.lane: n for p, n in st.dropped.items()},
                "bytes": st.bytes,
                "quota_bytes": st.quota_bytes,
            },
            "commands": sorted(self.settings.allowed_commands),
        }
        if self.nodes is not None:
            try:
                doc["nodes"] = [dict(n) for n in self.nodes()]
            except Exception as exc:  # a broken registry must not keep us offline
                log.error("uplink: cannot list nodes for the birth: %s", exc)
        return doc

    def _death(self, bd_seq: int, reason: str = "connection lost") -> dict[str, Any]:
        return {
            "v": codec.FORMAT_VERSION,
            "online": False,
            "bdSeq": bd_seq,
            "gw": self.settings.gateway_id,
            "site": self.settings.site,
            "epoch": self.outbox.epoch,
            "reason": reason,
        }

    async def _publish_birth(self, client: aiomqtt.Client, bd_seq: int) -> None:
        self._rebirth.clear()
        payload = codec.encode_state(self._birth(bd_seq))
        await client.publish(self.topics.state, payload, qos=1, retain=True, properties=self._props(codec.JSON))
        self.stats.births += 1

    def _props(self, fmt: str) -> Properties | None:
        if self._protocol != aiomqtt.ProtocolVersion.V5:
            return None
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = codec.CONTENT_TYPES[fmt]
        return props

    # ------------------------------------------------------------------ sending
    async def _send(self, client: aiomqtt.Client, bd_seq: int, receiver: asyncio.Task[None]) -> None:
        s = self.settings
        slots = asyncio.Semaphore(s.max_inflight)
        # alarms and faults have slots of their own: they never wait for telemetry's PUBACKs
        urgent_slots = asyncio.Semaphore(URGENT_INFLIGHT)
        inflight: set[asyncio.Task[None]] = set()
        failure: list[BaseException] = []

        def done(task: asyncio.Task[None]) -> None:
            inflight.discard(task)
            if not task.cancelled() and task.exception() is not None:
                failure.append(task.exception())  # type: ignore[arg-type]

        try:
            while True:
                self.heartbeat()
                if failure:
                    raise failure[0]
                if receiver.done():  # the connection is gone (the receiver saw it first)
                    receiver.result()
                    raise aiomqtt.MqttError("connection lost")
                if self._closing.is_set():
                    await self._drain(inflight, 2.0)
                    reason = self._death(bd_seq, "shutdown")
                    reason["ts"] = now_ms()
                    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                        await client.publish(self.topics.state, codec.encode_state(reason), qos=1, retain=True,
                                             timeout=2.0)
                    raise _Closing
                if self._rebirth.is_set():
                    await self._publish_birth(client, bd_seq)
                if not await self._wait_for_work(receiver):
                    continue
                if slots.locked():  # every telemetry slot waits for a PUBACK: wait for one or for an alarm
                    await self._slot_or_urgent(slots)
                batch = await self.outbox.next_batch(s.batch_max, s.batch_bytes)
                if not batch:
                    continue
                if len(batch) < s.batch_max and batch[0].priority < Priority.FAULT and s.batch_ms > 0:
                    # a short batch of telemetry waits a moment for company, unless something urgent comes
                    await self.outbox.wait_urgent(s.batch_ms / 1000.0)
                    more = await self.outbox.next_batch(s.batch_max - len(batch), s.batch_bytes)
                    if more and more[0].priority == batch[0].priority:
                        batch.extend(more)
                    elif more:  # something more urgent: it goes first
                        await self._launch(client, more, urgent_slots, inflight, done)
                urgent = batch[0].priority >= Priority.FAULT
                await self._launch(client, batch, urgent_slots if urgent else slots, inflight, done)
        finally:
            for task in list(inflight):
                task.cancel()

    async def _wait_for_work(self, receiver: asyncio.Task[None]) -> bool:
        waiter = asyncio.ensure_future(self.outbox.wait_for_events(1.0))
        closing = asyncio.ensure_future(self._closing.wait())
        rebirth = asyncio.ensure_future(self._rebirth.wait())
        try:
            await asyncio.wait({waiter, closing, rebirth, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (waiter, closing, rebirth):
                f.cancel()
        return waiter.done() and not waiter.cancelled() and bool(waiter.result())

    async def _slot_or_urgent(self, slots: asyncio.Semaphore) -> None:
        acquire = asyncio.ensure_future(slots.acquire())
        urgent = asyncio.ensure_future(self.outbox.wait_urgent(self.settings.publish_timeout_s))
        try:
            await asyncio.wait({acquire, urgent}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            urgent.cancel()
            if acquire.done() and not acquire.cancelled():
                slots.release()  # a slot is free: _launch takes it
            else:
                acquire.cancel()
            if urgent.done() and not urgent.cancelled() and urgent.result():
                self.outbox.note_urgent()  # consumed here; the short-batch wait must still see it

    async def _launch(
        self,
        client: aiomqtt.Client,
        batch: list[StoredEvent],
        slots: asyncio.Semaphore,
        inflight: set[asyncio.Task[None]],
        done: Callable[[asyncio.Task[None]], None],
    ) -> None:
        await slots.acquire()
        # Tasks start in creation order and publish() hands the message to the MQTT client before its first
        # await, so batches reach the broker in the order they were read: in order per lane.
        task = asyncio.create_task(self._publish_batch(client, batch))
        inflight.add(task)
        task.add_done_callback(lambda _t: slots.release())
        task.add_done_callback(done)
        await asyncio.sleep(0)

    async def _publish_batch(self, client: aiomqtt.Client, batch: list[StoredEvent]) -> None:
        s = self.settings
        payload = codec.encode_batch(s.gateway_id, self.outbox.epoch, batch, s.format)
        await client.publish(
            self.topics.events(batch[0].priority), payload, qos=1, properties=self._props(s.format)
        )
        st = self.stats
        st.batches += 1
        st.events += len(batch)
        st.bytes += len(payload)
        st.last_publish_ms = now_ms()
        # PUBACK received: only now may the outbox forget these events
        await self.outbox.ack(e.id for e in batch)

    @staticmethod
    async def _drain(inflight: set[asyncio.Task[None]], timeout: float) -> None:
        if inflight:
            await asyncio.wait(set(inflight), timeout=timeout)

    # ------------------------------------------------------------------ commands
    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            await self.handle_command(str(message.topic), bytes(payload))

    async def handle_command(self, topic: str, payload: bytes) -> CommandRequest | None:
        """Authorise and parse one command message; returns the request handed on (None if refused)."""
        self.stats.commands += 1
        parsed = self.topics.parse_command(topic)
        if parsed is None:
            return self._refuse(None, topic, "", CommandStatus.REJECTED, "not a command topic of this gateway")
        target, name = parsed
        try:
            doc = codec.decode_command(payload)
        except codec.PayloadError as exc:
            return self._refuse(None, target, name, CommandStatus.INVALID, str(exc))
        cid = doc.get("id")
        if not isinstance(cid, str) or not 1 <= len(cid) <= 64:
            return self._refuse(None, target, name, CommandStatus.INVALID, "'id' must be a text of 1-64 characters")
        if target == "gw":
            if name == "rebirth":
                self.request_rebirth()
                self._report(CommandResult(cid, 0, name, CommandStatus.OK, "birth published again"))
                return None
            return self._refuse(cid, target, name, CommandStatus.INVALID, f"unknown gateway command {name!r}")
        if name not in self.settings.allowed_commands:
            return self._refuse(cid, target, name, CommandStatus.REJECTED,
                                f"command {name!r} is not allowed by this gateway's configuration")
        try:
            node_id = int(target)
            if not 0 < node_id < 2**32:
                raise ValueError
        except ValueError:
            return self._refuse(cid, target, name, CommandStatus.INVALID, f"target {target!r} is not a node id")
        expires = doc.get("expires")
        if isinstance(expires, int | float) and expires < now_ms():
            return self._refuse(cid, target, name, CommandStatus.REJECTED, "command expired before it arrived")
        args = doc.get("args", {})
        if not isinstance(args, dict):
            return self._refuse(cid, target, name, CommandStatus.INVALID, "'args' must be a map")
        timeout = doc.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            return self._refuse(cid, target, name, CommandStatus.INVALID, "'timeout_s' must be a number")
        request = CommandRequest(cid, node_id, name, args, float(timeout), source="ops")
        if self.on_command is None:
            return self._refuse(cid, target, name, CommandStatus.REJECTED, "this gateway takes no commands")
        result = self.on_command(request)
        if result is not None:
            task = asyncio.ensure_future(result)
            self._command_tasks.add(task)
            task.add_done_callback(self._command_done)
        return request

    def _command_done(self, task: asyncio.Future[Any]) -> None:
        self._command_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("command handler failed: %s", task.exception())

    def _refuse(
        self, cid: str | None, target: str, name: str, status: CommandStatus, detail: str
    ) -> CommandRequest | None:
        self.stats.commands_rejected += 1
        log.warning("uplink: refused command %s %s/%s: %s", cid or "-", target, name, detail)
        if cid is None:
            return None  # nothing to correlate a status with: counted and logged only
        node = int(target) if target.isdigit() and int(target) < 2**32 else 0
        self._report(CommandResult(cid, node, name, status, detail))
        return None

    def _report(self, result: CommandResult) -> None:
        task = asyncio.ensure_future(self.outbox.put(command_result_event(result)))
        self._command_tasks.add(task)
        task.add_done_callback(self._command_done)


def _refuses_v5(exc: aiomqtt.MqttCodeError) -> bool:
    rc = getattr(exc.rc, "value", exc.rc)
    return rc in (1, 132)  # 3.1.1 "unacceptable protocol version" / MQTT 5 "unsupported protocol version"


async def start_uplink(
    config: Any,
    outbox: Outbox,
    router: Any = None,
    *,
    heartbeat: Callable[[], None] | None = None,
    registry: Iterable[Any] | None = None,
    site: str | None = None,
    agent_state: Callable[[], Mapping[str, Any]] | None = None,
) -> Uplink:
    """Build and start the uplink for the agent (``gateway.agent``): commands go to ``router.submit``."""
    site = site or config.uplink.site  # configured: it wins over the manifest's majority
    if site is None and registry is not None:
        sites = [getattr(rec, "site", "") for rec in registry]
        site = max(set(sites), key=sites.count) if sites else None
    settings = UplinkSettings.from_gateway_config(config, site=site)

    def nodes() -> list[dict[str, Any]]:
        return [node_info(rec) for rec in (registry or ())]

    uplink = Uplink(
        settings,
        outbox,
        on_command=router.submit if router is not None else None,
        nodes=nodes if registry is not None else None,
        agent_state=agent_state,
        heartbeat=heartbeat,
    )
    add_listener = getattr(registry, "add_listener", None)
    if add_listener is not None:
        add_listener(lambda _reg: uplink.request_rebirth())
    uplink.start()
    return uplink


def node_info(rec: Any) -> dict[str, Any]:
    """What the birth says about a node (never its key): id, name, role, site, position."""
    return {
        "id": rec.node_id,
        "name": getattr(rec, "name", ""),
        "role": rec.role,
        "site": getattr(rec, "site", ""),
        "lat": rec.lat,
        "lon": rec.lon,
    }
