"""The board's main.py on the MicroPython VM: the boot manager starts the app and leaves the heap; main.py
confirms the boot after CONFIRM_S seconds without it, and a failing app loads it again to report and reset.

(The VM's asyncio has no ``run()``: the test awaits main.py's ``run()`` itself, the only line it changes.)
"""

from __future__ import annotations

import json
from pathlib import Path

from cityedge.paths import FIRMWARE
from hil_tests.emulator.runner import MicroPythonSession

MAIN = FIRMWARE / "main.py"
BOOTMGR = FIRMWARE / "lib" / "node" / "bootmgr.py"
LAST_LINE = "asyncio.run(run())\n"

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
BOOT = """open('/boot.json', 'w').write({state!r})
import sys
sys.path[:] = ['', '.frozen', '/lib']
import bootmgr
bootmgr.CONFIRM_S = {confirm_s}  # main.py reads it before dropping the module
exec(open('/m/main_vm.py').read())
del bootmgr  # the test's own name for it (on the board, boot.py drops its name)
await run()
print('END bootmgr loaded:', 'bootmgr' in sys.modules)
"""


def _session(tmp_path: Path, app: str) -> MicroPythonSession:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "bootmgr.py").write_bytes(BOOTMGR.read_bytes())
    (lib / "node").mkdir()  # main.py confirms the boot with node.config, as the real apps load it
    for name in ("__init__.py", "config.py"):
        (lib / "node" / name).write_bytes((BOOTMGR.parent / name).read_bytes())
    pkg = tmp_path / "app_a" / "lib" / "streetlight"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(app)
    meta = {"role": "streetlight", "version": "v-a", "files": {"lib/streetlight/__init__.py": [len(app.encode()), "x"]}}
    (tmp_path / "app_a" / "app.json").write_text(json.dumps(meta))
    main = MAIN.read_text()
    assert main.endswith(LAST_LINE)
    m = tmp_path / "m"
    m.mkdir()
    (m / "main_vm.py").write_text(main[: -len(LAST_LINE)])
    return MicroPythonSession(mounts={lib: "/lib", tmp_path / "app_a": "/app_a", m: "/m"}, timeout=60)


def _boot_json(mp: MicroPythonSession) -> dict:
    return json.loads(mp.run("print(open('/boot.json').read())").check().stdout)


TRIAL = json.dumps({"active": "a", "previous": None, "trial": True, "tries": 0, "max_tries": 3})


def test_main_confirms_the_app_without_the_boot_manager_loaded(tmp_path: Path) -> None:
    with _session(tmp_path, RUNS) as mp:
        res = mp.run(BOOT.format(state=TRIAL, confirm_s=0.1))
        out = res.stdout
        assert res.exit_code == 0, out + res.stderr
        assert "bootmgr: slot a streetlight v-a try 1/3 (trial)" in out
        assert "APP bootmgr loaded: False" in out and "END bootmgr loaded: False" in out
        assert out.index("bootmgr: app confirmed") < out.index("APP END")  # after 0.1 s, while the app runs
        st = _boot_json(mp)
        assert st["trial"] is False and st["tries"] == 0 and st["last_error"] is None and st["active"] == "a"


def test_main_reports_a_failing_app_through_the_boot_manager(tmp_path: Path) -> None:
    with _session(tmp_path, FAILS) as mp:
        res = mp.run(BOOT.format(state=TRIAL, confirm_s=5))
        out = res.stdout + res.stderr
        assert res.exit_code == 1, out  # bootmgr.failed() resets (sys.exit on the VM)
        assert "bootmgr: app failed: RuntimeError: late failure" in out and "app confirmed" not in out
        st = _boot_json(mp)
        assert st["trial"] is True and st["tries"] == 1 and st["last_error"] == "RuntimeError: late failure"
