"""An in-memory serial port pair: two ends with ``write()`` and non-blocking ``readinto()`` like a UART.

Used to run a node's Link against a gateway in one process (tests on the MicroPython VM and on CPython).
``drop_next`` / ``corrupt`` let a test lose or damage bytes on the wire.
"""


class MemPort:
    """One end of a pair; what is written to one end is read from the other."""

    def __init__(self) -> None:
        self._rx = bytearray()
        self.peer = None  # type: MemPort | None
        self.connected = True
        self.written = 0

    def write(self, buf) -> int:
        n = len(buf)
        self.written += n
        if self.connected and self.peer is not None:
            self.peer._rx.extend(buf)
        return n

    def any(self) -> int:
        return len(self._rx)

    def readinto(self, buf, nbytes: int = -1):
        n = len(self._rx)
        if n == 0:
            return None
        m = len(buf) if nbytes < 0 else nbytes
        if n < m:
            m = n
        buf[:m] = self._rx[:m]
        self._rx = self._rx[m:]
        return m

    def read(self, n: int = -1):
        if not self._rx:
            return None
        if n < 0 or n >= len(self._rx):
            out = bytes(self._rx)
            self._rx = bytearray()
        else:
            out = bytes(self._rx[:n])
            self._rx = self._rx[n:]
        return out


def pair() -> tuple:
    """Two connected ends (node side, gateway side)."""
    a = MemPort()
    b = MemPort()
    a.peer = b
    b.peer = a
    return a, b
