"""The streetlight's app settings: ``/streetlight.json`` on flash, every key with a default here.

The file is validated at boot (node.config): a bad value is logged with the file and the key and replaced by
its default, so a typo never leaves a street dark. The gateway changes settings with the ``config`` and
``program`` commands; they are validated the same way (strictly: a bad command is refused, naming the key),
written back atomically and applied without a reboot. Keys: see docs/streetlight.md.
"""

from node import config

from streetlight import astro, schedule

PATH = "/streetlight.json"

DEFAULT_PROGRAMS = {"default": [["sunset", 100], ["23:00", 60], ["05:30", 100]]}


def _program_set(value):
    if "default" not in value:
        raise ValueError("needs a 'default' program")
    out = {}
    for name in value:
        try:
            out[name] = schedule.parse_program(value[name])
        except ValueError as e:
            raise ValueError("program %r: %s" % (name, e))
    return out


def _clock_on(value):
    anchor, off = schedule.parse_when(value)
    if anchor not in (astro.SUNSET, astro.DUSK):
        raise ValueError("must be sunset or dusk with an optional offset")
    return (anchor, off)


def _clock_off(value):
    anchor, off = schedule.parse_when(value)
    if anchor not in (astro.SUNRISE, astro.DAWN):
        raise ValueError("must be sunrise or dawn with an optional offset")
    return (anchor, off)


def _clock_time(value):
    if schedule.parse_when(value)[0] != schedule.AT_CLOCK:
        raise ValueError("must be a time of day 'HH:MM'")
    return value


SCHEMA = (  # type: tuple
    ("dimming.curve", str, "log", ("log", "linear")),
    ("dimming.min_pct", float, 1.0, (0.0, 50.0)),
    ("dimming.fade_s", float, 2.0, (0.0, 600.0)),
    ("clock.on", str, (astro.SUNSET, 0), _clock_on),
    ("clock.off", str, (astro.SUNRISE, 0), _clock_off),
    ("clock.tz_min", int, None, (-720, 840)),  # None: the gateway's TIME offset
    ("clock.dst", str, "none", schedule.DST_RULES),
    ("sensor.on_lux", float, 30.0, (0.1, 10000.0)),
    ("sensor.off_lux", float, 60.0, (0.2, 20000.0)),
    ("sensor.dwell_s", int, 120, (0, 3600)),
    ("policy", str, "either", ("clock", "sensor", "either", "both")),
    ("programs", dict, None, _program_set),
    ("calendar", list, [], None),
    ("holidays", list, (), schedule.parse_holidays),
    ("pir.enabled", bool, False, None),
    ("pir.level_pct", float, 100.0, (0.0, 100.0)),
    ("pir.hold_s", int, 120, (5, 3600)),
    ("telemetry_s", int, 900, (10, 86400)),
    ("control_ms", int, 1000, (100, 60000)),
    ("energy_save_s", int, 600, (60, 86400)),
    ("safe.on", str, "17:00", _clock_time),  # read by /lib/safe/streetlight.py (safe mode)
    ("safe.off", str, "07:30", _clock_time),
    ("safe.level_pct", float, 100.0, (10.0, 100.0)),
    ("meter.shunt_mohm", int, 100, (1, 10000)),
    ("meter.max_ma", int, 3200, (100, 100000)),
    # fault thresholds (streetlight.faults.Faults, whose defaults are the same)
    ("faults.rated_w", float, 40.0, (0, 1000000)),
    ("faults.standby_w", float, 2.0, (0, 1000000)),
    ("faults.lamp_fail_pct", int, 50, (0, 1000000)),
    ("faults.driver_pct", int, 150, (0, 1000000)),
    ("faults.v_over", float, 26.4, (0, 1000000)),
    ("faults.v_under", float, 21.6, (0, 1000000)),
    ("faults.i_over", float, 2.5, (0, 1000000)),
    ("faults.i_under_pct", int, 70, (0, 1000000)),
    ("faults.day_lux", int, 200, (0, 1000000)),
    ("faults.cycling_count", int, 3, (0, 1000000)),
    ("faults.cycling_window_s", int, 900, (0, 1000000)),
    ("faults.delay_s", int, 30, (0, 1000000)),
    ("faults.clear_s", int, 30, (0, 1000000)),
    ("faults.sensor_fail_s", int, 60, (0, 1000000)),
)


def _finish(values, path, log, problems, strict):
    """Defaults that need code, cross-key checks and the calendar (which depends on the programs)."""
    if values["programs"] is None:
        values["programs"] = _program_set(DEFAULT_PROGRAMS)
    try:
        values["calendar"] = schedule.parse_calendar(values["calendar"], values["programs"])
    except ValueError as e:
        if strict:
            raise config.ConfigError(path, "calendar", str(e))
        log("config: %s: calendar: %s; using no calendar" % (path, e))
        problems.append("calendar: %s" % e)
        values["calendar"] = ()
    if values["sensor.off_lux"] <= values["sensor.on_lux"]:
        if strict:
            raise config.ConfigError(path, "sensor.off_lux", "must be above sensor.on_lux (hysteresis)")
        log("config: %s: sensor.off_lux: must be above sensor.on_lux; using twice on_lux" % path)
        problems.append("sensor.off_lux: must be above sensor.on_lux")
        values["sensor.off_lux"] = values["sensor.on_lux"] * 2
    return values


def load(path=PATH, log=print, problems=None):
    """Settings from ``path`` (defaults where missing or invalid); problems are logged and listed."""
    if problems is None:
        problems = []
    try:
        raw = config.read_json(path)
    except config.ConfigError as e:
        log("config: %s; using defaults" % e)
        problems.append(str(e))
        raw = None
    values = config.validate(path, raw, SCHEMA, log=log, problems=problems)
    return _finish(values, path, log, problems, False), (raw or {})


def merge(raw, changes, path=PATH, current=None):
    """``raw`` settings with ``changes`` (``{dotted_key: value}`` or nested) applied, strictly validated.

    Returns (values, new_raw); raises config.ConfigError naming the key when a change is invalid. ``current``:
    the values in force, if they were validated from ``raw`` without a problem; then only the changed keys
    are checked again (the others passed already), with the same errors, and ``values`` holds only what
    ``current.update(values)`` needs to become the full result (no copy of the whole settings).
    """
    # copy only the objects on each changed key's path: ``raw`` stays as it is if the change is refused
    new = dict(raw)
    for key in changes:
        node = new
        parts = key.split(".")
        for i in range(len(parts) - 1):
            nxt = node.get(parts[i])
            nxt = dict(nxt) if isinstance(nxt, dict) else {}
            node[parts[i]] = nxt
            node = nxt
        node[parts[-1]] = changes[key]
    for key in changes:
        if not config.is_known(SCHEMA, key):
            raise config.ConfigError(path, key, "unknown setting")
    if current is None:
        values = config.validate(path, new, SCHEMA, strict=True, log=lambda m: None)
    else:
        # in schema order, so that the first bad key is named as a full validation would; the calendar too,
        # because ``current`` holds it parsed and _finish checks it against the programs again
        values = config.validate(path, new, [e for e in SCHEMA if e[0] in changes or e[0] == "calendar"],
                                 strict=True, log=lambda m: None)
        for key in ("programs", "sensor.on_lux", "sensor.off_lux"):  # what _finish reads
            if key not in values:
                values[key] = current[key]
    return _finish(values, path, None, [], True), new
