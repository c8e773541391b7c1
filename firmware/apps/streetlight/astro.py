"""Astronomical clock: sunrise, sunset and civil twilight on the node, plus civil-date arithmetic.

The sun's position follows the low-precision formulas of the Astronomical Almanac (mean longitude and
anomaly, ecliptic longitude, obliquity, declination, right ascension and so the equation of time; 0.01 deg
from 1950 to 2050), evaluated at the event itself: two passes starting from local noon. Every float
operation allocates on MicroPython, so the model is the cheapest that holds the clock to astral (the NOAA
calculator) within 1.5 min for every day of a year at -60..60 deg: about 45 short-lived floats (0.7 KB) per
pass, against 110 for the NOAA series, which gave the same worst case. An event is the moment the sun's
centre crosses an elevation:

* geometric sunrise/sunset: -0.833 deg (34' of refraction at the horizon plus the 16' semi-diameter);
* civil dawn/dusk: -6 deg (civil twilight).

Dates are day numbers (days since 1970-01-01, :func:`days_from_civil`) so the code needs no epoch or
``time.mktime`` of the port. Single-precision floats (ESP32) stay within 0.01 min of double precision
(2026..2050, checked against a float32 evaluation). Results are minutes after 00:00 UTC of the given date;
they can be below 0 or above 1440 far from Greenwich.
"""

from math import acos, asin, atan2, cos, degrees, radians, sin

try:
    from micropython import const
except ImportError:  # CPython (unit tests)

    def const(x):  # type: ignore[misc,unused-ignore]
        return x


SUNRISE = const(0)
SUNSET = const(1)
DAWN = const(2)
DUSK = const(3)
# sine of the elevation of each event: -0.833 deg (sunrise, sunset), -6 deg (dawn, dusk)
_SIN_H0 = (-0.0145381, -0.0145381, -0.1045285, -0.1045285)
_J2000_DAYS = const(10957)  # days_from_civil(2000, 1, 1)

ALWAYS_UP = const(-1)  # the sun never goes below the event's elevation that day
ALWAYS_DOWN = const(-2)  # the sun never rises above it


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of the proleptic Gregorian date y-m-d (H. Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    """(year, month, day) of day number ``z`` (inverse of :func:`days_from_civil`)."""
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return (y + (1 if m <= 2 else 0), m, d)


def _sun(n):
    """(declination in radians, equation of time in minutes) ``n`` days after J2000.0: the Astronomical
    Almanac's low-precision solar coordinates (0.01 deg, 1950..2050), about 30 floats."""
    lng = (280.460 + 0.9856474 * n) % 360.0  # mean longitude (aberration included), deg
    g = radians(357.528 + 0.9856003 * n)  # mean anomaly
    lam = radians(lng + 1.915 * sin(g) + 0.020 * sin(2.0 * g))  # ecliptic longitude
    eps = radians(23.439 - 0.0000004 * n)  # obliquity of the ecliptic
    s = sin(lam)
    ra = degrees(atan2(cos(eps) * s, cos(lam)))  # right ascension
    return asin(sin(eps) * s), ((lng - ra + 180.0) % 360.0 - 180.0) * 4.0


def sun_event(day, lat, lon, event):
    """Minutes after 00:00 UTC of day number ``day`` when ``event`` happens at ``lat``/``lon`` (degrees,
    east positive); :data:`ALWAYS_UP` or :data:`ALWAYS_DOWN` (negative ints) when it does not happen."""
    latr = radians(lat)
    sin_lat = sin(latr)
    cos_lat = cos(latr)
    sign = -4.0 if event == SUNRISE or event == DAWN else 4.0  # hour angle before / after noon, in minutes
    noon = 720.0 - 4.0 * lon  # local mean noon: the first guess
    t = noon
    d0 = day - _J2000_DAYS - 0.5  # days since J2000.0 at 00:00 UTC of the date
    for _ in range(2):
        decl, eqt = _sun(d0 + t / 1440.0)
        cos_h = (_SIN_H0[event] - sin_lat * sin(decl)) / (cos_lat * cos(decl))
        if cos_h < -1.0:
            return ALWAYS_UP
        if cos_h > 1.0:
            return ALWAYS_DOWN
        t = noon + sign * degrees(acos(cos_h)) - eqt
    return t

