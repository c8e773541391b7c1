# mypy: ignore-errors
# The `machine` module of the emulated board (MicroPython code, runs in the board's VM). It follows the ESP32
# port's API and constants; the hardware behind it is the board's peripheral models (js/devices.mjs), reached
# through the `_hw` JS module. Callbacks (Pin IRQ, UART receive, Timer) are dispatched by _on_event.
import json

import _hw

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_PINS = json.loads(_hw.pins_json)
_freq = 160_000_000
_PIN_IRQ = {}  # pin number -> (Pin, handler)
_UARTS = {}  # uart id -> UART
_TIMERS = {}  # key -> (Timer, callback)


def _pin_id(p):
    return p._id if isinstance(p, Pin) else int(p)


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    PULL_HOLD = 4
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        self._id = _pin_id(id)
        self._mode = None
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if mode != -1 and mode is not None:
            self._mode = mode
            _hw.pin_mode(self._id, "out" if mode in (Pin.OUT, Pin.OPEN_DRAIN) else "in")
        if value is not None:
            _hw.pin_write(self._id, 1 if value else 0)

    def value(self, v=None):
        if v is None:
            return _hw.pin_read(self._id)
        _hw.pin_write(self._id, 1 if v else 0)
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        _hw.pin_write(self._id, 1)

    def off(self):
        _hw.pin_write(self._id, 0)

    def mode(self, m=None):
        if m is None:
            return self._mode
        self.init(m)
        return None

    def pull(self, p=None):
        return None

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING, *, wake=None, hard=False):
        if handler is None:
            _PIN_IRQ.pop(self._id, None)
            _hw.pin_irq(self._id, 0)
            return None
        _PIN_IRQ[self._id] = (self, handler)
        js = (2 if trigger & Pin.IRQ_RISING else 0) | (1 if trigger & Pin.IRQ_FALLING else 0)
        _hw.pin_irq(self._id, js)
        return None

    def __repr__(self):
        return f"Pin({self._id})"


class Signal:
    def __init__(self, pin, *args, invert=False, **kw):
        self._pin = pin if isinstance(pin, Pin) else Pin(pin, *args, **kw)
        self._inv = invert

    def value(self, v=None):
        if v is None:
            return self._pin.value() ^ self._inv
        self._pin.value((1 if v else 0) ^ self._inv)
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class PWM:
    def __init__(self, dest, *, freq=None, duty=None, duty_u16=None, duty_ns=None, invert=False):
        self._pin = _pin_id(dest)
        self._freq = 5000
        self._duty = 0
        self.init(freq=freq, duty=duty, duty_u16=duty_u16, duty_ns=duty_ns)

    def init(self, *, freq=None, duty=None, duty_u16=None, duty_ns=None, invert=False):
        if freq is not None:
            self._freq = int(freq)
        if duty is not None:
            self._duty = int(duty) * 65535 // 1023
        if duty_u16 is not None:
            self._duty = int(duty_u16)
        if duty_ns is not None:
            self._duty = int(duty_ns * self._freq * 65535 // 1_000_000_000)
        self._duty = max(0, min(65535, self._duty))
        _hw.pwm_set(self._pin, self._freq, self._duty)

    def freq(self, f=None):
        if f is None:
            return self._freq
        self.init(freq=f)
        return None

    def duty_u16(self, d=None):
        if d is None:
            return self._duty
        self.init(duty_u16=d)
        return None

    def duty(self, d=None):
        if d is None:
            return self._duty * 1023 // 65535
        self.init(duty=d)
        return None

    def duty_ns(self, d=None):
        if d is None:
            return self._duty * 1_000_000_000 // (65535 * self._freq)
        self.init(duty_ns=d)
        return None

    def deinit(self):
        _hw.pwm_deinit(self._pin)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12
    _FULL_SCALE_UV = (1_100_000, 1_500_000, 2_200_000, 3_300_000)

    def __init__(self, pin, *, atten=ATTN_0DB):
        self._pin = _pin_id(pin)
        self._atten = atten

    def init(self, *, atten=None):
        if atten is not None:
            self._atten = atten

    def atten(self, a):
        self._atten = a

    def width(self, w):
        pass

    def read_uv(self):
        return min(_hw.adc_read_uv(self._pin), self._FULL_SCALE_UV[self._atten])

    def read_u16(self):
        return self.read_uv() * 65535 // self._FULL_SCALE_UV[self._atten]

    def read(self):
        return self.read_u16() >> 4


class I2C:
    def __init__(self, id=0, *, scl=None, sda=None, freq=400_000, timeout=50_000):
        self._bus = int(id)
        self._freq = freq

    def init(self, *a, **kw):
        pass

    def deinit(self):
        pass

    def scan(self):
        return json.loads(_hw.i2c_scan(self._bus))

    def _xfer(self, addr, wbuf, nread):
        r = _hw.i2c_xfer(self._bus, addr, bytes(wbuf) if wbuf else b"", nread)
        if r is None:
            raise OSError(19)  # ENODEV: no ACK from the address, as the ESP32 port reports it
        return bytes(r)

    def writeto(self, addr, buf, stop=True):
        self._xfer(addr, buf, 0)
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        data = b"".join(bytes(v) for v in vector)
        self._xfer(addr, data, 0)
        return len(data)

    def readfrom(self, addr, nbytes, stop=True):
        return self._xfer(addr, b"", nbytes)

    def readfrom_into(self, addr, buf, stop=True):
        data = self._xfer(addr, b"", len(buf))
        buf[:] = data

    def _mem(self, memaddr, addrsize):
        n = addrsize // 8
        return bytes((memaddr >> (8 * (n - 1 - i))) & 0xFF for i in range(n))

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        return self._xfer(addr, self._mem(memaddr, addrsize), nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        buf[:] = self._xfer(addr, self._mem(memaddr, addrsize), len(buf))

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        self._xfer(addr, self._mem(memaddr, addrsize) + bytes(buf), 0)


class SoftI2C(I2C):
    def __init__(self, scl, sda, *, freq=400_000, timeout=50_000):
        wired = _pin_id(scl) == _PINS.get("I2C_SCL") and _pin_id(sda) == _PINS.get("I2C_SDA")
        super().__init__(_PINS.get("I2C_ID", 0) if wired else -1, freq=freq)


class UART:
    INV_TX = 1
    INV_RX = 2
    RTS = 1
    CTS = 2
    IRQ_RXIDLE = 1
    IRQ_BREAK = 2

    def __init__(self, id, baudrate=115200, **kw):
        self._id = int(id)
        self._buf = bytearray()
        self._rx_flag = None
        self._irq = None
        self.init(baudrate, **kw)
        try:
            import asyncio

            self._rx_flag = asyncio.ThreadSafeFlag()
        except (ImportError, AttributeError):
            self._rx_flag = None
        _UARTS[self._id] = self
        _hw.uart_open(self._id)

    def init(self, baudrate=115200, bits=8, parity=None, stop=1, **kw):
        self._baud = baudrate

    def deinit(self):
        _UARTS.pop(self._id, None)

    def _feed(self, data):
        self._buf.extend(data)
        if self._rx_flag is not None:
            self._rx_flag.set()
        if self._irq is not None:
            self._irq(self)

    def any(self):
        return len(self._buf)

    def read(self, n=None):
        if not self._buf:
            return None
        n = len(self._buf) if n is None else min(n, len(self._buf))
        data = bytes(self._buf[:n])
        self._buf = self._buf[n:]
        return data

    def readinto(self, buf, nbytes=None):
        n = len(buf) if nbytes is None else nbytes
        data = self.read(n)
        if not data:
            return None
        buf[: len(data)] = data
        return len(data)

    def readline(self):
        if not self._buf:
            return None
        i = self._buf.find(b"\n")
        return self.read(len(self._buf) if i < 0 else i + 1)

    def write(self, buf):
        return _hw.uart_write(self._id, bytes(buf))

    def flush(self):
        pass

    def txdone(self):
        return True

    def sendbreak(self):
        pass

    def irq(self, handler=None, trigger=IRQ_RXIDLE, hard=False):
        self._irq = handler


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1
    _next = 0

    def __init__(self, id=-1, **kw):
        Timer._next += 1
        self._key = Timer._next
        if kw:
            self.init(**kw)

    def init(self, *, mode=PERIODIC, period=-1, freq=-1, callback=None):
        self.deinit()
        ms = period if period is not None and period > 0 else (1000 / freq if freq and freq > 0 else 1000)
        _TIMERS[self._key] = (self, callback)
        _hw.timer_start(ms, mode == Timer.PERIODIC, self._key)

    def deinit(self):
        if _TIMERS.pop(self._key, None) is not None:
            _hw.timer_stop(self._key)


class WDT:
    def __init__(self, id=0, timeout=5000):
        _hw.wdt_start(timeout)

    def feed(self):
        _hw.wdt_feed()


class RTC:
    def __init__(self, id=0):
        pass

    def init(self, datetime):
        self.datetime(datetime)

    def datetime(self, dt=None):
        import time

        if dt is None:
            t = time.localtime()
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        secs = time.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], 0, 0))
        current = time.time() - int(_hw.get_rtc_offset()) // 1000
        _hw.set_rtc_offset(str((secs - current) * 1000))
        return None

    def memory(self, data=None):
        return b""


def _on_event(kind, a, b):
    if kind == "pin":
        entry = _PIN_IRQ.get(a)
        if entry:
            entry[1](entry[0])
    elif kind == "uart":
        u = _UARTS.get(a)
        if u is not None:
            u._feed(bytes(b))
    elif kind == "timer":
        entry = _TIMERS.get(a)
        if entry:
            t, cb = entry
            if cb:
                cb(t)


_hw.set_callback(_on_event)


def unique_id():
    return bytes(_hw.unique_id)


def reset_cause():
    return _hw.reset_cause


def wake_reason():
    return 0


def _halt():
    import time

    while True:
        time.sleep_ms(1000)


def reset():
    _hw.reset()
    _halt()


def soft_reset():
    raise SystemExit


def deepsleep(time_ms=0):
    _hw.deepsleep(time_ms)
    _halt()


def lightsleep(time_ms=0):
    import time

    time.sleep_ms(time_ms)


def idle():
    pass


def freq(hz=None):
    global _freq
    if hz is None:
        return _freq
    _freq = hz
    return None


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def time_pulse_us(pin, pulse_level, timeout_us=1_000_000):
    return -2
