"""Overrides: a commanded level for a limited time, which then gives the street back to the program.

Priorities, highest first (a higher one hides the lower ones while it lasts; each expires on its own):

1. ``maintenance`` -- a maintenance test: exactly its level, day or night (e.g. 100 % at noon to check a lamp).
2. ``manual`` -- an operator's override: exactly its level, day or night, including 0 (off).
3. ``boost`` -- adaptive lighting (traffic, an event, motion): at least its level, and only while the program
   and policy have the lamp on; a boost never lights a street in daylight and never dims below the program.

Expiry uses the node's own monotonic seconds, so overrides end even if the gateway is gone. Overrides live in
RAM: a reset returns the street to its program, which is the safe state.
"""

try:
    from micropython import const
except ImportError:  # CPython (unit tests)

    def const(x):  # type: ignore[misc,unused-ignore]
        return x


BOOST = const(0)
MANUAL = const(1)
MAINTENANCE = const(2)
KIND_NAMES = ("boost", "manual", "maintenance")
NONE = const(-1)
_MAX_DURATION_S = const(7 * 86400)


class Overrides:
    def __init__(self):
        self._level = [0, 0, 0]
        self._until = [0, 0, 0]
        self._on = [False, False, False]

    def set(self, kind, level, duration_s, now_s):
        """Start (or replace) override ``kind`` at ``level`` permille for ``duration_s`` seconds."""
        if not 0 <= level <= 1000:
            raise ValueError("level must be 0..100 %")
        if not 0 < duration_s <= _MAX_DURATION_S:
            raise ValueError("duration must be 1 s .. 7 days")
        self._level[kind] = level
        self._until[kind] = now_s + duration_s
        self._on[kind] = True

    def clear(self, kind):
        """End override ``kind`` now; return whether it was active."""
        was = self._on[kind]
        self._on[kind] = False
        return was

    def expire(self, now_s):
        """End overrides whose time is up; return the kind of the first one ended (or NONE)."""
        ended = NONE
        for k in range(3):
            if self._on[k] and now_s >= self._until[k]:
                self._on[k] = False
                ended = k
        return ended

    def active(self):
        """The highest-priority active kind, or NONE."""
        for k in (MAINTENANCE, MANUAL, BOOST):
            if self._on[k]:
                return k
        return NONE

    def resolve(self, lit, program_level):
        """The level to drive, given whether the program/policy has the lamp ``lit`` and at what level."""
        k = self.active()
        if k == MAINTENANCE or k == MANUAL:
            return self._level[k]
        base = program_level if lit else 0
        if k == BOOST and lit and self._level[BOOST] > base:
            return self._level[BOOST]
        return base
