"""The node's outbox on flash: every record stays until the gateway's cumulative ACK covers it.

Layout under ``root`` (docs/protocol.md §7.1, §7.2):

    <ch>_<segno>.seg   append-only segments, one channel each; records are
                       magic 0xA5 | u16 len | u8 type | u8 prio | u32 seq | u32 ts | payload | u32 CRC-32
    ack.bin            cumulative ack per channel (replaced by atomic rename, see seqstore.write_atomic)
    seq.bin            sequence reservation (SeqStore)

Every append opens, writes and closes the segment (a file never closed is lost at reset on littlefs), so
a record is durable when ``put`` returns. After a power cut a torn last record is ignored and its segment
sealed; writing continues in a new segment. Acknowledged state is the ack file, which is either the old
or the new version. Telemetry (CH_BULK) is a ring bounded by ``quotas[1]`` records, dropping whole oldest
segments; events (CH_CTRL) are never dropped for telemetry and ``put`` raises OutboxFull at ``quotas[0]``.
"""

import binascii
import os
import struct

from node.seqstore import SeqStore, read_atomic, write_atomic

try:
    from micropython import const
except ImportError:  # CPython

    def const(x: int) -> int:  # type: ignore[misc, no-redef, unused-ignore]
        return x


_REC = "<BHBBII"
_REC_LEN = const(13)
_MAGIC = const(0xA5)
_MAX_PAYLOAD = const(230)
# segment entry fields (a small list per segment keeps RAM low)
_NO = const(0)
_FIRST = const(1)  # first pending (unacknowledged) seq
_LAST = const(2)
_WRITTEN = const(3)  # records in the file
_SEALED = const(4)
N_CH = const(2)


_SKIPPED = (0,)


def _crc_of(b) -> int:
    return b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24


class OutboxFull(Exception):
    """The event channel is at its quota: the record was not stored (the app keeps signalling locally)."""


class Outbox:
    """Durable, bounded per-channel queues of signed-later records; see the module docstring."""

    def __init__(self, root: str = "/outbox", quotas=(128, 256), seg_records: int = 16, block: int = 32) -> None:
        self.root = root
        self.quotas = tuple(quotas)
        self.seg_records = seg_records
        try:
            os.mkdir(root)
        except OSError:
            pass
        self.seq = SeqStore(root + "/seq.bin", N_CH, block)
        self.acked = [0] * N_CH
        self._ack_gen = 0
        got = read_atomic(root + "/ack.bin")
        if got is not None:
            self._ack_gen = got[0]
            vals = struct.unpack("<%dI" % N_CH, got[1][: 4 * N_CH])
            self.acked = list(vals)
        self.segs = [[] for _ in range(N_CH)]  # type: list
        self.dropped = [0] * N_CH
        self.lost = 0  # records found corrupt at start-up (torn tails)
        self._hdr = bytearray(_REC_LEN)
        self._hmv = memoryview(self._hdr)
        self._crcbuf = bytearray(4)
        self._ackbuf = bytearray(4 * N_CH)
        self._pos = [[0, 0, 0] for _ in range(N_CH)]  # per channel: segment no, offset, seq read up to
        self._skipmv = memoryview(bytearray(_MAX_PAYLOAD + 4))  # records stepped over in read()
        self._ackpath = root + "/ack.bin"
        self._segno = 0
        self._scan()

    # --- start-up
    def _path(self, ch: int, no: int) -> str:
        return "%s/%d_%08d.seg" % (self.root, ch, no)

    def _scan(self) -> None:
        found = []
        for name in os.listdir(self.root):
            if name.endswith(".seg") and "_" in name:
                try:
                    ch = int(name[0 : name.index("_")])
                    no = int(name[name.index("_") + 1 : -4])
                except ValueError:
                    continue
                if 0 <= ch < N_CH:
                    found.append((no, ch))
        found.sort()
        for no, ch in found:
            self._segno = max(self._segno, no)
            first, last, written, torn = self._scan_seg(ch, no)
            if first == 0:
                self._unlink(ch, no)
                continue
            self.segs[ch].append([no, first, last, written, True])  # old segments are sealed
            self.seq.floor(ch, last)
            if torn:
                self.lost += 1

    def _scan_seg(self, ch: int, no: int):
        first = last = written = 0
        torn = False
        acked = self.acked[ch]
        try:
            f = open(self._path(ch, no), "rb")
        except OSError:
            return 0, 0, 0, False
        try:
            while True:
                rec = self._read_rec(f, 0)
                if rec is None:
                    break
                if rec is False:
                    torn = True
                    break
                written += 1
                seq = rec[0]
                if seq > acked:
                    if first == 0:
                        first = seq
                    last = seq
        finally:
            f.close()
        return first, last, written, torn

    def _read_rec(self, f, skip_upto: int):
        """Next record of an open segment: (seq, type, prio, ts, payload), or a skipped one as (seq,);
        ``None`` at a clean end, ``False`` on a torn or corrupt record."""
        n = f.readinto(self._hmv)
        if not n:
            return None
        if n < _REC_LEN:
            return False
        magic, ln, ftype, prio, seq, ts = struct.unpack_from(_REC, self._hdr, 0)
        if magic != _MAGIC or ln > _MAX_PAYLOAD:
            return False
        if seq <= skip_upto:
            # already acknowledged or already loaded: checked in the scratch buffer, no new object
            if f.readinto(self._skipmv[: ln + 4]) != ln + 4:
                return False
            crc = binascii.crc32(self._skipmv[:ln], binascii.crc32(self._hdr))
            if _crc_of(self._skipmv[ln : ln + 4]) != crc:
                return False
            return _SKIPPED
        payload = f.read(ln)
        if len(payload) != ln or f.readinto(self._crcbuf) != 4:
            return False
        crc = binascii.crc32(payload, binascii.crc32(self._hdr))
        if _crc_of(self._crcbuf) != crc:
            return False
        return (seq, ftype, prio, ts, payload)

    def _unlink(self, ch: int, no: int) -> None:
        try:
            os.remove(self._path(ch, no))
        except OSError:
            pass

    # --- queue operations
    def pending(self, ch: int) -> int:
        """Records of channel ``ch`` not yet acknowledged."""
        n = 0
        for s in self.segs[ch]:
            n += s[_LAST] - s[_FIRST] + 1
        return n

    def base(self, ch: int) -> int:
        """Lowest seq still held on ``ch``, or the next seq to be used when nothing is held."""
        segs = self.segs[ch]
        return segs[0][_FIRST] if segs else self.seq.peek(ch)

    def last(self, ch: int) -> int:
        """Highest seq held on ``ch`` (0 when empty)."""
        segs = self.segs[ch]
        return segs[-1][_LAST] if segs else 0

    def _drop_oldest(self, ch: int) -> None:
        s = self.segs[ch].pop(0)
        self.dropped[ch] += s[_LAST] - s[_FIRST] + 1
        self._unlink(ch, s[_NO])

    def put(self, ch: int, ftype: int, prio: int, ts: int, payload) -> int:
        """Store a record durably; return its sequence number. Raises OutboxFull on a full event channel."""
        ln = len(payload)
        if ln > _MAX_PAYLOAD:
            raise ValueError("payload too large")
        while self.pending(ch) >= self.quotas[ch]:
            if ch == 0:
                raise OutboxFull("event outbox holds %d records" % self.quotas[0])
            self._drop_oldest(ch)
        seq = self.seq.next(ch)
        segs = self.segs[ch]
        cur = segs[-1] if segs else None
        if cur is None or cur[_SEALED] or cur[_WRITTEN] >= self.seg_records:
            if cur is not None:
                cur[_SEALED] = True
            self._segno += 1
            cur = [self._segno, seq, seq, 0, False]
            segs.append(cur)
        struct.pack_into(_REC, self._hdr, 0, _MAGIC, ln, ftype, prio, seq, ts)
        crc = binascii.crc32(payload, binascii.crc32(self._hdr))  # unsigned already: no mask (a big int)
        struct.pack_into("<I", self._crcbuf, 0, crc)
        f = open(self._path(ch, cur[_NO]), "ab")
        try:
            f.write(self._hdr)
            f.write(payload)
            f.write(self._crcbuf)
        finally:
            f.close()
        cur[_LAST] = seq
        cur[_WRITTEN] += 1
        return seq

    def ack(self, ch: int, cum: int) -> int:
        """Apply a cumulative ACK; return how many records it released (persisted before any delete)."""
        top = self.seq.peek(ch) - 1
        if cum > top:
            cum = top  # never acknowledge numbers not handed out yet
        if cum <= self.acked[ch]:
            return 0
        before = self.pending(ch)
        self.acked[ch] = cum
        self._ack_gen += 1
        struct.pack_into("<II", self._ackbuf, 0, self.acked[0], self.acked[1])  # N_CH == 2
        write_atomic(self._ackpath, self._ackbuf, self._ack_gen)
        segs = self.segs[ch]
        while segs and segs[0][_FIRST] <= cum:
            s = segs[0]
            if s[_LAST] <= cum:
                segs.pop(0)
                self._unlink(ch, s[_NO])
            else:
                s[_FIRST] = cum + 1
                break
        return before - self.pending(ch)

    def read(self, ch: int, after: int, n: int) -> list:
        """Up to ``n`` pending records of ``ch`` with seq > ``after``, oldest first, as
        ``(seq, type, prio, ts, payload)``."""
        out = []  # type: list
        floor = after if after > self.acked[ch] else self.acked[ch]
        for s in self.segs[ch]:
            if len(out) >= n:
                break
            if s[_LAST] <= floor:
                continue
            try:
                f = open(self._path(ch, s[_NO]), "rb")
            except OSError:
                continue
            pos = self._pos[ch]  # where the last read of this channel stopped: no re-reading from the start
            seekable = hasattr(f, "seek")
            try:
                if seekable and pos[0] == s[_NO] and pos[2] <= floor:
                    f.seek(pos[1])
                while len(out) < n:
                    rec = self._read_rec(f, floor)
                    if not rec:
                        break
                    if len(rec) > 1:
                        out.append(rec)
                        if seekable:
                            pos[0] = s[_NO]
                            pos[1] = f.tell()
                            pos[2] = rec[0]
            finally:
                f.close()
        return out
