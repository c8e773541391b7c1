"""Supervision of a node app: watchdog, boot number and reset cause.

* :class:`Watchdog` owns the hardware WDT and feeds it only while every supervised task has reported a
  heartbeat recently; a hung control loop therefore resets the board even if other tasks still run.
* :func:`boot_begin` counts boots (``boots``, reported in HELLO) in ``/boot_state.json`` and settles the
  reset cause: the port's (``power_on``, ``watchdog``, ``hard``, ``soft``, ``deepsleep``) or the reason the
  firmware recorded with :func:`note_reset` just before resetting itself (e.g. ``command``).
* Failed-boot counting, rollback and the safe-mode decision belong to the boot manager (``bootmgr``: it
  counts a try before importing the app and starts ``/lib/safe/<role>.py`` after repeated failures);
  :func:`boot_confirmed` tells it the app is healthy, :func:`boot_tries` reads its count (both in its
  ``/boot.json``, without importing it: the boot manager is not kept on the heap while the app runs).
"""

import json

from node.config import save_json

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython (unit tests)
    import time as _time

    def ticks_ms():  # type: ignore[misc,unused-ignore]
        return int(_time.time() * 1000)

    def ticks_diff(a, b):  # type: ignore[misc,unused-ignore]
        return a - b


BOOT_STATE = "/boot_state.json"
BOOT_JSON = "/boot.json"  # the boot manager's state (node/bootmgr.py)

_RESET_NAMES = (
    ("PWRON_RESET", "power_on"),
    ("HARD_RESET", "hard"),
    ("WDT_RESET", "watchdog"),
    ("DEEPSLEEP_RESET", "deepsleep"),
    ("SOFT_RESET", "soft"),
)

_state = None  # this boot's view of /boot_state.json, once boot_begin ran


def _read(path):
    try:
        with open(path) as f:
            data = json.loads(f.read())
        if isinstance(data, dict) and isinstance(data.get("boots"), int):
            return data
    except (OSError, ValueError):
        pass
    return {"boots": 0}


def _write(path, data):
    save_json(path, data)


def hardware_reset_cause():
    """The port's reset cause as a name; ``"unknown"`` where ``machine`` cannot tell."""
    try:
        import machine

        cause = machine.reset_cause()
    except (ImportError, AttributeError):
        return "unknown"
    for attr, name in _RESET_NAMES:
        if getattr(machine, attr, None) == cause:
            return name
    return "unknown"


def boot_begin(path=BOOT_STATE):
    """Count this boot (once per boot) and settle its reset cause; return the boot state dict
    (``boots``: boots seen since the file was created, ``reset_cause``: a name, see module doc)."""
    global _state
    if _state is not None:
        return _state
    data = _read(path)
    noted = data.pop("noted", None)
    cause = hardware_reset_cause()
    # a reset the firmware asked for shows as "soft"/"hard"; say why instead
    if noted and cause in ("soft", "hard", "unknown"):
        cause = noted
    data["boots"] = data.get("boots", 0) + 1
    data["reset_cause"] = cause
    try:
        _write(path, data)
    except OSError:
        pass  # a read-only or full flash must not stop the boot
    _state = data
    return data


def reset_cause(path=BOOT_STATE):
    """Why this boot happened (see :func:`boot_begin`)."""
    return boot_begin(path)["reset_cause"]


def note_reset(reason, path=BOOT_STATE):
    """Record why the firmware is about to reset itself (e.g. ``"command"``); the next boot reports it."""
    data = _read(path)
    data["noted"] = reason
    _write(path, data)


def _boot_json(path):
    try:
        with open(path) as f:
            st = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return st if isinstance(st, dict) else None


def boot_confirmed(path=BOOT_JSON):
    """The app has run healthy: clear the boot manager's failed-boot count and end a trial in its state (what
    ``bootmgr.confirm()`` does; importing the boot manager would bring its code back onto the heap)."""
    st = _boot_json(path)
    if st is not None and (st.get("trial") or st.get("tries")):
        st["trial"] = False
        st["tries"] = 0
        st["last_error"] = None
        _write(path, st)


def boot_tries(path=BOOT_JSON):
    """Boots in a row the boot manager counted without a confirmation (0 without a boot manager)."""
    st = _boot_json(path)
    return (st.get("tries") or 0) if st is not None else 0


def forget_boot():
    """Drop this boot's cached state (tests that simulate several boots in one VM)."""
    global _state
    _state = None


class Watchdog:
    """Feeds the hardware WDT only while every supervised task keeps beating.

    ``beat(slot)`` is called by each supervised task each time round its loop; a slot that has not
    beaten for ``stale_ms`` stops the feeding and the WDT resets the board ``timeout_ms`` later.
    """

    def __init__(self, slots, timeout_ms=8000, stale_ms=5000, wdt=None):
        self.timeout_ms = timeout_ms
        self.stale_ms = stale_ms
        now = ticks_ms()
        self._beats = [now] * slots
        self._wdt = wdt
        self.stale = -1  # the slot that stopped the feeding, -1 while healthy

    def start(self):
        """Arm the hardware WDT (it cannot be stopped again on most ports)."""
        if self._wdt is None:
            import machine

            self._wdt = machine.WDT(timeout=self.timeout_ms)
        self._wdt.feed()

    def beat(self, slot):
        self._beats[slot] = ticks_ms()

    def healthy(self):
        now = ticks_ms()
        for i in range(len(self._beats)):
            if ticks_diff(now, self._beats[i]) > self.stale_ms:
                self.stale = i
                return False
        self.stale = -1
        return True

    def feed_if_healthy(self):
        """Feed the WDT if all slots are fresh; return whether it was fed."""
        if self._wdt is not None and self.healthy():
            self._wdt.feed()
            return True
        return False

    async def run(self):
        """Task: check and feed every quarter of the WDT timeout."""
        import asyncio

        self.start()
        period = self.timeout_ms // 4
        while True:
            self.feed_if_healthy()
            await asyncio.sleep_ms(period)
