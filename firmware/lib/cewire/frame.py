"""The wire layer a node needs, identical on MicroPython and CPython: COBS stream framing, frames (header,
payload, MAC: encode+sign, verify+decode), keys, the Encoder and the replay window.

Frame layout (big-endian), see docs/protocol.md:

    0  u8   version (VERSION)          8  u32  seq
    1  u8   type (T_*)                12  u32  ts (Unix seconds, 0 = node clock not set)
    2  u8   flags (priority, channel) 16  u16  back (seq - oldest seq the sender still holds on this channel)
    3  u8   key id                    18  ...  payload (one CBOR item)
    4  u32  node id                   -8  8B   MAC = HMAC-SHA256(key, header || payload)[:8]

COBS (Consistent Overhead Byte Stuffing) removes every zero byte from a frame, so 0x00 can only be a
delimiter: a receiver that starts in the middle of a frame, or sees garbage or a cut frame, loses at most
that frame and is back in step at the next 0x00. Overhead: 1 byte per 254 bytes plus the delimiter.

A ReplayWindow remembers the highest sequence number accepted (``top``) and a bitmap of the WINDOW numbers
below it. It also tracks ``cum``, the cumulative acknowledgement: every number ≤ cum was received or is
final (below the sender's ``base``, i.e. the sender will never send it). The gateway acknowledges ``cum``.

One module, not four: on a node each module costs heap of its own (about 180 bytes). What only hosts use
(Frame objects, decode_frame, encode_frame, cobs_encode/cobs_decode, TYPE_NAMES, Receiver) is in cewire.host
and cewire.receiver, which a node never imports.
"""

import hashlib
import struct
import sys

from cewire import cbor
from cewire.errors import (
    E_COBS,
    E_HEADER,
    E_KEY_ID,
    E_MAC,
    E_OVERSIZE,
    E_PAYLOAD,
    E_RANGE,
    E_REPLAY,
    E_TRUNCATED,
    E_TYPE,
    E_UNKNOWN_NODE,
    E_VERSION,
    WireError,
)

try:
    from micropython import const
except ImportError:  # CPython (an assignment, not a def: on a node that would load a function for nothing)
    const = int  # type: ignore[misc, assignment, unused-ignore]


_compare = None
if sys.implementation.name != "micropython":  # CPython: constant-time compare in C
    import hmac  # type: ignore[import-not-found, unused-ignore]

    _compare = hmac.compare_digest
# MicroPython compares in the loop in _verify: its bundled hmac has no compare_digest, and importing it would
# only take heap (about 700 bytes)

VERSION = const(1)

T_HELLO = const(1)
T_DATA = const(2)
T_EVENT = const(3)
T_ACK = const(4)
T_CMD = const(5)
T_CMD_ACK = const(6)
T_TIME = const(7)
# who may send which type
DIR_ANY = const(0)
DIR_UP = const(1)  # node -> gateway: HELLO, DATA, EVENT, CMD_ACK
DIR_DOWN = const(2)  # gateway -> node: ACK, CMD, TIME
# the types each direction may send, one byte per direction (DIR_ANY, DIR_UP, DIR_DOWN from the low end), bit t
# for type t: DIR_ANY 1..7, DIR_UP HELLO DATA EVENT CMD_ACK (0x4E), DIR_DOWN ACK CMD TIME (0xB0)
_ALLOWED = const(0xB04EFE)

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
_MIN_KEY_LEN = const(16)
_HDR = ">BBBBIIIH"


# --- COBS stream framing
def encoded_size(n: int) -> int:
    """Bytes of the COBS encoding of ``n`` bytes, without the delimiter."""
    return n + n // 254 + 1


def cobs_encode_into(data, n: int, out, start: int = 0) -> int:
    """COBS-encode ``data[:n]`` into ``out[start:]`` and append the 0x00 delimiter; return the end index.

    ``out`` needs ``encoded_size(n) + 1`` bytes from ``start``; nothing is allocated.
    """
    code_at = start
    j = start + 1
    code = 1
    for i in range(n):
        b = data[i]
        if b == 0:
            out[code_at] = code
            code_at = j
            j += 1
            code = 1
        else:
            out[j] = b
            j += 1
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at = j
                j += 1
                code = 1
    out[code_at] = code
    out[j] = 0
    return j + 1


def cobs_decode_into(src, n: int, out, checked: bool = False) -> int:
    """Decode ``src[:n]`` (one COBS block, no delimiter) into ``out``; return the decoded length.

    Raises WireError(E_COBS) on a zero byte inside (skipped when ``checked``: the stream decoder split on
    zeros already), E_TRUNCATED when a code byte runs past the end, E_OVERSIZE when ``out`` is too small.
    """
    if not checked and src.find(b"\x00", 0, n) >= 0:
        raise WireError(E_COBS)
    i = 0
    j = 0
    cap = len(out)
    while i < n:
        code = src[i]
        i += 1
        end = i + code - 1
        if end > n:
            raise WireError(E_TRUNCATED)
        ln = end - i
        if j + ln > cap:
            raise WireError(E_OVERSIZE)
        if ln:
            out[j : j + ln] = src[i:end]
            j += ln
        i = end
        if code != 0xFF and i < n:
            if j >= cap:
                raise WireError(E_OVERSIZE)
            out[j] = 0
            j += 1
    return j


class StreamDecoder:
    """Split a byte stream into decoded frames; resynchronises at every 0x00 after garbage or a cut frame.

    ``feed(chunk)`` returns a list of decoded frames (bytes) completed by this chunk. Bad blocks are counted
    in ``errors`` (by WireError code in ``error_codes``) and dropped; a block longer than ``max_encoded`` is
    discarded up to the next delimiter, so memory stays bounded whatever arrives. ``feed_into`` is the
    allocation-free variant for nodes: it calls ``on_frame(memoryview)`` for each frame.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.max_encoded = encoded_size(max_frame)
        self._buf = bytearray(self.max_encoded)
        self._bmv = memoryview(self._buf)
        self._out = bytearray(max_frame)
        self._out_mv = memoryview(self._out)
        self._n = 0
        self._skipping = False
        self.frames = 0
        self.errors = 0
        self.error_codes = {}  # type: dict[int, int]

    def _error(self, code: int) -> None:
        self.errors += 1
        self.error_codes[code] = self.error_codes.get(code, 0) + 1

    def reset(self) -> None:
        """Forget a partly received frame (e.g. after the port was reopened)."""
        self._n = 0
        self._skipping = False

    def feed_into(self, chunk, n: int, on_frame) -> int:
        """Feed ``chunk[:n]`` (bytes or bytearray); call ``on_frame(memoryview_of_frame)`` per complete frame;
        return how many. The memoryview is only valid during the call (the buffer is reused).
        """
        if isinstance(chunk, memoryview):
            chunk = bytes(chunk[:n])
        count = 0
        buf = self._buf
        cap = self.max_encoded
        i = 0
        while i < n:
            j = chunk.find(b"\x00", i, n)
            stop = n if j < 0 else j
            seg = stop - i
            if seg and not self._skipping:
                if self._n + seg > cap:
                    self._skipping = True
                    self._error(E_OVERSIZE)
                else:
                    buf[self._n : self._n + seg] = chunk[i:stop]
                    self._n += seg
            if j < 0:
                break
            i = j + 1
            # a delimiter ends the block
            if self._skipping:
                self._skipping = False
                self._n = 0
                continue
            if self._n == 0:
                continue  # idle fill / back-to-back delimiters
            try:
                m = cobs_decode_into(self._bmv, self._n, self._out, True)
            except WireError as e:
                self._error(e.code)
                self._n = 0
                continue
            self._n = 0
            self.frames += 1
            count += 1
            on_frame(self._out_mv[:m])
        return count

    def feed(self, chunk) -> list:
        """Feed bytes; return the list of frames (bytes) they completed."""
        got = []

        def keep(mv) -> None:
            got.append(bytes(mv))

        self.feed_into(chunk, len(chunk), keep)
        return got


# --- frames
def flags_for(channel: int, priority: int = 0) -> int:
    """The flags byte for a channel and a priority (0..3)."""
    return ((channel & 3) << 4) | (priority & 3)


def channel_of(ftype: int) -> int:
    """The channel a frame type travels on (DATA on CH_BULK, everything else on CH_CTRL)."""
    return CH_BULK if ftype == T_DATA else CH_CTRL


class Key:
    """A per-node key with its key id; the HMAC pads are computed once so signing a frame is cheap."""

    def __init__(self, key: bytes, key_id: int = 0) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) < _MIN_KEY_LEN:
            raise WireError(E_RANGE, "key < 16 bytes")
        if not 0 <= key_id <= 255:
            raise WireError(E_RANGE, "key id %d" % key_id)
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


def _check_header(ftype: int, flags: int, direction: int) -> None:
    if ftype > T_TIME or not (_ALLOWED >> (8 * direction + ftype)) & 1:
        raise WireError(E_TYPE, "type %d" % ftype)
    if flags & _FLAGS_RESERVED or (flags >> 4) & 3 != channel_of(ftype):
        raise WireError(E_HEADER, "flags 0x%02x" % flags)


def encode_into(buf, ftype: int, node_id: int, seq: int, ts: int, flags: int, payload, key: Key, back: int = 0) -> int:
    """Build and sign a frame in ``buf`` (bytearray ≥ MAX_FRAME); return its length. ``payload``: CBOR bytes."""
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise WireError(E_OVERSIZE, "payload of %d bytes (max %d)" % (n, MAX_PAYLOAD))
    if not (0 <= node_id <= 0xFFFFFFFF and 0 <= seq <= 0xFFFFFFFF and 0 <= ts <= 0xFFFFFFFF):
        raise WireError(E_RANGE, "not u32")
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


def decode_fields(buf, keyring, direction: int = DIR_ANY) -> tuple:
    """Verify one unframed frame and decode its CBOR payload in place (no copy, no Frame object); return
    ``(ftype, flags, key_id, node_id, seq, ts, back, body)``; raise WireError (and nothing else) if it is refused.

    ``keyring`` is a Keyring, or a single Key (a node verifying its gateway). ``direction`` (DIR_UP on the
    gateway, DIR_DOWN on a node) refuses types the peer may not send. Replay is checked separately
    (ReplayWindow / Receiver), after the MAC, so forged frames cannot move a window.
    """
    try:
        n = len(buf)
        if n < HEADER_LEN + MAC_LEN:
            raise WireError(E_TRUNCATED, "%d bytes" % n)
        if n > MAX_FRAME:
            raise WireError(E_OVERSIZE, "%d bytes" % n)
        ver, ftype, flags, key_id, node_id, seq, ts, back = struct.unpack_from(_HDR, buf, 0)
        if ver != VERSION:
            raise WireError(E_VERSION, "version %d" % ver)
        _check_header(ftype, flags, direction)
        if isinstance(keyring, Key):
            key = keyring
            if key.key_id != key_id:
                raise WireError(E_KEY_ID, "key id %d" % key_id)
        else:
            key = keyring.lookup(node_id, key_id)
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
        raise WireError(E_PAYLOAD, "not a map")
    return ftype, flags, key_id, node_id, seq, ts, back, body


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
        n = encode_into(
            self._frame, ftype, self.node_id, seq, ts, flags_for(channel_of(ftype), priority), payload, self.key, back
        )
        return self._fmv[:n]

    def stream(self, ftype: int, seq: int, ts: int, payload, priority: int = 0, back: int = 0):
        """Sign one frame and COBS-frame it with its 0x00 delimiter; return a memoryview ready to write."""
        n = encode_into(
            self._frame, ftype, self.node_id, seq, ts, flags_for(channel_of(ftype), priority), payload, self.key, back
        )
        m = cobs_encode_into(self._frame, n, self._stream)
        return self._smv[:m]


# --- replay window
WINDOW = 64
_SLOTS = const(63)  # WINDOW - 1: a sequence number's bit is at seq & _SLOTS (a ring of WINDOW bits)


class ReplayWindow:
    """Replay window + cumulative ack state for one sequence space (one node, one channel).

    The ``WINDOW`` numbers up to ``top`` are a ring of bits in 8 bytes, not one 64-bit integer: on a 32-bit
    MicroPython port every shift of an integer above 2**30 allocates a big integer, so a node's check of each
    gateway frame would leave garbage. ``mask`` (bit ``n`` = ``top - n`` accepted) is computed when asked for
    (the gateway's state export).
    """

    def __init__(self, top: int = 0, mask: int = 0, cum: int = 0) -> None:
        self.top = top
        self.cum = cum
        self._ring = bytearray(WINDOW // 8)
        for off in range(WINDOW):
            if (mask >> off) & 1:
                self._set(top - off)

    @property
    def mask(self) -> int:
        m = 0
        for off in range(WINDOW):
            if self._bit(self.top - off):
                m |= 1 << off
        return m

    def seen(self, seq: int) -> bool:
        """True if ``seq`` must be refused as a replay (already accepted, acked, or older than the window)."""
        if seq <= 0 or seq <= self.cum:
            return True
        if seq > self.top:
            return False
        if self.top - seq >= WINDOW:
            return True
        return self._bit(seq)

    def check(self, seq: int) -> None:
        """Raise WireError(E_REPLAY) if ``seq`` was seen; change nothing."""
        if self.seen(seq):
            raise WireError(E_REPLAY, "seq %d" % seq)

    def mark(self, seq: int, base: int = 0) -> int:
        """Record ``seq`` as accepted, with the sender's ``base``; return how many numbers were skipped as final.

        The return value counts sequence numbers that cum jumped over without receiving them: records the
        sender gave up (telemetry dropped from a full outbox) or numbers skipped at a reboot.
        """
        if seq > self.top:
            ring = self._ring
            if seq - self.top >= WINDOW:
                for i in range(WINDOW // 8):
                    ring[i] = 0
            else:
                for s in range(self.top + 1, seq):  # the numbers jumped over: not received
                    ring[(s & _SLOTS) >> 3] &= ~(1 << (s & 7))
            self.top = seq
            ring[(seq & _SLOTS) >> 3] |= 1 << (seq & 7)
        elif self.top - seq < WINDOW:
            self._set(seq)
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

    def _set(self, seq: int) -> None:
        self._ring[(seq & _SLOTS) >> 3] |= 1 << (seq & 7)

    def _bit(self, seq: int) -> bool:
        off = self.top - seq
        if off < 0 or off >= WINDOW:
            return False
        return bool(self._ring[(seq & _SLOTS) >> 3] & (1 << (seq & 7)))
