"""The CBOR subset of the wire protocol (RFC 8949), the same code on MicroPython and CPython.

Maps are encoded deterministically (keys sorted by their encoded bytes). Encodes: int (−2^64 .. 2^64−1), bytes, str, list/tuple, dict, True/False/None, float (as float64; the
protocol prefers scaled integers). Decodes the same plus float16/float32. Definite lengths only; tags,
indefinite lengths, simple values other than false/true/null and nesting deeper than MAX_DEPTH are refused
with WireError(E_PAYLOAD); an item running past the end gives WireError(E_TRUNCATED).
"""

import struct

from cewire.errors import E_PAYLOAD, E_RANGE, E_TRUNCATED, WireError

MAX_DEPTH = 8


def _head(out: bytearray, major: int, n: int) -> None:
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.extend(struct.pack(">H", n))
    elif n < 0x100000000:
        out.append(mt | 26)
        out.extend(struct.pack(">I", n))
    elif n < 0x10000000000000000:
        out.append(mt | 27)
        out.extend(struct.pack(">Q", n))
    else:
        raise WireError(E_RANGE, "integer does not fit CBOR")


def dump_into(out: bytearray, obj, depth: int = 0) -> None:
    """Append the CBOR encoding of ``obj`` to ``out``."""
    if depth > MAX_DEPTH:
        raise WireError(E_RANGE, "nested too deep")
    if obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif obj is None:
        out.append(0xF6)
    elif isinstance(obj, int):
        if obj >= 0:
            _head(out, 0, obj)
        else:
            _head(out, 1, -1 - obj)
    elif isinstance(obj, str):
        b = obj.encode()
        _head(out, 3, len(b))
        out.extend(b)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(out, 2, len(obj))
        out.extend(obj)
    elif isinstance(obj, (list, tuple)):
        _head(out, 4, len(obj))
        for v in obj:
            dump_into(out, v, depth + 1)
    elif isinstance(obj, dict):
        # deterministic encoding (RFC 8949 §4.2.1): keys sorted by their encoded bytes, so MicroPython
        # (unordered dicts) and CPython produce the same bytes and the same MAC for the same map
        _head(out, 5, len(obj))
        keyed = []
        for k, v in obj.items():
            kb = bytearray()
            dump_into(kb, k, depth + 1)
            keyed.append((bytes(kb), v))
        keyed.sort(key=_first)
        for kb, v in keyed:
            out.extend(kb)
            dump_into(out, v, depth + 1)
    elif isinstance(obj, float):
        out.append(0xFB)
        out.extend(struct.pack(">d", obj))
    else:
        raise WireError(E_RANGE, "cannot encode %s" % type(obj).__name__)


def _first(pair):
    return pair[0]


def dumps(obj) -> bytes:
    """Return the CBOR encoding of ``obj``."""
    out = bytearray()
    dump_into(out, obj)
    return bytes(out)


def _half(h: int) -> float:
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        val = mant * 2.0**-24
    elif exp == 31:
        val = float("inf") if mant == 0 else float("nan")
    else:
        val = (mant + 1024) * 2.0 ** (exp - 25)
    return -val if h & 0x8000 else val


class _Reader:
    # a cursor over the buffer; one per loads() call
    def __init__(self, buf, start: int, end: int) -> None:
        self.buf = buf
        self.i = start
        self.end = end

    def _arg(self, info: int) -> int:
        buf = self.buf
        i = self.i
        if info < 24:
            return info
        if info == 24:
            if i + 1 > self.end:
                raise WireError(E_TRUNCATED, "CBOR argument cut short")
            self.i = i + 1
            return buf[i]
        if info == 25:
            size = 2
        elif info == 26:
            size = 4
        elif info == 27:
            size = 8
        else:
            raise WireError(E_PAYLOAD, "indefinite length or reserved CBOR argument")
        if i + size > self.end:
            raise WireError(E_TRUNCATED, "CBOR argument cut short")
        self.i = i + size
        return int.from_bytes(bytes(buf[i : i + size]), "big")

    def _take(self, n: int):
        i = self.i
        if n > self.end - i:
            raise WireError(E_TRUNCATED, "CBOR string cut short")
        self.i = i + n
        return bytes(self.buf[i : i + n])

    def item(self, depth: int):
        if self.i >= self.end:
            raise WireError(E_TRUNCATED, "CBOR item missing")
        ib = self.buf[self.i]
        self.i += 1
        major = ib >> 5
        info = ib & 0x1F
        if major == 0:
            return self._arg(info)
        if major == 1:
            return -1 - self._arg(info)
        if major == 2:
            return self._take(self._arg(info))
        if major == 3:
            raw = self._take(self._arg(info))
            try:
                return raw.decode()
            except Exception:
                raise WireError(E_PAYLOAD, "CBOR text is not UTF-8")
        if major == 4 or major == 5:
            if depth >= MAX_DEPTH:
                raise WireError(E_PAYLOAD, "CBOR nested too deep")
            n = self._arg(info)
            # every item takes at least one byte: a count larger than what is left cannot be valid
            if n > self.end - self.i:
                raise WireError(E_TRUNCATED, "CBOR container longer than the payload")
            if major == 4:
                return [self.item(depth + 1) for _ in range(n)]
            d = {}
            for _ in range(n):
                k = self.item(depth + 1)
                if not isinstance(k, (int, str)):
                    raise WireError(E_PAYLOAD, "CBOR map key must be int or text")
                d[k] = self.item(depth + 1)
            return d
        if major == 7:
            if info == 20:
                return False
            if info == 21:
                return True
            if info == 22:
                return None
            if info in (25, 26, 27):
                size = 2 if info == 25 else 4 if info == 26 else 8
                raw = self._take(size)
                if size == 2:
                    return _half((raw[0] << 8) | raw[1])
                return struct.unpack(">f" if size == 4 else ">d", raw)[0]
            raise WireError(E_PAYLOAD, "unsupported CBOR simple value")
        raise WireError(E_PAYLOAD, "CBOR tags are not part of the protocol")


def loads(buf, start: int = 0, end: int = -1):
    """Decode exactly one CBOR item from ``buf[start:end]``; trailing bytes are an error (E_PAYLOAD)."""
    if end < 0:
        end = len(buf)
    r = _Reader(buf, start, end)
    obj = r.item(0)
    if r.i != end:
        raise WireError(E_PAYLOAD, "trailing bytes after the CBOR item")
    return obj
