"""Dimming curves and fades, in integers.

Levels are per-mille of the control range (0 = off, 1000 = full): what programs, overrides and commands
speak. A curve maps a level to the driver's PWM duty (``duty_u16``, 0..65535):

* ``CURVE_LOG``: the DALI logarithmic curve of IEC 62386-102, arc power level n = 1..254 giving
  10^((n-1)/(253/3) - 1) % of full light (0.1 % .. 100 %); the control range 1..1000 spans n = 1..254
  (``_LOG``: the duty of each arc level).
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
_FULL = const(1000)
_DUTY_MAX = const(65535)


# duty_u16 of each DALI arc power level n = 0..254 (n >= 1 gives 10^((n-1)/(253/3) - 1) % of full light), plus
# a copy of 254 so interpolation can read index n+1; built at import (no function kept for it)
_LOG = array("H", bytes(512))
for _n in range(1, 255):
    _LOG[_n] = int(10 ** ((_n - 1) / (253 / 3) - 1) * _DUTY_MAX / 100 + 0.5)
_LOG[255] = _LOG[254]
del _n


def duty(level, curve=CURVE_LOG, min_out=0):
    """PWM ``duty_u16`` for control ``level`` (per-mille) on ``curve`` with minimum output ``min_out`` (‰)."""
    if level <= 0:
        return 0
    if level >= _FULL:
        return _DUTY_MAX
    if curve == CURVE_LOG:
        # arc level 1 + (level-1)*253/999 in 1/256 steps, interpolated in the table
        n = 256 + (level - 1) * 64768 // 999
        i = n >> 8
        lo = _LOG[i]
        d = lo + (((_LOG[i + 1] - lo) * (n & 255)) >> 8)
    else:
        d = level * _DUTY_MAX // _FULL
    floor = min_out * _DUTY_MAX // _FULL
    return d if d > floor else floor


class Fader:
    """A level that moves linearly to a target over ``fade_ms`` (the time of any change, as DALI's fade time).

    Time is in ``ticks_ms`` units; :meth:`level` is cheap and allocation-free for the control loop.
    ``moving``: a fade runs (the control loop steps faster meanwhile).
    """

    def __init__(self, fade_ms=2000, level=0):
        self.fade_ms = fade_ms
        self.target = level
        self._from = level
        self._t0 = 0
        self.moving = False

    def go(self, target, now):
        """Start fading to ``target`` from where the level is ``now``; no-op if already heading there."""
        if target == self.target:
            return
        self._from = self.level(now)
        self.target = target
        self._t0 = now
        self.moving = self.fade_ms > 0 and self._from != target

    def level(self, now):
        """The level at ``now``; ends the fade once its time is up."""
        if not self.moving:
            return self.target
        dt = ticks_diff(now, self._t0)
        if dt >= self.fade_ms:
            self.moving = False
            return self.target
        if dt <= 0:
            return self._from
        return self._from + (self.target - self._from) * dt // self.fade_ms
