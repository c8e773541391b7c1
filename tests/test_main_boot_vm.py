"""The board's main.py on the MicroPython VM: the boot manager starts the app and leaves the heap; main.py
confirms the boot after CONFIRM_S seconds without it, and a failing app loads it again to report and reset.

(The VM's asyncio has no ``run()``: the test awaits main.py's ``run()`` itself, the only line it changes:
tests/main_vm.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

from cityedge.paths import FIRMWARE
from hil_tests.emulator.runner import MicroPythonSession
from tests.main_vm import NODE_FILES, boot_code

BOOTMGR = FIRMWARE / "lib" / "node" / "bootmgr.py"

# the app reports whether the boot manager is still loaded while it runs
RUNS = """import asyncio, sys
async def main():
    print('APP bootmgr loaded:', 'bootmgr' in sys.modules)
    await asyncio.sleep(0.3)
    print('APP END')
"""
FAILS = """import asyncio
async def main():
    await asyncio.sleep(0.05)
    raise RuntimeError('late failure')
"""


def _boot(state: str, confirm_s: float) -> str:
    return f"open('/boot.json', 'w').write({state!r})\n" + boot_code(confirm_s, ["", ".frozen", "/lib"])


def _session(tmp_path: Path, app: str) -> MicroPythonSession:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "bootmgr.py").write_bytes(BOOTMGR.read_bytes())
    slot = tmp_path / "app_a"
    files = {"lib/streetlight/__init__.py": app.encode(), **NODE_FILES}
    for rel, data in files.items():
        (slot / rel).parent.mkdir(parents=True, exist_ok=True)
        (slot / rel).write_bytes(data)
    meta = {"role": "streetlight", "version": "v-a", "files": {rel: [len(d), "x"] for rel, d in files.items()}}
    (slot / "app.json").write_text(json.dumps(meta))
    return MicroPythonSession(mounts={lib: "/lib", slot: "/app_a"}, timeout=60)


def _boot_json(mp: MicroPythonSession) -> dict:
    return json.loads(mp.run("print(open('/boot.json').read())").check().stdout)


TRIAL = json.dumps({"active": "a", "previous": None, "trial": True, "tries": 0, "max_tries": 3})


def test_main_confirms_the_app_without_the_boot_manager_loaded(tmp_path: Path) -> None:
    with _session(tmp_path, RUNS) as mp:
        res = mp.run(_boot(TRIAL, 0.1))
        out = res.stdout
        assert res.exit_code == 0, out + res.stderr
        assert "bootmgr: slot a streetlight v-a try 1/3 (trial)" in out
        assert "APP bootmgr loaded: False" in out and "END bootmgr loaded: False" in out
        assert out.index("bootmgr: app confirmed") < out.index("APP END")  # after 0.1 s, while the app runs
        st = _boot_json(mp)
        assert st["trial"] is False and st["tries"] == 0 and st["last_error"] is None and st["active"] == "a"


def test_main_reports_a_failing_app_through_the_boot_manager(tmp_path: Path) -> None:
    with _session(tmp_path, FAILS) as mp:
        res = mp.run(_boot(TRIAL, 5))
        out = res.stdout + res.stderr
        assert res.exit_code == 1, out  # bootmgr.failed() resets (sys.exit on the VM)
        assert "bootmgr: app failed: RuntimeError: late failure" in out and "app confirmed" not in out
        st = _boot_json(mp)
        assert st["trial"] is True and st["tries"] == 1 and st["last_error"] == "RuntimeError: late failure"
