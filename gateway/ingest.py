"""Frames in, events durable, ACKs out: the gateway's southbound pipeline.

Per link, a ``cewire.StreamDecoder`` splits the byte stream at the COBS delimiters; a ``cewire.Receiver``
verifies each frame (MAC under the node's key from the registry, then the replay window). Verified frames
become :class:`~gateway.events.Event` records that wait a few milliseconds to share one outbox commit
(batching is what makes 20,000 frames/s possible on one core). Only once that commit has returned — the
frames are on disk — does the pipeline mark them received (``Receiver.commit``) and send each node one
cumulative ACK per batch (docs/protocol.md §7). So a frame is acknowledged to a node only when it is
durable, and a crash at any moment makes the node resend, never lose.

* refused frames (bad MAC, unknown node, retired key, garbage, broken COBS) are counted by reason and dropped;
* a duplicate (E_REPLAY after a valid MAC: our ACK got lost) is dropped and answered with the current ACK;
* an alarm in a batch cuts the wait short: it is committed at once;
* when the outbox cannot keep up, frames beyond ``max_pending`` are dropped *unacknowledged* (the node keeps
  them and resends) and counted as ``overload``;
* CMD_ACK frames go to the :class:`~gateway.commands.CommandRouter`; HELLO is answered with a TIME frame.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from cewire import (
    E_PAYLOAD,
    E_REPLAY,
    PRIO_HIGH,
    PRIO_MEDIUM,
    T_CMD_ACK,
    T_DATA,
    T_EVENT,
    T_HELLO,
    Frame,
    Receiver,
    StreamDecoder,
    WireError,
    codes,
    payloads,
)
from cewire.host import ERROR_NAMES

from gateway.commands import CommandRouter
from gateway.downlink import Downlink
from gateway.events import Event, Priority
from gateway.links.base import Link
from gateway.nodes import NodeTracker
from gateway.outbox import Outbox
from gateway.registry import Registry
from gateway.uplink import codec
from gateway.uplink.codec import PackedBody

log = logging.getLogger(__name__)

_NODE_ID = struct.Struct(">I")
EVENT_STATES = {0: "cleared", 1: "raised", 2: "escalated", 3: "acked", 4: "paused", 5: "info"}
# CMD_ACK status (protocol §6.6) -> CommandStatus value
CMD_STATUS = {
    payloads.CS_OK: "ok",
    payloads.CS_INVALID: "rejected",
    payloads.CS_UNKNOWN: "rejected",
    payloads.CS_FAILED: "failed",
    payloads.CS_EXPIRED: "failed",
    payloads.CS_BUSY: "rejected",
}
MEDICAL_CODES = range(64, 128)
MAX_FLUSHES = 3  # outbox commits in flight at once (alarms may use them all)
TELEMETRY_FLUSHES = 2  # the next batch waits in the outbox's queue while the one before commits


def _scaled(label: int, value: int) -> float | int:
    spec = payloads.FIELDS.get(label)
    if spec is None or spec[2] == 0:
        return value
    return value / 10 ** (-spec[2]) if spec[2] < 0 else value * 10 ** spec[2]


# label -> (name, divisor, multiplier): v × 10^scale, dividing by an exact power of ten for negative scales
# so that 423 with scale −1 becomes 42.3 exactly as printed
_UNITS: dict[int, tuple[str, int, int]] = {
    label: (name, 10 ** -scale if scale < 0 else 1, 10**scale if scale > 0 else 1)
    for label, (name, _unit, scale) in payloads.FIELDS.items()
}
_L_T = payloads.L_T


def telemetry_body(frame: Frame) -> dict[str, Any]:
    """DATA body → ``{"seq", "records": [{"t": unix_s, name: value in SenML unit, ...}]}``.

    One pass over the (already CBOR-decoded) body; the same checks as ``cewire.payloads.parse_data``
    (integer labels, integer values) without building the intermediate list, since this runs per frame.
    """
    body = frame.body
    units = _UNITS
    records = []
    for raw in body if isinstance(body, list) else (body,):
        if not isinstance(raw, dict):
            raise WireError(E_PAYLOAD, "DATA record is not a map")
        rec: dict[str, Any] = {"t": frame.ts}
        for label, v in raw.items():
            if type(v) is not int or type(label) is not int:
                raise WireError(E_PAYLOAD, f"DATA field {label!r} must be an integer label with an integer value")
            if label == _L_T:
                rec["t"] = frame.ts + v
                continue
            spec = units.get(label)
            if spec is None:
                rec[f"l{label}"] = v  # an app's own label: passed on unscaled, named by number
            elif spec[1] != 1:
                rec[spec[0]] = v / spec[1]
            else:
                rec[spec[0]] = v * spec[2]
        records.append(rec)
    return {"seq": frame.seq, "records": records}


_K_SEQ, _K_RECORDS = codec.KEY_LABEL["seq"], codec.KEY_LABEL["records"]
_EXACT = 2**53


def packed_telemetry(frame: Frame, ts_ms: int) -> PackedBody:
    """DATA body → the uplink's compact CBOR (``codec.pack_body(telemetry_body(frame), ts)``), directly.

    The node's labels and scaled integers are what the compact form carries (docs/uplink.md), so they are
    passed through unchanged instead of being turned into floats here and back into integers by the codec.
    Falls back to the general path where the two would differ (no node time, huge values, scale > 0).
    """
    ts = frame.ts
    body = frame.body
    if not ts:  # the node does not know the time yet: stamped with the gateway's clock (``ts_ms``)
        return PackedBody(codec.pack_body(telemetry_body(frame), ts_ms), ts_ms)
    direct = _DIRECT
    if type(body) is dict and _L_T not in body and len(body) < 23:
        # one record (the usual DATA frame): its map entries are copied from the wire as they are, after
        # the record time "t" = 0 (relative to the event's second)
        for label, v in body.items():
            if type(v) is not int or type(label) is not int or label not in direct or not -_EXACT < v < _EXACT:
                break
        else:
            payload = frame.payload
            if payload[0] == 0xA0 + len(body):  # a map header of one byte, as every encoder writes it
                packed = b"".join((_HEAD_SEQ, codec.cbor_uint(frame.seq), _ONE_RECORD, bytes((0xA1 + len(body),)),
                                   _T_ZERO, payload[1:]))
                return PackedBody(packed, ts_ms)
    records = []
    for raw in body if isinstance(body, list) else (body,):
        if not isinstance(raw, dict):
            raise WireError(E_PAYLOAD, "DATA record is not a map")
        rec: dict[int, int] = {_L_T: 0}
        for label, v in raw.items():
            if type(v) is not int or type(label) is not int:
                raise WireError(E_PAYLOAD, f"DATA field {label!r} must be an integer label with an integer value")
            if label not in direct or not -_EXACT < v < _EXACT:
                return PackedBody(codec.pack_body(telemetry_body(frame), ts_ms), ts_ms)
            rec[label] = v
        records.append(rec)
    return PackedBody(cbor2.dumps({_K_SEQ: frame.seq, _K_RECORDS: records}), ts_ms)


_HEAD_SEQ = bytes((0xA2, 0x20))  # {−1 (seq): ..., −2 (records): [...]}
_ONE_RECORD = bytes((0x21, 0x81))  # −2: an array of one record
_T_ZERO = bytes((_L_T, 0))  # t: 0


# labels whose wire value is exactly their compact uplink value: the protocol's fields with scale <= 0, and t
_DIRECT = frozenset([_L_T, *(label for label, (_n, _u, scale) in payloads.FIELDS.items() if scale <= 0)])


def event_body(frame: Frame) -> tuple[dict[str, Any], Priority]:
    """EVENT body → (event dict, priority). High/medium medical conditions and any high event are alarms."""
    ev = payloads.parse_event(frame.body)
    code = ev["code"]
    body: dict[str, Any] = {
        "seq": frame.seq,
        "code": code,
        "name": codes.NAMES.get(code, f"code{code}"),
        "state": EVENT_STATES.get(ev["state"], str(ev["state"])),
        "prio": frame.priority,
    }
    label = ev["label"]
    if ev["value"] is not None:
        body["value"] = _scaled(label, ev["value"])
    if ev["limit"] is not None:
        body["limit"] = _scaled(label, ev["limit"])
    if label and label in payloads.FIELDS:
        body["unit"] = payloads.FIELDS[label][1]
    if ev["text"]:
        body["text"] = ev["text"]
    if ev["id"]:
        body["id"] = ev["id"]
    alarm = frame.priority == PRIO_HIGH or (code in MEDICAL_CODES and frame.priority >= PRIO_MEDIUM)
    return body, Priority.ALARM if alarm else Priority.FAULT


@dataclass
class _Pending:
    link: Link
    frame: Frame
    event: Event


class IngestStats:
    def __init__(self) -> None:
        self.frames_in = 0  # COBS blocks decoded
        self.accepted = 0  # verified and made durable
        self.acked = 0  # ACK frames sent
        self.duplicates = 0  # E_REPLAY after a valid MAC: re-acked
        self.rejected: dict[str, int] = {}  # by WireError name (mac, unknown_node, cobs, payload, ...)
        self.overload = 0  # dropped unacknowledged because the outbox fell behind
        self.store_errors = 0  # outbox commits that failed (disk full, I/O): nothing acked
        self.batches = 0
        self.last_batch = 0


class Ingest:
    """The pipeline; give :meth:`feed` to links as their ``on_data`` callback and run :meth:`run`."""

    def __init__(
        self,
        registry: Registry,
        outbox: Outbox,
        tracker: NodeTracker,
        downlink: Downlink,
        router: CommandRouter | None = None,
        *,
        batch_max: int = 2000,
        flush_s: float = 0.005,
        max_pending: int = 50_000,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self.outbox = outbox
        self.tracker = tracker
        self.downlink = downlink
        self.router = router
        self.batch_max = batch_max
        self.flush_s = flush_s
        self.max_pending = max_pending
        self.heartbeat = heartbeat
        self.receiver = Receiver(registry.keyring)
        self._keys = {rec.node_id: (rec.key_id, rec.key) for rec in registry}
        registry.add_listener(self._registry_changed)
        self.stats = IngestStats()
        self._decoders: dict[str, tuple[int, StreamDecoder]] = {}
        self._pending: list[_Pending] = []
        self._reack: dict[int, Link] = {}
        self._now = time.monotonic()
        self._wall = time.time()
        self._urgent = False
        self._oldest = self._now
        self._wake = asyncio.Event()

    def _registry_changed(self, registry: Registry) -> None:
        self.receiver.keyring = registry.keyring  # windows are kept: sequence numbers continue ...
        keys = {rec.node_id: (rec.key_id, rec.key) for rec in registry}
        for node_id, key in keys.items():
            old = self._keys.get(node_id)
            if old is not None and old != key:
                # ... except for a re-provisioned node: its flash was wiped and it counts from 1 again.
                # Frames under its old key no longer verify, so forgetting its windows admits no replay.
                self.receiver.forget(node_id)
                log.info("node %d re-provisioned (key id %d -> %d): its sequence numbers start again",
                         node_id, old[0], key[0])
        # removed nodes' keys are remembered: one that comes back under the same key keeps its windows (its
        # old frames would verify again), one that comes back re-provisioned is forgotten as above
        self._keys.update(keys)
        self.tracker.forget({rec.node_id for rec in registry})

    # ------------------------------------------------------------------ frames in (synchronous, hot path)
    def feed(self, link: Link, data: bytes) -> None:
        """Bytes from ``link`` (any split): decode, verify and queue every complete frame."""
        opens = getattr(link.stats, "opens", 0)
        entry = self._decoders.get(link.name)
        if entry is None or entry[0] != opens:  # a reopened port starts mid-stream: fresh decoder
            entry = self._decoders[link.name] = (opens, StreamDecoder())
        decoder = entry[1]
        errors_before = decoder.errors
        codes_before = dict(decoder.error_codes) if errors_before else {}
        frames = decoder.feed(data)
        if decoder.errors != errors_before:  # garbage, cut or oversize blocks on the wire
            rejected = self.stats.rejected
            for code, n in decoder.error_codes.items():
                name = ERROR_NAMES.get(code, str(code))
                rejected[name] = rejected.get(name, 0) + n - codes_before.get(code, 0)
        self._now = time.monotonic()  # one clock reading per chunk, not per frame
        self._wall = time.time()
        for raw in frames:
            self.frame(link, raw)
        if self._reack:  # one ACK per node for all the duplicates in this chunk
            for node_id, ack_link in self._reack.items():
                acks = self.receiver.acks(node_id)
                if acks and self.downlink.send_ack(node_id, acks, ack_link):
                    self.stats.acked += 1
            self._reack.clear()

    def frame(self, link: Link, raw: bytes) -> None:
        """One unframed frame from ``link``."""
        st = self.stats
        st.frames_in += 1
        try:
            frame = self.receiver.verify(raw)
        except WireError as exc:
            if exc.code == E_REPLAY:  # authentic (MAC checked first) but seen: our ACK was lost
                st.duplicates += 1
                self._reack[_NODE_ID.unpack_from(raw, 4)[0]] = link
            else:
                st.rejected[exc.name] = st.rejected.get(exc.name, 0) + 1
            return
        if len(self._pending) >= self.max_pending:
            st.overload += 1
            return
        try:
            event = self._event(link, frame)
        except WireError as exc:  # authentic but the payload does not follow the spec
            st.rejected[exc.name] = st.rejected.get(exc.name, 0) + 1
            return
        if event is None:
            return
        if not self._pending:
            self._oldest = self._now  # the batch's deadline counts from its first frame
        self._pending.append(_Pending(link, frame, event))
        if event.priority is Priority.ALARM or len(self._pending) >= self.batch_max:
            self._urgent = True
        self._wake.set()

    def _event(self, link: Link, frame: Frame) -> Event | None:
        node_id = frame.node_id
        rec = self.registry.get(node_id)
        name = rec.name if rec is not None else ""
        now = self._now
        ftype = frame.ftype
        ts_ms = frame.ts * 1000 if frame.ts else int(self._wall * 1000)
        source = f"node:{node_id}"
        origin = f"{node_id}:{frame.channel}:{frame.seq}"
        if ftype == T_DATA:
            self.tracker.seen(node_id, name, link, now, wall=self._wall)
            return Event(source, "telemetry", Priority.TELEMETRY, packed_telemetry(frame, ts_ms), ts_ms, origin)
        if ftype == T_EVENT:
            self.tracker.seen(node_id, name, link, now)
            body, prio = event_body(frame)
            return Event(source, "event", prio, body, ts_ms, origin)
        if ftype == T_HELLO:
            hello = payloads.parse_hello(frame.body)
            self.tracker.hello(node_id, name, link, now, hello)
            if hello["rx"]:
                self.downlink.seq.at_least(hello["rx"])
            self.downlink.send_time(node_id, link)  # the node may not know the time yet
            body = {"seq": frame.seq, **hello}
            return Event(source, "hello", Priority.FAULT, body, ts_ms, origin)
        if ftype == T_CMD_ACK:
            self.tracker.seen(node_id, name, link, now)
            token, status, text = payloads.parse_cmd_ack(frame.body)
            if self.router is not None:
                result = {"text": text} if text else None
                self.router.on_ack(node_id, token, CMD_STATUS.get(status, "failed"), result)
            # the command's final status reaches the outbox through the router's listener; the CMD_ACK
            # itself is recorded too, so the frame is acknowledged only once something durable exists
            body = {"seq": frame.seq, "token": token, "status": CMD_STATUS.get(status, "failed"), "text": text}
            return Event(source, "cmd_ack", Priority.COMMAND_ACK, body, ts_ms, origin)
        return None

    # ------------------------------------------------------------------ durable, then acknowledged
    async def run(self) -> None:
        """Commit queued frames in batches and acknowledge them, until cancelled.

        Up to ``MAX_FLUSHES`` commits may be in flight, so an alarm does not wait for the telemetry batch
        ahead of it to be acknowledged: it joins the outbox's next group commit at once.
        """
        inflight: set[asyncio.Task[None]] = set()
        try:
            while True:
                if not self._pending:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), 1.0)
                    except TimeoutError:
                        pass
                # progress = nothing waiting on the outbox, or a commit finished (see _flushed): a hung
                # disk therefore stops the beats even though this loop itself keeps turning
                if self.heartbeat is not None and not inflight:
                    self.heartbeat()
                if not self._pending:
                    continue
                if not self._urgent and self.flush_s > 0:
                    # let a batch build up, unless an alarm or a full batch arrives first
                    # (from the first frame's arrival: frames that waited for the last commit go at once)
                    deadline = self._oldest + self.flush_s
                    while not self._urgent and (left := deadline - time.monotonic()) > 0:
                        self._wake.clear()
                        try:
                            await asyncio.wait_for(self._wake.wait(), left)
                        except TimeoutError:
                            break
                limit = MAX_FLUSHES if self._urgent else TELEMETRY_FLUSHES
                while len(inflight) >= limit:  # back-pressure: a stuck outbox stops this loop (and its beats)
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(self.flush())
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                task.add_done_callback(self._flushed)
                await asyncio.sleep(0)  # let the flush take its batch before looking again
        finally:
            for task in inflight:
                task.cancel()

    def _flushed(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug: the frames of that batch stay unacknowledged and nodes resend them
            log.error("flush failed: %r", exc, exc_info=exc)
            return
        if self.heartbeat is not None:
            self.heartbeat()

    async def flush(self) -> None:
        """Commit everything queued now and send the ACKs."""
        batch, self._pending = self._pending, []
        self._urgent = False
        if not batch:
            return
        alarms = [p for p in batch if p.event.priority is Priority.ALARM]
        if alarms and len(alarms) < len(batch):
            # the alarms commit on their own, ahead of the telemetry that came with them (the outbox puts
            # an alarm's commit first); each part is acknowledged as soon as it is durable
            rest = [p for p in batch if p.event.priority is not Priority.ALARM]
            await asyncio.gather(self._commit(alarms), self._commit(rest))
        else:
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            await self.outbox.put_many([p.event for p in batch])
        except Exception as exc:  # not durable: acknowledge nothing, nodes will resend
            self.stats.store_errors += 1
            log.error("could not store %d frames, not acknowledging them: %s", len(batch), exc)
            return
        rx = self.receiver
        touched: dict[int, Link] = {}
        for p in batch:
            rx.commit(p.frame)
            touched[p.frame.node_id] = p.link
        for node_id, link in touched.items():
            if self.downlink.send_ack(node_id, rx.acks(node_id), link):
                self.stats.acked += 1
        self.stats.accepted += len(batch)
        self.stats.batches += 1
        self.stats.last_batch = len(batch)

    # ------------------------------------------------------------------ replay windows across restarts
    def save_windows(self, path: Path) -> None:
        """Persist the replay windows (atomic rename) so replays stay refused after a restart.

        Saved every few seconds, not per frame: after a crash the windows are a little old, which only
        lets a node's retransmissions in again (the outbox drops them as duplicates by origin).
        """
        rows = [[node, ch, top, mask, cum] for (node, ch), (top, mask, cum) in self.receiver.export().items()]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"format": 1, "windows": rows}))
        os.replace(tmp, path)

    def load_windows(self, path: Path) -> int:
        """Restore windows saved by :meth:`save_windows`; returns how many (0 if absent or unreadable)."""
        try:
            doc = json.loads(path.read_text())
            state = {(int(n), int(c)): (int(t), int(m), int(q)) for n, c, t, m, q in doc["windows"]}
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("replay windows in %s unreadable (%s); starting with empty windows", path, exc)
            return 0
        self.receiver.restore(state)
        return len(state)

    def rejected_total(self) -> int:
        return sum(self.stats.rejected.values())
