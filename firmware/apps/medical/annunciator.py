# Local alarm signals: status LED and piezo buzzer patterns per priority (IEC 60601-1-8 style).
# Visual: high = red flashing 2 Hz, medium = yellow flashing 0.5 Hz, low = yellow steady (duty 50 %).
# Audio: bursts of 150 ms pulses; high = 3+2 pulses twice per burst every 6 s, medium = 3 pulses every
# 8 s, low = 2 pulses every 20 s; higher priority = higher pitch.
try:
    from micropython import const
except ImportError:  # CPython (unit tests)

    def const(x):  # type: ignore[misc, no-redef]
        return x


_PULSE_MS = const(150)
# per priority (index 1..3): burst period ms, pulse start offsets ms, tone Hz
_AUDIO = (
    (1, (), 0),
    (20_000, (0, 250), 523),
    (8_000, (0, 250, 500), 784),
    (6_000, (0, 250, 500, 1000, 1250, 2000, 2250, 2500, 3000, 3250), 988),
)
_VISUAL = ((0, 0), (0, 0), (2_000, 1_000), (500, 250))  # period ms, on-time ms (0: steady on)
COLORS = ("off", "yellow", "yellow", "red")


def led_on(prio, t_ms):
    """Whether the status LED is lit at ``t_ms`` for visual priority ``prio``."""
    if not prio:
        return False
    period, on = _VISUAL[prio]
    if not period:
        return True
    return t_ms % period < on


def tone(prio, t_ms):
    """Buzzer frequency (Hz) at ``t_ms`` for audio priority ``prio``, 0 when silent."""
    if not prio:
        return 0
    period, starts, hz = _AUDIO[prio]
    x = t_ms % period
    for s in starts:
        if s <= x < s + _PULSE_MS:
            return hz
    return 0


class Annunciator:
    """Drives the LED pin and the buzzer PWM; call ``tick(t_ms, visual, audio)`` every 50 ms or faster.

    ``t_ms`` counts from when the current alarm started sounding so a burst always starts at its beginning.
    Hardware is touched only on changes.
    """

    def __init__(self, led, buzzer):
        self.led = led  # machine.Pin (or None)
        self.buzzer = buzzer  # machine.PWM (or None)
        self._led = None
        self._hz = -1
        self._prio = 0
        self._t0 = 0

    def tick(self, t_ms, visual, audio):
        if audio != self._prio:
            self._prio = audio
            self._t0 = t_ms
        on = led_on(visual, t_ms)
        hz = tone(audio, t_ms - self._t0)
        if on != self._led and self.led is not None:
            self._led = on
            self.led.value(1 if on else 0)
        if hz != self._hz and self.buzzer is not None:
            self._hz = hz
            if hz:
                self.buzzer.freq(hz)
                self.buzzer.duty_u16(32768)
            else:
                self.buzzer.duty_u16(0)
        return hz  # (no tuple: called 20 times a second)
