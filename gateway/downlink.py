"""Frames from the gateway to nodes: ACK, TIME and CMD, signed with each node's key (``cewire``).

Sequence numbers (docs/protocol.md §4): nodes refuse a gateway frame whose seq they have already seen, so
the gateway's numbers must keep growing across restarts. One counter serves all nodes (so it grows for each
of them); its *reservation* is persisted in ``<state_dir>/downlink.seq``: before using numbers up to L the
gateway has written L (atomic rename + fsync), and after a restart it starts at the stored L. Cost: one
small write per ``BLOCK`` frames; a restart skips at most ``BLOCK`` numbers. A node's HELLO reports the
highest gateway seq it accepted (``rx``), and the counter jumps above it (a replaced gateway).

A CMD is retransmitted as a *new* frame each attempt (fresh seq, same token and content, §7.5): an old
seq would soon fall below the node's replay window, since one counter serves every node. The node runs a
command id once. The CBOR payload is kept per (node, token) until the command ends.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from cewire import T_ACK, T_CMD, T_TIME, WireError, cobs_encode, encode_frame, flags_for, payloads
from cewire.frame import CH_CTRL, Key

from gateway.commands import CommandRequest
from gateway.links.base import Link
from gateway.nodes import NodeTracker
from gateway.registry import Registry

log = logging.getLogger(__name__)

BLOCK = 100_000
SEQ_MAX = 0xFFFFFFFF


class SeqReservation:
    """A persisted, ever-growing u32 counter (see the module doc)."""

    def __init__(self, path: Path | None, block: int = BLOCK) -> None:
        self.path = path
        self.block = block
        self.value = 0
        self.limit = 0
        if path is not None:
            try:
                self.value = int(path.read_text().strip() or 0)
            except FileNotFoundError:
                self.value = 0
            except (OSError, ValueError) as exc:
                # unreadable: start from the clock so numbers still grow (seconds since 2020 × 8)
                log.error("downlink sequence file %s unreadable (%s); continuing from the clock", path, exc)
                self.value = int(time.time() - 1_577_836_800) * 8
        self.limit = self.value
        self._reserve(self.value + self.block)

    def _reserve(self, limit: int) -> None:
        limit = min(limit, SEQ_MAX)
        if self.path is not None:
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, f"{limit}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        self.limit = limit

    def next(self) -> int:
        if self.value + 1 >= self.limit:
            if self.limit >= SEQ_MAX:
                raise OverflowError("downlink sequence space exhausted; re-provision the site's nodes")
            self._reserve(self.value + self.block)
        self.value += 1
        return self.value

    def at_least(self, seq: int) -> None:
        """Continue above ``seq`` (a node's HELLO ``rx``)."""
        if seq >= self.value:
            self.value = min(seq, SEQ_MAX - 1)
            if self.value + 1 >= self.limit:
                self._reserve(self.value + self.block)


class Downlink:
    """Builds and sends gateway→node frames on the link each node was last heard on."""

    def __init__(self, registry: Registry, tracker: NodeTracker, seq: SeqReservation, tz_min: int = 0) -> None:
        self.registry = registry
        self.tracker = tracker
        self.seq = seq
        self.tz_min = tz_min
        self._keys: dict[tuple[int, int], Key] = {}
        self._cmd_frames: dict[tuple[int, int], bytes] = {}
        self.sent: dict[str, int] = {"ack": 0, "time": 0, "cmd": 0}
        self.dropped = 0
        registry.add_listener(lambda _r: self._keys.clear())

    def _key(self, node_id: int) -> Key:
        rec = self.registry.get(node_id)
        if rec is None:
            raise LookupError(f"node {node_id} is not registered")
        k = self._keys.get((node_id, rec.key_id))
        if k is None:
            k = self._keys[(node_id, rec.key_id)] = Key(rec.key, rec.key_id)
        return k

    def _encode(self, ftype: int, node_id: int, payload: bytes) -> bytes:
        now = int(time.time())
        frame = encode_frame(ftype, node_id, self.seq.next(), now, flags_for(CH_CTRL), payload, self._key(node_id))
        return cobs_encode(frame)

    def _safe_encode(self, ftype: int, node_id: int, payload: bytes) -> bytes | None:
        try:
            return self._encode(ftype, node_id, payload)
        except LookupError:  # the node left the registry (manifest reload) since its frame was verified
            self.dropped += 1
            return None

    def _send(self, link: Link | None, data: bytes, what: str, node_id: int) -> bool:
        if link is None or not link.send(data):
            self.dropped += 1
            return False
        self.sent[what] += 1
        st = self.tracker.get(node_id)
        if st is not None:
            st.last_sent = time.monotonic()
        return True

    def send_ack(self, node_id: int, cums: dict[int, int], link: Link | None = None) -> bool:
        """Send a cumulative ACK ``{channel: cum}`` to the node (on ``link`` or where it was last heard)."""
        if link is None:
            st = self.tracker.get(node_id)
            link = st.link if st else None
        data = self._safe_encode(T_ACK, node_id, payloads.ack(cums))
        return data is not None and self._send(link, data, "ack", node_id)

    def send_time(self, node_id: int, link: Link | None = None) -> bool:
        """Send the gateway's UTC clock to the node."""
        if link is None:
            st = self.tracker.get(node_id)
            link = st.link if st else None
        now = time.time()
        payload = payloads.time_sync(int(now), int(now * 1000) % 1000, self.tz_min)
        data = self._safe_encode(T_TIME, node_id, payload)
        ok = data is not None and self._send(link, data, "time", node_id)
        st = self.tracker.get(node_id)
        if ok and st is not None:
            st.last_time_sync = time.monotonic()
        return ok

    async def send_command(self, request: CommandRequest, token: int) -> None:
        """The CommandRouter's sender: the same command (token, content) in a freshly signed frame per attempt."""
        st = self.tracker.get(request.node_id)
        if st is None or st.link is None:
            raise LookupError(f"node {request.node_id} has not been heard on any link yet")
        key = (request.node_id, token)
        payload = self._cmd_frames.get(key)
        try:
            if payload is None:
                exp = int(request.issued_at + request.timeout_s) + 1
                payload = payloads.cmd(token, request.name, dict(request.args) or None, exp)
                self._cmd_frames[key] = payload
                if len(self._cmd_frames) > 4096:  # bounded even if commands never end
                    self._cmd_frames.pop(next(iter(self._cmd_frames)))
            data = self._encode(T_CMD, request.node_id, payload)
        except WireError as exc:  # too large, or arguments CBOR cannot carry
            raise ValueError(f"command cannot be encoded: {exc}") from exc
        if not st.link.send(data):
            raise LookupError(f"link {st.link.name} to node {request.node_id} is down")
        self.sent["cmd"] += 1
        st.last_sent = time.monotonic()

    def keepalive(self, now: float, keepalive_s: float, time_sync_s: float) -> int:
        """TIME to every online node the gateway has not sent anything for ``keepalive_s`` (or whose clock
        was last set ``time_sync_s`` ago); returns how many were sent.

        A node declares its gateway lost after 90 s without a valid gateway frame (``node.link``,
        ``lost_ms``); a healthy node that reports every 15 minutes gets no ACKs in between, so the gateway
        speaks first. Call it about once a second (the agent's housekeeping does).
        """
        sent = 0
        for st in self.tracker:
            if not st.online:
                continue
            quiet = st.last_sent is None or now - st.last_sent >= keepalive_s
            stale = st.last_time_sync is None or now - st.last_time_sync >= time_sync_s
            if (quiet or stale) and self.send_time(st.node_id):
                sent += 1
        return sent

    def command_done(self, node_id: int, token: int) -> None:
        self._cmd_frames.pop((node_id, token), None)
