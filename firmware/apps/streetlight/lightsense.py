"""Ambient-light switching with hysteresis and dwell, and the policy that combines it with the clock.

It is *dark* once the light stays below ``on_lux`` for ``dwell_s`` seconds, and *bright* again once it stays
above ``off_lux`` (> ``on_lux``) for ``dwell_s``; in between nothing changes (hysteresis), and a car's
headlights or a passing cloud shorter than the dwell change nothing either. The first valid reading after
boot sets the state at once. A failed reading (``None``) makes the sensor invalid until a valid one.
"""

try:
    from micropython import const
except ImportError:  # CPython (unit tests)

    def const(x):  # type: ignore[misc,unused-ignore]
        return x


_POLICY_CLOCK = const(0)  # astronomical clock only
_POLICY_SENSOR = const(1)  # light sensor only
_POLICY_EITHER = const(2)  # on when the clock or the sensor says dark
_POLICY_BOTH = const(3)  # on only when the clock and the sensor agree it is dark
POLICY_NAMES = ("clock", "sensor", "either", "both")


class LightSwitch:
    def __init__(self, on_lux=30, off_lux=60, dwell_s=120):
        if off_lux <= on_lux:
            raise ValueError("off_lux must be above on_lux (hysteresis)")
        self.on_lux = on_lux
        self.off_lux = off_lux
        self.dwell_s = dwell_s
        self.dark = None  # None until the first valid reading
        self.valid = False
        self.lux = -1
        self._since = None  # when the reading first crossed towards the other state

    def update(self, lux, now_s):
        """Feed a reading (lux, or None when the sensor failed) at ``now_s``; return ``dark`` (or None)."""
        if lux is None:
            self.valid = False
            self._since = None
            return self.dark
        self.valid = True
        self.lux = lux
        if self.dark is None:
            self.dark = lux < self.on_lux  # in the hysteresis band at boot: assume day
            return self.dark
        crossing = lux > self.off_lux if self.dark else lux < self.on_lux
        if not crossing:
            self._since = None
        elif self._since is None:
            self._since = now_s
        elif now_s - self._since >= self.dwell_s:
            self.dark = not self.dark
            self._since = None
        return self.dark


def decide(policy, clock_on, sensor_dark, sensor_valid):
    """Whether the lamp should be lit. An invalid sensor falls back to the clock, whatever the policy."""
    if policy == _POLICY_CLOCK or not sensor_valid or sensor_dark is None:
        return clock_on
    if policy == _POLICY_SENSOR:
        return sensor_dark
    if policy == _POLICY_EITHER:
        return clock_on or sensor_dark
    return clock_on and sensor_dark
