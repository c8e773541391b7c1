"""After a deploy: reboot, watch the node come up, confirm the boot, run the role's self-test.

The proof that a node works is its HELLO on the link, signed with the key just provisioned (decoded and
verified with cewire on CPython). Without a link port the console is watched instead: the boot manager's
``slot <x>`` line and no failure for ``settle`` seconds. A rollback or safe mode is a failure that says
what the node is running now.

Self-test: the app's own ``selftest()`` (or an ``async`` one) returning a dict of named checks when it has
one, else the tool's built-in checks for the role (tools/flash/selftest.py); ``False`` or a dict
``{"ok": False, ...}`` fails a check.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import serial
from cewire.errors import WireError
from cewire.frame import DIR_UP, T_HELLO, Keyring, StreamDecoder
from cewire.host import decode_frame

from cityedge.manifest import NodeRecord
from tools.flash.board import Board
from tools.flash.errors import EXIT_BOOT, EXIT_SELFTEST, FlashError
from tools.flash.ports import open_port
from tools.flash.selftest import BUILTIN, failed_checks
from tools.flash.transport import RawRepl

_ROLLBACK = re.compile(r"bootmgr: ROLLBACK to slot (\w+)")
_SAFE = re.compile(r"bootmgr: SAFE MODE \(([^)]*)\)")
_SLOT = re.compile(r"bootmgr: slot (\w+) ")  # a, b or rom
_FAILED = re.compile(r"bootmgr: app failed: ([^\r\n]*)")


@dataclass
class VerifyResult:
    booted_slot: str | None = None
    hello: dict[str, Any] | None = None
    how: str = ""
    selftest: dict[str, Any] | None = None
    console: str = field(default="", repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"booted_slot": self.booted_slot, "how": self.how, "hello": self.hello, "selftest": self.selftest}


class LinkListener:
    """Reads the node's link port and returns its first verified HELLO."""

    def __init__(self, port: str, record: NodeRecord | None, baudrate: int = 115200) -> None:
        self.port = port
        self.record = record
        self.ser: serial.Serial = open_port(port, baudrate)
        self.decoder = StreamDecoder(max_frame=512)
        self.keyring = Keyring()
        if record is not None:
            self.keyring.add(record.node_id, record.key, record.key_id)
        self.rejected: list[str] = []

    def poll(self) -> dict[str, Any] | None:
        chunk = self.ser.read(self.ser.in_waiting or 1)
        for frame in self.decoder.feed(chunk):
            try:
                f = decode_frame(frame, self.keyring, DIR_UP)
            except WireError as exc:
                self.rejected.append(exc.name if hasattr(exc, "name") else str(exc))
                continue
            if f.ftype == T_HELLO and (self.record is None or f.node_id == self.record.node_id):
                body = f.body if isinstance(f.body, dict) else {"body": f.body}
                return {"node_id": f.node_id, "key_id": f.key_id, "seq": f.seq,
                        **{str(k): v for k, v in body.items() if isinstance(v, (int, float, str, bool))}}
        return None

    def close(self) -> None:
        self.ser.close()


def watch_boot(repl: RawRepl, target: str, *, record: NodeRecord | None, link: str | None, timeout: float,
               settle: float) -> VerifyResult:
    """Soft-reset the node and watch it boot ``target``; FlashError(EXIT_BOOT) on rollback/safe mode/silence."""
    listener = LinkListener(link, record) if link else None
    res = VerifyResult()
    try:
        if listener:
            listener.ser.reset_input_buffer()
        repl.hard_reset_run()
        deadline = time.monotonic() + timeout
        seen_at: float | None = None
        text = ""
        while time.monotonic() < deadline:
            text += repl.read_console(0.05).decode(errors="replace")
            if m := _ROLLBACK.search(text):
                errors = _FAILED.findall(text)
                raise FlashError(
                    f"the new app did not boot: the node rolled back to slot {m.group(1)} (the previous app) "
                    f"after repeated failed boots" + (f"; the app said: {errors[-1].strip()}" if errors else ""),
                    port=repl.port, exit_code=EXIT_BOOT,
                    hint="the previous app runs again; see the console output with `cityedge flash status` and "
                    "fix the app before deploying again",
                )
            if m := _SAFE.search(text):
                raise FlashError(f"no app boots on this node: it is in safe mode ({m.group(1)})", port=repl.port,
                                 exit_code=EXIT_BOOT, hint="deploy a working app again (`cityedge flash deploy`)")
            if m := _SLOT.search(text):
                res.booted_slot = m.group(1)
                if seen_at is None:
                    seen_at = time.monotonic()
            if listener and (hello := listener.poll()):
                res.hello, res.how = hello, "hello on link"
                break
            if not listener and seen_at is not None and "app failed" not in text \
                    and time.monotonic() - seen_at >= settle:
                res.how = "console"
                break
        else:
            if listener:
                why = f"frames rejected: {', '.join(sorted(set(listener.rejected)))}" if listener.rejected \
                    else "nothing arrived on the link"
                raise FlashError(f"no HELLO from the node on {link} within {timeout:.0f} s ({why})",
                                 port=repl.port, exit_code=EXIT_BOOT,
                                 hint="check the link wiring/port; a wrong key shows as MAC errors: re-provision")
            raise FlashError(f"the node did not come up within {timeout:.0f} s", port=repl.port,
                             exit_code=EXIT_BOOT, hint="look at the console (mpremote repl) for errors")
        res.console = text
        if res.booted_slot is not None and res.booted_slot != target:
            raise FlashError(f"the node booted slot {res.booted_slot}, not the new app in slot {target}",
                             port=repl.port, exit_code=EXIT_BOOT, hint="run `cityedge flash status` and deploy again")
        return res
    finally:
        if listener:
            listener.close()


def confirm_and_selftest(board: Board, repl: RawRepl, role: str, *, run_selftest: bool) -> dict[str, Any] | None:
    """Stop the app (raw REPL), confirm the boot, clear any report, run the self-test."""
    repl.enter_raw()
    board.reset_agent()
    board.run("import bootmgr\nbootmgr.confirm()\nbootmgr.clear_report()", what="confirming the boot")
    if not run_selftest or role == "bare":
        return None
    kind, has_run, result = board.call_json(
        f"import asyncio\nimport {role} as _a\n_f=getattr(_a,'selftest',None)\n_r=None if _f is None else _f()\n"
        "_c=hasattr(_r,'send')\nprint(json.dumps(['absent' if _f is None else 'coro' if _c else 'done',"
        "hasattr(asyncio,'run'),None if _c else _r]))",
        what="running the self-test", timeout=60)
    if kind == "absent":
        if role not in BUILTIN:
            return {"status": "no self-test for this role"}
        result = board.call_json(BUILTIN[role], what="running the self-test", timeout=60)
        result = {"source": "cityedge flash", **result} if isinstance(result, dict) else {"result": result}
        kind = "done"
    if kind == "coro":
        code = "r=asyncio.run(_r)" if has_run else "r=await _r"
        result = board.call_json(f"{code}\nprint(json.dumps(r))", what="running the self-test", timeout=60)
    if not isinstance(result, dict):
        result = {"result": result}
    failed = failed_checks(result)
    if failed:
        raise FlashError(f"self-test failed: {', '.join(failed)}", port=repl.port, exit_code=EXIT_SELFTEST,
                         hint="check the wiring of the failed parts (lamp driver, sensors) and run again")
    return result
