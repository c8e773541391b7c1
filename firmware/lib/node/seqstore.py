"""Small state files that survive a power cut, and the node's sequence counters (reservation by blocks).

``write_atomic`` writes ``<path>.tmp``, closes it and renames it over ``<path>``; each copy carries a
generation number and a CRC-32, and ``read_atomic`` takes the newest copy whose CRC checks out. A cut at any
moment leaves either the old or the new content, never a mix (on littlefs rename is atomic; on FAT, where
MicroPython unlinks then renames, the ``.tmp`` copy is still there and is used).

``SeqStore`` hands out sequence numbers per channel. Numbers below the persisted *limit* may be used; when
the counter reaches it the store first persists limit + block. After a reboot the counter restarts at the
limit, so a number is never used twice and the gateway's replay window keeps working, at one flash write
per ``block`` frames instead of one per frame (docs/protocol.md §4).
"""

import binascii
import os
import struct

_MAGIC = b"CEst"


def _unlink(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _load(path: str):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if len(raw) < 12 or raw[:4] != _MAGIC:
        return None
    gen, crc = struct.unpack_from("<II", raw, 4)
    body = raw[12:]
    if binascii.crc32(body, gen) != crc:  # crc32 is unsigned (MicroPython and CPython 3): no mask, no big int
        return None
    return gen, body


def read_atomic(path: str):
    """Return ``(generation, body)`` of the newest intact copy of ``path``, or ``None`` if there is none."""
    best = None
    for p in (path, path + ".tmp"):
        got = _load(p)
        if got is not None and (best is None or got[0] > best[0]):
            best = got
    return best


def write_atomic(path: str, body, gen: int) -> None:
    """Replace ``path`` by ``body`` (generation ``gen``, which must grow) so a power cut leaves old or new."""
    tmp = path + ".tmp"
    crc = binascii.crc32(body, gen)
    with open(tmp, "wb") as f:
        f.write(_MAGIC)
        f.write(struct.pack("<II", gen, crc))
        f.write(body)
    try:
        os.rename(tmp, path)
    except OSError:  # a filesystem that refuses to rename over a file
        _unlink(path)
        os.rename(tmp, path)


class SeqStore:
    """Sequence numbers per channel with block reservation, and the highest gateway seq accepted (``rx``)."""

    def __init__(self, path: str = "/seq.bin", channels: int = 2, block: int = 32) -> None:
        self.path = path
        self.block = block
        self.channels = channels
        self._gen = 0
        self.rx = 0  # highest gateway seq accepted (replay floor after a reboot)
        self._rx_saved = 0
        self.writes = 0
        self._body = bytearray(4 * (channels + 1))  # reused by _save: limits, then rx (u32 LE)
        limits = [1] * channels
        got = read_atomic(path)
        if got is not None:
            self._gen, body = got
            n = len(body) // 4 - 1
            vals = struct.unpack("<%dI" % (n + 1), body[: 4 * (n + 1)])
            for ch in range(min(n, channels)):
                limits[ch] = max(1, vals[ch])
            self.rx = self._rx_saved = vals[n]
        # restart every counter at its persisted limit: numbers below it may have been used
        self._next = list(limits)
        self._limit = list(limits)

    def _save(self) -> None:
        self._gen += 1
        body = self._body  # packed in place: no format string, list or bytes per save
        for ch in range(self.channels):
            struct.pack_into("<I", body, 4 * ch, self._limit[ch])
        struct.pack_into("<I", body, 4 * self.channels, self.rx)
        write_atomic(self.path, body, self._gen)
        self._rx_saved = self.rx
        self.writes += 1

    def next(self, ch: int) -> int:
        """Take the next sequence number of channel ``ch`` (persists a new reservation when needed)."""
        seq = self._next[ch]
        if seq >= self._limit[ch]:
            self._limit[ch] = seq + self.block
            self._save()
        self._next[ch] = seq + 1
        return seq

    def peek(self, ch: int) -> int:
        """The number ``next(ch)`` would return."""
        return self._next[ch]

    def floor(self, ch: int, used: int) -> None:
        """Make sure numbers ≤ ``used`` (found in the outbox) are never handed out again."""
        if self._next[ch] <= used:
            self._next[ch] = used + 1

    def accept_rx(self, seq: int, persist: bool = False) -> None:
        """Note a gateway frame accepted; ``persist`` (commands) writes it at once, else at the next save."""
        if seq > self.rx:
            self.rx = seq
        if persist and self.rx != self._rx_saved:
            self._save()
