"""Checks of the streetlight app's pure logic, written to run unchanged on CPython and on MicroPython.

This module holds no pytest tests itself: tests/test_streetlight_logic.py runs every ``check_*`` function
here on CPython directly and sends the same source to the MicroPython VM, so both interpreters are held to
the same assertions. Keep it to the language subset both share (no f-string ``=``, no pytest, no typing).
"""


def check_dali_log_curve():
    from streetlight import curves

    # IEC 62386-102: arc level 254 = 100 %, 1 = 0.1 %; 170 ~ 10 %, 229 ~ 50.5 %, 250 ~ 89.7 % (duty_u16)
    table = curves._LOG
    assert table[0] == 0 and table[254] == 65535 and table[255] == 65535
    assert table[1] == 66 and table[170] == 6613 and table[229] == 33115 and table[250] == 58755, list(table[:4])
    for n in range(1, 255):
        assert abs(table[n] - 655.35 * 10 ** ((n - 1) / (253 / 3) - 1)) <= 0.5, n
    assert curves.duty(0) == 0
    assert curves.duty(1000) == 65535
    assert curves.duty(1) == 66  # 0.1 % of 65535
    prev = 0
    for level in range(1, 1001):
        d = curves.duty(level)
        assert d >= prev, (level, d, prev)  # monotonic
        prev = d
    # the log curve is far below linear mid-range: control 50 % -> about 3.3 % light (arc 127)
    mid = curves.duty(500) / 65535 * 100
    assert 3.0 < mid < 3.6, mid


def check_linear_curve_and_minimum():
    from streetlight import curves

    assert curves.duty(500, curves.CURVE_LINEAR) == 32767
    assert curves.duty(250, curves.CURVE_LINEAR) == 16383
    # minimum output 10 % applies to any level above 0, never to off
    assert curves.duty(5, curves.CURVE_LINEAR, min_out=100) == 6553
    assert curves.duty(5, curves.CURVE_LOG, min_out=100) == 6553
    assert curves.duty(0, curves.CURVE_LINEAR, min_out=100) == 0
    assert curves.duty(800, curves.CURVE_LINEAR, min_out=100) == 52428


def check_fader():
    from streetlight import curves

    f = curves.Fader(fade_ms=1000, level=0)
    f.go(1000, 0)
    assert f.moving
    assert f.level(0) == 0
    assert f.level(250) == 250
    assert f.level(500) == 500
    # retarget mid-fade: starts from where it is, takes the full fade time again
    f.go(0, 500)
    assert f.level(500) == 500
    assert f.level(1000) == 250
    assert f.level(1500) == 0
    assert not f.moving
    f.go(0, 2000)  # same target: nothing to do
    assert not f.moving
    g = curves.Fader(fade_ms=0)
    g.go(400, 10)
    assert g.level(10) == 400 and not g.moving


def check_civil_dates():
    from streetlight import astro

    assert astro.days_from_civil(1970, 1, 1) == 0
    assert astro.days_from_civil(2000, 1, 1) == 10957
    assert astro.days_from_civil(2024, 2, 29) == 19782
    for z in (0, 10957, 19782, 20000, 20454, 25000, -1):
        y, m, d = astro.civil_from_days(z)
        assert astro.days_from_civil(y, m, d) == z


def check_schedule_program_and_calendar():
    from streetlight import astro, schedule

    progs = {
        "default": schedule.parse_program([["sunset", 100], ["22:00", 70], ["00:30", 40], ["05:30", 80]]),
        "weekend": schedule.parse_program([["sunset", 100], ["01:00", 50]]),
        "xmas": schedule.parse_program([["dusk-10", 100]]),
        "holiday": schedule.parse_program([["sunset", 90]]),
    }
    cal = schedule.parse_calendar([
        {"program": "holiday", "holidays": True},
        {"program": "xmas", "from": "12-20", "to": "01-06"},
        {"program": "weekend", "weekdays": [4, 5]},
    ], progs)
    hol = schedule.parse_holidays(["2026-11-11", "05-01"])
    s = schedule.Schedule(52.52, 13.40, progs, cal, hol, tz_min=60, dst="eu")
    day = astro.days_from_civil
    assert s.program_for(day(2026, 11, 18)) == "default"  # Wednesday
    assert s.program_for(day(2026, 11, 20)) == "weekend"  # Friday night
    assert s.program_for(day(2026, 11, 11)) == "holiday"  # one-off holiday
    assert s.program_for(day(2027, 5, 1)) == "holiday"  # yearly holiday
    assert s.program_for(day(2026, 12, 31)) == "xmas"  # range over New Year
    assert s.program_for(day(2027, 1, 6)) == "xmas"
    assert s.program_for(day(2027, 1, 7)) == "default"  # Thursday
    n = s.night(day(2026, 11, 18))
    # Berlin, 18 Nov 2026: sunset 15:5x CET (local), 22:00 -> 600, 00:30 -> 750, 05:30 -> 1050
    on = n.on
    assert 246 <= on <= 251, on  # sunset 15:08 UTC = 16:08 CET = 248 min after noon (astral)
    assert n.steps[0][1] == 1000 and n.steps[1] == (600, 700) and n.steps[2] == (750, 400)
    assert n.steps[3] == (1050, 800)
    assert n.level(100) == 1000  # before the first step: the first step's level
    assert n.level(700) == 700 and n.level(800) == 400 and n.level(1100) == 800
    assert 1140 <= n.off <= 1190, n.off  # sunrise about 07:3x local
    # local(): 2026-11-18 23:00 UTC = 00:00 CET on the 19th -> night of the 18th, minute 720
    utc = day(2026, 11, 18) * 86400 + 23 * 3600
    assert s.local(utc) == (day(2026, 11, 18), 720), s.local(utc)
    # summer time: 2026-07-01 20:00 UTC = 22:00 CEST -> minute 600 of the night of July 1st
    assert s.local(day(2026, 7, 1) * 86400 + 20 * 3600) == (day(2026, 7, 1), 600)
    # the switch to summer time (29 March 2026, 01:00 UTC): 00:59:59 UTC = 01:59 CET, 01:00:00 UTC = 03:00 CEST
    assert s.local(day(2026, 3, 29) * 86400 + 3599) == (day(2026, 3, 28), 839)
    assert s.local(day(2026, 3, 29) * 86400 + 3600) == (day(2026, 3, 28), 900)


def check_schedule_prefetch_spreads_sun_times():
    from streetlight import astro, schedule

    progs = {"default": schedule.parse_program([["sunset", 100], ["dusk+30", 60], ["dawn", 80]])}
    s = schedule.Schedule(52.52, 13.40, progs, tz_min=60)
    day = astro.days_from_civil(2026, 11, 18)
    n = s.night(day)  # tonight, computed at once
    on0, step0 = n.on, n.steps[1][0]
    known = len(s._sun)
    calls = 0
    while s.prefetch(day + 1):  # tomorrow's: one sun time per call
        calls += 1
        assert len(s._sun) == known + calls
    assert calls == 4  # sunset, sunrise (clock), dusk, dawn of the next night
    assert not s.prefetch(day + 1)  # nothing left: a cheap no-op from now on
    before = dict(s._sun)
    n2 = s.night(day + 1)
    assert s._sun == before  # the new night needed no sun computation
    assert n2.on > on0 - 5 and n2.steps[1][0] > step0 - 5  # the next evening, a little earlier
    fresh = schedule.Schedule(52.52, 13.40, progs, tz_min=60).night(day + 1)
    assert (fresh.on, fresh.off, fresh.steps) == (n2.on, n2.off, n2.steps)


def check_schedule_parse_errors():
    from streetlight import schedule

    for bad in ("25:00", "sunset+", "sunset*5", "noon", "sunrise+700", 5):
        try:
            schedule.parse_when(bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"accepted {bad!r}")
    assert schedule.parse_when("Sunrise-30") == (0, -30)
    for prog in ([], [["22:00", 120]], [["22:00"]], "x"):
        try:
            schedule.parse_program(prog)
        except ValueError:
            pass
        else:
            raise AssertionError(f"accepted program {prog!r}")
    try:
        schedule.parse_calendar([{"program": "nope"}], {"default": ()})
    except ValueError as e:
        assert "nope" in str(e)
    else:
        raise AssertionError("accepted unknown program")


def check_dst_rules():
    from streetlight import astro, schedule

    day = astro.days_from_civil
    # EU 2026: 29 March 01:00 UTC .. 25 October 01:00 UTC (minutes since 1970)
    assert schedule.utc_offset(day(2026, 3, 29) * 1440 + 59, 60, "eu") == 60
    assert schedule.utc_offset(day(2026, 3, 29) * 1440 + 60, 60, "eu") == 120
    assert schedule.utc_offset(day(2026, 10, 25) * 1440 + 59, 60, "eu") == 120
    assert schedule.utc_offset(day(2026, 10, 25) * 1440 + 60, 60, "eu") == 60
    # US 2026 (New York, UTC-5): 8 March 07:00 UTC .. 1 November 06:00 UTC
    assert schedule.utc_offset(day(2026, 3, 8) * 1440 + 7 * 60 - 1, -300, "us") == -300
    assert schedule.utc_offset(day(2026, 3, 8) * 1440 + 7 * 60, -300, "us") == -240
    assert schedule.utc_offset(day(2026, 11, 1) * 1440 + 6 * 60 - 1, -300, "us") == -240
    assert schedule.utc_offset(day(2026, 11, 1) * 1440 + 6 * 60, -300, "us") == -300
    assert schedule.utc_offset(0, 330, "none") == 330
    # the Sundays the rules use
    assert schedule._sunday(2026, 3, 0) == day(2026, 3, 29) and schedule._sunday(2027, 10, 0) == day(2027, 10, 31)
    assert schedule._sunday(2026, 3, 2) == day(2026, 3, 8) and schedule._sunday(2026, 11, 1) == day(2026, 11, 1)
    assert schedule._sunday(2028, 3, 2) == day(2028, 3, 12) and schedule._sunday(2025, 10, 0) == day(2025, 10, 26)


def check_light_switch_hysteresis_and_dwell():
    from streetlight import schedule

    sw = schedule.LightSwitch(on_lux=30, off_lux=60, dwell_s=120)
    assert sw.update(500, 0) is False  # first reading decides at once
    assert sw.update(20, 10) is False  # dark, but not for the dwell yet
    assert sw.update(20, 129) is False
    assert sw.update(20, 130) is True  # 120 s below on_lux
    assert sw.update(45, 200) is True  # in the band: no change
    assert sw.update(1000, 300) is True  # headlights ...
    assert sw.update(20, 310) is True  # ... gone before the dwell: still dark
    assert sw.update(1000, 320) is True
    assert sw.update(1000, 439) is True  # the 310 reading restarted the dwell at 320
    assert sw.update(1000, 440) is False
    assert sw.update(None, 500) is False and not sw.valid
    pol = schedule.POLICY_NAMES.index
    assert schedule.decide(pol("sensor"), True, False, False) is True  # invalid sensor: the clock decides
    assert schedule.decide(pol("sensor"), False, True, True) is True
    assert schedule.decide(pol("clock"), False, True, True) is False
    assert schedule.decide(pol("either"), False, True, True) is True
    assert schedule.decide(pol("both"), True, False, True) is False
    assert schedule.decide(pol("both"), True, True, True) is True


def check_override_priorities_and_expiry():
    from streetlight import overrides as ov

    o = ov.Overrides()
    assert o.resolve(True, 500) == 500 and o.resolve(False, 500) == 0
    o.set(ov.BOOST, 1000, 60, 0)
    assert o.resolve(True, 500) == 1000  # boost raises the level at night
    assert o.resolve(False, 500) == 0  # never lights a street by day
    assert o.resolve(True, 1000) == 1000
    o.set(ov.BOOST, 300, 60, 0)
    assert o.resolve(True, 500) == 500  # never dims below the program
    o.set(ov.MANUAL, 0, 100, 10)
    assert o.active() == ov.MANUAL and o.resolve(True, 500) == 0  # manual wins, even "off"
    o.set(ov.MAINTENANCE, 1000, 30, 20)
    assert o.resolve(False, 0) == 1000  # maintenance test by day
    assert o.expire(49) == ov.NONE
    assert o.expire(50) == ov.MAINTENANCE
    assert o.active() == ov.MANUAL
    assert o.expire(60) == ov.BOOST  # boost (60 s from 0) ends while manual still holds
    assert o.expire(110) == ov.MANUAL and o.active() == ov.NONE
    assert o.resolve(True, 400) == 400
    for bad in ((ov.BOOST, 1001, 10), (ov.BOOST, 10, 0), (ov.BOOST, 10, 8 * 86400)):
        try:
            o.set(bad[0], bad[1], bad[2], 0)
        except ValueError:
            pass
        else:
            raise AssertionError(f"accepted {bad!r}")


def _sample(faults, **kw):
    s = faults.Sample()
    s.relay, s.duty, s.settled, s.meter_ok, s.sensor_ok = True, 65535, True, True, True
    s.power_mw, s.voltage_mv, s.current_ma, s.lux = 60000, 24000, 2500, 5
    for k in kw:
        setattr(s, k, kw[k])
    return s


def _run(fl, s, t0, t1, step=5):
    t = t0
    while t <= t1:
        s.now_s = t
        fl.update(s)
        t += step


def check_faults_raise_once_and_clear():
    from cewire import codes
    from streetlight import faults

    fl = faults.Faults(rated_w=60.0, delay_s=30, clear_s=30)
    s = _sample(faults)
    _run(fl, s, 0, 100)
    assert fl.events == [] and fl.codes() == []
    s.power_mw, s.current_ma = 1000, 40  # lamp failure: 1 W where 60 W is expected
    _run(fl, s, 105, 130)
    assert fl.events == []  # not yet: 25 s
    _run(fl, s, 135, 400)
    assert fl.events == [(codes.LAMP_FAILURE, True)], fl.events  # once, and under-current stays quiet
    fl.events.clear()
    s.relay, s.duty, s.power_mw, s.current_ma = False, 0, 0, 0  # day: lamp off, cannot be judged
    _run(fl, s, 405, 2000)
    assert fl.events == [] and fl.codes() == [codes.LAMP_FAILURE]  # not "cleared" by daylight
    s.relay, s.duty, s.power_mw, s.current_ma = True, 65535, 59000, 2450  # lamp replaced
    _run(fl, s, 2005, 2100)
    assert fl.events == [(codes.LAMP_FAILURE, False)], fl.events
    assert fl.codes() == []


def check_fault_rules():
    from cewire import codes
    from streetlight import faults

    def raised(**kw):
        fl = faults.Faults(rated_w=60.0, v_over=27.0, v_under=20.0, i_over=3.0, delay_s=10, clear_s=10)
        _run(fl, _sample(faults, **kw), 0, 60)
        return [c for c, up in fl.events if up]

    assert raised() == []
    assert raised(voltage_mv=29000) == [codes.OVER_VOLTAGE]
    assert raised(voltage_mv=18000, current_ma=3300) == [codes.UNDER_VOLTAGE, codes.OVER_CURRENT]
    assert raised(current_ma=1200) == [codes.UNDER_CURRENT]
    # half duty but full power: the driver does not dim
    assert raised(duty=32767, power_mw=60000, current_ma=2500) == [codes.DRIVER_FAULT]
    # commanded off but drawing power: day burner
    assert raised(relay=False, duty=0, power_mw=30000, current_ma=1250) == [codes.DAY_BURNER]
    # lit in daylight while the clock says day (no override): day burner
    assert raised(lux=5000, clock_day=True) == [codes.DAY_BURNER]
    assert raised(lux=5000, clock_day=True, forced=True) == []  # a maintenance test is not a fault
    fl = faults.Faults(rated_w=60.0, delay_s=10, clear_s=10, sensor_fail_s=20)
    _run(fl, _sample(faults, sensor_ok=False), 0, 15)
    assert fl.events == []  # sensor failure waits sensor_fail_s, not delay_s
    _run(fl, _sample(faults, sensor_ok=False), 20, 30)
    assert fl.events == [(codes.LIGHT_SENSOR_FAILURE, True)]
    assert raised(meter_ok=False) == [codes.METER_FAILURE]
    # not judged while fading or below 5 % duty
    assert raised(power_mw=0, current_ma=0, settled=False) == []
    assert raised(power_mw=0, current_ma=0, duty=2000) == []


def check_cycling():
    from cewire import codes
    from streetlight import faults

    fl = faults.Faults(rated_w=60.0, delay_s=30, clear_s=30, cycling_count=3, cycling_window_s=600)
    s = _sample(faults)
    t = 0
    for _ in range(4):  # 4 x (60 s lit, 20 s dark): a cycling HID lamp
        _run(fl, s, t, t + 60)
        s.power_mw, s.current_ma = 0, 0
        _run(fl, s, t + 65, t + 80)
        s.power_mw, s.current_ma = 60000, 2500
        t += 85
    ups = [c for c, up in fl.events if up]
    assert ups == [codes.CYCLING], fl.events  # and no lamp failure for the dark phases
    fl.events.clear()
    _run(fl, s, t, t + 700)  # steady for longer than the window
    assert fl.events == [(codes.CYCLING, False)], fl.events


def check_energy_integration():
    from streetlight import faults

    e = faults.Energy()
    e.add(0, 1000, False)  # first sample only sets the start
    e.add(0, 1000, True)  # switched on
    for _ in range(3600):
        e.add(60000, 1000, True)  # an hour at 60 W (the first second ramps 0 -> 60 W)
    assert e.mwh == 59991 and e.burn_s == 3600 and e.switches == 1, (e.mwh, e.burn_s, e.switches)
    for _ in range(10):
        e.add(600, 1000, False)  # off: the driver's idle draw still counts as energy, not as burning
    assert e.burn_s == 3601 and e.mwh == 60001, (e.burn_s, e.mwh)  # 60 -> 0.6 W ramp, then 9 s idle
    e.add(30000, 1000, True)
    assert e.switches == 2
    # long periods (control_ms up to 60 s): exact, although (p0 + p1) x dt is past the small ints
    f = faults.Energy()
    f.add(60000, 1000, True)
    f.add(60000, 600000, True)  # 60 W for 10 min = 10 Wh
    assert (f.mwh, f._uj) == (10000, 0), (f.mwh, f._uj)
    f.add(123457, 59999, True)  # (60 W + 123.457 W) / 2 for 59.999 s: 1528.78 mWh more
    total = 10000 * 3600000 + (60000 + 123457) * 59999 // 2
    assert (f.mwh, f._uj) == (total // 3600000, total % 3600000), (f.mwh, f._uj)
    st = {"mwh": e.mwh, "uj": e._uj, "burn_s": e.burn_s, "switches": e.switches}  # what save() writes
    e2 = faults.Energy()
    assert e2.restore(st) and (e2.mwh, e2._uj, e2.burn_s, e2.switches) == (e.mwh, e._uj, e.burn_s, e.switches)
    assert not e2.restore({"mwh": -1, "uj": 0, "burn_s": 0, "switches": 0})
    assert not e2.restore({"mwh": "x"})


def check_config_validation():
    from node import config

    schema = (
        ("dimming.curve", str, "log", ("log", "linear")),
        ("dimming.min_pct", float, 1.0, (0.0, 50.0)),
        ("telemetry_s", int, 900, (60, 86400)),
        ("name", str, config.REQUIRED, None),
    )
    lines = []  # type: list
    problems = []  # type: list
    got = config.validate("/streetlight.json", {"dimming": {"curve": "cubic", "min_pct": 5}, "name": "x",
                                                "colour": 1}, schema, log=lines.append, problems=problems)
    assert got == {"dimming.curve": "log", "dimming.min_pct": 5.0, "telemetry_s": 900, "name": "x"}, got
    assert lines[0] == ("config: /streetlight.json: dimming.curve: must be one of log, linear (got \"cubic\");"
                        " using default \"log\""), lines
    assert lines[1] == "config: /streetlight.json: colour: unknown key ignored", lines
    assert problems == ['dimming.curve: must be one of log, linear (got "cubic")']
    try:
        config.validate("/streetlight.json", {}, schema, log=lines.append)
    except config.ConfigError as e:
        assert str(e) == "/streetlight.json: name: missing"
    else:
        raise AssertionError("missing required key accepted")
    try:
        config.validate("/node.json", {"telemetry_s": True, "name": "x"}, schema, strict=True)
    except config.ConfigError as e:
        assert e.key == "telemetry_s" and "integer" in e.problem
    else:
        raise AssertionError("bool accepted as int")
    # the provisioning key never appears in a message
    prov = {"node_id": 7, "role": "streetlight", "key_id": 0, "key": "secret-not-hex"}
    try:
        config.validate("/node.json", prov, config.PROVISIONING, strict=True)
    except config.ConfigError as e:
        assert e.key == "key" and "secret" not in str(e), str(e)
    else:
        raise AssertionError("bad key accepted")
    prov["key"] = "00" * 32
    ok = config.validate("/node.json", prov, config.PROVISIONING, strict=True)
    assert ok["node_id"] == 7 and ok["lat"] is None and ok["link"] == {}


def check_settings_merge_of_changed_keys_only():
    from node import config
    from streetlight import settings

    base = {"clock.tz_min": 60, "clock.off": "dawn+10", "sensor.on_lux": 20,
            "programs": {"default": [["sunset", 100], ["23:00", 60]], "late": [["dusk", 80]]},
            "calendar": [{"program": "late", "weekdays": [5]}]}
    current, raw = settings.merge({}, base)  # validated in full: good values throughout
    assert raw["clock"] == {"tz_min": 60, "off": "dawn+10"} and current["clock.off"] == (2, 10)
    cases = [
        {"programs": {"default": [["sunset", 90], ["05:00", 90]], "late": [["dusk", 70]]}},  # the calendar fits
        {"dimming.curve": "linear", "clock.tz_min": 120, "faults.rated_w": 60},
        {"holidays": ["12-24"], "calendar": [{"program": "default", "holidays": True}]},
        {"sensor.off_lux": 25.0},
    ]
    for changes in cases:
        full = settings.merge(raw, changes)
        part = settings.merge(raw, changes, current=current)
        assert part[1] == full[1] and len(part[0]) < len(full[0]) // 2, (changes, part[0])  # no full copy
        values = dict(current)
        values.update(part[0])  # as the app applies it, in place
        assert values == full[0], (changes, values, full[0])
    assert settings.merge(raw, cases[1], current=current)[0]["faults.rated_w"] == 60.0
    refused = [
        {"programs": {"default": [["sunset", 90]]}},  # the calendar names "late": refused
        {"sensor.off_lux": 15},  # below on_lux
        {"dimming.min_pct": 80, "dimming.curve": "cubic"},  # two bad keys: the first in schema order is named
        {"pir.level_pct": "x"},
        {"colour": 1},
    ]
    for changes in refused:
        errors = []
        for cur in (None, current):
            try:
                settings.merge(raw, changes, current=cur)
            except config.ConfigError as e:
                errors.append((e.key, e.problem))
        assert len(errors) == 2 and errors[0] == errors[1], (changes, errors)
    assert raw["clock"] == {"tz_min": 60, "off": "dawn+10"}  # a merge never changes the raw settings it got


def check_fault_threshold_defaults_match_the_settings():
    from streetlight import faults, settings

    fl = faults.Faults()
    names = [key[7:] for key, _, _, _ in settings.SCHEMA if key.startswith("faults.")]
    assert len(names) == 14, names
    got = faults.Faults(**{key[7:]: dflt for key, _, dflt, _ in settings.SCHEMA if key.startswith("faults.")})
    for attr in ("rated_mw", "standby_mw", "lamp_fail_pct", "driver_pct", "v_over_mv", "v_under_mv", "i_over_ma",
                 "i_under_pct", "day_lux", "cycling_window_s", "delay_s", "clear_s", "sensor_fail_s"):
        assert getattr(got, attr) == getattr(fl, attr), attr
    assert len(got._drops) == len(fl._drops) == 3  # cycling_count


CHECKS = [name for name in sorted(globals()) if name.startswith("check_")]
