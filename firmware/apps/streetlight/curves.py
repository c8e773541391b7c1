"""Dimming curves and fades, in integers.

Levels are per-mille of the control range (0 = off, 1000 = full): what programs, overrides and commands
speak. A curve maps a level to the driver's PWM duty (``duty_u16``, 0..65535):

* ``CURVE_LOG``: the DALI logarithmic curve of IEC 62386-102, arc power level n = 1..254 giving
  10^((n-1)/(253/3) - 1) % of full light (0.1 % .. 100 %); the control range 1..1000 spans n = 1..254.
* ``CURVE_LINEAR``: duty proportional to the level.

A minimum output (per-mille of full output, e.g. the driver's lowest stable level) applies to every
level above 0. :class:`Fader` ramps between levels over a fixed fade time, like DALI's fade time.
"""

from array import array

try:
    from micropython import const
except ImportError:  # CPython (unit tests)

    def const(x):  # type: ignore[misc,unused-ignore]
        return x


try:
    from time import ticks_diff
except ImportError:  # CPython (unit tests)

    def ticks_diff(a, b):  # type: ignore[misc,unused-ignore]
        return a - b


CURVE_LOG = const(0)
CURVE_LINEAR = const(1)
CURVE_NAMES = ("log", "linear")
FULL = const(1000)
DUTY_MAX = const(65535)


def arc_to_percent(n):
    """Light output (% of full) of DALI arc power level ``n`` (IEC 62386-102); 0 for 0 (off)."""
    if n <= 0:
        return 0.0
    return 10 ** ((n - 1) / (253 / 3) - 1)


def percent_to_arc(percent):
    """The DALI arc power level (1..254, 0 = off) whose output is closest to ``percent`` of full."""
    if percent <= 0:
        return 0
    import math

    n = 1 + (math.log10(percent) + 1) * 253 / 3
    return max(1, min(254, int(n + 0.5)))


def _log_table():
    # duty_u16 of each arc level 0..254, plus a copy of 254 so interpolation can read index n+1
    t = array("H", [0] * 256)
    for n in range(1, 255):
        t[n] = int(arc_to_percent(n) * DUTY_MAX / 100 + 0.5)
    t[255] = t[254]
    return t


_LOG = _log_table()


def duty(level, curve=CURVE_LOG, min_out=0):
    """PWM ``duty_u16`` for control ``level`` (per-mille) on ``curve`` with minimum output ``min_out`` (‰)."""
    if level <= 0:
        return 0
    if level >= FULL:
        return DUTY_MAX
    if curve == CURVE_LOG:
        # arc level 1 + (level-1)*253/999 in 1/256 steps, interpolated in the table
        n = 256 + (level - 1) * 64768 // 999
        i = n >> 8
        lo = _LOG[i]
        d = lo + (((_LOG[i + 1] - lo) * (n & 255)) >> 8)
    else:
        d = level * DUTY_MAX // FULL
    floor = min_out * DUTY_MAX // FULL
    return d if d > floor else floor


class Fader:
    """A level that moves linearly to a target over ``fade_ms`` (the time of any change, as DALI's fade time).

    Time is in ``ticks_ms`` units; :meth:`level` is cheap and allocation-free for the control loop.
    """

    def __init__(self, fade_ms=2000, level=0):
        self.fade_ms = fade_ms
        self.target = level
        self._from = level
        self._t0 = 0
        self._moving = False

    def go(self, target, now):
        """Start fading to ``target`` from where the level is ``now``; no-op if already heading there."""
        if target == self.target:
            return
        self._from = self.level(now)
        self.target = target
        self._t0 = now
        self._moving = self.fade_ms > 0 and self._from != target

    def jump(self, target):
        """Set the level at once (no fade)."""
        self.target = self._from = target
        self._moving = False

    def moving(self):
        return self._moving

    def level(self, now):
        if not self._moving:
            return self.target
        dt = ticks_diff(now, self._t0)
        if dt >= self.fade_ms:
            self._moving = False
            return self.target
        if dt <= 0:
            return self._from
        return self._from + (self.target - self._from) * dt // self.fade_ms
