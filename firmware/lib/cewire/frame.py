"""Frames: header, payload and MAC; encode+sign and verify+decode, identical on MicroPython and CPython.

Layout (big-endian), see docs/protocol.md:

    0  u8   version (VERSION)          8  u32  seq
    1  u8   type (T_*)                12  u32  ts (Unix seconds, 0 = node clock not set)
    2  u8   flags (priority, channel) 16  u16  back (seq - oldest seq the sender still holds on this channel)
    3  u8   key id                    18  ...  payload (one CBOR item)
    4  u32  node id                   -8  8B   MAC = HMAC-SHA256(key, header || payload)[:8]
"""

import hashlib
import struct

from cewire import cbor
from cewire.errors import (
    E_HEADER,
    E_KEY_ID,
    E_MAC,
    E_OVERSIZE,
    E_PAYLOAD,
    E_RANGE,
    E_TRUNCATED,
    E_TYPE,
    E_UNKNOWN_NODE,
    E_VERSION,
    WireError,
)

try:
    from micropython import const
except ImportError:  # CPython

    def const(x: int) -> int:  # type: ignore[misc, no-redef, unused-ignore]
        return x


_compare = None
try:  # CPython: constant-time compare in C; MicroPython compares in the loop below
    import hmac as _hmac  # type: ignore[import-not-found, unused-ignore]

    _compare = _hmac.compare_digest
except (ImportError, AttributeError):  # MicroPython's bundled hmac has no compare_digest
    pass

VERSION = const(1)

T_HELLO = const(1)
T_DATA = const(2)
T_EVENT = const(3)
T_ACK = const(4)
T_CMD = const(5)
T_CMD_ACK = const(6)
T_TIME = const(7)
TYPE_NAMES = {
    T_HELLO: "HELLO",
    T_DATA: "DATA",
    T_EVENT: "EVENT",
    T_ACK: "ACK",
    T_CMD: "CMD",
    T_CMD_ACK: "CMD_ACK",
    T_TIME: "TIME",
}

# who may send which type
DIR_ANY = const(0)
DIR_UP = const(1)  # node -> gateway: HELLO, DATA, EVENT, CMD_ACK
DIR_DOWN = const(2)  # gateway -> node: ACK, CMD, TIME
UP_TYPES = (T_HELLO, T_DATA, T_EVENT, T_CMD_ACK)
DOWN_TYPES = (T_ACK, T_CMD, T_TIME)

# flags byte: bits 0-1 priority, bits 4-5 channel, the rest reserved (must be 0)
PRIO_NONE = const(0)  # telemetry, housekeeping
PRIO_LOW = const(1)
PRIO_MEDIUM = const(2)
PRIO_HIGH = const(3)
CH_CTRL = const(0)  # HELLO, EVENT, CMD_ACK (node) and ACK, CMD, TIME (gateway): served first
CH_BULK = const(1)  # DATA (telemetry)
N_CHANNELS = const(2)
_FLAGS_RESERVED = const(0xCC)

HEADER_LEN = const(18)
MAC_LEN = const(8)
MAX_FRAME = const(256)
MAX_PAYLOAD = const(230)  # MAX_FRAME - HEADER_LEN - MAC_LEN
MIN_KEY_LEN = const(16)
_HDR = ">BBBBIIIH"


def flags_for(channel: int, priority: int = 0) -> int:
    """The flags byte for a channel and a priority (0..3)."""
    return ((channel & 3) << 4) | (priority & 3)


def channel_of(ftype: int) -> int:
    """The channel a frame type travels on (DATA on CH_BULK, everything else on CH_CTRL)."""
    return CH_BULK if ftype == T_DATA else CH_CTRL


class Key:
    """A per-node key with its key id; the HMAC pads are computed once so signing a frame is cheap."""

    def __init__(self, key: bytes, key_id: int = 0) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY_LEN:
            raise WireError(E_RANGE, "a key needs at least %d bytes" % MIN_KEY_LEN)
        if not 0 <= key_id <= 255:
            raise WireError(E_RANGE, "key id must be 0..255")
        key = bytes(key)
        self.raw = key
        self.key_id = key_id
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        pad = key + bytes(64 - len(key))
        self._ipad = bytes(b ^ 0x36 for b in pad)
        self._opad = bytes(b ^ 0x5C for b in pad)
        # CPython: keep the hash states after the pads and copy them per frame (two compressions saved);
        # MicroPython's sha256 has no copy(), so it hashes the 64-byte pads each time
        self._istate = None  # type: object
        self._ostate = None  # type: object
        ih = hashlib.sha256(self._ipad)
        if hasattr(ih, "copy"):
            self._istate = ih
            self._ostate = hashlib.sha256(self._opad)

    def digest(self, msg) -> bytes:
        """Full HMAC-SHA256 of ``msg`` (bytes-like) under this key."""
        if self._istate is not None:
            h = getattr(self._istate, "copy")()  # noqa: B009 (MicroPython's stubs have no copy())
            h.update(msg)
            o = getattr(self._ostate, "copy")()  # noqa: B009
            o.update(h.digest())
            return o.digest()
        h = hashlib.sha256(self._ipad)
        h.update(msg)
        inner = h.digest()
        h = hashlib.sha256(self._opad)
        h.update(inner)
        return h.digest()

    def __repr__(self) -> str:  # never print key material
        return "<Key id=%d>" % self.key_id


class Keyring:
    """Keys by node id and key id. A node's ring holds its own key (and the next one during a rotation)."""

    def __init__(self) -> None:
        self._keys = {}  # type: dict[int, dict[int, Key]]

    def add(self, node_id: int, key, key_id: int = 0) -> Key:
        """Add a key (bytes or Key) for ``node_id``; returns the Key."""
        k = key if isinstance(key, Key) else Key(key, key_id)
        self._keys.setdefault(node_id, {})[k.key_id] = k
        return k

    def remove(self, node_id: int, key_id: int = -1) -> None:
        """Retire one key id of a node, or (key_id=-1) the node altogether."""
        if key_id < 0:
            self._keys.pop(node_id, None)
        elif node_id in self._keys:
            self._keys[node_id].pop(key_id, None)

    def lookup(self, node_id: int, key_id: int) -> Key:
        """The key for (node, key id); WireError E_UNKNOWN_NODE / E_KEY_ID if there is none."""
        ids = self._keys.get(node_id)
        if ids is None:
            raise WireError(E_UNKNOWN_NODE, "node %d" % node_id)
        k = ids.get(key_id)
        if k is None:
            raise WireError(E_KEY_ID, "node %d key id %d" % (node_id, key_id))
        return k

    def __contains__(self, node_id: int) -> bool:
        return node_id in self._keys

    def nodes(self) -> list:
        return list(self._keys)


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
            self.type_name, self.node_id, self.channel, self.seq, self.priority, self.ts, self.body)


def _check_header(ftype: int, flags: int, direction: int) -> None:
    if ftype not in TYPE_NAMES:
        raise WireError(E_TYPE, "unknown frame type %d" % ftype)
    if direction == DIR_UP and ftype not in UP_TYPES:
        raise WireError(E_TYPE, "%s is not sent by nodes" % TYPE_NAMES[ftype])
    if direction == DIR_DOWN and ftype not in DOWN_TYPES:
        raise WireError(E_TYPE, "%s is not sent by gateways" % TYPE_NAMES[ftype])
    if flags & _FLAGS_RESERVED:
        raise WireError(E_HEADER, "reserved flag bits set")
    if (flags >> 4) & 3 != channel_of(ftype):
        raise WireError(E_HEADER, "%s on the wrong channel" % TYPE_NAMES[ftype])


def encode_into(buf, ftype: int, node_id: int, seq: int, ts: int, flags: int, payload, key: Key, back: int = 0) -> int:
    """Build and sign a frame in ``buf`` (bytearray ≥ MAX_FRAME); return its length. ``payload``: CBOR bytes."""
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise WireError(E_OVERSIZE, "payload of %d bytes (max %d)" % (n, MAX_PAYLOAD))
    if not (0 <= node_id <= 0xFFFFFFFF and 0 <= seq <= 0xFFFFFFFF and 0 <= ts <= 0xFFFFFFFF):
        raise WireError(E_RANGE, "node id, seq and ts are u32")
    if back > 0xFFFF:
        back = 0xFFFF  # saturate: the receiver only learns a lower bound, which is safe
    _check_header(ftype, flags, DIR_ANY)
    struct.pack_into(_HDR, buf, 0, VERSION, ftype, flags, key.key_id, node_id, seq, ts, back)
    end = HEADER_LEN + n
    buf[HEADER_LEN:end] = payload
    mac = key.digest(memoryview(buf)[:end])
    for i in range(MAC_LEN):
        buf[end + i] = mac[i]
    return end + MAC_LEN


def encode_frame(ftype: int, node_id: int, seq: int, ts: int, flags: int, payload, key, key_id: int = -1,
                 back: int = 0) -> bytes:
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


def _verify(buf, n: int, keyring, direction: int):
    if n < HEADER_LEN + MAC_LEN:
        raise WireError(E_TRUNCATED, "%d bytes, a frame has at least %d" % (n, HEADER_LEN + MAC_LEN))
    if n > MAX_FRAME:
        raise WireError(E_OVERSIZE, "%d bytes (max %d)" % (n, MAX_FRAME))
    ver, ftype, flags, key_id, node_id, seq, ts, back = struct.unpack_from(_HDR, buf, 0)
    if ver != VERSION:
        raise WireError(E_VERSION, "version %d (this side speaks %d)" % (ver, VERSION))
    _check_header(ftype, flags, direction)
    key = keyring.lookup(node_id, key_id) if not isinstance(keyring, Key) else keyring
    if isinstance(keyring, Key) and key.key_id != key_id:
        raise WireError(E_KEY_ID, "key id %d" % key_id)
    end = n - MAC_LEN
    mv = memoryview(buf)
    mac = key.digest(mv[:end])
    diff = 0
    if _compare is not None:
        if not _compare(mac[:MAC_LEN], mv[end:n]):
            diff = 1
    else:
        for i in range(MAC_LEN):
            diff |= mac[i] ^ buf[end + i]
    if diff:
        raise WireError(E_MAC, "node %d seq %d" % (node_id, seq))
    return ftype, flags, key_id, node_id, seq, ts, back, end


def decode_fields(buf, keyring, direction: int = DIR_ANY) -> tuple:
    """Verify one unframed frame and decode its CBOR payload in place (no copy, no Frame object); return
    ``(ftype, flags, key_id, node_id, seq, ts, back, body)``. Same checks and errors as decode_frame."""
    try:
        n = len(buf)
        ftype, flags, key_id, node_id, seq, ts, back, end = _verify(buf, n, keyring, direction)
        body = cbor.loads(buf, HEADER_LEN, end) if end > HEADER_LEN else None
    except WireError:
        raise
    except Exception as e:  # anything unforeseen in a hostile input is still a refused frame
        raise WireError(E_PAYLOAD, "undecodable: %r" % (e,))
    if ftype == T_DATA:
        ok = isinstance(body, (dict, list))
    else:
        ok = isinstance(body, dict)
    if not ok:
        raise WireError(E_PAYLOAD, "%s payload must be a CBOR map" % TYPE_NAMES[ftype])
    return ftype, flags, key_id, node_id, seq, ts, back, body


def decode_frame(buf, keyring, direction: int = DIR_ANY) -> Frame:
    """Verify and decode one unframed frame; raise WireError (and nothing else) if it is refused.

    ``keyring`` is a Keyring, or a single Key (a node verifying its gateway). ``direction`` (DIR_UP on the
    gateway, DIR_DOWN on a node) refuses types the peer may not send. Replay is checked separately
    (ReplayWindow / Receiver), after the MAC, so forged frames cannot move a window.
    """
    ftype, flags, key_id, node_id, seq, ts, back, body = decode_fields(buf, keyring, direction)
    payload = bytes(buf[HEADER_LEN : len(buf) - MAC_LEN])
    return Frame(VERSION, ftype, flags, key_id, node_id, seq, ts, back, payload, body)
