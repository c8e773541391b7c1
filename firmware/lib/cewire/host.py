"""The host half of cewire: what the gateway, the tools and the tests use and a node never imports.

``Frame`` objects with ``decode_frame`` / ``encode_frame``, whole-buffer COBS (``cobs_encode`` /
``cobs_decode``, returning new bytes), and the display names ``TYPE_NAMES`` and ``ERROR_NAMES``. Runs on CPython
and on MicroPython (the tests use it on the VM); ``import cewire`` on CPython re-exports it. On a node every
module, function and name takes heap, so the node's modules (frame, cobs, errors, …) hold only what a node uses.
"""

from cewire import cbor
from cewire.errors import E_RANGE, E_TRUNCATED, WireError
from cewire.frame import (
    DIR_ANY,
    HEADER_LEN,
    MAC_LEN,
    T_ACK,
    T_CMD,
    T_CMD_ACK,
    T_DATA,
    T_EVENT,
    T_HELLO,
    T_TIME,
    VERSION,
    Key,
    cobs_decode_into,
    cobs_encode_into,
    decode_fields,
    encode_into,
    encoded_size,
)

TYPE_NAMES = {
    T_HELLO: "HELLO",
    T_DATA: "DATA",
    T_EVENT: "EVENT",
    T_ACK: "ACK",
    T_CMD: "CMD",
    T_CMD_ACK: "CMD_ACK",
    T_TIME: "TIME",
}
ERROR_NAMES = {code: WireError(code).name for code in range(E_TRUNCATED, E_RANGE + 1)}  # {8: "mac", ...}


def cobs_encode(data) -> bytes:
    """Return ``data`` COBS-encoded with the trailing 0x00 delimiter (ready to write to a UART)."""
    n = len(data)
    out = bytearray(encoded_size(n) + 1)
    end = cobs_encode_into(data, n, out)
    return bytes(out[:end])


def cobs_decode(data) -> bytes:
    """Decode one COBS block (with or without its trailing delimiter); raise WireError if malformed."""
    n = len(data)
    if n and data[n - 1] == 0:
        n -= 1
    if n == 0:
        raise WireError(E_TRUNCATED, "empty COBS block")
    out = bytearray(n)
    m = cobs_decode_into(bytes(data), n, out)
    return bytes(out[:m])


class Frame:
    """A verified frame. ``body`` is the decoded CBOR payload, ``payload`` its raw bytes."""

    def __init__(self, version, ftype, flags, key_id, node_id, seq, ts, back, payload, body) -> None:
        self.version = version
        self.ftype = ftype
        self.flags = flags
        self.key_id = key_id
        self.node_id = node_id
        self.seq = seq
        self.ts = ts
        self.back = back
        self.payload = payload
        self.body = body

    @property
    def channel(self) -> int:
        return (self.flags >> 4) & 3

    @property
    def priority(self) -> int:
        return self.flags & 3

    @property
    def base(self) -> int:
        """Lowest sequence number the sender still holds on this channel (everything below is final)."""
        return self.seq - self.back

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.ftype, "?")

    def __repr__(self) -> str:
        return "<Frame %s node=%d ch=%d seq=%d prio=%d ts=%d %r>" % (
            self.type_name,
            self.node_id,
            self.channel,
            self.seq,
            self.priority,
            self.ts,
            self.body,
        )


def decode_frame(buf, keyring, direction: int = DIR_ANY) -> Frame:
    """Verify and decode one unframed frame; raise WireError (and nothing else) if it is refused.

    ``keyring`` is a Keyring, or a single Key (a node verifying its gateway). ``direction`` (DIR_UP on the
    gateway, DIR_DOWN on a node) refuses types the peer may not send. Replay is checked separately
    (ReplayWindow / Receiver), after the MAC, so forged frames cannot move a window.
    """
    ftype, flags, key_id, node_id, seq, ts, back, body = decode_fields(buf, keyring, direction)
    payload = bytes(buf[HEADER_LEN : len(buf) - MAC_LEN])
    return Frame(VERSION, ftype, flags, key_id, node_id, seq, ts, back, payload, body)


def encode_frame(
    ftype: int, node_id: int, seq: int, ts: int, flags: int, payload, key, key_id: int = -1, back: int = 0
) -> bytes:
    """Return a signed frame (unframed bytes). ``payload`` is CBOR bytes or a dict/list to encode.

    ``key`` is a Key (preferred: pads precomputed) or raw key bytes with ``key_id``.
    """
    if not isinstance(key, Key):
        key = Key(key, max(key_id, 0))
    elif key_id >= 0 and key_id != key.key_id:
        key = Key(key.raw, key_id)
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        payload = cbor.dumps(payload)
    buf = bytearray(HEADER_LEN + len(payload) + MAC_LEN)
    n = encode_into(buf, ftype, node_id, seq, ts, flags, payload, key, back)
    return bytes(buf[:n])
