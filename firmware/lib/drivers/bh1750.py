"""BH1750 ambient light sensor (ROHM BH1750FVI datasheet), continuous high-resolution mode.

    als = BH1750(i2c, 0x23)
    als.start()            # power on + continuous H-resolution mode (1 lx, 120 ms per conversion)
    lux_x10 = als.read()   # 0.1 lx units; None until the first conversion is done; OSError: no sensor

Reads return integers (tenths of a lux) so the control loop does not allocate floats.
"""

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython
    import time as _time

    def ticks_ms():  # type: ignore[misc,unused-ignore]
        return int(_time.time() * 1000)

    def ticks_diff(a, b):  # type: ignore[misc,unused-ignore]
        return a - b


try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc,unused-ignore]
        return x


_POWER_ON = const(0x01)
_RESET = const(0x07)
_CONT_HRES = const(0x10)
_FIRST_MS = const(180)  # first H-resolution conversion: 120 ms typical, 180 ms max (datasheet)
MAX_LUX_X10 = const(546125)  # 65535 counts / 1.2 in 0.1 lx


class BH1750:
    def __init__(self, i2c, addr=0x23):
        self.i2c = i2c
        self.addr = addr
        self._buf = bytearray(2)
        self._cmd = bytearray(1)
        self._started = 0
        self._ready = False

    def _op(self, op):
        self._cmd[0] = op
        self.i2c.writeto(self.addr, self._cmd)

    def start(self):
        """Power on, reset the data register and start continuous high-resolution measurement."""
        self._op(_POWER_ON)
        self._op(_RESET)
        self._op(_CONT_HRES)
        self._started = ticks_ms()
        self._ready = False

    def read(self):
        """Illuminance in 0.1 lx (counts / 1.2, datasheet default MTreg 69); None while the first conversion
        after :meth:`start` is still running. Raises OSError on a bus error."""
        if not self._ready:
            if ticks_diff(ticks_ms(), self._started) < _FIRST_MS:
                return None
            self._ready = True
        self.i2c.readfrom_into(self.addr, self._buf)
        counts = (self._buf[0] << 8) | self._buf[1]
        return counts * 100 // 12
