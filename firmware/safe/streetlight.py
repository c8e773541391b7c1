"""Safe mode of a streetlight node (``/lib/safe/streetlight.py``), started by the boot manager after
repeated failed boots of the app.

It depends on nothing but ``machine`` and the pin map, so a broken app or library cannot break it. It lights
the street on a fixed schedule (on from ``safe.on`` to ``safe.off`` local time, default 17:00-07:30, which
covers every night from -60 to +60 degrees latitude with margin), or all the time while the clock is not set
(a lit street by day is the safe failure), at ``safe.level_pct`` (default 100 %). A ``machine.Timer``
re-checks the schedule every minute and ``run()`` returns at once, so the REPL stays free for the flashing
tool to deploy a fixed app. Settings come from ``/streetlight.json`` when it can be read.
"""

import json
import time

import board  # type: ignore[import-not-found]  # /lib/board.py, the pin map deployed per board
import machine

_CLOCK_VALID = 1600000000
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0


class _Safe:
    on = 17 * 60  # local minutes
    off = 7 * 60 + 30
    tz = 0
    duty = 65535
    pwm = None  # type: machine.PWM | None
    relay = None  # type: machine.Pin | None
    timer = None  # type: machine.Timer | None


def _minutes(text, default):
    try:
        h, m = text.split(":")
        return int(h) * 60 + int(m)
    except (AttributeError, ValueError):
        return default


def _load(path="/streetlight.json"):
    try:
        with open(path) as f:
            cfg = json.loads(f.read())
        safe = cfg.get("safe", {})
        _Safe.on = _minutes(safe.get("on"), _Safe.on)
        _Safe.off = _minutes(safe.get("off"), _Safe.off)
        level = safe.get("level_pct", 100)
        _Safe.duty = max(6553, min(65535, int(level * 655.35)))
        tz = cfg.get("clock", {}).get("tz_min")
        if isinstance(tz, int):
            _Safe.tz = tz
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # defaults


def lit_now():
    """Whether the fixed schedule has the lamp on now."""
    unix = int(time.time()) + _EPOCH
    if unix < _CLOCK_VALID:
        return True
    m = ((unix + _Safe.tz * 60) % 86400) // 60
    on, off = _Safe.on, _Safe.off
    return (m >= on or m < off) if on > off else (on <= m < off)


def apply(_timer=None):
    pwm, relay = _Safe.pwm, _Safe.relay
    if pwm is None or relay is None:
        return
    if lit_now():
        relay.value(1)
        pwm.duty_u16(_Safe.duty)
    else:
        pwm.duty_u16(0)
        relay.value(0)


def run():
    """Start the fixed schedule and return (the REPL stays free)."""
    _load()
    _Safe.pwm = machine.PWM(machine.Pin(board.PIN_LAMP_PWM), freq=1000, duty_u16=0)
    _Safe.relay = machine.Pin(board.PIN_LAMP_RELAY, machine.Pin.OUT, value=0)
    apply()
    t = machine.Timer(-1)
    t.init(mode=machine.Timer.PERIODIC, period=60000, callback=apply)
    _Safe.timer = t
    print("streetlight safe mode: lamp %s, fixed schedule %02d:%02d-%02d:%02d; deploy a fixed app" % (
        "on" if lit_now() else "off", _Safe.on // 60, _Safe.on % 60, _Safe.off // 60, _Safe.off % 60))
