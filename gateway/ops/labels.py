"""What an uplink event *is*, for the operations center's views: alarm, fault, state change or information.

The lane an event travels in is its urgency, not its nature: a streetlight reports the start of an override
at the same priority as a lamp failure, so both arrive in the ``fault`` lane, and any high-priority event
arrives in the ``alarm`` lane. Views label events by :func:`event_category` instead, which looks at the
event code (docs/protocol.md §6.8).

The category table lives here, on the CPython side, keyed by the code numbers of :mod:`cewire.codes`: the
nodes do not need it, and every byte of their RAM counts.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from cewire import codes


class Category(enum.StrEnum):
    """What an event is. ``label`` is how views print it."""

    ALARM = "alarm"  # a patient needs attention (medical alarm conditions, physiological or technical)
    FAULT = "fault"  # equipment is broken or misbehaving: someone has to repair or reconfigure it
    STATE = "state"  # something changed as it should (override started/ended, program, link, boot)
    INFO = "info"  # worth recording, needs nobody (clock set, telemetry dropped from a full node outbox)
    EVENT = "event"  # a code this table does not know (a newer node app): shown as it is

    @property
    def label(self) -> str:
        return self.value.upper()


# codes 64..127 are the medical range: every one of them is an IEC 60601-1-8 alarm condition (docs/alarms.md)
MEDICAL_CODES = range(64, 128)

CATEGORIES: dict[int, Category] = {
    # streetlight faults
    codes.LAMP_FAILURE: Category.FAULT,
    codes.DAY_BURNER: Category.FAULT,
    codes.CYCLING: Category.FAULT,
    codes.OVER_VOLTAGE: Category.FAULT,
    codes.UNDER_VOLTAGE: Category.FAULT,
    codes.OVER_CURRENT: Category.FAULT,
    codes.UNDER_CURRENT: Category.FAULT,
    codes.DRIVER_FAULT: Category.FAULT,
    codes.LIGHT_SENSOR_FAILURE: Category.FAULT,
    codes.POWER_HIGH: Category.FAULT,
    codes.POWER_LOW: Category.FAULT,
    codes.METER_FAILURE: Category.FAULT,
    # streetlight state changes: raised when an override (boost, manual, maintenance) starts, cleared at its end
    codes.OVERRIDE: Category.STATE,
    codes.PROGRAM_CHANGED: Category.STATE,
    # any node
    codes.GATEWAY_LOST: Category.STATE,  # raised when the node lost its gateway, cleared when it is back
    codes.SAFE_MODE: Category.FAULT,  # the app did not start: the node runs its safe-mode program
    codes.CONFIG_INVALID: Category.FAULT,  # the node runs on defaults until its configuration is fixed
    codes.OUTBOX_DROPPED: Category.INFO,
    codes.CLOCK_SET: Category.INFO,
}

# uplink kinds other than ``event`` that are state changes of a node or gateway
_STATE_KINDS = frozenset({"hello", "node_state", "gw_state"})


def code_category(code: int, lane: str = "") -> Category:
    """The category of event ``code``; an unknown code is an alarm in the medical range or the alarm lane."""
    category = CATEGORIES.get(code)
    if category is not None:
        return category
    if code in MEDICAL_CODES or lane == "alarm":
        return Category.ALARM
    return Category.EVENT


def event_category(kind: str, body: Mapping[str, Any], lane: str = "") -> Category | None:
    """The category of one uplink event (``kind``, ``body`` and ``lane`` as the consumer prints them).

    ``event``: by its code; ``hello`` (a boot), ``node_state`` and ``gw_state``: state changes; other kinds
    (telemetry, command statuses, vision) are not events of this sort: None.
    """
    if kind == "event":
        code = body.get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            return code_category(code, lane)
        return Category.ALARM if lane == "alarm" else Category.EVENT
    if kind in _STATE_KINDS:
        return Category.STATE
    return None
