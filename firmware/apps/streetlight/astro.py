"""Astronomical clock: sunrise, sunset and civil twilight on the node, plus civil-date arithmetic.

The sun's position follows the NOAA solar calculator (after Meeus, "Astronomical Algorithms"): mean
longitude and anomaly, equation of centre, apparent longitude, obliquity, declination and the equation of
time, evaluated at the event itself (two passes starting from local noon: a third moved no result of a year
at -60..60 deg by more than 0.001 min, and each pass costs about 1.5 KB of short-lived floats). An event is
the moment the sun's centre crosses an elevation:

* geometric sunrise/sunset: -0.833 deg (34' of refraction at the horizon plus the 16' semi-diameter);
* civil dawn/dusk: -6 deg (civil twilight).

Dates are day numbers (days since 1970-01-01, :func:`days_from_civil`) so the code needs no epoch or
``time.mktime`` of the port. Values are kept small (days since J2000, centuries) so single-precision floats
(ESP32) still give sub-minute results. Results are minutes after 00:00 UTC of the given date; they can be
below 0 or above 1440 far from Greenwich.
"""

from math import acos, asin, cos, degrees, radians, sin, tan

try:
    from micropython import const
except ImportError:  # CPython (unit tests)

    def const(x):  # type: ignore[misc,unused-ignore]
        return x


SUNRISE = const(0)
SUNSET = const(1)
DAWN = const(2)
DUSK = const(3)
EVENT_NAMES = ("sunrise", "sunset", "dawn", "dusk")
_ELEVATION = (-0.833, -0.833, -6.0, -6.0)
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


def weekday(z):
    """0 = Monday .. 6 = Sunday of day number ``z`` (1970-01-01 was a Thursday)."""
    return (z + 3) % 7


def _sun(jc):
    """(declination in degrees, equation of time in minutes) at Julian century ``jc`` since J2000."""
    l0 = (280.46646 + jc * (36000.76983 + 0.0003032 * jc)) % 360.0
    m = 357.52911 + jc * (35999.05029 - 0.0001537 * jc)
    e = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc)
    mr = radians(m)
    c = (sin(mr) * (1.914602 - jc * (0.004817 + 0.000014 * jc)) + sin(2 * mr) * (0.019993 - 0.000101 * jc)
         + sin(3 * mr) * 0.000289)
    omega = radians(125.04 - 1934.136 * jc)
    app_long = radians(l0 + c - 0.00569 - 0.00478 * sin(omega))
    seconds = 21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))
    obliq = radians(23.0 + (26.0 + seconds / 60.0) / 60.0 + 0.00256 * cos(omega))
    decl = degrees(asin(sin(obliq) * sin(app_long)))
    y = tan(obliq / 2)
    y *= y
    l0r = radians(l0)
    eqt = (y * sin(2 * l0r) - 2 * e * sin(mr) + 4 * e * y * sin(mr) * cos(2 * l0r)
           - 0.5 * y * y * sin(4 * l0r) - 1.25 * e * e * sin(2 * mr))
    return decl, degrees(eqt) * 4.0


def sun_event(day, lat, lon, event):
    """Minutes after 00:00 UTC of day number ``day`` when ``event`` happens at ``lat``/``lon`` (degrees,
    east positive); :data:`ALWAYS_UP` or :data:`ALWAYS_DOWN` (negative ints) when it does not happen."""
    rising = event == SUNRISE or event == DAWN
    h0 = radians(_ELEVATION[event])
    latr = radians(lat)
    t = 720.0 - 4.0 * lon  # first guess: local solar noon
    d0 = day - _J2000_DAYS - 0.5  # days since J2000.0 at 00:00 UTC of the date
    for _ in range(2):
        decl, eqt = _sun((d0 + t / 1440.0) / 36525.0)
        dr = radians(decl)
        cos_h = (sin(h0) - sin(latr) * sin(dr)) / (cos(latr) * cos(dr))
        if cos_h < -1.0:
            return ALWAYS_UP
        if cos_h > 1.0:
            return ALWAYS_DOWN
        ha = degrees(acos(cos_h))
        t = 720.0 - 4.0 * (lon + (ha if rising else -ha)) - eqt
    return t


def solar_noon(day, lon):
    """Minutes after 00:00 UTC of day number ``day`` when the sun culminates at longitude ``lon``."""
    t = 720.0 - 4.0 * lon
    for _ in range(2):
        t = 720.0 - 4.0 * lon - _sun((day - _J2000_DAYS - 0.5 + t / 1440.0) / 36525.0)[1]
    return t

