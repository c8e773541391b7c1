"""The boot manager's third app source, ``rom`` (the ROMFS partition at ``/rom``): on CPython with the board's
paths moved into a temporary folder, and on the MicroPython VM with a real ROMFS image as its ROM partition."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from cityedge.firmware_files import ROM_DIR, ROM_SLOT, romfs_image, slot_dir
from cityedge.paths import FIRMWARE
from hil_tests.emulator.runner import MicroPythonSession
from tests.main_vm import NODE_FILES, boot_code

BOOTMGR = FIRMWARE / "lib" / "node" / "bootmgr.py"
GOOD_APP = "import asyncio\nasync def main():\n    print('APP', __file__)\n    await asyncio.sleep(0.05)\n"
BAD_APP = "raise RuntimeError('broken rom build')\n"


def _app_files(app: str) -> dict[str, bytes]:
    """A test app's slot: the app, and the node library main.py confirms a boot with (as every real app has)."""
    return {"lib/streetlight/__init__.py": app.encode(), **NODE_FILES}


def _manifest(files: dict[str, bytes], version: str) -> str:
    return json.dumps(
        {"role": "streetlight", "version": version, "files": {rel: [len(d), "x"] for rel, d in files.items()}}
    )


# --- CPython: the decisions, with every board path under tmp_path --------------------------------------------


@pytest.fixture
def bm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bootmgr_under_test", BOOTMGR)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.slot_dir("rom") == "/rom" and mod.slot_dir("a") == "/app_a"  # the board's own paths
    board_dir = mod.slot_dir
    monkeypatch.setattr(mod, "slot_dir", lambda s: str(tmp_path) + board_dir(s))
    monkeypatch.setattr(mod, "STATE", str(tmp_path / "boot.json"))
    monkeypatch.setattr(mod, "NODE", str(tmp_path / "node.json"))
    saved = list(sys.path)
    yield mod
    sys.path[:] = saved


def _put(root: Path, slot_root: str, app: str, version: str) -> None:
    files = _app_files(app)
    for rel, data in files.items():
        (root / slot_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / slot_root / rel).write_bytes(data)
    (root / slot_root / "app.json").write_text(_manifest(files, version))


def _state(root: Path, **st: object) -> None:
    (root / "boot.json").write_text(
        json.dumps(
            {
                "role": "streetlight",
                "tries": 0,
                "max_tries": 3,
                "rollback": None,
                "previous": None,
                "trial": False,
                **st,
            }
        )
    )


def test_rom_is_a_slot_at_slash_rom(bm: ModuleType, tmp_path: Path) -> None:
    assert "rom" in bm.SLOTS and slot_dir(ROM_SLOT) == ROM_DIR == "/rom"
    assert bm.slot_ok("rom") is None  # nothing mounted
    _put(tmp_path, "rom", GOOD_APP, "v-rom")
    assert bm.slot_ok("rom")["version"] == "v-rom"
    (tmp_path / "rom" / "lib" / "streetlight" / "__init__.py").write_text("short")  # a size differs
    assert bm.slot_ok("rom") is None


def test_set_path_puts_rom_lib_first_and_drops_other_slots(bm: ModuleType, tmp_path: Path) -> None:
    sys.path[:0] = [str(tmp_path) + "/app_a/lib", str(tmp_path) + "/rom/lib"]
    bm.set_path("rom")
    assert sys.path[0] == str(tmp_path) + "/rom/lib" and str(tmp_path) + "/app_a/lib" not in sys.path
    assert sys.path.count(str(tmp_path) + "/rom/lib") == 1
    bm.set_path("a")
    assert sys.path[0] == str(tmp_path) + "/app_a/lib" and str(tmp_path) + "/rom/lib" not in sys.path


def test_failing_rom_trial_rolls_back_to_the_files_slot(bm: ModuleType, tmp_path: Path) -> None:
    _put(tmp_path, "app_a", GOOD_APP, "v-a")
    _put(tmp_path, "rom", BAD_APP, "v-rom")
    _state(tmp_path, active="rom", previous="a", trial=True, tries=3)
    what, slot = bm.decide(bm.load_state())
    st = json.loads((tmp_path / "boot.json").read_text())
    assert (what, slot) == ("app", "a") and st["active"] == "a" and st["previous"] is None
    assert st["rollback"]["from"] == "rom" and st["rollback"]["version"] == "v-rom"


def test_incomplete_rom_boots_the_previous_slot_or_safe_mode(bm: ModuleType, tmp_path: Path) -> None:
    _put(tmp_path, "app_b", GOOD_APP, "v-b")
    _state(tmp_path, active="rom", previous="b", trial=True)  # e.g. a power cut while the ROM was written
    assert bm.decide(bm.load_state()) == ("app", "b")
    _state(tmp_path, active="rom", previous=None, trial=True)
    what, why = bm.decide(bm.load_state())
    assert what == "safe" and why == "slot rom is incomplete"
    _put(tmp_path, "rom", BAD_APP, "v-rom")
    _state(tmp_path, active="rom", previous="a", trial=True, tries=3)  # previous slot a holds no valid app
    assert bm.decide(bm.load_state()) == ("safe", "3 failed boots of slot rom")


def test_missing_state_is_repaired_to_the_rom_app(bm: ModuleType, tmp_path: Path) -> None:
    _put(tmp_path, "rom", GOOD_APP, "v-rom")
    assert bm.load_state()["active"] == "rom"
    _put(tmp_path, "app_b", GOOD_APP, "v-b")  # a files slot is preferred when both are complete
    assert bm.load_state()["active"] == "b"


# --- the VM: MicroPython mounts a real ROMFS image at /rom, bootmgr boots it ----------------------------------

# main.py boots the board, confirmation at once
BOOT = boot_code(0, ["", ".frozen", "/rom", "/rom/lib", "/lib"])


def _vm(tmp_path: Path, app: str) -> MicroPythonSession:
    files = _app_files(app)
    image = tmp_path / "app.romfs"
    image.write_bytes(romfs_image("streetlight", files, mpy=None))
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "bootmgr.py").write_bytes(BOOTMGR.read_bytes())
    return MicroPythonSession(mounts={lib: "/lib"}, romfs=image)


def _files_slot(mp: MicroPythonSession, app: str) -> None:
    files = _app_files(app)
    dirs = sorted({"/app_a/" + "/".join(rel.split("/")[:i]) for rel in files for i in range(1, rel.count("/") + 1)})
    code = ["import os", f"for d in {['/app_a', *dirs]!r}:\n try:os.mkdir(d)\n except OSError:pass"]
    code += [f"open('/app_a/{rel}','wb').write({data!r})" for rel, data in files.items()]
    code.append(f"open('/app_a/app.json','w').write({_manifest(files, 'v-a')!r})")
    mp.run("\n".join(code)).check()


def test_vm_boots_the_app_from_the_rom_partition(tmp_path: Path) -> None:
    with _vm(tmp_path, GOOD_APP) as mp:
        mp.run("open('/boot.json','w').write('{\"active\":\"rom\",\"trial\":true}')").check()
        res = mp.run(BOOT)
        assert res.exit_code == 0, res.stdout + res.stderr
        assert "bootmgr: slot rom streetlight" in res.stdout and "APP /rom/lib/streetlight/__init__.py" in res.stdout
        st = json.loads(mp.run("print(open('/boot.json').read())").stdout)
        assert st["active"] == "rom" and st["trial"] is False and st["tries"] == 0  # confirmed


def test_vm_failing_rom_app_rolls_back_to_files_slot(tmp_path: Path) -> None:
    with _vm(tmp_path, BAD_APP) as mp:
        _files_slot(mp, GOOD_APP)
        mp.run(
            'open(\'/boot.json\',\'w\').write(\'{"active":"rom","previous":"a","trial":true,"max_tries":2}\')'
        ).check()
        for _ in range(2):
            res = mp.run(BOOT)
            assert res.exit_code == 1 and "broken rom build" in res.stdout + res.stderr, res.stdout + res.stderr
        res = mp.run(BOOT)
        assert res.exit_code == 0, res.stdout + res.stderr
        assert "ROLLBACK to slot a: 2 failed boots of slot rom" in res.stdout
        assert "APP /app_a/lib/streetlight/__init__.py" in res.stdout
