"""Receiver-side state: replay windows and cumulative acknowledgement per (node, channel).

A ReplayWindow remembers the highest sequence number accepted (``top``) and a bitmap of the WINDOW numbers
below it. It also tracks ``cum``, the cumulative acknowledgement: every number ≤ cum was received or is
final (below the sender's ``base``, i.e. the sender will never send it). The gateway acknowledges ``cum``.

Order of use (gateway): ``frame = rx.verify(buf)`` (MAC + replay check, no state change) → make the frame
durable → ``cum = rx.commit(frame)`` → send ACK with cum. A crash between the two only causes a duplicate
that the next hop drops by (node, channel, seq).
"""

from cewire.errors import E_REPLAY, WireError
from cewire.frame import DIR_UP, N_CHANNELS, decode_frame

WINDOW = 64
_MASK = (1 << WINDOW) - 1


class ReplayWindow:
    """Replay window + cumulative ack state for one sequence space (one node, one channel)."""

    def __init__(self, top: int = 0, mask: int = 0, cum: int = 0) -> None:
        self.top = top
        self.mask = mask
        self.cum = cum

    def seen(self, seq: int) -> bool:
        """True if ``seq`` must be refused as a replay (already accepted, acked, or older than the window)."""
        if seq <= 0 or seq <= self.cum:
            return True
        if seq > self.top:
            return False
        off = self.top - seq
        if off >= WINDOW:
            return True
        return bool((self.mask >> off) & 1)

    def check(self, seq: int) -> None:
        """Raise WireError(E_REPLAY) if ``seq`` was seen; change nothing."""
        if self.seen(seq):
            raise WireError(E_REPLAY, "seq %d (top %d, cum %d)" % (seq, self.top, self.cum))

    def mark(self, seq: int, base: int = 0) -> int:
        """Record ``seq`` as accepted, with the sender's ``base``; return how many numbers were skipped as final.

        The return value counts sequence numbers that cum jumped over without receiving them: records the
        sender gave up (telemetry dropped from a full outbox) or numbers skipped at a reboot.
        """
        if seq > self.top:
            shift = seq - self.top
            self.mask = ((self.mask << shift) | 1) & _MASK if shift < WINDOW else 1
            self.top = seq
        else:
            self.mask |= 1 << (self.top - seq)
        return self.advance(base)

    def advance(self, base: int) -> int:
        """Apply a sender's ``base`` (numbers below it are final); return how many were skipped unreceived.

        Also used for authentic duplicates: a retransmission refused as a replay still tells the receiver
        that the sender gave up everything below its base, which closes gaps left by a reboot.
        """
        skipped = 0
        if base - 1 > self.cum:
            lo = self.cum
            self.cum = min(base - 1, self.top)
            for s in range(lo + 1, self.cum + 1):
                if not self._bit(s):
                    skipped += 1
        while self.cum < self.top and self._bit(self.cum + 1):
            self.cum += 1
        return skipped

    def _bit(self, seq: int) -> bool:
        off = self.top - seq
        if off < 0 or off >= WINDOW:
            return False
        return bool((self.mask >> off) & 1)

    def state(self) -> tuple:
        """(top, mask, cum): persist this to restore the window after a restart."""
        return (self.top, self.mask, self.cum)


class Receiver:
    """Gateway side: verify frames from many nodes and keep their windows and cumulative acks.

    ``counts`` counts refused frames by WireError name (e.g. ``{"mac": 3, "replay": 1}``) and accepted ones
    under ``"ok"``; ``skipped`` counts sequence numbers given up by senders (gaps), per node.
    """

    def __init__(self, keyring) -> None:
        self.keyring = keyring
        self._win = {}  # type: dict[tuple[int, int], ReplayWindow]
        self.counts = {}  # type: dict[str, int]
        self.skipped = {}  # type: dict[int, int]

    def window(self, node_id: int, channel: int) -> ReplayWindow:
        key = (node_id, channel)
        w = self._win.get(key)
        if w is None:
            w = self._win[key] = ReplayWindow()
        return w

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def verify(self, buf):
        """Decode and verify a frame from a node (MAC, then replay); raise WireError.

        Only ``commit`` records a frame as received; an authentic duplicate may advance ``cum`` over numbers
        its sender declared final (then the gateway's answer, the current ACK, releases them on the node).
        """
        try:
            frame = decode_frame(buf, self.keyring, DIR_UP)
        except WireError as e:
            self._count(e.name)
            raise
        w = self.window(frame.node_id, frame.channel)
        if w.seen(frame.seq):
            # an authentic duplicate: its base may still close a gap (see ReplayWindow.advance)
            self._skip(frame.node_id, w.advance(frame.base))
            self._count("replay")
            raise WireError(
                E_REPLAY, "node %d ch %d seq %d (cum %d)" % (frame.node_id, frame.channel, frame.seq, w.cum))
        return frame

    def _skip(self, node_id: int, n: int) -> None:
        if n:
            self.skipped[node_id] = self.skipped.get(node_id, 0) + n

    def commit(self, frame) -> int:
        """Mark a verified frame as durably received; return the channel's cumulative ack."""
        w = self.window(frame.node_id, frame.channel)
        self._skip(frame.node_id, w.mark(frame.seq, frame.base))
        self._count("ok")
        return w.cum

    def acks(self, node_id: int) -> dict:
        """{channel: cum} for every channel this node has used: the body of the next ACK to it."""
        out = {}
        for ch in range(N_CHANNELS):
            w = self._win.get((node_id, ch))
            if w is not None:
                out[ch] = w.cum
        return out

    def forget(self, node_id: int) -> None:
        """Drop a node's windows (after it was re-provisioned with a new key and a wiped flash)."""
        for ch in range(N_CHANNELS):
            self._win.pop((node_id, ch), None)

    def export(self) -> dict:
        """All windows as ``{(node, channel): (top, mask, cum)}`` for persistence."""
        return {k: w.state() for k, w in self._win.items()}

    def restore(self, state: dict) -> None:
        """Load windows saved by :meth:`export`."""
        for (node, ch), (top, mask, cum) in state.items():
            self._win[(node, ch)] = ReplayWindow(top, mask, cum)
