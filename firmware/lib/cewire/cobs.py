"""COBS framing for byte streams: every frame is COBS-encoded and followed by one 0x00 delimiter.

COBS (Consistent Overhead Byte Stuffing) removes every zero byte from the frame, so 0x00 can only be a
delimiter: a receiver that starts in the middle of a frame, or sees garbage or a cut frame, loses at most
that frame and is back in step at the next 0x00. Overhead: 1 byte per 254 bytes plus the delimiter.
"""

from cewire.errors import E_COBS, E_OVERSIZE, E_TRUNCATED, WireError


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


def cobs_encode(data) -> bytes:
    """Return ``data`` COBS-encoded with the trailing 0x00 delimiter (ready to write to a UART)."""
    n = len(data)
    out = bytearray(encoded_size(n) + 1)
    end = cobs_encode_into(data, n, out)
    return bytes(out[:end])


def cobs_decode_into(src, n: int, out, checked: bool = False) -> int:
    """Decode ``src[:n]`` (one COBS block, no delimiter) into ``out``; return the decoded length.

    Raises WireError(E_COBS) on a zero byte inside (skipped when ``checked``: the stream decoder split on
    zeros already), E_TRUNCATED when a code byte runs past the end, E_OVERSIZE when ``out`` is too small.
    """
    if not checked and src.find(b"\x00", 0, n) >= 0:
        raise WireError(E_COBS, "zero byte inside a COBS block")
    i = 0
    j = 0
    cap = len(out)
    while i < n:
        code = src[i]
        i += 1
        end = i + code - 1
        if end > n:
            raise WireError(E_TRUNCATED, "COBS block cut short")
        ln = end - i
        if j + ln > cap:
            raise WireError(E_OVERSIZE, "decoded frame larger than the buffer")
        if ln:
            out[j : j + ln] = src[i:end]
            j += ln
        i = end
        if code != 0xFF and i < n:
            if j >= cap:
                raise WireError(E_OVERSIZE, "decoded frame larger than the buffer")
            out[j] = 0
            j += 1
    return j


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


class StreamDecoder:
    """Split a byte stream into decoded frames; resynchronises at every 0x00 after garbage or a cut frame.

    ``feed(chunk)`` returns a list of decoded frames (bytes) completed by this chunk. Bad blocks are counted
    in ``errors`` (by WireError code in ``error_codes``) and dropped; a block longer than ``max_encoded`` is
    discarded up to the next delimiter, so memory stays bounded whatever arrives. ``feed_into`` is the
    allocation-free variant for nodes: it calls ``on_frame(memoryview)`` for each frame.
    """

    def __init__(self, max_frame: int = 256) -> None:
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
