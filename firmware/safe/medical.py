"""Safe mode of a medical node (``/lib/safe/medical.py``), started by the boot manager after repeated failed
boots of the app.

The monitor cannot be trusted to measure, so it says so the simplest way there is: a technical alarm signal
of medium priority ("alarm system failure", IEC 60601-1-8 asks for at least 120 s), the status LED flashing
at 0.5 Hz and three buzzer pulses every 8 s for the first 10 minutes, then one reminder burst a minute while
the LED keeps flashing. It measures nothing: a monitor whose app does not boot must not show numbers.

It depends on nothing but ``machine`` and the pin map (no app, no driver, no library, no sensor), and a
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

_state = {"t": 0, "led": None, "buz": None, "timer": None, "hz": -1}  # type: dict


def signals(t_ms):
    """(LED on, buzzer Hz) at ``t_ms`` since safe mode started."""
    led = t_ms % 2000 < 1000
    if t_ms >= _FULL_AUDIO_MS and t_ms % _REMINDER_MS >= _BURST_MS:
        return led, 0
    x = t_ms % _BURST_MS
    for s in _PULSES:
        if s <= x < s + 150:
            return led, _TONE_HZ
    return led, 0


def _tick(_timer=None):
    t = _state["t"] = _state["t"] + _TICK_MS
    led, hz = signals(t)
    _state["led"].value(1 if led else 0)
    if hz != _state["hz"]:
        _state["hz"] = hz
        _state["buz"].duty_u16(32768 if hz else 0)


def run():
    """Start the technical alarm signal and return (the REPL stays free)."""
    _state["led"] = machine.Pin(board.PIN_STATUS_LED, machine.Pin.OUT, value=1)
    _state["buz"] = machine.PWM(machine.Pin(board.PIN_BUZZER), freq=_TONE_HZ, duty_u16=0)
    t = machine.Timer(-1)
    t.init(mode=machine.Timer.PERIODIC, period=_TICK_MS, callback=_tick)
    _state["timer"] = t
    print("medical safe mode: technical alarm (alarm system failure) sounding; deploy a fixed app")
