"""Bench helpers for the streetlight HIL tests (no tests here): a provisioned board and a gateway stand-in.

:class:`GatewaySim` plays the gateway on the board's link UART with the real protocol implementation
(``cewire`` on CPython, pyserial on the pseudo-terminal): it verifies every frame (MAC, replay window),
acknowledges only what it recorded, answers duplicates with its current ACK, and sends TIME and CMD frames.
Going "offline" (``online = False``) it stops reading the link, as a dead gateway would.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cewire
import serial
from cewire import payloads as P

from hil_tests.emulator.board import EmulatedBoard

NODE_ID = 4242
KEY = bytes(range(32))
# 2026-11-18 12:00 UTC (a Wednesday): Berlin, sunset 15:08 UTC, sunrise next day 06:35 UTC
NOON_UTC = 1795003200.0
BERLIN = (52.52, 13.40)


def provision(flash: Path, settings: dict[str, Any] | None = None, **node: Any) -> None:
    """Write /node.json (what the flashing tool writes) and, if given, /streetlight.json."""
    prov = {"node_id": NODE_ID, "role": "streetlight", "site": "hil", "lat": BERLIN[0], "lon": BERLIN[1],
            "key_id": 1, "key": KEY.hex(), "link": {"poll_ms": 100}}
    prov.update(node)
    (flash / "node.json").write_text(json.dumps(prov))
    if settings is not None:
        (flash / "streetlight.json").write_text(json.dumps(settings))


def streetlight_board(tmp: Path, settings: dict[str, Any] | None = None, start: float = NOON_UTC,
                      **node: Any) -> EmulatedBoard:
    """An emulated board with the streetlight app deployed and provisioned (not started yet)."""
    flash = tmp / "flash"
    board = EmulatedBoard(flash, role="streetlight", virtual_time=True, start_time=start)
    provision(flash, settings, **node)
    return board


@dataclass
class Record:
    ftype: int
    seq: int
    ts: int
    body: Any
    channel: int


@dataclass
class GatewaySim:
    port: str
    node_id: int = NODE_ID
    key: bytes = KEY
    key_id: int = 1
    online: bool = True
    records: list[Record] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ser = serial.Serial(self.port, 115200, timeout=0.002)
        ring = cewire.Keyring()
        ring.add(self.node_id, self.key, self.key_id)
        self.rx = cewire.Receiver(ring)
        self.dec = cewire.StreamDecoder()
        self.k = cewire.Key(self.key, self.key_id)
        self.seq = 0
        self.duplicates = 0
        self.read_errors = 0
        self.clock = 0.0  # board time (Unix s) for TIME/CMD stamps, set by run()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # answer in (real) time, as a gateway does, while the board's virtual clock runs
        self._thread = threading.Thread(target=self._serve, name="gateway-sim", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.ser.close()

    # --- receiving
    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.ser.read(4096)
            except (OSError, serial.SerialException):
                # a board reset can make one read fail; a gateway keeps reading (close() sets _stop)
                self.read_errors += 1
                self._stop.wait(0.01)
                continue
            if data and self.online:
                self._handle(data)

    def _handle(self, data: bytes) -> None:
        for raw in self.dec.feed(data):
            try:
                f = self.rx.verify(raw)
            except cewire.WireError as e:
                if e.code == cewire.E_REPLAY:
                    self.duplicates += 1
                    self._ack()
                continue
            self.records.append(Record(f.ftype, f.seq, f.ts, f.body, f.channel))
            self.rx.commit(f)
            self._ack()

    def _ack(self) -> None:
        self.send(cewire.T_ACK, P.ack(self.rx.acks(self.node_id)))

    # --- sending
    def send(self, ftype: int, payload: bytes) -> None:
        with self._lock:
            self.seq += 1
            buf = cewire.encode_frame(ftype, self.node_id, self.seq, int(self.clock),
                                      cewire.flags_for(cewire.CH_CTRL), payload, self.k)
            self.ser.write(cewire.cobs_encode(buf))

    def time_sync(self, unix_s: float, tz_min: int = 0) -> None:
        self.send(cewire.T_TIME, P.time_sync(int(unix_s), 0, tz_min))

    def command(self, cmd_id: int, op: str, args: dict[str, Any] | None = None) -> None:
        self.send(cewire.T_CMD, P.cmd(cmd_id, op, args))

    # --- what arrived
    def settle(self, quiet_s: float = 0.3, timeout: float = 5.0) -> None:
        """Wait (real time) until no record has come in for ``quiet_s``: what the board wrote before is in."""
        deadline = time.monotonic() + timeout
        seen, since = len(self.records), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            if len(self.records) != seen:
                seen, since = len(self.records), time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return

    def of_type(self, ftype: int) -> list[Record]:
        return [r for r in self.records if r.ftype == ftype]

    def hellos(self) -> list[dict[str, Any]]:
        return [P.parse_hello(r.body) for r in self.of_type(cewire.T_HELLO)]

    def events(self) -> list[dict[str, Any]]:
        return [P.parse_event(r.body) for r in self.of_type(cewire.T_EVENT)]

    def telemetry(self) -> list[tuple[int, dict[int, int]]]:
        out: list[tuple[int, dict[int, int]]] = []
        for r in self.of_type(cewire.T_DATA):
            out.extend(P.parse_data(r.body, r.ts))
        return out

    def cmd_acks(self) -> dict[int, tuple[int, str]]:
        return {a[0]: (a[1], a[2]) for a in (P.parse_cmd_ack(r.body) for r in self.of_type(cewire.T_CMD_ACK))}


def run(board: EmulatedBoard, gw: GatewaySim | None, seconds: float, step: float = 10.0) -> None:
    """Advance the board's virtual clock by ``seconds`` in ``step``s; the gateway answers meanwhile."""
    left = seconds
    while left > 1e-9:
        dt = min(step, left)
        now = board.advance(dt)
        left -= dt
        if gw is not None:
            gw.clock = now
            time.sleep(0.001)
