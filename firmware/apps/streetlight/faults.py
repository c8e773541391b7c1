"""Fault detection for one light point: each fault is raised once with its code and cleared once it clears.

Every rule looks at one sample (what the controller commands, what the meter and the light sensor read) and
says *true*, *false* or *unknown* (cannot be judged now, e.g. lamp failure while the lamp is commanded off).
A fault is raised after its condition has been true for ``delay_s`` and cleared after it has been false for
``clear_s``; *unknown* keeps the current state, so a failed lamp is not "cleared" at dawn.

Codes are the streetlight event codes of the wire protocol (``cewire.codes``, docs/protocol.md):

=====  ==================  ========================================================================
code   name                condition
=====  ==================  ========================================================================
1      lamp_failure        lamp commanded >= 5 %, settled, power < ``lamp_fail_pct`` % of expected
2      day_burner          lamp draws > ``standby_w`` while commanded off, or while the sensor reads
                           daylight (> ``day_lux``) and the clock says day (no manual/maintenance override)
3      cycling             ``cycling_count`` drops to dark within ``cycling_window_s`` while commanded on
4      over_voltage        supply > ``v_over`` while the relay is on
5      under_voltage       supply < ``v_under`` while the relay is on
6      over_current        current > ``i_over``
7      under_current       current < ``i_under_pct`` % of expected while the lamp still gives light
8      driver_fault        power > ``driver_pct`` % of expected + ``standby_w`` (the driver does not dim)
9      light_sensor_fail.  the light sensor gave no valid reading (I2C error) -- the clock takes over
14     meter_failure       the energy meter gave no valid reading
=====  ==================  ========================================================================

Expected power is ``rated_w`` x duty (LED drivers draw about in proportion to their PWM duty).

:class:`Energy` keeps the luminaire's energy, burn hours and switch count, integrated from the same samples and
kept on flash. Integration is in integers: power (mW) x time (ms) = microjoules, carried into whole
milliwatt-hours, so a year of samples neither loses precision (single-precision floats would) nor allocates.
Samples are combined with the trapezoid rule. :meth:`Energy.save` writes atomically (temporary file + rename) so
a power cut leaves the previous or the new counters, never a broken file; at most one save interval is lost.
"""

from array import array

from node.config import ConfigError, read_json, save_json

try:
    from micropython import const
except ImportError:  # CPython (unit tests)

    def const(x):  # type: ignore[misc,unused-ignore]
        return x


from cewire.codes import (
    CYCLING,
    DAY_BURNER,
    DRIVER_FAULT,
    LAMP_FAILURE,
    LIGHT_SENSOR_FAILURE,
    METER_FAILURE,
    OVER_CURRENT,
    OVER_VOLTAGE,
    UNDER_CURRENT,
    UNDER_VOLTAGE,
)

CODES = (LAMP_FAILURE, DAY_BURNER, CYCLING, OVER_VOLTAGE, UNDER_VOLTAGE, OVER_CURRENT, UNDER_CURRENT,
         DRIVER_FAULT, LIGHT_SENSOR_FAILURE, METER_FAILURE)
_N = const(15)  # codes are small: index arrays by code
_UNKNOWN = const(-1)
_CHECK_DUTY = const(3277)  # 5 % of duty_u16: below this, power readings are too small to judge
_UJ_PER_MWH = const(3600000)
ENERGY_PATH = "/streetlight_energy.json"


class Sample:
    """One observation, filled in place by the app each control period (no allocation per sample)."""

    def __init__(self):
        self.now_s = 0
        self.duty = 0  # commanded duty_u16 now
        self.settled = False  # the fade has ended and the driver has had time to follow
        self.relay = False  # driver mains relay closed
        self.meter_ok = False
        self.power_mw = 0
        self.voltage_mv = 0
        self.current_ma = 0
        self.sensor_ok = False
        self.lux = 0
        self.clock_day = False  # the astronomical clock says it is day
        self.forced = False  # a manual or maintenance override is active


class Faults:
    # the thresholds are the app settings "faults.<name>"; their defaults here are those of settings.SCHEMA
    # (tests/test_streetlight_checks.py holds the two equal)
    def __init__(self, rated_w=40.0, standby_w=2.0, lamp_fail_pct=50, driver_pct=150, v_over=26.4, v_under=21.6,
                 i_over=2.5, i_under_pct=70, day_lux=200, cycling_count=3, cycling_window_s=900, delay_s=30,
                 clear_s=30, sensor_fail_s=60):
        self.rated_mw = int(rated_w * 1000)
        self.standby_mw = int(standby_w * 1000)
        self.lamp_fail_pct = lamp_fail_pct
        self.driver_pct = driver_pct
        self.v_over_mv = int(v_over * 1000)
        self.v_under_mv = int(v_under * 1000)
        self.i_over_ma = int(i_over * 1000)
        self.i_under_pct = i_under_pct
        self.day_lux = day_lux
        self.cycling_window_s = cycling_window_s
        self.delay_s = delay_s
        self.clear_s = clear_s
        self.sensor_fail_s = sensor_fail_s
        self.active = bytearray(_N)
        self._since = array("i", [_UNKNOWN] * _N)  # when the condition started to disagree with the state
        self._drops = array("i", [-(1 << 30)] * max(1, cycling_count))
        self._drop_i = 0
        self._lit = False
        self.events = []  # (code, raised) pairs; the app drains it after each update

    def _rule(self, code, cond, now_s, delay):
        if cond == _UNKNOWN or cond == self.active[code]:
            self._since[code] = _UNKNOWN
            return
        if self._since[code] == _UNKNOWN:
            self._since[code] = now_s
        if now_s - self._since[code] >= (delay if cond else self.clear_s):
            self.active[code] = cond
            self._since[code] = _UNKNOWN
            self.events.append((code, bool(cond)))

    def update(self, s):
        """Judge sample ``s``; raised/cleared faults are appended to :attr:`events`."""
        now = s.now_s
        delay = self.delay_s
        on = s.relay and s.duty > 0
        judge = on and s.settled and s.duty >= _CHECK_DUTY and s.meter_ok
        exp = self.rated_mw * (s.duty >> 6) // 1023  # expected power: rated x duty
        p = s.power_mw
        lit = s.meter_ok and p > self.standby_mw

        # cycling: count lit -> dark drops while commanded on
        cyc = _UNKNOWN
        if on and s.meter_ok:
            if self._lit and not lit:
                self._drops[self._drop_i] = now
                self._drop_i = (self._drop_i + 1) % len(self._drops)
            oldest = self._drops[self._drop_i]
            newest = self._drops[(self._drop_i - 1) % len(self._drops)]
            if now - oldest <= self.cycling_window_s:
                cyc = 1
            elif now - newest > self.cycling_window_s:
                cyc = 0
        if s.meter_ok:
            self._lit = lit
        self._rule(CYCLING, cyc, now, 0)

        failing = p * 100 < exp * self.lamp_fail_pct
        cond = _UNKNOWN
        if judge and not self.active[CYCLING]:
            cond = 1 if failing else 0
        self._rule(LAMP_FAILURE, cond, now, delay)

        cond = _UNKNOWN
        if judge:
            cond = 1 if p * 100 > exp * self.driver_pct + self.standby_mw * 100 else 0
        self._rule(DRIVER_FAULT, cond, now, delay)

        cond = _UNKNOWN
        if s.meter_ok and not s.forced:
            daylight = s.sensor_ok and s.lux > self.day_lux and s.clock_day
            cond = 1 if lit and (not on or daylight) else 0
        self._rule(DAY_BURNER, cond, now, delay)

        over = under = _UNKNOWN
        if s.relay and s.meter_ok:
            over = 1 if s.voltage_mv > self.v_over_mv else 0
            under = 1 if s.voltage_mv < self.v_under_mv else 0
        self._rule(OVER_VOLTAGE, over, now, delay)
        self._rule(UNDER_VOLTAGE, under, now, delay)

        cond = _UNKNOWN
        if s.meter_ok:
            cond = 1 if s.current_ma > self.i_over_ma else 0
        self._rule(OVER_CURRENT, cond, now, delay)

        cond = _UNKNOWN
        if judge and s.voltage_mv > 0:
            exp_ma = exp * 1000 // s.voltage_mv
            if failing:
                cond = 0 if not self.active[UNDER_CURRENT] else _UNKNOWN  # that is a lamp failure
            else:
                cond = 1 if s.current_ma * 100 < exp_ma * self.i_under_pct else 0
        self._rule(UNDER_CURRENT, cond, now, delay)

        self._rule(LIGHT_SENSOR_FAILURE, 0 if s.sensor_ok else 1, now, self.sensor_fail_s)
        self._rule(METER_FAILURE, 0 if s.meter_ok else 1, now, delay)

    def codes(self):
        """Active fault codes, lowest first."""
        return [c for c in CODES if self.active[c]]


class Energy:
    """Counters of one luminaire; burn time and switch-ons follow the *commanded* state (a deeply dimmed LED
    draws little more than its driver's idle power, so power alone cannot tell lit from dark)."""

    def __init__(self):
        self.mwh = 0  # energy in milliwatt-hours
        self.burn_s = 0  # seconds the lamp burnt
        self.switches = 0  # dark -> lit transitions
        self._uj = 0  # microjoules not yet carried into mwh
        self._burn_ms = 0
        self._last_mw = -1  # previous sample's power, -1 before the first
        self._lit = False

    def add(self, power_mw, dt_ms, lit):
        """Account ``dt_ms`` since the previous sample, which read ``power_mw`` now with the lamp
        commanded on (``lit``) or off."""
        if self._last_mw < 0 or dt_ms <= 0 or dt_ms > 600000:
            self._last_mw = power_mw  # first sample, or a gap we cannot bridge honestly
            self._lit = lit
            return
        # (p0 + p1) / 2 x dt in uJ, without forming the product: 60 W for 60 s is 3.6e9 uJ, past MicroPython's
        # small ints (2^30), and a big int allocates; the whole seconds go to mWh first (1 mWh = 7200 x 500 uJ)
        mw2 = self._last_mw + power_mw
        hq = mw2 * (dt_ms // 1000)  # in units of 500 uJ
        n = hq // 7200
        self.mwh += n
        self._uj += (hq - n * 7200) * 500 + mw2 * (dt_ms % 1000) // 2
        if self._uj >= _UJ_PER_MWH:
            n = self._uj // _UJ_PER_MWH
            self.mwh += n
            self._uj -= n * _UJ_PER_MWH
        if self._lit:  # the lamp burnt since the previous sample
            self._burn_ms += dt_ms
            if self._burn_ms >= 1000:
                self.burn_s += self._burn_ms // 1000
                self._burn_ms %= 1000
        if lit and not self._lit:
            self.switches += 1
        self._lit = lit
        self._last_mw = power_mw

    def restore(self, data):
        """Take counters from what :meth:`save` wrote; bad data is ignored (counters stay as they are)."""
        try:
            mwh, uj, burn, sw = int(data["mwh"]), int(data["uj"]), int(data["burn_s"]), int(data["switches"])
        except (KeyError, TypeError, ValueError):
            return False
        if min(mwh, uj, burn, sw) < 0:
            return False
        self.mwh, self._uj, self.burn_s, self.switches = mwh, uj, burn, sw
        return True

    def save(self, path=ENERGY_PATH):
        save_json(path, {"mwh": self.mwh, "uj": self._uj, "burn_s": self.burn_s, "switches": self.switches})

    def load(self, path=ENERGY_PATH):
        """Restore from ``path`` (or its temporary twin after a cut during a save); False if not valid."""
        try:
            data = read_json(path)
        except ConfigError:
            return False
        return data is not None and self.restore(data)
