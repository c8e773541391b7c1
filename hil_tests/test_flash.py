"""The flashing tool against emulated boards: deploy, skip unchanged, provision and HELLO, rollback after a
failed boot, power cut at many points of a deploy, and a batch of ten boards through the CLI.

The app deployed here is a small test app (role ``medical``: a package whose ``main()`` prints its version,
sends a signed HELLO on the link UART with the provisioned key, and has a ``selftest()``), beside the real
shared libraries (cewire, node, drivers), so that a broken and a working build can be told apart on the
console. The boards are emulated (MicroPython 1.29 WebAssembly VM behind a pty, see hil_tests/README.md).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from cityedge.manifest import load_manifest
from cityedge.paths import FIRMWARE
from hil_tests.emulator.board import BoardFarm, EmulatedBoard
from tools.flash import ledger
from tools.flash.board import Board
from tools.flash.deploy import build_image, deploy, probe_roots
from tools.flash.errors import EXIT_BATCH, EXIT_BOOT, EXIT_SELFTEST
from tools.flash.flow import Job, run_job
from tools.flash.transport import RawRepl

ROLE = "medical"

APP = """\
import asyncio
import json

VERSION = {version!r}


def _hello():
    from machine import UART
    import board
    from cewire import cbor
    from cewire.frame import T_HELLO, Encoder, Key

    with open('/node.json') as f:
        cfg = json.loads(f.read())
    key = Key(bytes.fromhex(cfg['key']), cfg['key_id'])
    hello = Encoder(cfg['node_id'], key).stream(T_HELLO, 1, 0, cbor.dumps({{'v': VERSION}}))
    uart = UART(board.LINK_UART_ID, board.LINK_BAUD)
    uart.write(b'\\x00')  # ends whatever the line held before
    uart.write(hello)


def selftest():
    return {{'lamp_100': True, 'program_level': True, 'sensor_c': 36.8, 'probe': {selftest_ok!r}}}


async def main():
    print('APP-RUNNING', VERSION)
    try:
        _hello()
    except Exception as e:  # no /node.json yet, or a library problem: the HELLO test says so
        print('no hello:', e)
    while True:
        await asyncio.sleep(1)
"""
BROKEN = "raise RuntimeError('this build is broken')\n"


def make_firmware(root: Path, app_source: str, build: str = "") -> Path:
    """A firmware tree: the project's boot files, libraries and pin maps, with ``app_source`` as the app.

    ``build`` adds a last statement to every library file, so that every compiled file differs between builds
    (their sizes stay equal for builds of the same length).
    """
    if root.exists():
        shutil.rmtree(root)
    for name in ("boot.py", "main.py"):
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIRMWARE / name, root / name)
    shutil.copytree(FIRMWARE / "lib", root / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(FIRMWARE / "boards", root / "boards", ignore=shutil.ignore_patterns("__pycache__"))
    if build:
        for src in (root / "lib").rglob("*.py"):
            if src.name != "bootmgr.py":
                src.write_text(src.read_text() + f"\n_BUILD = {build!r}\n")
    (root / "apps" / ROLE).mkdir(parents=True)
    (root / "apps" / ROLE / "__init__.py").write_text(app_source)
    return root


def app(root: Path, version: str, selftest_ok: bool = True, build: str = "") -> Path:
    return make_firmware(root / version, APP.format(version=version, selftest_ok=selftest_ok), build)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flash")


# the bench plugin's board (hil_tests/plugin.py): emulated, or the real one given with --board-port
pytestmark = pytest.mark.board(role="bare")


def emulated(b: object) -> bool:
    return isinstance(b, EmulatedBoard)


def job(work: Path, b: EmulatedBoard, firmware: Path, **kw: object) -> Job:
    """A deploy of ``firmware`` to ``b``, into the A/B slots of the filesystem (these tests are about the slots:
    rollback, unchanged files, power cuts; the ROM partition has its own in test_romfs.py)."""
    j = Job(port=b.repl_port, role=ROLE, manifest=work / "nodes.json", ledger=work / "ledger.jsonl",
            node_id=1001, site="bay-3", lat=53.55, lon=9.99, settle=0.3, boot_timeout=15, tree=firmware,
            layout="files")
    for k, v in kw.items():
        setattr(j, k, v)
    return j


run = run_job


def test_deploy_provision_hello_selftest_then_unchanged(work: Path, board: EmulatedBoard) -> None:
    fw_a = app(work, "A")
    r = run(job(work, board, fw_a, link_port=board.link_port))
    assert r["result"] == "ok", r
    assert r["app"]["sent"] > 10 and r["provisioning"] == "provisioned"
    # the HELLO came over the link, signed with the key just provisioned (verified with cewire on CPython)
    if board.link_port:
        assert r["verify"]["how"] == "hello on link" and r["verify"]["hello"]["node_id"] == 1001
        assert r["verify"]["hello"]["v"] == "A"
    assert r["verify"]["selftest"]["lamp_100"] is True
    rec = load_manifest(work / "nodes.json").get(1001)
    assert rec is not None and rec.key_id == 1 and rec.chip_id == r["chip_id"]
    entry = ledger.read(work / "ledger.jsonl")[-1]
    assert entry["result"] == "ok" and entry["chip_id"] == r["chip_id"] and entry["micropython"] == "1.29.0"
    assert entry["app"]["version"] == r["app"]["version"]
    assert f"/app_{r['app']['slot']}/lib/medical/__init__.mpy" in entry["hashes"]
    assert rec.key.hex() not in (work / "ledger.jsonl").read_text()  # never a key in the ledger
    if emulated(board):
        assert rec.key.hex() not in board.serial_log  # nor on the console
        board.wait_for_output("APP-RUNNING A", timeout=10)  # left running its app

    again = run(job(work, board, fw_a, verify=False))
    assert again["result"] == "ok" and again["app"]["unchanged"] is True and again["app"]["sent"] == 0
    assert again["provisioning"] == "kept the node's provisioning"
    assert again["wire_bytes"] < 2000  # nothing but the probe's questions travelled


def test_reprovision_rotates_key(work: Path, board: EmulatedBoard) -> None:
    old = load_manifest(work / "nodes.json").get(1001)
    r = run(job(work, board, app(work, "A"), reprovision=True, link_port=board.link_port))
    assert r["result"] == "ok" and r["key_id"] == 2, r
    new = load_manifest(work / "nodes.json").get(1001)
    assert old is not None and new is not None and new.key != old.key and new.retired_key_ids == (1,)
    if board.link_port:
        assert r["verify"]["hello"]["key_id"] == 2  # the node signs with the new key at once


def test_failed_selftest_is_reported(work: Path, board: EmulatedBoard) -> None:
    r = run(job(work, board, app(work, "S", selftest_ok=False)))
    assert r["result"] == "failed" and r["exit_code"] == EXIT_SELFTEST and "probe" in r["error"], r


def test_rollback_after_failed_boot(work: Path, board: EmulatedBoard) -> None:
    assert run(job(work, board, app(work, "B")))["result"] == "ok"
    broken = make_firmware(work / "broken", BROKEN)
    r = run(job(work, board, broken, boot_timeout=20))
    assert r["result"] == "failed" and r["exit_code"] == EXIT_BOOT and "rolled back" in r["error"], r
    assert "RuntimeError: this build is broken" in r["error"]
    if emulated(board):
        board.wait_for_output("APP-RUNNING B", timeout=10)  # the previous app runs again
    with RawRepl(board.repl_port) as repl:
        repl.enter_raw()
        st = Board(repl).probe().state
    assert st is not None and st["active"] != r["app"]["slot"]
    assert st["rollback"]["from"] == r["app"]["slot"] and st["rollback"]["tries"] == 3
    assert "this build is broken" in st["rollback"]["error"]
    failed = ledger.read(work / "ledger.jsonl")[-1]
    assert failed["result"] == "failed" and failed["exit_code"] == EXIT_BOOT

    from cityedge.cli import main

    # the status command shows the report; the next good deploy clears it
    assert main(["flash", "status", board.repl_port]) == 0
    ok = run(job(work, board, app(work, "C")))
    assert ok["result"] == "ok"
    with RawRepl(board.repl_port) as repl:
        repl.enter_raw()
        st = Board(repl).probe().state
    assert st is not None and st["rollback"] is None and st["trial"] is False


def _booted_version(b: EmulatedBoard) -> str:
    text = b.wait_for_output("APP-RUNNING ", timeout=15)
    return text.split("APP-RUNNING ", 1)[1][:1]


def _confirm(b: EmulatedBoard) -> None:
    with RawRepl(b.repl_port) as repl:
        repl.enter_raw()
        Board(repl).run("import bootmgr\nbootmgr.confirm()\nbootmgr.clear_report()", what="confirming")


@pytest.mark.emulator_only
def test_power_cut_at_many_points_of_a_deploy(work: Path, board: EmulatedBoard) -> None:
    """Cut the power after N bytes of a full deploy, for N spread over the whole transfer and around the
    switch; after every cut the node boots a complete app (the old or the new one, never a mix or nothing),
    and the next deploy completes. Builds P, Q and R differ in every file, with equal sizes; rotating through
    three builds means the free slot never already holds the build being deployed."""
    trees = {v: app(work, v, build=v) for v in ("P", "Q", "R")}
    assert run(job(work, board, trees["P"], verify=False))["result"] == "ok"

    def deploy_to(version: str, cut_after: int | None = None, in_switch: bool = False,
                  after_switch: float | None = None) -> int:
        """Deploy; cut the power after ``cut_after`` bytes, or halfway through sending the last program
        (the one that writes app.json and replaces /boot.json), or ``after_switch`` s after its end arrived
        (the board runs a program only once all of it arrived). Returns the bytes sent."""
        with RawRepl(board.repl_port) as repl:
            repl.enter_raw()
            b = Board(repl)
            info = b.probe(probe_roots())
            image = build_image(ROLE, info, firmware=trees[version])
            start = repl.tx_bytes
            switch_sent = False
            tail = b""  # the marker may straddle two writes (raw-paste sends window-sized pieces)
            real = repl._write

            def cut(delay: float = 0.02) -> None:
                time.sleep(delay)  # let the board take what did arrive
                board.power_off()
                raise ConnectionAbortedError("power cut")

            def write(data: bytes) -> None:
                nonlocal switch_sent, tail
                sent = repl.tx_bytes - start
                if cut_after is not None and sent + len(data) > cut_after:
                    real(data[: max(0, cut_after - sent)])
                    cut()
                marker = b"_J('/boot.json'" in tail + data
                tail = (tail + data)[-32:]
                if marker and not switch_sent:
                    if in_switch:
                        real(data[: len(data) // 2])
                        cut()
                    switch_sent = True
                real(data)
                if data == b"\x04" and switch_sent and after_switch is not None:
                    cut(after_switch)

            repl._write = write  # type: ignore[method-assign]
            try:
                deploy(b, info, image)
            except ConnectionAbortedError:
                pass
            return repl.tx_bytes - start

    def boot(how: str) -> str:
        board.clear_serial_log()  # (the log keeps 256 KiB: offsets into it would move)
        board.power_on() if how == "power_on" else board.hard_reset()
        text = board.wait_for_output("APP-RUNNING ", timeout=15)
        return text.split("APP-RUNNING ", 1)[1][:1]

    total = deploy_to("Q")  # one full deploy P -> Q, every file sent
    assert boot("reset") == "Q"
    _confirm(board)
    cur = "Q"
    # spread over the transfer; then around the last program (renames, the slot's app.json, the switch):
    # while it arrives, the moment it is complete, a little later, and after the tool finished
    cuts: list[dict] = [{"cut_after": int(total * f)} for f in (0.03, 0.35, 0.7)]
    cuts += [{"in_switch": True}, {"after_switch": 0.0}, {"after_switch": 0.004}, {}]
    seen = []
    for cut in cuts:
        nxt = {"P": "Q", "Q": "R", "R": "P"}[cur]
        deploy_to(nxt, **cut)
        if not cut:
            board.power_off()  # the tool is done: the switch is on the flash
        assert board.status()["powered"] is False, f"the deploy ended before the cut {cut}"
        booted = boot("power_on")
        assert booted in (cur, nxt), booted
        seen.append(booted == nxt)
        if booted != nxt:
            deploy_to(nxt)  # the node takes the next deploy completely
            assert boot("reset") == nxt
        _confirm(board)
        cur = nxt
    assert seen[0] is False and seen[-1] is True, seen  # cuts before the switch keep the old app, after it the new


@pytest.mark.emulator_only
def test_batch_of_ten_boards_through_the_cli(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cityedge.cli import main

    with BoardFarm.create(work / "farm", 10, role=None) as farm:
        for b in farm:
            b.wait_for_output(">>> ", timeout=30)
        ports = [b.repl_port for b in farm]
        t0 = time.monotonic()
        code = main(["flash", "deploy", *ports, "--role", "bare", "--node-id", "5000", "--site", "depot",
                     "--lat", "48.1", "--lon", "11.5", "--manifest", str(work / "batch.json"),
                     "--ledger", str(work / "batch.jsonl"), "--json", "--boot-timeout", "15"])
        took = time.monotonic() - t0
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert [r["result"] for r in out] == ["ok"] * 10 and [r["node_id"] for r in out] == list(range(5000, 5010))
    reg = load_manifest(work / "batch.json")
    assert len(reg) == 10 and len({r.key for r in reg}) == 10  # ten different keys
    assert len(ledger.read(work / "batch.jsonl")) == 10
    assert took < 120


def test_a_bug_on_one_board_of_a_batch_fails_that_board_only(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception while deploying one board (a bug, injected here: no real one is at hand) ends
    that board's job with a sentence and a crash log entry; the other board is deployed and the summary printed."""
    from cityedge.cli import main
    from tools.flash import flow

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with BoardFarm.create(work / "farm2", 2, role=None) as farm:
        for b in farm:
            b.wait_for_output(">>> ", timeout=30)
        good, bad = (b.repl_port for b in farm)
        real = flow.build_image

        def buggy(role: str, info: object, **kw: object) -> object:
            if getattr(info, "port", None) == bad:
                raise RuntimeError("injected bug")
            return real(role, info, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(flow, "build_image", buggy)
        code = main(["flash", "deploy", good, bad, "--role", "bare", "--layout", "files", "--no-verify",
                     "--manifest", str(work / "m3.json"), "--ledger", str(work / "l3.jsonl"), "--json"])
    out = {r["port"]: r for r in json.loads(capsys.readouterr().out)}
    assert code == EXIT_BATCH
    assert out[good]["result"] == "ok", out[good]
    assert out[bad]["result"] == "failed" and out[bad]["exit_code"] == 70
    assert out[bad]["error"] == "internal error: RuntimeError: injected bug"
    log = tmp_path / "state" / "cityedge" / "crash.log"
    assert str(log) in out[bad]["hint"]
    text = log.read_text()
    assert f"(deploy to {bad})" in text and "Traceback" in text and "injected bug" in text
    assert len(ledger.read(work / "l3.jsonl")) == 2


def test_batch_summary_and_exit_code_when_one_board_fails(work: Path, board: EmulatedBoard,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from cityedge.cli import main

    code = main(["flash", "deploy", board.repl_port, "/dev/pts/does-not-exist", "--role", "bare", "--no-verify",
                 "--manifest", str(work / "m2.json"), "--ledger", str(work / "l2.jsonl")])
    table = capsys.readouterr().out
    assert code == EXIT_BATCH
    assert "ok" in table and "failed" in table and "no such serial port" in table


def test_parallel_port_use_is_refused(work: Path, board: EmulatedBoard) -> None:
    """Two deploys on one port at once: the second one is told the port is busy and by whom."""
    from tools.flash.errors import EXIT_PORT_BUSY, FlashError

    with RawRepl(board.repl_port) as held:
        held.enter_raw()
        errors: list[FlashError] = []

        def second() -> None:
            try:
                RawRepl(board.repl_port).open()
            except FlashError as exc:
                errors.append(exc)

        t = threading.Thread(target=second)
        t.start()
        t.join()
    assert errors and errors[0].exit_code == EXIT_PORT_BUSY


@pytest.mark.emulator_only
def test_real_streetlight_app_builtin_selftest_finds_a_dead_lamp(work: Path, board: EmulatedBoard) -> None:
    """The project's own streetlight app: HELLO on the link, then the tool's lamp check (100 % draws power,
    off draws none); with the lamp model failed open, the self-test names the lamp (exit 12)."""
    r = run(job(work, board, FIRMWARE, role="streetlight", node_id=1002, link_port=board.link_port))
    assert r["result"] == "ok", r
    assert r["verify"]["hello"]["node_id"] == 1002
    st = r["verify"]["selftest"]
    assert st["source"] == "cityedge flash" and st["lamp_100"]["ok"] and st["lamp_100"]["on_mw"] > 1000
    # the lamp fails open once the node is up (a fault set earlier would not survive the reboot's respawn)

    def fail_lamp(step: str, frac: float) -> None:
        if step == "self-test":
            board.hw.set("lamp", health="open")

    try:
        bad = run_job(job(work, board, FIRMWARE, role="streetlight", node_id=1002), progress=fail_lamp)
    finally:
        board.hw.set("lamp", health="ok")
    assert bad["result"] == "failed" and bad["exit_code"] == EXIT_SELFTEST and "lamp_100" in bad["error"], bad
