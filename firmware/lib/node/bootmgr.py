"""Boot manager: run the app in the active slot, roll back a new app that does not boot, safe mode.

App sources ("slots"): ``a`` and ``b`` are folders on the filesystem (``/app_a``, ``/app_b``); ``rom`` is
the ROMFS partition, which MicroPython mounts at ``/rom`` (its .mpy files run in place, from flash). All
three are handled alike: an ``app.json`` listing every file with its size, the app under ``<dir>/lib``.

Lives outside the app slots (on the board at ``/lib/bootmgr.py``) and depends on nothing in them, so an
update can never break the code that decides what to boot. Layout: see ``cityedge/firmware_files.py``.

State in ``/boot.json`` (replaced atomically with a rename, so a power cut leaves the old or the new one)::

    {"active": "b", "previous": "a", "role": "streetlight", "trial": true, "tries": 1, "max_tries": 3,
     "rollback": null}

Every boot through ``main.py`` counts a try before the app is imported; the app confirms itself after
running ``CONFIRM_S`` seconds without an exception (or the flashing tool calls :func:`confirm` once it saw
the node's HELLO), which resets the count. When the count exceeds ``max_tries``:

* a trial app with a valid previous slot is rolled back: the previous slot becomes active again and a report
  (``rollback``: from, to, version, tries, last error) is kept in the state and printed at every boot
  until the flashing tool clears it; :func:`status` gives it to apps so they can report it upstream;
* otherwise nothing boots: safe mode imports ``/lib/safe/<role>.py`` and calls its ``run()``.

Entering the raw REPL (Ctrl-C) interrupts the app without counting as a failed boot.

On the board, main.py calls :func:`boot` and then drops this module while the app runs (its code would take
heap for nothing): the confirmation is main.py writing the state :func:`boot` prepared, an app's own
confirmation (``node.supervisor.boot_confirmed``) edits ``/boot.json`` itself, and only a failing app imports
this module again (:func:`failed`). Tests boot through main.py too (tests/main_vm.py).
"""

import json
import os
import sys

try:
    from micropython import const
except ImportError:  # CPython (tests)

    def const(x):  # type: ignore[misc,unused-ignore]
        return x


STATE = "/boot.json"
NODE = "/node.json"
SAFE_DIR = "/lib/safe"
SLOTS = ("a", "b", "rom")  # "rom": the ROMFS partition, mounted at /rom
ROM = "rom"
CONFIRM_S = const(30)  # seconds an app must run before it counts as booted
RESET_DELAY_MS = const(300)  # after a failed boot: leaves a window for Ctrl-C before the reset
DEFAULT_MAX_TRIES = const(3)

_state = None  # cache of the state for status()


def log(msg):
    print("bootmgr: " + msg)


def slot_dir(slot):
    return "/rom" if slot == ROM else "/app_" + slot


def _read_json(path):
    try:
        with open(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def _write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(data))
    try:
        os.rename(tmp, path)  # littlefs and POSIX replace atomically
    except OSError:
        os.remove(path)
        os.rename(tmp, path)


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def slot_ok(slot):
    """The slot's manifest if every file it lists is present with its size, else None."""
    if slot not in SLOTS:
        return None
    base = slot_dir(slot)
    meta = _read_json(base + "/app.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        return None
    for rel, entry in meta["files"].items():
        if _size(base + "/" + rel) != entry[0]:
            return None
    return meta


def load_state():
    """The boot state, repaired when missing or damaged (first complete slot, confirmed)."""
    st = _read_json(STATE)
    if not isinstance(st, dict) or st.get("active") not in SLOTS:
        if st is None:
            st = _read_json(STATE + ".tmp")  # power cut between remove and rename on FAT
    if not isinstance(st, dict) or st.get("active") not in SLOTS:
        active = None
        for s in SLOTS:
            if slot_ok(s) is not None:
                active = s
                break
        st = {"active": active or "a", "previous": None, "trial": False, "tries": 0, "rollback": None}
    st.setdefault("tries", 0)
    st.setdefault("max_tries", DEFAULT_MAX_TRIES)
    st.setdefault("trial", False)
    st.setdefault("previous", None)
    st.setdefault("rollback", None)
    return st


def save_state(st):
    global _state
    _write_json(STATE, st)
    _state = st


def _role(st, meta):
    if meta and meta.get("role"):
        return meta["role"]
    if st.get("role"):
        return st["role"]
    node = _read_json(NODE)
    if isinstance(node, dict):
        return node.get("role")
    return None


def set_path(slot):
    """Put the slot's lib first on sys.path (and no other slot's)."""
    for s in SLOTS:
        p = slot_dir(s) + "/lib"
        while p in sys.path:
            sys.path.remove(p)
    sys.path.insert(0, slot_dir(slot) + "/lib")


def prepare_path():
    """For boot.py: make the active slot importable (also in the raw REPL). Counts nothing."""
    st = load_state()
    set_path(st["active"])


def decide(st):
    """Count this boot and choose what to run: ("app", slot) or ("safe", reason). Saves the state."""
    st["tries"] = st.get("tries", 0) + 1
    active = st["active"]
    meta = slot_ok(active)
    failing = st["tries"] > st["max_tries"]
    if meta is None or failing:
        why = "slot %s is incomplete" % active if meta is None else "%d failed boots of slot %s" % (
            st["tries"] - 1, active)
        prev = st.get("previous")
        prev_meta = slot_ok(prev) if prev else None
        if (st.get("trial") or meta is None) and prev_meta is not None:
            bad = meta or {}
            st["rollback"] = {"from": active, "to": prev, "version": bad.get("version"),
                              "tries": st["tries"] - 1, "reason": why, "error": st.get("last_error")}
            st["active"], st["previous"] = prev, None
            st["trial"], st["tries"] = False, 1
            save_state(st)
            log("ROLLBACK to slot %s: %s" % (prev, why))
            return "app", prev
        save_state(st)
        return "safe", why
    save_state(st)
    return "app", active


def _confirmed(st):
    st["trial"] = False
    st["tries"] = 0
    st["last_error"] = None
    return st


def confirm():
    """Mark the running app as booted: the try count is cleared and a trial becomes permanent."""
    st = load_state()
    if st.get("trial") or st.get("tries"):
        save_state(_confirmed(st))
    return st


def clear_report():
    """Forget the rollback report (the flashing tool calls this after recording it)."""
    st = load_state()
    if st.get("rollback") is not None:
        st["rollback"] = None
        save_state(st)


def status():
    """What apps may publish: active slot, app version, trial flag and any rollback report."""
    st = _state if _state is not None else load_state()
    meta = slot_ok(st["active"]) or {}
    return {"slot": st["active"], "version": meta.get("version"), "trial": st.get("trial"),
            "tries": st.get("tries"), "rollback": st.get("rollback")}


def failed(err):
    """The app failed: log it, keep the error for the rollback report and reset (the boot counted already)."""
    log("app failed: %s: %s" % (type(err).__name__, err))
    sys.print_exception(err)  # type: ignore[attr-defined]
    st = _state if _state is not None else load_state()  # main.py imports this module again to report
    # keep the error text short: it is a report, not a log
    st["last_error"] = (type(err).__name__ + ": " + str(err))[:120]
    save_state(st)
    _reset()


def _reset():
    import time

    time.sleep_ms(RESET_DELAY_MS)  # type: ignore[attr-defined]
    try:
        import machine

        machine.reset()
    except ImportError:
        pass
    sys.exit(1)  # a soft reset where there is no machine.reset()


def _safe(role, why):
    # safe mode: /lib/safe/<role>.py, without any slot on the path; its run() (a coroutine to run, or None)
    log("SAFE MODE (%s)" % why)
    for s in SLOTS:
        p = slot_dir(s) + "/lib"
        while p in sys.path:
            sys.path.remove(p)
    if role is None:
        log("no role known: staying in the REPL")
        return None
    sys.path.insert(0, SAFE_DIR)
    try:
        mod = __import__(role)
    except ImportError as e:
        log("no safe mode for %s (%s): staying in the REPL" % (role, e))
        return None
    finally:
        sys.path.remove(SAFE_DIR)
    res = mod.run()
    return res if res is not None and hasattr(res, "send") else None


def boot():
    """A boot up to the app's main loop: count it, choose a slot (or safe mode), import ``<role>`` and call its
    ``main()``. Returns ``(coroutine, confirmed)``: what to run, and the state (a dict) ``/boot.json`` takes once
    the app has run ``CONFIRM_S`` seconds (main.py writes it without this module); ``confirmed`` is None in safe
    mode, and ``(None, None)`` means nothing is left to run. An app that fails to import or start is a failed
    boot (:func:`failed`: the board resets). Call it in the event loop: ``main()`` may expect one."""
    st = load_state()
    global _state
    _state = st
    rb = st.get("rollback")
    if rb:
        log("ROLLBACK REPORT: slot %s (%s) failed %s boots (%s); running slot %s" % (
            rb.get("from"), rb.get("version"), rb.get("tries"), rb.get("error") or rb.get("reason"), rb.get("to")))
    what, arg = decide(st)
    meta = slot_ok(st["active"])
    role = _role(st, meta)
    if what == "safe":
        return _safe(role, arg), None
    set_path(arg)
    log("slot %s %s %s try %d/%d%s" % (arg, role, (meta or {}).get("version"), st["tries"], st["max_tries"],
                                       " (trial)" if st.get("trial") else ""))
    if role is None or role == "bare":
        confirm()
        return None, None
    try:
        coro = __import__(role).main()
    except Exception as e:  # Ctrl-C (KeyboardInterrupt) is none: entering the REPL is not a failed boot
        failed(e)
    if coro is None or not hasattr(coro, "send"):
        confirm()
        return None, None
    return coro, _confirmed(dict(st))
