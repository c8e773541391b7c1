"""The node's reliable link and outbox (firmware/lib/node), on the MicroPython VM and on CPython.

Each scenario in node_link_scenarios.py drives a real node.link.Link against a minimal gateway built
from cewire (Receiver + Encoder) over an in-memory serial pair, on virtual time, and returns facts that the
tests below check. The same scenarios run on the real MicroPython VM (one session) and on CPython.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hil_tests.emulator.runner import FIRMWARE_LIB, MicroPythonSession

SCENARIOS = Path(__file__).with_name("node_link_scenarios.py")
NAMES = ["alarm_overtakes", "lossy", "commands_time", "reentrant", "cmd_across_reboot", "key_rotation", "reboot",
         "bounds", "power_cuts"]


def _jsonish(obj: Any) -> Any:
    """What json.dumps/loads makes of a result (tuples → lists, int keys → str), to compare both runtimes."""
    return json.loads(json.dumps(obj))


@pytest.fixture(scope="module")
def mpy_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    src = tmp_path_factory.mktemp("scenarios")
    shutil.copy(SCENARIOS, src / "node_scenarios.py")
    out: dict[str, Any] = {}
    with MicroPythonSession(mounts={FIRMWARE_LIB: "/lib", src: "/th"}) as mp:
        mp.run("import sys\nsys.path.append('/th')\nimport json, node_scenarios as h").check()
        for name in NAMES:
            res = mp.run(f"print(json.dumps(h.scenario_{name}('/w_{name}')))").check()
            out[name] = json.loads(res.stdout)
        res = mp.run("print(json.dumps(await h.scenario_async_run('/w_async')))").check()
        assert "link: callback ValueError: app bug" in res.stdout  # the app's error is said, not hidden
        out["async_run"] = json.loads(res.stdout.splitlines()[-1])
    return out


@pytest.fixture(scope="module")
def cpy_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    sys.path.insert(0, str(FIRMWARE_LIB))
    try:
        from tests import node_link_scenarios as h

        root = tmp_path_factory.mktemp("cpy")
        scen: dict[str, Callable[[str], Any]] = {n: getattr(h, f"scenario_{n}") for n in NAMES}
        out = {n: _jsonish(f(str(root / n))) for n, f in scen.items()}
        out["async_run"] = _jsonish(asyncio.run(h.scenario_async_run(str(root / "async"))))
        yield out
    finally:
        sys.path.remove(str(FIRMWARE_LIB))


@pytest.fixture(params=["micropython", "cpython"])
def results(request: pytest.FixtureRequest) -> dict[str, Any]:
    name = "mpy_results" if request.param == "micropython" else "cpy_results"
    return request.getfixturevalue(name)


def test_alarm_overtakes_a_telemetry_backlog(results: dict[str, Any]) -> None:
    r = results["alarm_overtakes"]
    # after an outage with 100 telemetry records queued, the first frame the gateway accepts is the alarm
    assert r["first_after_reconnect"] == "EVENT"
    assert r["first_body"]["0"] == 65 and r["first_body"]["3"] == 780
    # and then the backlog, complete, once each, in order
    assert r["data_count"] == r["data_unique"] == 100
    assert r["data_in_order"] is True
    assert r["backlog"] == [0, 0]
    assert r["acks"] == {"0": 2, "1": 100}
    assert r["retx"] > 0  # frames sent into the outage were retransmitted


def test_lossy_wire_delivers_everything_exactly_once(results: dict[str, Any]) -> None:
    r = results["lossy"]
    assert r["events"] is True
    assert r["data_values"] == list(range(60))
    assert r["data_dups"] == 0
    assert r["backlog"] == [0, 0]
    # damage really happened and was caught by the MAC / COBS checks on both sides
    assert r["gw_errors"] > 0 and r["stream_errors"] + r["rx_bad_node"] > 0


def test_commands_time_and_gateway_supervision(results: dict[str, Any]) -> None:
    r = results["commands_time"]
    assert r["ts_before"] == 0  # no clock before TIME: records carry ts 0 ("unknown")
    assert r["now_after"] == 1763700001  # TIME at t, +1 s of (virtual) ticks, with 500 ms carried
    assert r["times"][0] == [1763700000, 500, 60]
    # CMD 11 ran once (a replay of its frame and a retransmission under a new seq were both refused);
    # the forged CMD 15 never ran
    assert r["calls"] == [[11, "dim", 300], [12, "fly", None], [13, "boom", None]]
    assert r["acks"] == [[11, 0, ""], [12, 2, "fly"], [13, 3, "RuntimeError"], [14, 4, "expired"]]
    assert r["rx_bad"] == 2  # the replayed CMD frame (replay) and the forged one (MAC)
    assert r["cmd_dups"] == 1
    assert r["rx_persisted"] >= 5  # commands persist the gateway's seq at once
    assert r["link_states_lost"] == [False] and r["link_states"] == [False, True]
    assert r["hello"]["role"] == "streetlight" and r["hello"]["reset"] == 3


def test_an_event_sent_from_a_command_handler_loses_no_frame_behind_the_command(results: dict[str, Any]) -> None:
    # the handler's poll runs inside the poll that handed over the command: it must not read the UART into
    # the buffer the outer poll is still decoding
    r = results["reentrant"]
    assert r["calls"] == [21, 22, 23]
    assert r["times"] == [1763700000, 1763700001, 1763700002]
    assert r["rx_bad"] == 0 and r["stream_errors"] == 0
    assert r["events"] == 3 and sorted(r["acks"]) == [21, 22, 23]


def test_command_runs_once_across_a_reboot(results: dict[str, Any]) -> None:
    r = results["cmd_across_reboot"]
    assert r["calls"] == [21]  # the retransmission after the reboot was recognised by its id
    assert r["dups"] == 1
    assert r["cmd_acks"] == [[21, 0, ""]]  # the CMD_ACK queued before the reboot was delivered once
    assert r["backlog"] == [0, 0]


def test_key_rotation_signs_with_the_newest_key(results: dict[str, Any]) -> None:
    r = results["key_rotation"]
    assert r["key_ids"] == [1, 1]  # HELLO and DATA under the new key id
    assert r["backlog"] == [0, 0] and r["rx_bad"] == 0  # ACKs under the old id still accepted by the node
    assert r["old"] == "key_id"  # once retired at the gateway, the old key id is refused


def test_reboot_with_backlog_loses_nothing_and_reuses_no_number(results: dict[str, Any]) -> None:
    r = results["reboot"]
    # numbers restart at the persisted reservation, above everything used before the reboot
    assert r["after_reboot_next"][0] >= r["first_life_next"][0]
    assert r["after_reboot_next"][1] >= r["first_life_next"][1]
    assert r["data"] == list(range(40)) and r["data_dups"] == 0
    assert r["events"] == [{"0": 1, "1": 1}] and r["hellos"] == 2
    assert r["backlog"] == [0, 0]
    assert r["skipped"] > 0  # the reservation skip is seen as a closed gap, not as lost data


def test_long_outage_keeps_events_and_bounds_telemetry(results: dict[str, Any]) -> None:
    r = results["bounds"]
    assert r["backlog"][0] == 40 and r["full"] is True  # events never dropped: the quota refuses new ones
    assert r["backlog"][1] <= 96 and r["dropped"] == [0, 300 - r["backlog"][1]]
    # what survives is the newest telemetry, delivered after the outage; the gap is visible at the gateway
    assert r["data_last"] == 299 and r["data_count"] == r["backlog"][1]
    assert r["data_first"] == 300 - r["backlog"][1]
    assert r["skipped"] == r["dropped"][1]
    assert r["events"] == 40 and r["after"] == [0, 0]


def test_power_cut_at_any_point_of_put_and_ack(results: dict[str, Any]) -> None:
    r = results["power_cuts"]
    assert r["runs"] >= 200 and r["cuts"] == r["runs"]
    assert r["failures"] == []


def test_link_runs_as_an_asyncio_task_and_survives_app_errors(results: dict[str, Any]) -> None:
    r = results["async_run"]
    assert r["backlog"] == [0, 0] and r["got"] == 12
    assert r["first_types"] == ["HELLO", "EVENT"]  # the event went before the 10 telemetry records
    assert r["errors"] == 1  # the app's TIME callback raised; the link went on
    assert r["clock_set"] is True


def test_streetlight_default_quota_holds_24h_of_telemetry() -> None:
    sys.path.insert(0, str(FIRMWARE_LIB))
    try:
        from node.outbox import Outbox

        assert Outbox.__init__.__defaults__ is not None
        quotas = Outbox.__init__.__defaults__[1]
        assert quotas[1] >= 24 * 60 // 15
    finally:
        sys.path.remove(str(FIRMWARE_LIB))
