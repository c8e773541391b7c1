"""Supervision of a node app: watchdog, boot counter, safe-mode decision and reset cause.

* :class:`Watchdog` owns the hardware WDT and feeds it only while every supervised task has reported a
  heartbeat recently; a hung control loop therefore resets the board even if other tasks still run.
* The boot counter lives in ``/boot_state.json``. The boot manager calls :func:`boot_begin` once per boot
  (the app calls it too; the second call in the same boot is a no-op); the app calls :func:`boot_confirmed`
  after it has run healthy for a while. :func:`safe_mode_due` says whether enough boots in a row failed to
  confirm that the boot manager should start the safe-mode program instead of the app.
  Deploying a new app resets the counter (:func:`boot_reset`).
* :func:`reset_cause` names why the board last reset (``power_on``, ``watchdog``, ``hard``, ``soft``,
  ``deepsleep``), or the reason the firmware recorded before resetting itself (:func:`note_reset`).
"""

import json

try:
    from micropython import const
except ImportError:  # CPython (unit tests)

    def const(x):
        return x


try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython (unit tests)
    import time as _time

    def ticks_ms():
        return int(_time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


BOOT_STATE = "/boot_state.json"
SAFE_MODE_AFTER = const(3)  # consecutive boots that never confirmed

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
        if isinstance(data, dict) and isinstance(data.get("count"), int):
            return data
    except (OSError, ValueError):
        pass
    return {"count": 0}


def _write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(data))
    import os

    try:
        os.rename(tmp, path)
    except OSError:
        os.remove(path)
        os.rename(tmp, path)


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
    """Count this boot (once per boot) and settle its reset cause; return the boot state dict.

    The dict has ``count`` (boots in a row not yet confirmed, this one included), ``reset_cause``
    and ``boots`` (all boots seen).
    """
    global _state
    if _state is not None:
        return _state
    data = _read(path)
    noted = data.pop("noted", None)
    cause = hardware_reset_cause()
    # a reset the firmware asked for shows as "soft"/"hard"; say why instead
    if noted and cause in ("soft", "hard", "unknown"):
        cause = noted
    data["count"] = data.get("count", 0) + 1
    data["boots"] = data.get("boots", 0) + 1
    data["reset_cause"] = cause
    try:
        _write(path, data)
    except OSError:
        pass  # a read-only or full flash must not stop the boot
    _state = data
    return data


def boot_count(path=BOOT_STATE):
    """Boots in a row that did not confirm (this one included once :func:`boot_begin` ran)."""
    return (_state or _read(path))["count"]


def safe_mode_due(limit=SAFE_MODE_AFTER, path=BOOT_STATE):
    """True when ``limit`` boots in a row failed before this one: start the safe-mode program."""
    return boot_count(path) > limit


def boot_confirmed(path=BOOT_STATE):
    """The app ran healthy long enough: clear the failure count."""
    data = _state if _state is not None else _read(path)
    if data["count"] != 0:
        data["count"] = 0
        _write(path, data)


def boot_reset(path=BOOT_STATE):
    """Forget failed boots (called when a fixed app has been deployed)."""
    global _state
    data = _read(path)
    data["count"] = 0
    _write(path, data)
    _state = None


def note_reset(reason, path=BOOT_STATE):
    """Record why the firmware is about to reset itself (e.g. ``"command"``); the next boot reports it."""
    data = _read(path)
    data["noted"] = reason
    _write(path, data)


def reset_cause(path=BOOT_STATE):
    """Why this boot happened (from :func:`boot_begin`)."""
    return boot_begin(path)["reset_cause"]


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
