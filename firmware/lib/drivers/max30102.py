# MAX30102 pulse-oximeter / heart-rate sensor (Maxim/Analog Devices datasheet 19-7740).
# SpO2 mode: red (LED1) and IR (LED2) samples, 3 bytes each (18-bit, MSB-aligned at bit 17), through a
# 32-sample FIFO read over I2C. read_into() drains the FIFO into caller-owned arrays without allocating and
# reports samples the sensor lost (FIFO overflow counter).
from micropython import const

ADDR = const(0x57)
PART_ID = const(0x15)

_INT_STATUS1 = const(0x00)
_INT_ENABLE1 = const(0x02)
_INT_ENABLE2 = const(0x03)
_FIFO_WR_PTR = const(0x04)
_OVF_COUNTER = const(0x05)
_FIFO_RD_PTR = const(0x06)
_FIFO_DATA = const(0x07)
_FIFO_CONFIG = const(0x08)
_MODE_CONFIG = const(0x09)
_SPO2_CONFIG = const(0x0A)
_LED1_PA = const(0x0C)  # red
_LED2_PA = const(0x0D)  # IR
_REG_PART_ID = const(0xFF)

_MODE_RESET = const(0x40)
_MODE_SHDN = const(0x80)
_MODE_SPO2 = const(0x03)
_FIFO_DEPTH = const(32)
_ROLLOVER = const(0x10)

# SPO2_SR field: samples per second -> code
RATES = {50: 0, 100: 1, 200: 2, 400: 3, 800: 4, 1000: 5, 1600: 6, 3200: 7}
# LED_PW field: pulse width -> ADC resolution bits
_PW_BITS = (15, 16, 17, 18)


class SensorError(OSError):
    """The sensor is absent, answers with the wrong part id, or the bus failed."""


class MAX30102:
    """Configure once with ``start()``, then call ``read_into(red, ir)`` at least every 300 ms at 100 Hz."""

    def __init__(self, i2c, addr=ADDR, fs=100, red_ma=7.2, ir_ma=7.2, adc_range=1, pulse_width=3):
        if fs not in RATES:
            raise ValueError("fs must be one of %s" % sorted(RATES))
        self.i2c = i2c
        self.addr = addr
        self.fs = fs
        self.red_pa = int(red_ma * 5) & 0xFF  # LSB 0.2 mA
        self.ir_pa = int(ir_ma * 5) & 0xFF
        self.adc_range = adc_range & 3  # 0..3: 2048, 4096, 8192, 16384 nA full scale
        self.pulse_width = pulse_width & 3  # 3: 411 us, 18-bit
        self.bits = _PW_BITS[self.pulse_width]
        self.overflows = 0  # overflow events seen
        self.lost = 0  # samples lost to overflow since start (at least; the counter saturates at 31)
        self.last_lost = 0  # lost before the last read_into
        self._b1 = bytearray(1)
        self._ptr = bytearray(3)
        self._fifo = bytearray(_FIFO_DEPTH * 6)
        self._mv = memoryview(self._fifo)

    def _w(self, reg, val):
        self._b1[0] = val
        self.i2c.writeto_mem(self.addr, reg, self._b1)

    def _r(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, self._b1)
        return self._b1[0]

    def start(self):
        """Reset and configure the sensor for SpO2 mode; raises SensorError if it is absent or wrong."""
        try:
            pid = self._r(_REG_PART_ID)
        except OSError as e:
            raise SensorError("MAX30102 not answering at 0x%02x: %s" % (self.addr, e))
        if pid != PART_ID:
            raise SensorError("part id 0x%02x at 0x%02x is not a MAX30102" % (pid, self.addr))
        self._w(_MODE_CONFIG, _MODE_RESET)
        for _ in range(50):  # the reset bit clears itself
            if not self._r(_MODE_CONFIG) & _MODE_RESET:
                break
        self._w(_INT_ENABLE1, 0)  # polled, no interrupt pin needed
        self._w(_INT_ENABLE2, 0)
        self._w(_FIFO_CONFIG, _ROLLOVER | 0x0F)  # no averaging, keep the newest samples, A_FULL at 17
        self._w(_SPO2_CONFIG, (self.adc_range << 5) | (RATES[self.fs] << 2) | self.pulse_width)
        self._w(_LED1_PA, self.red_pa)
        self._w(_LED2_PA, self.ir_pa)
        self.clear()
        self._w(_MODE_CONFIG, _MODE_SPO2)
        self._r(_INT_STATUS1)  # clears power-ready

    def clear(self):
        """Empty the FIFO (pointers and overflow counter to zero)."""
        self._w(_FIFO_WR_PTR, 0)
        self._w(_OVF_COUNTER, 0)
        self._w(_FIFO_RD_PTR, 0)

    def shutdown(self):
        self._w(_MODE_CONFIG, _MODE_SHDN)

    def read_into(self, red, ir, off=0):
        """Drain the FIFO into arrays ``red``/``ir`` from index ``off``; return how many samples were read.

        ``self.last_lost`` is then the number of samples the sensor lost (FIFO overflow) since the previous read.
        Raises OSError when the bus fails (the caller counts it as a sensor failure).
        """
        i2c = self.i2c
        i2c.readfrom_mem_into(self.addr, _FIFO_WR_PTR, self._ptr)  # WR_PTR, OVF_COUNTER, RD_PTR
        wr = self._ptr[0] & 0x1F
        ovf = self._ptr[1] & 0x1F
        rd = self._ptr[2] & 0x1F
        n = (wr - rd) & 0x1F
        self.last_lost = ovf
        if ovf:
            n = _FIFO_DEPTH  # full: WR == RD
            self.overflows += 1
            self.lost += ovf
        room = len(red) - off
        if n > room:
            n = room
        if n == 0:
            return 0
        buf = self._mv[: n * 6]
        i2c.readfrom_mem_into(self.addr, _FIFO_DATA, buf)
        f = self._fifo
        j = 0
        for k in range(off, off + n):
            red[k] = ((f[j] << 16) | (f[j + 1] << 8) | f[j + 2]) & 0x3FFFF
            ir[k] = ((f[j + 3] << 16) | (f[j + 4] << 8) | f[j + 5]) & 0x3FFFF
            j += 6
        return n
