"""BH1750 ambient light sensor (ROHM BH1750FVI datasheet), continuous high-resolution mode.

    als = BH1750(i2c, 0x23)
    als.start()            # power on + continuous H-resolution mode (1 lx, 120 ms per conversion)
    lux_x10 = als.read()   # 0.1 lx units, or raises OSError when the sensor does not answer

Reads return integers (tenths of a lux) so the control loop does not allocate floats.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc,unused-ignore]
        return x


_POWER_ON = const(0x01)
_RESET = const(0x07)
_CONT_HRES = const(0x10)
MAX_LUX_X10 = const(546125)  # 65535 counts / 1.2 in 0.1 lx


class BH1750:
    def __init__(self, i2c, addr=0x23):
        self.i2c = i2c
        self.addr = addr
        self._buf = bytearray(2)
        self._cmd = bytearray(1)

    def _op(self, op):
        self._cmd[0] = op
        self.i2c.writeto(self.addr, self._cmd)

    def start(self):
        """Power on, reset the data register and start continuous high-resolution measurement."""
        self._op(_POWER_ON)
        self._op(_RESET)
        self._op(_CONT_HRES)

    def read(self):
        """Illuminance in 0.1 lx (counts / 1.2, datasheet default MTreg 69). Raises OSError on a bus error."""
        self.i2c.readfrom_into(self.addr, self._buf)
        counts = (self._buf[0] << 8) | self._buf[1]
        return counts * 100 // 12
