"""The board's ``main.py`` for boot tests on the MicroPython VM.

The VM's asyncio has no ``run()``, so a test runs main.py without its last line and awaits ``run()`` itself
(:func:`boot_code`). main.py confirms a boot with ``node.config`` from the app's own slot, as every real app
ships it: a test app's slot holds :data:`NODE_FILES` beside the app.
"""

from __future__ import annotations

from cityedge.paths import FIRMWARE

MAIN = FIRMWARE / "main.py"
LAST_LINE = "asyncio.run(run())\n"
# what main.py needs of an app slot (paths relative to the slot)
NODE_FILES = {
    f"lib/node/{name}": (FIRMWARE / "lib" / "node" / name).read_bytes() for name in ("__init__.py", "config.py")
}


def main_source() -> str:
    """main.py without the line that starts it."""
    main = MAIN.read_text()
    assert main.endswith(LAST_LINE), "main.py no longer ends with asyncio.run(run())"
    return main[: -len(LAST_LINE)]


def boot_code(confirm_s: float, path: list[str]) -> str:
    """VM code for one boot through main.py, with ``path`` as ``sys.path`` and the boot confirmed after
    ``confirm_s`` seconds. The boot manager and the app are imported afresh (a board forgets them at reset)."""
    return f"""
import sys
for m in list(sys.modules):
    if m == 'bootmgr' or m.split('.')[0] in ('streetlight', 'node'):
        del sys.modules[m]
sys.path[:] = {path!r}
import bootmgr
bootmgr._state = None
bootmgr.CONFIRM_S = {confirm_s!r}  # main.py reads it before dropping the module
exec({main_source()!r})
del bootmgr  # the test's own name for it (on the board, boot.py drops its name)
await run()
print('END bootmgr loaded:', 'bootmgr' in sys.modules)
"""
