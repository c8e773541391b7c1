"""A scripted node that speaks the wire protocol through ``cewire``: for tests, benchmarks and load.

It is not the firmware (that runs on MicroPython in the emulated boards); it is the smallest honest peer for
driving the gateway from Python: it numbers and signs frames per channel like a node, keeps what was not yet
acknowledged, understands ACK/TIME/CMD from the gateway and answers CMD with CMD_ACK, running each command id
once (a retransmitted CMD gets its CMD_ACK again, as on the firmware).

    node = SimNode(1001, key, key_id=1)
    wire = node.data({payloads.L_LEVEL: 500}) + node.event(codes.SPO2_LOW, prio=PRIO_HIGH)
    ...write wire to the gateway, read its answer...
    node.receive(answer)           # ACKs clear node.unacked; CMDs are answered via node.replies
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from cewire import (
    CH_BULK,
    CH_CTRL,
    DIR_DOWN,
    T_ACK,
    T_CMD,
    T_CMD_ACK,
    T_DATA,
    T_EVENT,
    T_HELLO,
    T_TIME,
    Encoder,
    Key,
    ReplayWindow,
    StreamDecoder,
    WireError,
    channel_of,
    decode_frame,
    payloads,
)

CommandHandler = Callable[[str, dict[str, Any]], tuple[int, str]]  # (op, args) -> (CS_* status, text)


class SimNode:
    """One node's protocol state (sequence numbers, unacknowledged frames, the gateway's replay window)."""

    def __init__(self, node_id: int, key: bytes, key_id: int = 1, role: str = "streetlight") -> None:
        self.node_id = node_id
        self.role = role
        self.key = Key(key, key_id)
        self.encoder = Encoder(node_id, self.key)
        self.next_seq = {CH_CTRL: 1, CH_BULK: 1}
        # channel -> seq -> (type, payload, priority, ts): kept until acknowledged
        self.unacked: dict[int, dict[int, tuple[int, bytes, int, int]]] = {CH_CTRL: {}, CH_BULK: {}}
        self.acked = {CH_CTRL: 0, CH_BULK: 0}
        self.gw_window = ReplayWindow()
        self.decoder = StreamDecoder()
        self.times: list[int] = []
        self.commands: list[tuple[int, str, dict[str, Any]]] = []
        self.replies = bytearray()  # CMD_ACK frames waiting to be written to the gateway
        self.refused: list[str] = []  # gateway frames this node refused (by WireError name)
        self.handler: CommandHandler = lambda op, args: (payloads.CS_OK, "")
        # command id -> (channel, seq) of its CMD_ACK: like the firmware, a command id runs once (§7.5)
        self.recent_commands: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self.cmd_dups = 0

    def _frame(self, ftype: int, payload: bytes, prio: int = 0, ts: int | None = None) -> bytes:
        ch = channel_of(ftype)
        seq = self.next_seq[ch]
        self.next_seq[ch] = seq + 1
        ts = int(time.time()) if ts is None else ts
        self.unacked[ch][seq] = (ftype, payload, prio, ts)
        return self._wire(ch, seq)

    def _wire(self, ch: int, seq: int) -> bytes:
        # ``back`` is recomputed on every (re)transmission: it tells the gateway what the node still holds
        ftype, payload, prio, ts = self.unacked[ch][seq]
        base = min(self.unacked[ch], default=seq)
        return bytes(self.encoder.stream(ftype, seq, ts, payload, prio, seq - base))

    def hello(self, fw: str = "sim-1", boot: int = 1) -> bytes:
        return self._frame(T_HELLO, payloads.hello(self.role, fw, boot, payloads.RESET_POWER_ON))

    def data(self, values: dict[int, int], ts: int | None = None) -> bytes:
        return self._frame(T_DATA, payloads.data(values), 0, ts)

    def event(self, code: int, state: int = payloads.EV_RAISED, prio: int = 0, value: int | None = None,
              label: int = 0) -> bytes:
        return self._frame(T_EVENT, payloads.event(code, state, value, label), prio)

    def resend_unacked(self) -> bytes:
        """Every frame not yet acknowledged, in order (what a node sends after its RTO)."""
        out = bytearray()
        for ch in (CH_CTRL, CH_BULK):
            for seq in sorted(self.unacked[ch]):
                out += self._wire(ch, seq)
        return bytes(out)

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self.unacked.values())

    def receive(self, data: bytes) -> None:
        """Bytes from the gateway: ACKs clear unacked frames, TIME is noted, CMDs are executed once."""
        for raw in self.decoder.feed(data):
            if len(raw) >= 8 and int.from_bytes(raw[4:8], "big") != self.node_id:
                continue  # a frame for another node on the same bus
            self.receive_frame(raw)

    def receive_frame(self, raw: bytes) -> None:
        """One unframed gateway frame addressed to this node."""
        try:
            frame = decode_frame(raw, self.key, DIR_DOWN)
            self.gw_window.check(frame.seq)
        except WireError as exc:
            self.refused.append(exc.name)
            return
        self.gw_window.mark(frame.seq)
        if frame.ftype == T_ACK:
            for ch, cum in payloads.parse_ack(frame.body).items():
                if ch in self.unacked:
                    self.acked[ch] = max(self.acked[ch], cum)
                    for seq in [s for s in self.unacked[ch] if s <= cum]:
                        del self.unacked[ch][seq]
        elif frame.ftype == T_TIME:
            self.times.append(payloads.parse_time(frame.body)[0])
        elif frame.ftype == T_CMD:
            cmd_id, op, args, _exp = payloads.parse_cmd(frame.body)
            done = self.recent_commands.get(cmd_id)
            if done is not None:  # a retransmission (its CMD_ACK was lost or is late): not run again
                self.cmd_dups += 1
                ch, seq = done
                if seq in self.unacked[ch]:
                    self.replies += self._wire(ch, seq)  # the same CMD_ACK again, at once
                return
            self.commands.append((cmd_id, op, args))
            status, text = self.handler(op, args)
            ch = channel_of(T_CMD_ACK)
            self.recent_commands[cmd_id] = (ch, self.next_seq[ch])
            if len(self.recent_commands) > 16:  # the firmware remembers the last 16 ids
                self.recent_commands.popitem(last=False)
            self.replies += self._frame(T_CMD_ACK, payloads.cmd_ack(cmd_id, status, text))
