"""Events are labelled by what they are (their code), not by the lane their priority put them in."""

from __future__ import annotations

from typing import Any

import pytest
from cewire import codes

from cityedge.demo import Demo, event_label
from gateway.events import Event, Priority, StoredEvent
from gateway.ops.consumer import Consumer
from gateway.ops.labels import CATEGORIES, MEDICAL_CODES, Category, code_category, event_category
from gateway.uplink import codec

FAULTS = [
    codes.LAMP_FAILURE,
    codes.DAY_BURNER,
    codes.CYCLING,
    codes.OVER_VOLTAGE,
    codes.UNDER_CURRENT,
    codes.DRIVER_FAULT,
    codes.LIGHT_SENSOR_FAILURE,
    codes.POWER_HIGH,
    codes.METER_FAILURE,
    codes.SAFE_MODE,
    codes.CONFIG_INVALID,
]
STATES = [codes.OVERRIDE, codes.PROGRAM_CHANGED, codes.GATEWAY_LOST]
ALARMS = [
    codes.SPO2_LOW,
    codes.DESATURATION,
    codes.PR_HIGH,
    codes.TEMP_HIGH,
    codes.PROBE_OFF,
    codes.NO_PULSE,
    codes.SENSOR_FAILURE,
    codes.LOW_BATTERY,
    codes.ALARM_SYSTEM_FAILURE,
]
INFOS = [codes.CLOCK_SET, codes.OUTBOX_DROPPED]


@pytest.mark.parametrize(
    ("code", "category"),
    [(c, Category.FAULT) for c in FAULTS]
    + [(c, Category.STATE) for c in STATES]
    + [(c, Category.ALARM) for c in ALARMS]
    + [(c, Category.INFO) for c in INFOS],
)
@pytest.mark.parametrize("lane", ["alarm", "fault"])
def test_real_codes_get_their_category_in_either_lane(code: int, category: Category, lane: str) -> None:
    assert event_category("event", {"code": code, "state": "raised"}, lane) is category


def test_every_cewire_code_has_a_category() -> None:
    # a code added to cewire without a category here would be shown as a bare EVENT: make it fail here first
    numbers = {v for k, v in vars(codes).items() if k.isupper() and isinstance(v, int)}
    assert numbers, "cewire.codes has no codes?"
    unknown = sorted(n for n in numbers if n not in CATEGORIES and n not in MEDICAL_CODES)
    assert unknown == []


def test_unknown_codes_other_kinds_and_malformed_bodies() -> None:
    assert code_category(120) is Category.ALARM, "the medical range is all alarm conditions"
    assert code_category(60, "fault") is Category.EVENT and code_category(60, "alarm") is Category.ALARM
    assert event_category("event", {"name": "lamp_failure"}, "fault") is Category.EVENT  # no code: cannot tell
    assert event_category("event", {"code": True}, "alarm") is Category.ALARM
    assert event_category("node_state", {"online": False}, "fault") is Category.STATE
    assert event_category("hello", {"boot": 3}, "fault") is Category.STATE
    assert event_category("telemetry", {}, "telemetry") is None
    assert event_category("cmd_status", {"status": "ok"}, "ack") is None


def _feed(
    consumer: Consumer, seq: int, priority: Priority, body: dict[str, Any], kind: str = "event"
) -> dict[str, Any]:
    batch = codec.encode_batch("gw-demo", "e1", [StoredEvent(1, seq, Event("node:101", kind, priority, body))])
    (record,) = consumer.feed(f"cityedge/demo/gw-demo/ev/{priority.lane}", batch)
    return record


def test_consumer_records_and_demo_view_label_overrides_as_state_not_fault() -> None:
    consumer = Consumer(site="demo")
    demo = Demo(lights=1, medical=True, broker_url=None, duration=None, state_dir=None, plain=True)
    fault_lane = {"prio": 2}
    override = _feed(
        consumer,
        1,
        Priority.FAULT,
        {"code": codes.OVERRIDE, "name": "override", "state": "raised", "text": "boost", **fault_lane},
    )
    lamp = _feed(
        consumer,
        2,
        Priority.FAULT,
        {"code": codes.LAMP_FAILURE, "name": "lamp_failure", "state": "raised", **fault_lane},
    )
    program = _feed(
        consumer,
        3,
        Priority.FAULT,
        {"code": codes.PROGRAM_CHANGED, "name": "program_changed", "state": "info", **fault_lane},
    )
    desat = _feed(
        consumer,
        1,
        Priority.ALARM,
        {"code": codes.DESATURATION, "name": "desaturation", "state": "raised", "prio": 3, "value": 78.0, "unit": "%"},
    )
    ended = _feed(
        consumer, 4, Priority.FAULT, {"code": codes.OVERRIDE, "name": "override", "state": "cleared", **fault_lane}
    )
    telemetry = _feed(consumer, 1, Priority.TELEMETRY, {"seq": 1, "records": [{"level": 100.0}]}, "telemetry")
    assert [r.get("category") for r in (override, lamp, program, desat, ended, telemetry)] == [
        "state",
        "fault",
        "state",
        "alarm",
        "state",
        None,
    ]
    assert [event_label(r) for r in (override, lamp, program, desat, ended, telemetry)] == [
        "STATE",
        "FAULT",
        "STATE",
        "ALARM",
        "STATE",
        None,
    ]
    for record in (override, lamp, program, desat, ended, telemetry):
        demo._upstream(record)
    listed = [line.split()[1] for line in demo.alarms]
    assert listed == ["STATE", "FAULT", "STATE", "ALARM", "STATE"]
    assert any("override raised" in line and " STATE " in line for line in demo.alarms)
    # the GeoJSON's raised alarms and faults of the node: the lamp failure and the desaturation, no override
    assert sorted(consumer.nodes[("gw-demo", "101")].alarms) == ["desaturation", "lamp_failure"]
