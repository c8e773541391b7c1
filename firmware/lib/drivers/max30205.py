# MAX30205 human body temperature sensor (Maxim datasheet 19-7615): 16-bit two's complement temperature
# register, LSB 1/256 degC, +-0.1 degC accuracy over 37-39 degC.
from micropython import const

ADDR = const(0x48)
_TEMP = const(0x00)
_CONFIG = const(0x01)


class MAX30205:
    """Read the body temperature in hundredths of a degree Celsius (integer, no float)."""

    def __init__(self, i2c, addr=ADDR):
        self.i2c = i2c
        self.addr = addr
        self._buf = bytearray(2)
        self._b1 = bytearray(1)

    def start(self):
        """Continuous conversion, comparator mode; raises OSError if the sensor does not answer."""
        self._b1[0] = 0x00
        self.i2c.writeto_mem(self.addr, _CONFIG, self._b1)

    def read_centi(self):
        """Temperature in 0.01 degC; raises OSError when the bus fails."""
        self.i2c.readfrom_mem_into(self.addr, _TEMP, self._buf)
        raw = (self._buf[0] << 8) | self._buf[1]
        if raw & 0x8000:
            raw -= 0x10000
        return (raw * 100 + 128) >> 8
