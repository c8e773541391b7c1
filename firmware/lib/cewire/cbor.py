"""The CBOR subset of the wire protocol (RFC 8949), the same code on MicroPython and CPython.

Encodes: int (−2^64 .. 2^64−1), bytes, str, list/tuple, dict, True/False/None, float (as float64; the
protocol prefers scaled integers); maps deterministically (keys sorted by their encoded bytes).
Decodes the same plus float16/float32. Definite lengths only; tags, indefinite lengths, simple values
other than false/true/null and nesting deeper than 8 levels are refused with WireError(E_PAYLOAD);
an item running past the end gives WireError(E_TRUNCATED). The code says why an input was refused (no
detail text: on a node every string constant costs heap).
"""

import struct

from cewire.errors import E_PAYLOAD, E_RANGE, E_TRUNCATED, WireError

try:
    from micropython import const
except ImportError:  # CPython (an assignment, not a def: on a node that would load a function for nothing)
    const = int  # type: ignore[misc, assignment, unused-ignore]


_MAX_DEPTH = const(8)  # nesting levels


def _head(out: bytearray, major: int, n: int) -> None:
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:  # byte by byte: no temporary bytes object per value
        out.append(mt | 25)
        out.append(n >> 8)
        out.append(n & 0xFF)
    elif n < 0x100000000:
        out.append(mt | 26)
        out.append(n >> 24)
        out.append((n >> 16) & 0xFF)
        out.append((n >> 8) & 0xFF)
        out.append(n & 0xFF)
    elif n < 0x10000000000000000:
        out.append(mt | 27)
        out.extend(struct.pack(">Q", n))
    else:
        raise WireError(E_RANGE)


def dump_into(out: bytearray, obj, depth: int = 0) -> None:
    """Append the CBOR encoding of ``obj`` to ``out``."""
    if depth > _MAX_DEPTH:
        raise WireError(E_RANGE)
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
        ints = True
        for k in obj:
            if type(k) is not int or k < 0:
                ints = False
                break
        if ints:
            # the common case (labels): for non-negative ints, encoded-bytes order is numeric order, so one
            # sorted key list replaces a buffer, a copy and a pair per key
            for k in sorted(obj):
                _head(out, 0, k)
                dump_into(out, obj[k], depth + 1)
            return
        keyed = []
        for k, v in obj.items():
            enc = bytearray()
            dump_into(enc, k, depth + 1)
            keyed.append((bytes(enc), v))
        keyed.sort()  # the keys of a dict encode differently (NaN aside): values are never compared
        for kb, v in keyed:
            out.extend(kb)
            dump_into(out, v, depth + 1)
    elif isinstance(obj, float):
        out.append(0xFB)
        out.extend(struct.pack(">d", obj))
    else:
        raise WireError(E_RANGE, "cannot encode %s" % type(obj).__name__)


def dumps(obj) -> bytes:
    """Return the CBOR encoding of ``obj``."""
    out = bytearray()
    dump_into(out, obj)
    return bytes(out)


# The decoder keeps its read position in ``p``, a one-item list shared by the whole decode: returning
# (value, index) pairs allocated a tuple per item, which on a node is garbage (kilobytes for a CMD).
def _arg(buf, p: list, end: int, info: int):
    # the argument of an item head at buf[p[0]-1]; advances p[0] past it
    if info < 24:
        return info
    if info == 24:
        size = 1
    elif info == 25:
        size = 2
    elif info == 26:
        size = 4
    elif info == 27:
        size = 8
    else:
        raise WireError(E_PAYLOAD)
    i = p[0]
    if i + size > end:
        raise WireError(E_TRUNCATED)
    p[0] = i + size
    if size == 1:
        return buf[i]
    return int.from_bytes(bytes(buf[i : i + size]), "big")


def _item(buf, p: list, end: int, depth: int):
    """Decode the item at ``buf[p[0]]``; return its value, ``p[0]`` moved past it."""
    i = p[0]
    if i >= end:
        raise WireError(E_TRUNCATED)
    ib = buf[i]
    i += 1
    p[0] = i
    if ib < 0x18:  # small unsigned int: the common case for labels and scaled values
        return ib
    if ib == 0x18 and i < end:
        p[0] = i + 1
        return buf[i]
    if ib == 0x19 and i + 1 < end:
        p[0] = i + 2
        return (buf[i] << 8) | buf[i + 1]
    major = ib >> 5
    info = ib & 0x1F
    if major == 0:
        return _arg(buf, p, end, info)
    if major == 1:
        return -1 - _arg(buf, p, end, info)
    if major == 2 or major == 3:
        n = _arg(buf, p, end, info)
        i = p[0]
        if n > end - i:
            raise WireError(E_TRUNCATED)
        p[0] = i + n
        if major == 2:
            return bytes(buf[i : i + n])
        try:
            # straight from the buffer, no bytes copy first (an existing interned string is not copied at all)
            return str(buf[i : i + n], "utf-8")
        except Exception:
            raise WireError(E_PAYLOAD)
    if major == 4 or major == 5:
        if depth >= _MAX_DEPTH:
            raise WireError(E_PAYLOAD)
        n = _arg(buf, p, end, info)
        # every item takes at least one byte: a count larger than what is left cannot be valid
        if n > end - p[0]:
            raise WireError(E_TRUNCATED)
        depth += 1
        if major == 4:
            out = []
            for _ in range(n):
                out.append(_item(buf, p, end, depth))
            return out
        d = {}
        for _ in range(n):
            i = p[0]
            if i < end and buf[i] < 0x18:  # small int label: no call
                k = buf[i]
                p[0] = i + 1
            else:
                k = _item(buf, p, end, depth)
                if not isinstance(k, (int, str)):
                    raise WireError(E_PAYLOAD)
            i = p[0]
            if i < end and buf[i] < 0x18:
                d[k] = buf[i]
                p[0] = i + 1
            else:
                d[k] = _item(buf, p, end, depth)
        return d
    if major == 7:
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        if info == 25 or info == 26 or info == 27:
            size = 2 if info == 25 else 4 if info == 26 else 8
            if i + size > end:
                raise WireError(E_TRUNCATED)
            p[0] = i + size
            raw = bytes(buf[i : i + size])
            if size == 2:  # IEEE 754 half precision
                h = (raw[0] << 8) | raw[1]
                exp = (h >> 10) & 0x1F
                mant = h & 0x3FF
                if exp == 0:
                    val = mant * 2.0**-24
                elif exp == 31:
                    val = float("inf") if mant == 0 else float("nan")
                else:
                    val = (mant + 1024) * 2.0 ** (exp - 25)
                return -val if h & 0x8000 else val
            return struct.unpack(">f" if size == 4 else ">d", raw)[0]
        raise WireError(E_PAYLOAD)
    raise WireError(E_PAYLOAD)


def loads(buf, start: int = 0, end: int = -1):
    """Decode exactly one CBOR item from ``buf[start:end]``; trailing bytes are an error (E_PAYLOAD)."""
    if end < 0:
        end = len(buf)
    p = [start]
    obj = _item(buf, p, end, 0)
    if p[0] != end:
        raise WireError(E_PAYLOAD)
    return obj
