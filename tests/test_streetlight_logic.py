"""Pure logic of the streetlight app on CPython and on the real MicroPython VM.

The checks themselves live in tests/test_streetlight_checks.py (a MicroPython-compatible subset); every one
runs here twice: on CPython, and on MicroPython 1.29 (WebAssembly port) in one shared VM session. The
astronomical clock is held to the ``astral`` package for every day of a year at latitudes -60..+60.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from astral import Observer, sun

from cityedge.paths import FIRMWARE
from hil_tests.emulator.runner import MicroPythonSession
from tests import test_streetlight_checks as checks

APP_DIR = FIRMWARE / "apps" / "streetlight"
for p in (FIRMWARE / "apps", FIRMWARE / "lib"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from streetlight import astro  # noqa: E402  (needs the firmware paths above)

TOLERANCE_MIN = 2.0


@pytest.fixture(scope="module")
def mpy() -> Iterator[MicroPythonSession]:
    with MicroPythonSession(mounts={FIRMWARE / "lib": "/lib", APP_DIR: "/lib/streetlight"}) as session:
        session.run(Path(checks.__file__).read_text()).check()
        yield session


@pytest.mark.parametrize("name", checks.CHECKS)
def test_on_cpython(name: str) -> None:
    getattr(checks, name)()


@pytest.mark.parametrize("name", checks.CHECKS)
def test_on_micropython(mpy: MicroPythonSession, name: str) -> None:
    mpy.run(f"{name}()").check()


# --- astronomical clock against astral ------------------------------------------------------------------

_EVENTS = {astro.SUNRISE: ("rising", 90.8333), astro.SUNSET: ("setting", 90.8333),
           astro.DAWN: ("rising", 96.0), astro.DUSK: ("setting", 96.0)}


def _elevation_crossing(obs: Observer, day0: dt.datetime, around: dt.datetime, target: float,
                        rising: bool) -> float | None:
    """Minutes (from ``day0``) when astral's sun model crosses ``target`` elevation within
    ±3 h of ``around``: a direct root of the position model, used where astral's two-pass shortcut is
    itself loose (days when the sun barely dips below the threshold)."""
    t = around - dt.timedelta(hours=3)

    def f(x: dt.datetime) -> float:
        return sun.elevation(obs, x, with_refraction=False) - target

    prev = f(t)
    step = dt.timedelta(minutes=2)
    for _ in range(180):
        nxt = t + step
        cur = f(nxt)
        if (prev < 0 <= cur) if rising else (prev >= 0 > cur):
            lo, hi = t, nxt
            for _ in range(30):
                mid = lo + (hi - lo) / 2
                if (f(mid) < 0) == rising:
                    lo = mid
                else:
                    hi = mid
            return (lo - day0).total_seconds() / 60
        t, prev = nxt, cur
    return None


def _reference(obs: Observer, date: dt.date, event: int) -> float | None:
    """astral's time of the event (minutes after 00:00 UTC of ``date``); None if it does not happen."""
    direction, zenith = _EVENTS[event]
    d = sun.SunDirection.RISING if direction == "rising" else sun.SunDirection.SETTING
    try:
        # geometric: astral's own sunrise/sunset convention; civil: the standard -6 deg, no refraction
        if zenith < 91:
            when = (sun.sunrise if event == astro.SUNRISE else sun.sunset)(obs, date)
        else:
            when = sun.time_of_transit(obs, date, zenith, d, with_refraction=False)
    except ValueError:
        return None
    return (when - dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC)).total_seconds() / 60


def _mine_near(day: int, lat: float, lon: float, event: int, ref: float) -> float:
    # astral may name the event of the neighbouring UTC date; compare with the closest of ours
    cands = [astro.sun_event(day + o, lat, lon, event) + 1440 * o for o in (-1, 0, 1)]
    return min(cands, key=lambda c: abs(c - ref))


def _year_cases() -> Iterator[tuple[float, float, dt.date, int, float]]:
    lons = (-151.2, -75.3, -3.7, 0.0, 13.4, 77.2, 139.7, 174.8)
    for i, lat in enumerate(range(-60, 61, 5)):
        lon = lons[i % len(lons)]
        obs = Observer(float(lat), lon)
        for k in range(365):
            date = dt.date(2026, 1, 1) + dt.timedelta(days=k)
            for event in _EVENTS:
                ref = _reference(obs, date, event)
                if ref is not None:
                    yield float(lat), lon, date, event, ref


def test_astronomical_clock_within_two_minutes_of_astral_every_day_of_a_year() -> None:
    worst = 0.0
    worst_case: tuple = ()
    checked = 0
    for lat, lon, date, event, ref in _year_cases():
        day = astro.days_from_civil(date.year, date.month, date.day)
        mine = _mine_near(day, lat, lon, event, ref)
        err = mine - ref
        if abs(err) > 1.0 and event in (astro.DAWN, astro.DUSK):
            # near-grazing twilight: check against the direct root of astral's sun model as well
            rising = event == astro.DAWN
            day0 = dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC)
            root = _elevation_crossing(Observer(lat, lon), day0, day0 + dt.timedelta(minutes=mine), -6.0, rising)
            assert root is not None, (lat, lon, date, event)
            err = mine - root
        assert abs(err) <= TOLERANCE_MIN, f"event {event} {_EVENTS[event]} {date} lat {lat} lon {lon}: {err:+.2f} min"
        if abs(err) > worst:
            worst, worst_case = abs(err), (lat, lon, date, event, err)
        checked += 1
    assert checked > 36000  # 25 latitudes x 365 days x 4 events, minus the days without an event
    assert worst > 0.0  # the comparison really compared something
    print("worst", worst_case)


def test_astronomical_clock_polar_cases() -> None:
    day = astro.days_from_civil(2026, 6, 21)
    assert astro.sun_event(day, 70.0, 20.0, astro.SUNSET) == astro.ALWAYS_UP  # midnight sun
    assert astro.sun_event(day, -70.0, 20.0, astro.SUNRISE) == astro.ALWAYS_DOWN  # polar night
    assert astro.sun_event(day, 62.0, 20.0, astro.DUSK) == astro.ALWAYS_UP  # white night: no civil dusk


def test_astronomical_clock_on_micropython_matches_cpython(mpy: MicroPythonSession) -> None:
    cases = []
    for lat in range(-60, 61, 20):
        for k in range(0, 365, 30):
            date = dt.date(2026, 1, 1) + dt.timedelta(days=k)
            day = astro.days_from_civil(date.year, date.month, date.day)
            for event in _EVENTS:
                mine = astro.sun_event(day, float(lat), 13.4, event)
                ref = _reference(Observer(float(lat), 13.4), date, event)
                cases.append([day, lat, event, mine, ref])
    code = (
        "from streetlight import astro\n"
        f"cases = {json.dumps(cases)}\n"
        "worst = 0.0\n"
        "for day, lat, ev, cpy, ref in cases:\n"
        "    m = astro.sun_event(day, lat, 13.4, ev)\n"
        "    assert abs(m - cpy) < 0.01, (day, lat, ev, m, cpy)\n"
        "    if ref is not None and m >= 0:\n"
        "        worst = max(worst, min(abs(m - ref), abs(m + 1440 - ref), abs(m - 1440 - ref)))\n"
        "print(len(cases), worst)\n"
    )
    out = mpy.run(code).check().stdout.split()
    assert int(out[0]) == len(cases)
    assert float(out[1]) <= TOLERANCE_MIN
