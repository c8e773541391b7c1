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


def _arg(buf, i: int, end: int, info: int):
    # the argument of an item head at buf[i-1]; returns (value, next index)
    if info < 24:
        return info, i
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
    if i + size > end:
        raise WireError(E_TRUNCATED)
    if size == 1:
        return buf[i], i + 1
    return int.from_bytes(bytes(buf[i : i + size]), "big"), i + size


def _item(buf, i: int, end: int, depth: int):
    """Decode the item at ``buf[i]``; return (value, next index)."""
    if i >= end:
        raise WireError(E_TRUNCATED)
    ib = buf[i]
    i += 1
    if ib < 0x18:  # small unsigned int: the common case for labels and scaled values
        return ib, i
    if ib == 0x18 and i < end:
        return buf[i], i + 1
    if ib == 0x19 and i + 1 < end:
        return (buf[i] << 8) | buf[i + 1], i + 2
    major = ib >> 5
    info = ib & 0x1F
    if major == 0:
        return _arg(buf, i, end, info)
    if major == 1:
        n, i = _arg(buf, i, end, info)
        return -1 - n, i
    if major == 2 or major == 3:
        n, i = _arg(buf, i, end, info)
        if n > end - i:
            raise WireError(E_TRUNCATED)
        raw = bytes(buf[i : i + n])
        if major == 2:
            return raw, i + n
        try:
            return raw.decode(), i + n
        except Exception:
            raise WireError(E_PAYLOAD)
    if major == 4 or major == 5:
        if depth >= _MAX_DEPTH:
            raise WireError(E_PAYLOAD)
        n, i = _arg(buf, i, end, info)
        # every item takes at least one byte: a count larger than what is left cannot be valid
        if n > end - i:
            raise WireError(E_TRUNCATED)
        depth += 1
        if major == 4:
            out = []
            for _ in range(n):
                v, i = _item(buf, i, end, depth)
                out.append(v)
            return out, i
        d = {}
        for _ in range(n):
            if i < end and buf[i] < 0x18:  # small int label: no call
                k = buf[i]
                i += 1
            else:
                k, i = _item(buf, i, end, depth)
                if not isinstance(k, (int, str)):
                    raise WireError(E_PAYLOAD)
            if i < end and buf[i] < 0x18:
                d[k] = buf[i]
                i += 1
            else:
                v, i = _item(buf, i, end, depth)
                d[k] = v
        return d, i
    if major == 7:
        if info == 20:
            return False, i
        if info == 21:
            return True, i
        if info == 22:
            return None, i
        if info == 25 or info == 26 or info == 27:
            size = 2 if info == 25 else 4 if info == 26 else 8
            if i + size > end:
                raise WireError(E_TRUNCATED)
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
                return -val if h & 0x8000 else val, i + 2
            return struct.unpack(">f" if size == 4 else ">d", raw)[0], i + size
        raise WireError(E_PAYLOAD)
    raise WireError(E_PAYLOAD)


def loads(buf, start: int = 0, end: int = -1):
    """Decode exactly one CBOR item from ``buf[start:end]``; trailing bytes are an error (E_PAYLOAD)."""
    if end < 0:
        end = len(buf)
    obj, i = _item(buf, start, end, 0)
    if i != end:
        raise WireError(E_PAYLOAD)
    return obj
