"""Deploy logic and the boot manager, run on the real MicroPython VM (WebAssembly port).

The serial line is replaced by a direct call into one MicroPython session (the board-side code, the files
and the boot manager are the real ones); the serial transport, power cuts and resets are proven against
emulated boards in hil_tests/test_flash*.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cityedge.firmware_files import app_files, fixed_files
from hil_tests.emulator.runner import MicroPythonSession
from tests.main_vm import NODE_FILES, boot_code
from tools.flash.board import Board
from tools.flash.deploy import Image, build_image, deploy, provision_board
from tools.flash.transport import BoardException

# the tool's own helper _R (remove a file or a tree) clears what a previous test left
WIPE = "\n".join(f"_R({p!r})" for p in ("/app_a", "/app_b", "/lib", "/boot.py", "/main.py", "/boot.json",
                                          "/node.json", "/boot.json.tmp"))


class VmRepl:
    """Runs board code in a MicroPython session, as the raw REPL would (no serial line in between)."""

    def __init__(self, session: MicroPythonSession) -> None:
        self.session = session
        self.port = "vm"
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.execs = 0

    def exec(self, code: str | bytes, *, timeout: float | None = None, what: str = "running a step") -> bytes:
        text = code.decode() if isinstance(code, bytes) else code
        self.execs += 1
        self.tx_bytes += len(text)
        res = self.session.run(text)
        self.rx_bytes += len(res.stdout)
        if res.exit_code != 0 or res.stderr:
            raise BoardException(self.port, what, res.stderr)
        return res.stdout.encode()


@pytest.fixture(scope="module")
def session() -> Iterator[MicroPythonSession]:
    with MicroPythonSession(mounts={}) as s:
        yield s


@pytest.fixture
def board(session: MicroPythonSession) -> Board:
    b = Board(VmRepl(session))
    b.run(WIPE, what="wiping")
    return b


def _image(board: Board, role: str = "streetlight") -> Image:
    info = board.probe()
    return build_image(role, info)


def test_full_deploy_then_unchanged_then_one_file_changed(board: Board) -> None:
    from tools.flash.deploy import probe_roots

    info = board.probe(probe_roots())
    assert info.mpy == 774 and info.state is None
    image = build_image("streetlight", info)
    assert all(p.endswith(".mpy") for p in image.slot)  # compiled for the board's .mpy version
    first = deploy(board, info, image)
    assert (first.slot, first.previous, first.unchanged) == ("a", None, False)
    assert len(first.sent) == len(image.slot)

    info = board.probe(probe_roots())
    assert info.state is not None and info.state["active"] == "a" and info.state["trial"] is True
    for rel, data in image.slot.items():  # every byte on the board is what was compiled
        import hashlib

        assert info.files[f"/app_a/{rel}"][1] == hashlib.sha256(data).hexdigest()[:16]
    execs = board.repl.execs  # type: ignore[attr-defined]
    again = deploy(board, info, image)
    assert again.unchanged and board.repl.execs == execs  # type: ignore[attr-defined]

    # one file changes: it is sent, everything else is copied on the board from the active slot
    changed = dict(image.slot)
    victim = sorted(changed)[0]
    changed[victim] = changed[victim] + b"\n"
    image2 = Image(image.role, image.fixed, changed, image.mpy)
    third = deploy(board, info, image2)
    assert (third.slot, third.previous) == ("b", "a")
    assert third.sent == [victim] and len(third.copied) == len(changed) - 1
    state = json.loads(board.run("print(open('/boot.json').read())", what="t").decode())
    assert state["active"] == "b" and state["previous"] == "a" and state["trial"] is True


def test_stale_files_removed_from_target_slot(board: Board) -> None:
    from tools.flash.deploy import probe_roots

    info = board.probe(probe_roots())
    image = build_image("streetlight", info)
    deploy(board, info, image)
    board.run("_W('/app_b/lib/old_junk.mpy',b'AAAA',0)", what="t")
    info = board.probe(probe_roots())
    changed = dict(image.slot)
    changed["lib/new.mpy"] = b"x"
    res = deploy(board, info, Image(image.role, image.fixed, changed, image.mpy))
    assert res.slot == "b"
    files = board.hashes(["/app_b"])
    assert "/app_b/lib/old_junk.mpy" not in files and "/app_b/lib/new.mpy" in files


def test_provisioning_written_and_checked(board: Board, tmp_path: Path) -> None:
    from cityedge.manifest import provision

    rec = provision(tmp_path / "m.json", node_id=7, role="streetlight", site="s", lat=1.0, lon=2.0)
    provision_board(board, rec)
    info = board.probe()
    assert info.node == {"node_id": 7, "key_id": 1, "role": "streetlight"}  # the probe never returns the key
    cfg = json.loads(board.run("print(open('/node.json').read())", what="t").decode())
    assert bytes.fromhex(cfg["key"]) == rec.key


def test_source_mode_and_images_cover_the_layout(board: Board) -> None:
    info = board.probe()
    image = build_image("medical", info, source=True)
    assert set(image.slot) == set(app_files("medical"))
    assert set(image.fixed) == set(fixed_files("medical"))


# --- boot manager on the VM: several boots of one VM (files persist; modules are forgotten per boot) ----

# one boot through the board's main.py, confirmed at once
BOOT = boot_code(0, ["", ".frozen", "/lib"])

GOOD_APP = "import asyncio\nasync def main():\n    print('APP', __file__)\n    await asyncio.sleep(0.05)\n"
BAD_APP = "raise RuntimeError('broken build')\n"


def _slot(board: Board, slot: str, app: str) -> None:
    """A test app in slot ``slot``, with the node library main.py confirms a boot with (as every real app)."""
    files = {"lib/streetlight/__init__.py": app.encode(), **NODE_FILES}
    meta = {"role": "streetlight", "version": f"v-{slot}", "files": {rel: [len(d), "x"] for rel, d in files.items()}}
    b64 = __import__("base64").b64encode
    board.run("\n".join(f"_W('/app_{slot}/{rel}',{b64(data)!r},0)" for rel, data in files.items())
              + f"\n_J('/app_{slot}/app.json',{json.dumps(meta)!r})", what="t")


def _boot(session: MicroPythonSession) -> tuple[str, int]:
    res = session.run(BOOT)
    return res.stdout + res.stderr, res.exit_code


def _state(board: Board) -> dict:
    return json.loads(board.run("print(open('/boot.json').read())", what="t").decode())


def _install_bootmgr(board: Board) -> None:
    src = fixed_files("streetlight")["/lib/bootmgr.py"].read_bytes()
    board.write_files({"/lib/bootmgr.py": src}, compress=True)


def test_bootmgr_rolls_back_after_failed_boots_and_reports(board: Board, session: MicroPythonSession) -> None:
    _install_bootmgr(board)
    _slot(board, "a", GOOD_APP)
    _slot(board, "b", BAD_APP)
    board.run("_J('/boot.json',json.dumps({'active':'b','previous':'a','role':'streetlight','trial':True,"
              "'tries':0,'max_tries':3,'rollback':None}))", what="t")
    for n in range(1, 4):
        out, code = _boot(session)
        assert "app failed: RuntimeError: broken build" in out and code == 1, out
        assert _state(board)["tries"] == n
    out, code = _boot(session)
    assert code == 0 and "ROLLBACK to slot a" in out and "APP /app_a/lib/streetlight/__init__.py" in out, out
    st = _state(board)
    assert st["active"] == "a" and st["previous"] is None and st["tries"] == 0  # confirmed after running
    assert st["rollback"]["from"] == "b" and st["rollback"]["version"] == "v-b" and st["rollback"]["tries"] == 3
    assert "broken build" in st["rollback"]["error"]
    out, _ = _boot(session)  # the report is repeated at every boot until the tool clears it
    assert "ROLLBACK REPORT: slot b (v-b) failed 3 boots" in out


def test_bootmgr_boots_previous_when_active_slot_incomplete(board: Board, session: MicroPythonSession) -> None:
    _install_bootmgr(board)
    _slot(board, "a", GOOD_APP)
    _slot(board, "b", GOOD_APP)
    board.run("f=open('/app_b/lib/streetlight/__init__.py','w');f.write('imp');f.close()\n"  # cut short
              "_J('/boot.json',json.dumps({'active':'b','previous':'a','role':'streetlight','trial':True}))",
              what="t")
    out, code = _boot(session)
    assert code == 0 and "ROLLBACK to slot a: slot b is incomplete" in out and "APP /app_a" in out, out


def test_bootmgr_safe_mode_when_nothing_boots(board: Board, session: MicroPythonSession) -> None:
    _install_bootmgr(board)
    _slot(board, "a", BAD_APP)
    board.write_files({"/lib/safe/streetlight.py": b"def run():\n    print('SAFE LAMP ON')\n"}, compress=False)
    board.run("_J('/boot.json',json.dumps({'active':'a','previous':None,'role':'streetlight','trial':False}))",
              what="t")
    for _ in range(3):
        out, code = _boot(session)
        assert code == 1, out
    out, code = _boot(session)
    assert code == 0 and "SAFE MODE (3 failed boots of slot a)" in out and "SAFE LAMP ON" in out, out


def test_bootmgr_repairs_missing_state(board: Board, session: MicroPythonSession) -> None:
    _install_bootmgr(board)
    _slot(board, "b", GOOD_APP)  # only slot b complete, no /boot.json at all
    out, code = _boot(session)
    assert code == 0 and "slot b streetlight v-b" in out and "APP /app_b" in out, out


def test_a_file_that_differs_after_writing_fails_verification_and_keeps_the_old_app(board: Board) -> None:
    from tools.flash.deploy import probe_roots
    from tools.flash.errors import EXIT_VERIFY, FlashError

    info = board.probe(probe_roots())
    image = build_image("streetlight", info)
    deploy(board, info, image)  # slot a, the running app
    real = board.write_files

    def write_then_corrupt(files, **kw):
        real(files, **kw)
        victim = sorted(p for p in files if p.startswith("/app_b/"))[0]
        board.run(f"f=open({victim!r},'ab');f.write(b'x');f.close()", what="corrupting")  # a failing flash cell

    board.write_files = write_then_corrupt  # type: ignore[method-assign]
    changed = {rel: data + b"\n" for rel, data in image.slot.items()}
    with pytest.raises(FlashError) as err:
        deploy(board, board.probe(probe_roots()), Image(image.role, image.fixed, changed, image.mpy))
    assert err.value.exit_code == EXIT_VERIFY and "1 file(s) differ" in err.value.message
    state = json.loads(board.run("print(open('/boot.json').read())", what="t").decode())
    assert state["active"] == "a"  # never switched: the node keeps booting the old app
    assert "/app_b/app.json" not in board.hashes(["/app_b"])  # and the half-good slot is never booted
