"""Safe mode of a medical node (``/lib/safe/medical.py``), started by the boot manager after repeated failed
boots of the app.

The monitor cannot be trusted to measure, so it says so the simplest way there is: a technical alarm signal
of medium priority ("alarm system failure", IEC 60601-1-8 asks for at least 120 s), the status LED flashing
at 0.5 Hz and three buzzer pulses every 8 s for the first 10 minutes, then one reminder burst a minute while
the LED keeps flashing. While the SpO2 probe is on a finger the LED stays lit between flashes, so a caregiver
sees the probe is still read (no measurement is claimed).

It depends on nothing but ``machine`` and the pin map (no app, no driver, no library), and a
``machine.Timer`` drives the signals, so ``run()`` returns at once and the REPL stays free for the flashing
tool to deploy a fixed app.
"""

import board  # type: ignore[import-not-found]  # /lib/board.py, the pin map deployed per board
import machine

_TICK_MS = 50
_FULL_AUDIO_MS = 600_000  # full audio signal for 10 min (>= 120 s), then a reminder burst each minute
_REMINDER_MS = 60_000
_PULSES = (0, 250, 500)  # medium priority: 3 pulses of 150 ms every 8 s
_BURST_MS = 8_000
_TONE_HZ = 784
_PROBE_ON_IR = 8192  # raw IR counts above which something is on the probe (18-bit ADC)

_state = {"t": 0, "led": None, "buz": None, "i2c": None, "probe": False, "timer": None, "hz": -1}  # type: dict


def _probe_on():
    # the MAX30102's newest IR sample, read with plain register access (sensor left configured by the app,
    # or configured here in SpO2 mode at 100 Hz)
    i2c = _state["i2c"]
    if i2c is None:
        return False
    try:
        wr = i2c.readfrom_mem(board.ADDR_MAX30102, 0x04, 1)[0]
        i2c.writeto_mem(board.ADDR_MAX30102, 0x06, bytes(((wr - 1) & 0x1F,)))
        s = i2c.readfrom_mem(board.ADDR_MAX30102, 0x07, 6)
        return (((s[3] << 16) | (s[4] << 8) | s[5]) & 0x3FFFF) > _PROBE_ON_IR
    except OSError:
        return False


def signals(t_ms, probe_on):
    """(LED on, buzzer Hz) at ``t_ms`` since safe mode started."""
    flash = t_ms % 2000 < 1000
    led = flash or probe_on
    if t_ms >= _FULL_AUDIO_MS and t_ms % _REMINDER_MS >= _BURST_MS:
        return led, 0
    x = t_ms % _BURST_MS
    for s in _PULSES:
        if s <= x < s + 150:
            return led, _TONE_HZ
    return led, 0


def _tick(_timer=None):
    t = _state["t"] = _state["t"] + _TICK_MS
    if t % 1000 == 0:
        _state["probe"] = _probe_on()
    led, hz = signals(t, _state["probe"])
    _state["led"].value(1 if led else 0)
    if hz != _state["hz"]:
        _state["hz"] = hz
        _state["buz"].duty_u16(32768 if hz else 0)


def run():
    """Start the technical alarm signal and return (the REPL stays free)."""
    _state["led"] = machine.Pin(board.PIN_STATUS_LED, machine.Pin.OUT, value=1)
    _state["buz"] = machine.PWM(machine.Pin(board.PIN_BUZZER), freq=_TONE_HZ, duty_u16=0)
    try:
        i2c = machine.I2C(board.I2C_ID, scl=machine.Pin(board.I2C_SCL), sda=machine.Pin(board.I2C_SDA))
        i2c.writeto_mem(board.ADDR_MAX30102, 0x0A, bytes((0x27,)))  # 4096 nA, 100 Hz, 18-bit
        i2c.writeto_mem(board.ADDR_MAX30102, 0x0C, bytes((0x24, 0x24)))  # LED currents 7.2 mA
        i2c.writeto_mem(board.ADDR_MAX30102, 0x08, bytes((0x1F,)))  # FIFO rollover
        i2c.writeto_mem(board.ADDR_MAX30102, 0x09, bytes((0x03,)))  # SpO2 mode
        _state["i2c"] = i2c
    except OSError:
        pass  # no sensor: the alarm signal does not need it
    t = machine.Timer(-1)
    t.init(mode=machine.Timer.PERIODIC, period=_TICK_MS, callback=_tick)
    _state["timer"] = t
    print("medical safe mode: technical alarm (alarm system failure) sounding; deploy a fixed app")
