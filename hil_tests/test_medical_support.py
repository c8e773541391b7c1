"""Bench helpers for the medical HIL tests (no tests here): a provisioned medical board and what it reports.

The gateway stand-in is the streetlight suite's :class:`GatewaySim` (real cewire on CPython over pyserial on the
link pseudo-terminal); this module adds the medical views of what arrived (vitals, alarm events) and the
buzzer/LED traces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cewire
from cewire import payloads as P

from hil_tests.emulator.board import EmulatedBoard, default_devices, pin_map
from hil_tests.test_streetlight_support import GatewaySim, run

NODE_ID = 5151
KEY = bytes(range(100, 132))
START = 1795003200.0  # 2026-11-18 12:00 UTC

__all__ = ["KEY", "NODE_ID", "START", "MedicalGateway", "Vital", "gateway", "medical_board", "run"]


def devices() -> list[dict[str, Any]]:
    """The reference board's peripherals, with the MAX30102 pulse oximeter wired in."""
    pins = pin_map()
    devs = default_devices(pins)
    if not any(d["kind"] == "max30102" for d in devs):
        devs.append({"kind": "max30102", "name": "max30102", "address": pins["ADDR_MAX30102"], "bus": pins["I2C_ID"]})
    return devs


def medical_board(tmp: Path, settings: dict[str, Any] | None = None, **node: Any) -> EmulatedBoard:
    """An emulated board with the medical app deployed and provisioned (not started yet), virtual time."""
    flash = tmp / "flash"
    board = EmulatedBoard(flash, role="medical", virtual_time=True, start_time=START, devices=devices())
    prov = {"node_id": NODE_ID, "role": "medical", "site": "hil", "key_id": 1, "key": KEY.hex(),
            "link": {"poll_ms": 50}}
    prov.update(node)
    (flash / "node.json").write_text(json.dumps(prov))
    if settings is not None:
        (flash / "medical.json").write_text(json.dumps(settings))
    return board


class _PriorityTap:
    """Wraps the gateway's Receiver: remembers the priority (frame flags) of every frame it verified."""

    def __init__(self, rx: Any, sink: list[int]) -> None:
        self._rx = rx
        self._sink = sink

    def verify(self, raw: bytes) -> Any:
        f = self._rx.verify(raw)
        self._sink.append(f.priority)  # GatewaySim records every verified frame, in this order
        return f

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rx, name)


class MedicalGateway(GatewaySim):
    """GatewaySim that also keeps each recorded frame's priority (``priorities[i]`` for ``records[i]``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.priorities: list[int] = []
        self.rx = _PriorityTap(self.rx, self.priorities)  # type: ignore[assignment]


def gateway(board: EmulatedBoard) -> MedicalGateway:
    gw = MedicalGateway(board.link_port, node_id=NODE_ID, key=KEY)
    gw.clock = board.now()
    return gw


@dataclass
class Vital:
    t: int
    hr: float | None
    spo2: float | None
    quality: int
    temp: float | None


def vitals(gw: GatewaySim) -> list[Vital]:
    """Every vitals record received, in time order (batched records expanded)."""
    out = []
    for t, v in gw.telemetry():
        hr = v.get(P.L_HR)
        spo2 = v.get(P.L_SPO2)
        temp = v.get(P.L_TEMP)
        out.append(Vital(t, hr / 10 if hr is not None else None, spo2 / 10 if spo2 is not None else None,
                         v.get(P.L_QUALITY, 0), temp / 100 if temp is not None else None))
    return sorted(out, key=lambda x: x.t)


def alarm_events(gw: MedicalGateway) -> list[tuple[str, str, int, int]]:
    """(code name, state name, priority 1..3, frame index) of every EVENT, in arrival order."""
    states = {P.EV_CLEARED: "cleared", P.EV_RAISED: "raised", P.EV_ESCALATED: "escalated", P.EV_ACKED: "acked",
              P.EV_PAUSED: "paused", P.EV_INFO: "info"}
    out = []
    for i, r in enumerate(gw.records):
        if r.ftype == cewire.T_EVENT:
            e = P.parse_event(r.body)
            name = cewire.codes.NAMES.get(e["code"], str(e["code"]))
            out.append((name, states.get(e["state"], "?"), gw.priorities[i], i))
    return out


def tones(board: EmulatedBoard, since_ms: float = 0.0) -> list[tuple[float, float]]:
    """Buzzer pulses as (start ms, Hz) since ``since_ms`` (board clock)."""
    out = []
    on = False
    for row in board.hw.trace("PIN_BUZZER"):
        t, duty = row[0], row[1]
        hz = row[2] if len(row) > 2 else 0
        if duty > 0 and not on and t >= since_ms:
            out.append((t, hz))
        on = duty > 0
    return out


def led_edges(board: EmulatedBoard, since_ms: float = 0.0) -> list[tuple[float, int]]:
    return [(r[0], int(r[1])) for r in board.hw.trace("PIN_STATUS_LED") if r[0] >= since_ms]
