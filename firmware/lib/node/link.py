"""The node's reliable link to its gateway (docs/protocol.md §7), an asyncio task on MicroPython.

    ob = Outbox("/outbox", quotas=(128, 256))
    link = Link(uart, node_id, keys, ob, on_cmd=handle_cmd, on_time=set_clock, on_link=link_changed)
    link.hello("streetlight", "1.0.0", boot_count, reset_cause, caps=("meter",))
    asyncio.create_task(link.run())
    link.event(codes.LAMP_FAILURE, EV_RAISED, priority=PRIO_MEDIUM, value=12, label=L_POWER)
    link.data({L_LEVEL: 500, L_POWER: 423})

``uart`` is any object with ``write(buf)`` and a non-blocking ``readinto(buf)`` returning the number of
bytes read or ``None`` (machine.UART with timeout=0, or node.memport.MemPort in tests). ``keys`` is a
``(key_bytes, key_id)`` pair, a cewire.Key, or a cewire.Keyring holding this node's keys.

Every record goes to the outbox first (durable), then onto the wire: channel 0 (HELLO, EVENT, CMD_ACK)
always before channel 1 (DATA), at most ``window`` frames in flight per channel, retransmitted with a
doubling timeout (``rto_ms`` .. ``rto_max_ms``, ±25 % jitter) until a cumulative ACK covers them.
Gateway frames (ACK, CMD, TIME) are verified (MAC, node id, replay window) before anything is done.
``on_link(False)`` is called after ``lost_ms`` without a valid gateway frame, ``on_link(True)`` when one
arrives again. RAM: one poll writes at most ``burst`` frames (default 8, the window) and, with ``pace_ms`` > 0,
telemetry goes out one frame per ``pace_ms`` (events and command acks are never paced), so flushing a
backlog after an outage makes a bounded amount of garbage per collection period instead of a burst.
"""

import random

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio  # type: ignore

try:
    from time import ticks_add, ticks_diff, ticks_ms  # type: ignore[attr-defined]
except ImportError:  # CPython: the same API on the monotonic clock
    import time as _time

    _mono = getattr(_time, "monotonic")  # noqa: B009 (absent from the MicroPython stubs)

    def ticks_ms() -> int:  # type: ignore[misc, no-redef, unused-ignore]
        return int(_mono() * 1000)

    def ticks_diff(a: int, b: int) -> int:  # type: ignore[misc, no-redef, unused-ignore]
        return a - b

    def ticks_add(a: int, b: int) -> int:  # type: ignore[misc, no-redef, unused-ignore]
        return a + b


from cewire import cbor, payloads
from cewire.errors import E_OVERSIZE, WireError
from cewire.frame import (
    CH_BULK,
    CH_CTRL,
    DIR_DOWN,
    MAX_FRAME,
    MAX_PAYLOAD,
    T_ACK,
    T_CMD,
    T_CMD_ACK,
    T_DATA,
    T_EVENT,
    T_HELLO,
    T_TIME,
    Encoder,
    Key,
    Keyring,
    ReplayWindow,
    StreamDecoder,
    channel_of,
    decode_fields,
)

from node.outbox import OutboxFull

try:
    from micropython import const
except ImportError:  # CPython

    def const(x: int) -> int:  # type: ignore[misc, no-redef, unused-ignore]
        return x


_MAX_READS = const(8)  # UART reads (of 64 bytes) per poll
_CMD_MEMORY = const(16)  # executed command ids remembered for duplicate suppression
_SPAN = const(32)  # only records with seq < base + _SPAN are sent (half the receiver's 64-entry window)
# in-flight entry fields
_SEQ = const(0)
_TYPE = const(1)
_PRIO = const(2)
_TS = const(3)
_PAYLOAD = const(4)
_SENT = const(5)  # ticks of the last transmission, or None if not sent yet


def _sleep_ms(ms: int):
    f = getattr(asyncio, "sleep_ms", None)
    if f is not None:
        return f(ms)
    return asyncio.sleep(ms / 1000)


class Link:
    """Node side of the protocol: outbox-backed sending, ACK/TIME/CMD handling, gateway supervision."""

    def __init__(self, uart, node_id: int, keys, outbox, on_cmd=None, on_time=None, on_link=None, clock=None,
                 window: int = 8, rto_ms: int = 2000, rto_max_ms: int = 60000, lost_ms: int = 90000,
                 poll_ms: int = 20, ticks=None, burst: int = 8, pace_ms: int = 0) -> None:
        self.uart = uart
        self._ticks = ticks if ticks is not None else ticks_ms  # tests pass a virtual clock
        self.node_id = node_id
        if isinstance(keys, Keyring):
            ring = keys
        else:
            ring = Keyring()
            ring.add(node_id, keys if isinstance(keys, Key) else Key(keys[0], keys[1]))
        self.keyring = ring
        self.key = self._newest_key(ring)
        self.outbox = outbox
        self.on_cmd = on_cmd
        self.on_time = on_time
        self.on_link = on_link
        self.clock = clock
        self.window = min(window, _SPAN)
        self.rto_min = rto_ms
        self.rto_max = rto_max_ms
        self.lost_ms = lost_ms
        self.poll_ms = poll_ms
        # a backlog flush is bounded: at most ``burst`` frames per poll and (pace_ms > 0) one telemetry frame
        # per pace_ms, so the garbage of signing, sending and acknowledging frames between two
        # collections stays bounded; events and command acks are never paced
        self.burst = burst if burst > 0 else 1
        self.pace_ms = pace_ms
        self._last_tx = 0  # ticks of the last telemetry transmission
        self._enc = Encoder(node_id, self.key)
        self._dec = StreamDecoder(MAX_FRAME)
        self._rbuf = bytearray(64)
        # gateway frames at or below the last persisted gateway seq are replays, also after a reboot
        self._rx = ReplayWindow(outbox.seq.rx, 0, outbox.seq.rx)
        # ids of commands already executed: a CMD is retransmitted as a new frame (new seq, same id) and must
        # run once. Seeded from the CMD_ACKs still in the outbox, so this holds across a reboot too.
        self._cmd_ids = []  # type: list
        after = 0
        while True:  # in small batches: the event backlog may be large, the heap is not
            recs = outbox.read(CH_CTRL, after, 8)
            if not recs:
                break
            for rec in recs:
                if rec[1] == T_CMD_ACK:
                    try:
                        self._remember_cmd(payloads.parse_cmd_ack(cbor.loads(rec[4]))[0])
                    except WireError:
                        pass
            after = recs[-1][0]
        self._inflight = [[], []]  # type: list
        self._loaded = [outbox.acked[0], outbox.acked[1]]
        self._rto = [rto_ms, rto_ms]
        self._due = [None, None]  # type: list  # ticks when the channel's in-flight frames time out
        self._t0 = 0  # Unix seconds at _tick0 (from TIME), 0 = unknown
        self._tick0 = 0
        self.tz_min = 0
        self._last_rx = self._ticks()
        self.gateway_up = True
        self._running = False
        self._synced = False  # a 0x00 goes out before the first frame: boot noise cannot glue onto it
        self._dirty = True  # something may be sendable without waiting for a timeout
        self._reading = False  # poll() is reading the UART (a nested poll from a callback only sends)
        self.stats = {"sent": 0, "retx": 0, "acked": 0, "rx": 0, "rx_bad": 0, "cmds": 0, "cmd_dups": 0, "errors": 0}

    @staticmethod
    def _newest_key(ring):
        ids = ring._keys[ring.nodes()[0]]
        return ids[max(ids)]

    # --- clock
    def now(self) -> int:
        """Unix seconds from ``clock()`` if given, else from the gateway's TIME, else 0 (unknown)."""
        if self.clock is not None:
            return self.clock()
        if not self._t0:
            return 0
        return self._t0 + ticks_diff(self._ticks(), self._tick0) // 1000

    # --- queueing (app side)
    def send(self, ftype: int, payload, priority: int = 0, ts: int = -1) -> int:
        """Store a record in the outbox (durable) and queue it; return its seq.

        Raises OutboxFull when the event quota is reached or the flash write fails (nothing was stored: the
        app keeps signalling locally and may try again later).
        """
        if len(payload) > MAX_PAYLOAD:
            raise WireError(E_OVERSIZE, "payload of %d bytes (max %d)" % (len(payload), MAX_PAYLOAD))
        ch = channel_of(ftype)
        if ts < 0:
            ts = self.now()
        try:
            seq = self.outbox.put(ch, ftype, priority, ts, payload)
        except OSError as e:  # flash full or failing: one exception type for the app to handle
            raise OutboxFull("outbox write failed: %s" % e)
        self._dirty = True
        self._prune(ch)
        fl = self._inflight[ch]
        # fast path: everything older is already in flight, so the new record joins without a flash read
        if len(fl) < self.window and self.outbox.pending(ch) == len(fl) + 1 and self._loaded[ch] < seq:
            fl.append([seq, ftype, priority, ts, payload, None])
            self._loaded[ch] = seq
        return seq

    def hello(self, role: str, fw: str, boot: int, reset: int, caps=(), board: str = "", safe: bool = False) -> int:
        """Queue the HELLO birth record (first record after boot)."""
        return self.send(T_HELLO, payloads.hello(role, fw, boot, reset, caps, board, safe, self.outbox.seq.rx))

    def event(self, code: int, state: int = payloads.EV_RAISED, priority: int = 0, value=None, label: int = 0,
              limit=None, text: str = "", eid: int = 0) -> int:
        """Queue an EVENT (fault / alarm); it overtakes every queued DATA record."""
        return self.send(T_EVENT, payloads.event(code, state, value, label, limit, text, eid), priority)

    def data(self, values, ts: int = -1) -> int:
        """Queue telemetry: a ``{L_*: scaled int}`` dict, or a list of them (a batch with ``L_T`` offsets)."""
        body = payloads.data_batch(values) if isinstance(values, list) else payloads.data(values)
        return self.send(T_DATA, body, 0, ts)

    def cmd_ack(self, cmd_id: int, status: int = payloads.CS_OK, text: str = "") -> int:
        """Queue a CMD_ACK (for commands the app answers later: on_cmd returned None)."""
        return self.send(T_CMD_ACK, payloads.cmd_ack(cmd_id, status, text))

    def backlog(self) -> tuple:
        """(events, telemetry) records waiting for an ACK."""
        return (self.outbox.pending(CH_CTRL), self.outbox.pending(CH_BULK))

    # --- sending
    def _prune(self, ch: int) -> None:
        # drop in-flight entries that were acknowledged or dropped from a full outbox
        fl = self._inflight[ch]
        base = self.outbox.base(ch)
        while fl and fl[0][_SEQ] < base:
            fl.pop(0)

    def _refill(self, ch: int) -> None:
        fl = self._inflight[ch]
        room = self.window - len(fl)
        if room <= 0 or self.outbox.last(ch) <= self._loaded[ch]:
            return
        for rec in self.outbox.read(ch, self._loaded[ch], room):
            fl.append([rec[0], rec[1], rec[2], rec[3], rec[4], None])
            self._loaded[ch] = rec[0]

    def _jitter(self, ms: int) -> int:
        # ±25 %: nodes sharing a bus do not retransmit in step
        return ms - ms // 4 + (ms // 2) * random.getrandbits(8) // 256

    def _service(self, now: int) -> int:
        """Send what is due, channel 0 first; return how many frames were written.

        Telemetry waits while an event, alarm or command ack is unacknowledged (alarms first, also
        after an outage). A timeout resends every in-flight frame of the channel in order (go-back-N),
        so a backlog arrives in order.
        """
        n = 0
        if not self._synced:
            self._synced = True
            self.uart.write(b"\x00")
        if not self._dirty:
            # nothing new since the last pass: only a timeout can make work (keeps an idle poll cheap)
            d0 = self._due[0]
            d1 = self._due[1]
            if (d0 is None or ticks_diff(now, d0) < 0) and (d1 is None or ticks_diff(now, d1) < 0):
                return 0
        self._dirty = False
        for ch in (CH_CTRL, CH_BULK):
            self._prune(ch)
            self._refill(ch)
            fl = self._inflight[ch]
            if not fl:
                self._due[ch] = None
                continue
            if ch == CH_BULK:
                if self._inflight[CH_CTRL]:
                    break
                if self.pace_ms and ticks_diff(now, self._last_tx) < self.pace_ms:
                    self._dirty = True  # telemetry is paced (events never are): look again at the next poll
                    break
            due = self._due[ch]
            if due is not None and ticks_diff(now, due) >= 0:
                # timeout: go back N -- every in-flight frame of the channel goes again, in order
                r = self._rto[ch] * 2
                self._rto[ch] = r if r < self.rto_max else self.rto_max
                for e in fl:
                    if e[_SENT] is not None:
                        e[_SENT] = None
                        self.stats["retx"] += 1
                due = self._due[ch] = None
            base = fl[0][_SEQ]
            limit = n + 1 if ch == CH_BULK and self.pace_ms else self.burst  # paced: one telemetry frame
            for e in fl:
                seq = e[_SEQ]
                if seq - base >= _SPAN:
                    break
                if e[_SENT] is None:
                    if n >= limit:
                        self._dirty = True  # the rest goes at the next poll
                        break
                    self.uart.write(self._enc.stream(e[_TYPE], seq, e[_TS], e[_PAYLOAD], e[_PRIO], seq - base))
                    self.stats["sent"] += 1
                    e[_SENT] = now
                    n += 1
            if ch == CH_BULK and n:
                self._last_tx = now
            if n and due is None:
                self._due[ch] = ticks_add(now, self._jitter(self._rto[ch]))
            if n >= limit:
                break
        return n

    # --- receiving
    def _on_frame(self, mv) -> None:
        try:
            # the fields without a Frame object or a payload copy: one fewer allocation per ACK
            t, _, _, _, seq, _, _, body = decode_fields(mv, self.keyring, DIR_DOWN)
            self._rx.check(seq)
        except WireError:
            self.stats["rx_bad"] += 1
            return
        self._rx.mark(seq)
        self.stats["rx"] += 1
        self._last_rx = self._ticks()
        if not self.gateway_up:
            self.gateway_up = True
            self._resend_now()
            self._call(self.on_link, True)
        try:
            if t == T_ACK:
                self.outbox.seq.accept_rx(seq)
                self._on_ack(payloads.parse_ack(body))
            elif t == T_TIME:
                self.outbox.seq.accept_rx(seq)
                s, ms, tz = payloads.parse_time(body)
                self._t0 = s
                self._tick0 = ticks_add(self._ticks(), -ms)
                self.tz_min = tz
                self._call(self.on_time, s, ms, tz)
            elif t == T_CMD:
                self.outbox.seq.accept_rx(seq, True)  # a command is executed once, even across a reboot
                self._on_cmd(body)
        except WireError:
            self.stats["rx_bad"] += 1

    def _call(self, cb, *args) -> None:
        # the app's callbacks must not take the link down
        if cb is None:
            return
        try:
            cb(*args)
        except Exception as e:  # noqa: BLE001
            self.stats["errors"] += 1
            print("link: callback %s: %s" % (type(e).__name__, e))

    def _on_ack(self, acks) -> None:
        for ch, cum in acks.items():
            if ch >= 2:
                continue
            released = self.outbox.ack(ch, cum)
            if released:
                self._dirty = True
                self.stats["acked"] += released
                self._rto[ch] = self.rto_min
                self._prune(ch)
                # restart the timer for what is still in flight
                self._due[ch] = ticks_add(self._ticks(), self._jitter(self.rto_min)) if self._inflight[ch] else None

    def _remember_cmd(self, cmd_id: int) -> None:
        ids = self._cmd_ids
        ids.append(cmd_id)
        if len(ids) > _CMD_MEMORY:
            ids.pop(0)

    def _on_cmd(self, body) -> None:
        cmd_id, op, args, exp = payloads.parse_cmd(body)
        if cmd_id in self._cmd_ids:
            self.stats["cmd_dups"] += 1  # a retransmission: its CMD_ACK is queued or already delivered
            return
        self._remember_cmd(cmd_id)
        self.stats["cmds"] += 1
        now = self.now()
        if exp and now and now > exp:
            self.cmd_ack(cmd_id, payloads.CS_EXPIRED, "expired")
            return
        if self.on_cmd is None:
            self.cmd_ack(cmd_id, payloads.CS_UNKNOWN, op)
            return
        try:
            res = self.on_cmd(cmd_id, op, args)
        except Exception as e:  # the app's handler must not take the link down
            self.cmd_ack(cmd_id, payloads.CS_FAILED, type(e).__name__)
            return
        if res is None:
            return  # the app answers later with cmd_ack()
        if isinstance(res, tuple):
            self.cmd_ack(cmd_id, res[0], res[1] if len(res) > 1 else "")
        else:
            self.cmd_ack(cmd_id, res)

    def _resend_now(self) -> None:
        self._dirty = True
        for ch in (CH_CTRL, CH_BULK):
            self._rto[ch] = self.rto_min
            self._due[ch] = None
            for e in self._inflight[ch]:
                e[_SENT] = None

    def poll(self) -> int:
        """Read what the UART has, handle gateway frames, send what is due; return frames written.

        ``run()`` calls this every ``poll_ms``; a test or a bare loop may call it directly. Called again from a
        callback of this poll (an app sending an event at once from ``on_cmd``), it only sends: reading would
        overwrite the bytes the outer call is still decoding.
        """
        if not self._reading:
            self._reading = True
            try:
                for _ in range(_MAX_READS):  # bounded: a flooded line cannot starve the other tasks
                    got = self.uart.readinto(self._rbuf)
                    if not got:
                        break
                    self._dec.feed_into(self._rbuf, got, self._on_frame)
            finally:
                self._reading = False
        now = self._ticks()
        if self.gateway_up and ticks_diff(now, self._last_rx) >= self.lost_ms:
            self.gateway_up = False
            self._call(self.on_link, False)
        return self._service(now)

    async def run(self) -> None:
        """Serve the link until ``stop()``. An error in one pass (e.g. a flash write failing) is counted in
        ``stats["errors"]`` and printed, and the link goes on: it must outlive a bad moment."""
        self._running = True
        while self._running:
            try:
                self.poll()
            except Exception as e:  # noqa: BLE001
                self.stats["errors"] += 1
                print("link: %s: %s" % (type(e).__name__, e))
            await _sleep_ms(self.poll_ms)

    def stop(self) -> None:
        self._running = False

