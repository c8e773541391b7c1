"""The "romfs" node layout on emulated boards: the app in the board's ROM partition (ROMFS, run in place).

The boards run the real MicroPython 1.29 VM with a ROM partition (``rom_kb``, hil_tests/README.md); the
flashing tool talks to them over their pty serial port, as to an ESP32 built with a ROMFS partition.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cityedge.paths import ROOT
from hil_tests.emulator.board import BoardError, EmulatedBoard
from hil_tests.plugin import Repl
from hil_tests.test_flash import BROKEN, _confirm, app, make_firmware
from hil_tests.test_streetlight_support import provision
from tools.flash import ledger
from tools.flash.board import Board
from tools.flash.deploy import probe_roots
from tools.flash.errors import EXIT_BOOT, EXIT_ROMFS, EXIT_VERIFY, FlashError
from tools.flash.flow import Job, run_job
from tools.flash.romfs import NO_ROMFS, build_rom_image, build_romfs, deploy_romfs
from tools.flash.transport import RawRepl

pytestmark = [pytest.mark.board(role="bare"), pytest.mark.emulator_only]
ROLE = "streetlight"
CITYEDGE = [sys.executable, "-m", "cityedge"]


def job(tmp: Path, b: EmulatedBoard, **kw: object) -> Job:
    j = Job(
        port=b.repl_port,
        role=ROLE,
        manifest=tmp / "nodes.json",
        ledger=tmp / "ledger.jsonl",
        node_id=4100,
        site="harbour",
        lat=53.55,
        lon=9.99,
        settle=0.5,
        boot_timeout=20,
        layout="romfs",
    )
    for k, v in kw.items():
        setattr(j, k, v)
    return j


def heap_after_boot(b: EmulatedBoard, since: int) -> tuple[int, str]:
    """(bytes allocated after gc.collect(), the app module's __file__) once the app booted, with the app stopped."""
    log = b.wait_for_output(re.compile(r"bootmgr: slot \w+ "), timeout=20, since=since)
    assert "app failed" not in log[since:], log[since:]
    time.sleep(1.5)  # the app is imported right after the boot manager's line
    repl = Repl(b.repl_port)  # Ctrl-C: the app stops, its modules stay loaded
    try:
        out = repl.exec(f"import gc,{ROLE}\ngc.collect()\nprint(gc.mem_alloc(),{ROLE}.__file__)")
    finally:
        repl.close()
    alloc, path = out.split()
    return int(alloc), path


def test_deploy_romfs_boots_from_rom_with_less_heap_and_redeploy_writes_nothing(
    tmp_path: Path, board: EmulatedBoard
) -> None:
    mark = len(board.serial_log)
    r = run_job(job(tmp_path, board, link_port=board.link_port))
    assert r["result"] == "ok", r
    assert r["layout"] == "romfs" and r["app"]["slot"] == "rom" and r["app"]["sent"] > 20
    assert r["verify"]["booted_slot"] == "rom"
    assert r["verify"]["how"] == "hello on link" and r["verify"]["hello"]["node_id"] == 4100
    entry = ledger.read(tmp_path / "ledger.jsonl")[-1]
    assert entry["layout"] == "romfs" and entry["app"]["image_sha256"] == r["app"]["image_sha256"]
    assert "/rom/lib/streetlight/__init__.mpy" in entry["hashes"]
    state = json.loads((board.flash_dir / "boot.json").read_text())
    assert state["active"] == "rom" and state["trial"] is False  # confirmed after the HELLO
    assert state["previous"] == "a"  # the board's files app (bare) stays the rollback target
    rom_heap, rom_file = heap_after_boot(board, mark)
    assert rom_file.startswith("/rom/lib/"), rom_file

    # the same board, the same app, in the files layout: its bytecode is copied into the heap
    mark = len(board.serial_log)
    files = run_job(job(tmp_path, board, layout="files"))
    assert files["result"] == "ok" and files["app"]["slot"] == "a" and files["app"]["previous"] == "rom", files
    files_heap, files_file = heap_after_boot(board, mark)
    assert files_file.startswith("/app_a/lib/"), files_file
    assert files_heap - rom_heap > 20_000, (files_heap, rom_heap)
    print(f"heap after boot: files {files_heap / 1024:.1f} KB, romfs {rom_heap / 1024:.1f} KB")

    # back to the ROM: the image is already there, nothing is written, only the switch
    rom_before = board.rom_image
    back = run_job(job(tmp_path, board, verify=False))
    assert back["result"] == "ok" and back["app"]["slot"] == "rom" and back["app"]["sent"] == 0, back
    assert back["app"]["previous"] == "a" and back["app"]["bytes_payload"] == 0
    # and once more: unchanged, not even the switch
    again = run_job(job(tmp_path, board, verify=False))
    assert again["result"] == "ok" and again["app"]["unchanged"] is True and again["app"]["sent"] == 0, again
    assert again["wire_bytes"] < 3000
    assert board.rom_image == rom_before
    status = subprocess.run(
        [*CITYEDGE, "flash", "status", board.repl_port, "--json"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert status.returncode == 0, status
    st = json.loads(status.stdout)
    assert st["state"]["active"] == "rom" and st["rom"]["size"] == 256 * 1024
    assert st["rom"]["app"] == {"role": ROLE, "version": r["app"]["version"]}


def test_failing_rom_app_rolls_back_to_the_files_slot(
    tmp_path: Path, board_factory: Callable[..., EmulatedBoard]
) -> None:
    b = board_factory(name="rb")
    good = run_job(job(tmp_path, b, layout="files", role="bare", node_id=None, verify=False))
    assert good["result"] == "ok", good
    broken = make_firmware(tmp_path / "broken", BROKEN)  # role medical: an app whose import fails
    r = run_job(job(tmp_path, b, role="medical", node_id=4200, tree=broken, max_tries=2))
    assert r["result"] == "failed" and r["exit_code"] == EXIT_BOOT, r
    slot = good["app"]["slot"]
    assert f"rolled back to slot {slot}" in r["error"] and "this build is broken" in r["error"], r["error"]
    state = json.loads((b.flash_dir / "boot.json").read_text())
    assert state["active"] == slot and state["rollback"]["from"] == "rom"


def test_board_without_romfs_is_refused_with_a_sentence(
    tmp_path: Path, board_factory: Callable[..., EmulatedBoard]
) -> None:
    b = board_factory(name="norom", rom_kb=0)
    r = run_job(job(tmp_path, b))
    assert r["result"] == "failed" and r["exit_code"] == EXIT_ROMFS and NO_ROMFS in r["error"], r
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_DATA_HOME": str(tmp_path / "data")}
    cli = subprocess.run(
        [
            *CITYEDGE,
            "flash",
            "deploy",
            "--layout",
            "romfs",
            "--role",
            ROLE,
            "--node-id",
            "4300",
            "--lat",
            "53",
            "--lon",
            "9",
            b.repl_port,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert cli.returncode == EXIT_ROMFS, cli
    assert "no ROMFS partition" in cli.stderr and "--layout files" in cli.stderr
    assert "Traceback" not in cli.stderr + cli.stdout
    status = subprocess.run(
        [*CITYEDGE, "flash", "status", b.repl_port], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert "ROM partition: none (this MicroPython has no ROMFS)" in status.stdout, status


def test_layout_auto_takes_the_rom_partition_where_the_app_fits_and_the_files_slots_elsewhere(
    tmp_path: Path, board_factory: Callable[..., EmulatedBoard]
) -> None:
    # a fresh board holds the bare app in slot a: a files deploy goes to slot b
    cases = (("big", 256, "romfs", "rom"), ("tiny", 16, "files", "b"), ("none", 0, "files", "b"))
    for name, rom_kb, layout, slot in cases:
        b = board_factory(name=name, rom_kb=rom_kb)
        r = run_job(job(tmp_path / name, b, layout="auto", verify=False))
        assert r["result"] == "ok", r
        assert r["layout"] == layout and r["app"]["layout"] == layout and r["app"]["slot"] == slot, (name, r)
        assert ledger.read(tmp_path / name / "ledger.jsonl")[-1]["layout"] == layout
        b.close()


def test_a_deploy_without_layout_takes_the_rom_partition(
    tmp_path: Path, board_factory: Callable[..., EmulatedBoard]
) -> None:
    # the technician's default (--layout auto): the production layout wherever the board has a ROM partition
    b = board_factory(name="default", rom_kb=256)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_DATA_HOME": str(tmp_path / "data")}
    cli = subprocess.run(
        [*CITYEDGE, "flash", "deploy", "--role", ROLE, "--node-id", "4400", "--lat", "53", "--lon", "9",
         "--no-verify", "--json", b.repl_port],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )
    assert cli.returncode == 0, cli
    r = json.loads(cli.stdout)  # one board: its result object, and nothing else on stdout
    assert r["layout"] == "romfs" and r["app"]["slot"] == "rom", r
    assert b.rom_image  # the image went into the partition


def test_image_larger_than_the_partition_is_refused(
    tmp_path: Path, board_factory: Callable[..., EmulatedBoard]
) -> None:
    b = board_factory(name="small", rom_kb=16)
    r = run_job(job(tmp_path, b))
    size = len(build_rom_image(ROLE, 6).data)  # about the size the board gets (its .mpy sub-version aside)
    assert r["result"] == "failed" and r["exit_code"] == EXIT_ROMFS, r
    assert "larger than the board's ROM partition (16384 bytes)" in r["error"], r["error"]
    assert abs(int(re.search(r"image \((\d+) bytes\)", r["error"]).group(1)) - size) < 512  # type: ignore[union-attr]
    assert not b.rom_image  # nothing was written


def test_stock_mpremote_romfs_query_and_deploy(tmp_path: Path, board_factory: Callable[..., EmulatedBoard]) -> None:
    b = board_factory(name="mpr", rom_kb=64, role=None)  # plain MicroPython: no boot manager choosing sys.path
    mpremote = [sys.executable, "-m", "mpremote", "connect", b.repl_port]
    q = subprocess.run([*mpremote, "romfs", "query"], capture_output=True, text=True, timeout=60)
    assert q.returncode == 0 and "partition has size 65536 bytes" in q.stdout and "Not a valid ROMFS" in q.stdout, q
    src = tmp_path / "romsrc" / "lib" / "romhello"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("GREETING = 'from rom'\n")
    d = subprocess.run(
        [*mpremote, "romfs", "deploy", str(tmp_path / "romsrc")], capture_output=True, text=True, timeout=60
    )
    assert d.returncode == 0 and "ROMFS image deployed" in d.stdout, d
    assert b.rom_image.startswith(b"\xd2\xcd\x31")  # written through to the host file, as to flash
    b.hard_reset()
    b.wait_booted(boots=2)
    repl = Repl(b.repl_port)
    try:
        out = repl.exec("import sys,romhello\nprint(romhello.GREETING, romhello.__file__, '/rom/lib' in sys.path)")
    finally:
        repl.close()
    assert out.split() == ["from", "rom", "/rom/lib/romhello/__init__.mpy", "True"], out
    q = subprocess.run([*mpremote, "romfs", "query"], capture_output=True, text=True, timeout=60)
    assert "ROMFS image size" in q.stdout, q


def test_romfs_build_cli_writes_the_image_the_tool_builds(tmp_path: Path) -> None:
    out = tmp_path / "sl.romfs"
    res = subprocess.run(
        [*CITYEDGE, "flash", "romfs", "build", "--role", ROLE, "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert res.returncode == 0, res
    assert out.read_bytes() == build_romfs(ROLE)
    assert f"{len(out.read_bytes())} bytes" in res.stdout


def _romfs_deploy(b: EmulatedBoard, tree: Path, *, cut_after: int | None = None, corrupt: bool = False) -> int:
    """Deploy ``tree``'s app (role medical) into the ROM with the tool's own steps; cut the power after
    ``cut_after`` bytes on the wire, or flip a byte of the written partition before it is read back
    (``corrupt``: failing flash). Returns the bytes sent."""
    with RawRepl(b.repl_port) as repl:
        repl.enter_raw()
        board = Board(repl)
        info = board.probe(probe_roots())
        image = build_rom_image("medical", info.mpy, firmware=tree)
        start = repl.tx_bytes
        real = repl._write

        def write(data: bytes) -> None:
            sent = repl.tx_bytes - start
            if cut_after is not None and sent + len(data) > cut_after:
                real(data[: max(0, cut_after - sent)])
                time.sleep(0.02)  # let the board take what did arrive
                b.power_off()
                raise ConnectionAbortedError("power cut")
            real(data)

        def reset_raw() -> None:
            if corrupt:
                rom = bytearray(b.spec.rom_image.read_bytes())
                rom[len(image.data) // 2] ^= 0x10
                b.spec.rom_image.write_bytes(bytes(rom))
            repl.soft_reset_raw()

        repl._write = write  # type: ignore[method-assign]
        try:
            deploy_romfs(board, info, image, reset_raw=reset_raw)
        except ConnectionAbortedError:
            pass
        return repl.tx_bytes - start


def _booted(b: EmulatedBoard, how: str) -> str:
    b.clear_serial_log()
    b.power_on() if how == "power_on" else b.hard_reset()
    text = b.wait_for_output("APP-RUNNING ", timeout=15)
    return text.split("APP-RUNNING ", 1)[1][:1]


def test_power_cut_while_the_rom_is_written(tmp_path: Path, board_factory: Callable[..., EmulatedBoard]) -> None:
    """Cut the power at points spread over a romfs deploy onto a node whose ROM app is active and whose files
    slot holds an older app: after every cut the node boots a complete app (the ROM's old one before the ROM is
    touched, the files slot's while it is rewritten, the new one after the switch), never safe mode."""
    b = board_factory(name="cut")
    trees = {v: app(tmp_path, v, build=v) for v in ("F", "P", "Q", "R")}
    files = run_job(job(tmp_path, b, role="medical", layout="files", tree=trees["F"], verify=False))
    assert files["result"] == "ok", files
    total = _romfs_deploy(b, trees["P"])
    assert _booted(b, "reset") == "P"
    _confirm(b)
    cur = "P"
    seen = []
    # during the probe, spread over the erase and the writes, around the read-back and switch, after the end
    for cut in (40, *(int(total * f) for f in (0.3, 0.6, 0.9, 0.99)), None):
        nxt = {"P": "Q", "Q": "R", "R": "P"}[cur]
        _romfs_deploy(b, trees[nxt], cut_after=cut)
        if cut is None:
            b.power_off()  # the tool is done: the switch is on the flash
        assert b.status()["powered"] is False, f"the deploy ended before the cut at {cut}"
        booted = _booted(b, "power_on")
        assert booted in (cur, "F", nxt), (cut, booted)
        assert "SAFE MODE" not in b.serial_log
        seen.append(booted)
        if booted != nxt:
            _romfs_deploy(b, trees[nxt])  # the node takes the next deploy completely
            assert _booted(b, "reset") == nxt
        _confirm(b)
        cur = nxt
    # before the ROM is touched the old ROM app boots, while it is rewritten the files app, after the switch the new
    assert seen[0] == "P" and "F" in seen and seen[-1] == cur, seen


def test_rom_that_reads_back_wrong_is_not_booted(tmp_path: Path, board_factory: Callable[..., EmulatedBoard]) -> None:
    b = board_factory(name="bad")
    tree = app(tmp_path, "V")
    with pytest.raises(FlashError) as err:
        _romfs_deploy(b, tree, corrupt=True)
    assert err.value.exit_code == EXIT_VERIFY and "read back differs" in err.value.message
    assert json.loads((b.flash_dir / "boot.json").read_text())["active"] == "a"  # still the files app


def test_board_started_in_the_romfs_layout_runs_its_app_from_rom(
    tmp_path: Path, board_factory: Callable[..., EmulatedBoard]
) -> None:
    # provisioned before it starts: an unprovisioned app fails at once, and three quick failed boots would put
    # the board into safe mode before the REPL got to it
    b = EmulatedBoard(tmp_path / "flash", role=ROLE, layout="romfs", name="romboot")
    provision(b.flash_dir)
    with b:
        b.wait_for_output(f"bootmgr: slot rom {ROLE} ", timeout=15)
        assert b.rom_image.startswith(b"\xd2\xcd\x31") and not (b.flash_dir / "app_a").exists()
        repl = Repl(b.repl_port)
        try:
            assert repl.eval(f"__import__('{ROLE}').__file__") == f"/rom/lib/{ROLE}/__init__.mpy"
        finally:
            repl.close()
        assert "app failed" not in b.serial_log and "SAFE MODE" not in b.serial_log
    with pytest.raises(BoardError, match="does not fit a 16 KiB ROM partition"):
        board_factory(name="romsmall", role=ROLE, layout="romfs", rom_kb=16)
