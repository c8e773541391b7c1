"""INA219 current/power monitor (TI INA219 datasheet), calibrated for the lamp's energy meter.

    meter = INA219(i2c, 0x40, shunt_mohm=100, max_ma=3200)
    meter.start()               # configure 32 V / 320 mV ranges, 12-bit, continuous; write calibration
    meter.read()                # True when a valid sample was read into .bus_mv, .current_ma, .power_mw

Calibration (datasheet section 8.5.1): current_LSB = max current / 32768 rounded up to a whole number of
10 uA; Cal = trunc(0.04096 / (current_LSB x R_shunt)); power_LSB = 20 x current_LSB. Everything is integer
arithmetic in micro-units; reads go into preallocated buffers.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc,unused-ignore]
        return x


_REG_CONFIG = const(0x00)
_REG_SHUNT = const(0x01)
_REG_BUS = const(0x02)
_REG_POWER = const(0x03)
_REG_CURRENT = const(0x04)
_REG_CAL = const(0x05)
# BRNG 32 V, PGA /8 (320 mV), 12-bit bus and shunt ADC, shunt and bus continuous
_CONFIG = const(0x399F)


class INA219:
    def __init__(self, i2c, addr=0x40, shunt_mohm=100, max_ma=3200):
        self.i2c = i2c
        self.addr = addr
        # current LSB in uA: max/32768, rounded up to 10 uA
        lsb = (max_ma * 1000 + 32767) // 32768
        self.current_lsb_ua = (lsb + 9) // 10 * 10
        self.cal = 40960000 // (self.current_lsb_ua * shunt_mohm)  # 0.04096 / (A x ohm) in uA, mohm
        self.bus_mv = 0
        self.current_ma = 0
        self.power_mw = 0
        self.overflow = False
        self._reads = 0
        self._buf = bytearray(2)
        self._w = bytearray(2)

    def _write(self, reg, value):
        self._w[0] = value >> 8
        self._w[1] = value & 0xFF
        self.i2c.writeto_mem(self.addr, reg, self._w)

    def _read(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, self._buf)
        return (self._buf[0] << 8) | self._buf[1]

    def start(self):
        """Configure ranges and write the calibration register. Raises OSError when the chip is absent."""
        self._write(_REG_CONFIG, _CONFIG)
        self._write(_REG_CAL, self.cal)

    def read(self):
        """Read bus voltage, current and power into the attributes.

        On a shunt overflow (current beyond the range) the current reads as the range's maximum and
        ``overflow`` is set, so an over-current shows as one. A calibration lost to a brown-out (checked every 64th
        read) is rewritten. Raises OSError on a bus error.
        """
        bus = self._read(_REG_BUS)
        self.bus_mv = (bus >> 3) * 4
        self.overflow = bool(bus & 1)
        if self.overflow:
            self.current_ma = 32767 * self.current_lsb_ua // 1000
            self.power_mw = self.current_ma * self.bus_mv // 1000
            return True
        self._reads += 1
        if self._reads & 63 == 0 and self._read(_REG_CAL) != self.cal:
            self.start()  # every 64th read: a brown-out may have reset the chip
        cur = self._read(_REG_CURRENT)
        if cur & 0x8000:
            cur -= 0x10000
        pwr = self._read(_REG_POWER)
        self.current_ma = cur * self.current_lsb_ua // 1000
        self.power_mw = pwr * 20 * self.current_lsb_ua // 1000
        return True
