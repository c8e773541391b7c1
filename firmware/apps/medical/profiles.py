# Default alarm limits per patient profile, and validation of limit changes (commands from the gateway).
# Figures: typical monitor defaults (adult/child SpO2 low 90 %, newborn 88 %; pulse rate adult 50/120,
# child 75/160, newborn 100/200 /min; desaturation limit 80 %). Temperatures in 0.1 degC.

PROFILES = ("adult", "child", "newborn")

DEFAULTS = {
    "adult": {"spo2_low": 90, "spo2_desat": 80, "pr_low": 50, "pr_high": 120, "temp_low": 350, "temp_high": 385},
    "child": {"spo2_low": 90, "spo2_desat": 80, "pr_low": 75, "pr_high": 160, "temp_low": 350, "temp_high": 385},
    "newborn": {"spo2_low": 88, "spo2_desat": 80, "pr_low": 100, "pr_high": 200, "temp_low": 360, "temp_high": 380},
}

# allowed range of each limit (inclusive)
RANGES = {
    "spo2_low": (50, 99),
    "spo2_desat": (50, 95),
    "pr_low": (25, 150),
    "pr_high": (60, 250),
    "temp_low": (300, 370),
    "temp_high": (360, 420),
}


class LimitError(ValueError):
    """A limit change was refused; the message names the key."""


def defaults(profile):
    """A fresh copy of the default limits of ``profile``."""
    if profile not in DEFAULTS:
        raise LimitError("profile: unknown %r (adult, child, newborn)" % (profile,))
    return dict(DEFAULTS[profile])


def apply_changes(limits, changes):
    """Return new limits = ``limits`` updated with ``changes``, or raise LimitError naming the bad key.

    Nothing is changed unless the whole result is consistent (desaturation below SpO2 low, PR low below
    PR high, temperature low below high).
    """
    new = dict(limits)
    for key in changes:
        if key not in RANGES:
            raise LimitError("%s: unknown limit" % key)
        v = changes[key]
        if not isinstance(v, int) or isinstance(v, bool):
            raise LimitError("%s: must be an integer" % key)
        lo, hi = RANGES[key]
        if not lo <= v <= hi:
            raise LimitError("%s: %d outside %d..%d" % (key, v, lo, hi))
        new[key] = v
    if new["spo2_desat"] >= new["spo2_low"]:
        raise LimitError("spo2_desat: must be below spo2_low")
    if new["pr_low"] + 10 > new["pr_high"]:
        raise LimitError("pr_low: must be at least 10 below pr_high")
    if new["temp_low"] + 10 > new["temp_high"]:
        raise LimitError("temp_low: must be at least 1.0 degC below temp_high")
    return new
