"""Allocation-light encoder for one sender (a node, or the gateway talking to one node).

Holds preallocated frame and stream buffers; ``frame()`` and ``stream()`` return memoryviews into them, valid
until the next call. Per frame, only the two SHA-256 contexts and their digests are allocated on MicroPython.
"""

from cewire.cobs import cobs_encode_into, encoded_size
from cewire.frame import MAX_FRAME, channel_of, encode_into, flags_for


class Encoder:
    """Encode+sign frames for ``node_id`` under ``key`` (a Key) into reused buffers."""

    def __init__(self, node_id: int, key) -> None:
        self.node_id = node_id
        self.key = key
        self._frame = bytearray(MAX_FRAME)
        self._stream = bytearray(encoded_size(MAX_FRAME) + 1)
        self._fmv = memoryview(self._frame)
        self._smv = memoryview(self._stream)

    def frame(self, ftype: int, seq: int, ts: int, payload, priority: int = 0, back: int = 0):
        """Sign one frame; return a memoryview of the unframed bytes."""
        n = encode_into(self._frame, ftype, self.node_id, seq, ts, flags_for(channel_of(ftype), priority),
                        payload, self.key, back)
        return self._fmv[:n]

    def stream(self, ftype: int, seq: int, ts: int, payload, priority: int = 0, back: int = 0):
        """Sign one frame and COBS-frame it with its 0x00 delimiter; return a memoryview ready to write."""
        n = encode_into(self._frame, ftype, self.node_id, seq, ts, flags_for(channel_of(ftype), priority),
                        payload, self.key, back)
        m = cobs_encode_into(self._frame, n, self._stream)
        return self._smv[:m]
