"""Dimming programs, the calendar that picks one per night, the astronomical on/off clock, local time, and
the light sensor's switch with the clock/sensor policy: when the street is dark, and how bright.

A *night* is named by the date of its evening and runs from local noon to the next local noon; its
*timeline* is minutes since that noon (0..1440). Everything is resolved once per night
(:meth:`Schedule.night`: a few small tuples), so the control loop only compares integers.

Program steps are ``[when, level_percent]``; ``when`` is ``"HH:MM"`` (local wall time; 12:00-23:59 is the
evening, 00:00-11:59 the next morning) or ``"sunset"``, ``"sunrise"``, ``"dusk"``, ``"dawn"`` with an
optional offset in minutes (``"sunset+15"``, ``"dawn-30"``). Evening events are those of the evening's date,
morning events those of the next date. Before the first step of a night the first step's level applies,
after the last the last's. Steps are sorted per night, so ``"sunset"`` and ``"18:00"`` may swap by season.

Calendar entries are checked in order, the first match names the night's program, else ``default``::

    {"program": "xmas", "from": "12-20", "to": "01-06"}            # date range, may wrap over New Year
    {"program": "weekend", "weekdays": [4, 5]}                       # 0 = Monday (nights of Fri, Sat)
    {"program": "festive", "holidays": true}                         # evening date is in the holiday list

Holidays are ``"YYYY-MM-DD"`` (one day) or ``"MM-DD"`` (every year).

The light sensor (:class:`LightSwitch`) and the policy that combines it with the clock (:func:`decide`):
it is *dark* once the light stays below ``on_lux`` for ``dwell_s`` seconds, and *bright* again once it stays
above ``off_lux`` (> ``on_lux``) for ``dwell_s``; in between nothing changes (hysteresis), and a car's
headlights or a passing cloud shorter than the dwell change nothing either. The first valid reading after
boot sets the state at once. A failed reading (``None``) makes the sensor invalid until a valid one.
"""

from streetlight import astro

try:
    from micropython import const
except ImportError:  # CPython (unit tests)

    def const(x):  # type: ignore[misc,unused-ignore]
        return x


AT_CLOCK = const(-1)  # step anchored to a wall-clock time; else an astro event id (astro.SUNRISE...)
_NOON = const(720)
DST_RULES = ("none", "eu", "us")
_POLICY_CLOCK = const(0)  # astronomical clock only
_POLICY_SENSOR = const(1)  # light sensor only
_POLICY_EITHER = const(2)  # on when the clock or the sensor says dark
_POLICY_BOTH = const(3)  # on only when the clock and the sensor agree it is dark
POLICY_NAMES = ("clock", "sensor", "either", "both")
_ANCHORS = {"sunrise": astro.SUNRISE, "sunset": astro.SUNSET, "dawn": astro.DAWN, "dusk": astro.DUSK}


def parse_when(text):
    """``"22:30"`` -> (AT_CLOCK, 1350); ``"sunset+15"`` -> (astro.SUNSET, 15). Raises ValueError."""
    if not isinstance(text, str):
        raise ValueError("step time must be a string like '22:30' or 'sunset+15'")
    t = text.strip()
    if t[:1].isdigit():  # "HH:MM", parsed in place (no lower-case copy, no list of parts)
        i = t.find(":")
        hh, mm = t[:i], t[i + 1:]
        if i > 0 and hh.isdigit() and mm.isdigit():
            h, m = int(hh), int(mm)
            if h < 24 and m < 60:
                return (AT_CLOCK, h * 60 + m)
        raise ValueError("bad step time %r (use 'HH:MM' or sunset/sunrise/dusk/dawn with an offset)" % text)
    t = t.lower()
    for name in _ANCHORS:
        if t.startswith(name):
            rest = t[len(name):].strip()
            off = 0
            if rest:
                if rest[0] not in "+-" or not rest[1:].strip().isdigit():
                    raise ValueError("bad offset in %r (use e.g. 'sunset+15' or 'sunrise-30')" % text)
                off = int(rest[1:])
                if off > 660:
                    raise ValueError("offset in %r is more than 11 hours" % text)
                if rest[0] == "-":
                    off = -off
            return (_ANCHORS[name], off)
    raise ValueError("bad step time %r (use 'HH:MM' or sunset/sunrise/dusk/dawn with an offset)" % text)


def parse_program(steps):
    """``[["sunset", 100], ["23:00", 60]]`` -> list of (anchor, minutes, level_permille). Raises ValueError."""
    if not isinstance(steps, list) or not steps:
        raise ValueError("a program is a non-empty list of [time, level %] steps")
    out = []
    for step in steps:
        if not isinstance(step, list) or len(step) != 2:
            raise ValueError("step %r must be [time, level %%]" % (step,))
        anchor, minutes = parse_when(step[0])
        level = step[1]
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 <= level <= 100:
            raise ValueError("level in step %r must be 0..100 %%" % (step,))
        out.append((anchor, minutes, level * 10 if isinstance(level, int) else int(level * 10 + 0.5)))
    return out


def _month_day(text):
    parts = text.split("-") if isinstance(text, str) else ()
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
        raise ValueError("date %r must be 'MM-DD'" % (text,))
    m, d = int(parts[0]), int(parts[1])
    if not (1 <= m <= 12 and 1 <= d <= 31):
        raise ValueError("date %r is not a day of the year" % text)
    return m * 100 + d


def parse_holidays(items):
    """List of ``"YYYY-MM-DD"`` / ``"MM-DD"`` -> tuple of ints yyyymmdd / mmdd."""
    if not isinstance(items, list):
        raise ValueError("holidays must be a list of 'YYYY-MM-DD' or 'MM-DD'")
    out = []
    for h in items:
        if isinstance(h, str) and len(h) == 10 and h[4] == "-" and h[:4].isdigit():
            out.append(int(h[:4]) * 10000 + _month_day(h[5:]))
        else:
            out.append(_month_day(h))
    return tuple(out)


def parse_calendar(entries, programs):
    """Calendar entries -> tuple of (program, from_mmdd, to_mmdd, weekday_mask, holidays_only)."""
    if not isinstance(entries, list):
        raise ValueError("calendar must be a list of entries")
    if not entries:
        return ()
    out = []
    for e in entries:
        if not isinstance(e, dict) or "program" not in e:
            raise ValueError("calendar entry %r needs a 'program'" % (e,))
        if e["program"] not in programs:
            raise ValueError("calendar entry names unknown program %r" % e["program"])
        unknown = [k for k in e if k not in ("program", "from", "to", "weekdays", "holidays")]
        if unknown:
            raise ValueError("calendar entry has unknown key %r" % unknown[0])
        if ("from" in e) != ("to" in e):
            raise ValueError("calendar entry needs both 'from' and 'to'")
        lo = _month_day(e["from"]) if "from" in e else 0
        hi = _month_day(e["to"]) if "to" in e else 0
        mask = 0
        for wd in e.get("weekdays", ()):
            if isinstance(wd, bool) or not isinstance(wd, int) or not 0 <= wd <= 6:
                raise ValueError("weekdays must be 0 (Monday) .. 6 (Sunday), got %r" % (wd,))
            mask |= 1 << wd
        out.append((e["program"], lo, hi, mask, bool(e.get("holidays", False))))
    return tuple(out)


def _sunday(y, m, n):
    """Day number of the n-th Sunday of month m; n = 0: the last (31-day months only: March, October).
    Day number z falls on weekday (z + 3) % 7, 0 = Monday (1970-01-01 was a Thursday): 6 is a Sunday."""
    if n:
        z = astro.days_from_civil(y, m, 1)
        return z + (3 - z) % 7 + 7 * (n - 1)
    z = astro.days_from_civil(y, m, 31)
    return z - (z + 4) % 7


def utc_offset(utc_min, base_min, dst):
    """Local offset from UTC in minutes at ``utc_min`` (minutes since 1970) for a zone at ``base_min`` with
    daylight-saving rule ``dst``: ``"eu"`` (last Sunday of March 01:00 UTC .. last Sunday of October
    01:00 UTC), ``"us"`` (second Sunday of March 02:00 local .. first Sunday of November 02:00 local).

    Minutes, not seconds: Unix seconds are beyond MicroPython's small ints (2^30), so every sum or product of
    them would allocate a big int; minutes since 1970 stay small for thousands of years.
    """
    if dst == "none":
        return base_min
    y = astro.civil_from_days(utc_min // 1440)[0]
    if dst == "eu":
        start = _sunday(y, 3, 0) * 1440 + 60
        end = _sunday(y, 10, 0) * 1440 + 60
    else:
        start = _sunday(y, 3, 2) * 1440 + 120 - base_min
        end = _sunday(y, 11, 1) * 1440 + 120 - (base_min + 60)
    return base_min + 60 if start <= utc_min < end else base_min


class Schedule:
    """Programs + calendar + astronomical clock for one place; :meth:`set` changes all but the place.

    It holds one resolved night (:meth:`night`; no object per night): ``day`` (its evening's day number),
    ``on``/``off`` (timeline minutes the clock switches on and off: on while ``on <= t < off``) and
    ``steps`` (list of (timeline minute, level permille), sorted).
    """

    def __init__(self, lat, lon, programs, calendar=(), holidays=(), on_at=(astro.SUNSET, 0),
                 off_at=(astro.SUNRISE, 0), tz_min=0, dst="none"):
        self.lat = lat
        self.lon = lon
        self.on = self.off = 0
        self.steps = []  # type: list
        self._sun = {}  # (day, event) -> UTC minutes: a program change needs no new sun computation
        self.set(programs, calendar, holidays, on_at, off_at, tz_min, dst)

    def set(self, programs, calendar, holidays, on_at, off_at, tz_min, dst):
        """New programs (name -> parsed program), calendar, holidays, clock and time zone, at the same place:
        the sun times already computed are kept (a settings change builds no new schedule)."""
        self.programs = programs
        self.calendar = calendar
        self.holidays = holidays
        self.on_at = on_at
        self.off_at = off_at
        self.tz_min = tz_min
        self.dst = dst
        self.day = None  # no night resolved yet
        self._ready = None  # day number whose night has every sun time computed (prefetch)

    def program_for(self, day):
        """Name of the program the calendar picks for the night whose evening is day number ``day``."""
        y, m, d = astro.civil_from_days(day)
        md = m * 100 + d
        holiday = md in self.holidays or y * 10000 + md in self.holidays
        wd = (day + 3) % 7  # 0 = Monday (see _sunday)
        for name, lo, hi, mask, hol in self.calendar:
            if hol and not holiday:
                continue
            if lo and not ((lo <= md <= hi) if lo <= hi else (md >= lo or md <= hi)):
                continue
            if mask and not (mask >> wd) & 1:
                continue
            return name
        return "default"

    def _event(self, anchor, minutes, day, evening):
        """Timeline minute of a step/clock anchor for the night of ``day``."""
        if anchor == AT_CLOCK:
            return minutes - _NOON if minutes >= _NOON else minutes + _NOON
        ev_day = day if evening else day + 1
        self._fetch(anchor, ev_day)
        utc = self._sun[ev_day * 4 + anchor]
        if utc < 0 and (utc == astro.ALWAYS_UP or utc == astro.ALWAYS_DOWN):
            return utc
        off = utc_offset(ev_day * 1440 + 720, self.tz_min, self.dst)  # at noon UTC of ev_day
        local = int(utc + off + 0.5)  # minutes after local midnight of ev_day
        return local - _NOON + (0 if evening else 1440) + minutes

    def prefetch(self, day):
        """Compute at most one sun time the night of ``day`` needs; True if one was computed.

        A sun time costs kilobytes of short-lived floats; called once per control step, this spreads the
        next night's astronomy over several steps instead of the one step at noon that starts the night.
        """
        if self._ready == day:
            return False
        if self._fetch(self.on_at[0], day) or self._fetch(self.off_at[0], day + 1):
            return True  # as night(): the clock switches on in the evening, off the next morning
        for anchor, _, _ in self.programs[self.program_for(day)]:
            if self._fetch(anchor, day if anchor == astro.SUNSET or anchor == astro.DUSK else day + 1):
                return True
        self._ready = day
        return False

    def _fetch(self, anchor, ev_day):
        # compute the sun time ``anchor`` of day ``ev_day`` unless known (or a clock time); True if computed
        if anchor == AT_CLOCK or ev_day * 4 + anchor in self._sun:
            return False
        for key in [k for k in self._sun if k < (ev_day - 2) * 4]:  # keep two nights
            del self._sun[key]
        self._sun[ev_day * 4 + anchor] = astro.sun_event(ev_day, self.lat, self.lon, anchor)
        return True

    def night(self, day):
        """Resolve the night whose evening is day number ``day`` (cached) into ``on``, ``off`` and ``steps``;
        returns the schedule."""
        if self.day == day:
            return self
        name = self.program_for(day)
        steps = []
        for anchor, minutes, level in self.programs[name]:
            evening = anchor == astro.SUNSET or anchor == astro.DUSK
            t = self._event(anchor, minutes, day, evening)
            if t == astro.ALWAYS_UP or t == astro.ALWAYS_DOWN:
                continue  # the anchor does not happen tonight (polar summer/winter): skip the step
            steps.append((max(0, min(1439, t)), level))
        if not steps:
            steps.append((0, self.programs[name][0][2]))
        steps.sort(key=lambda s: s[0])
        on = self._event(self.on_at[0], self.on_at[1], day, True)
        off = self._event(self.off_at[0], self.off_at[1], day, False)
        if on == astro.ALWAYS_UP or off == astro.ALWAYS_UP:
            on = off = 0  # the sun never sets that far: no darkness, the clock stays off
        elif on == astro.ALWAYS_DOWN or off == astro.ALWAYS_DOWN:
            on, off = 0, 1440  # polar night: on all night
        self.day = day
        self.on = max(0, on)
        self.off = min(1440, off)
        self.steps = steps
        return self

    def level(self, t):
        """Program level (permille) at timeline minute ``t`` of the resolved night."""
        steps = self.steps
        lvl = steps[0][1]
        for i in range(len(steps)):
            if steps[i][0] <= t:
                lvl = steps[i][1]
            else:
                break
        return lvl

    def local(self, utc_s):
        """(evening day number, timeline minute) of the night that contains UTC second ``utc_s``."""
        loc = utc_s // 60  # the only big-int operation (see utc_offset)
        loc += utc_offset(loc, self.tz_min, self.dst)
        day = loc // 1440
        minute = loc % 1440
        if minute >= _NOON:
            return day, minute - _NOON
        return day - 1, minute + _NOON


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
