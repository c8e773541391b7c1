"""The gateway's receiving side: verify frames from many nodes and keep their replay windows and cumulative acks.

Order of use: ``frame = rx.verify(buf)`` (MAC + replay check, no state change) → make the frame durable →
``cum = rx.commit(frame)`` → send ACK with cum. A crash between the two only causes a duplicate that the next
hop drops by (node, channel, seq). Host side (gateway, tools, tests): a node never imports this module.
"""

from cewire.errors import E_REPLAY, WireError
from cewire.frame import DIR_UP, N_CHANNELS, ReplayWindow
from cewire.host import decode_frame


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
                E_REPLAY, "node %d ch %d seq %d (cum %d)" % (frame.node_id, frame.channel, frame.seq, w.cum)
            )
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
        return {k: (w.top, w.mask, w.cum) for k, w in self._win.items()}

    def restore(self, state: dict) -> None:
        """Load windows saved by :meth:`export`."""
        for (node, ch), (top, mask, cum) in state.items():
            self._win[(node, ch)] = ReplayWindow(top, mask, cum)
