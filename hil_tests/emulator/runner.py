"""Run firmware code on the real MicroPython VM (the WebAssembly port under Node.js).

This is the smallest way for a test to execute node code on MicroPython and get its output, its exception
and its exit status back in Python. The full emulated board (REPL on a pty, peripherals, faults) grows out
of the same Node.js side.

    result = run_micropython("import cewire; print(cewire.VERSION)", mounts={FIRMWARE_LIB: "/lib"})
    result.check()               # raises MicroPythonError with the VM's traceback on failure
    assert result.stdout == "1\\n"

For many small runs use :class:`MicroPythonSession`, which keeps one VM alive (~150 ms saved per run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cityedge.errors import CityedgeError
from cityedge.paths import FIRMWARE, NODE_MODULES

RUN_JS = Path(__file__).resolve().parent / "js" / "run.mjs"
FIRMWARE_LIB = FIRMWARE / "lib"
DEFAULT_MOUNTS: Mapping[Path | str, str] = {FIRMWARE_LIB: "/lib"}


class MicroPythonError(AssertionError):
    """Code run on the MicroPython VM raised; the message is the VM's own traceback."""


class NodeMissingError(CityedgeError):
    def __init__(self, what: str) -> None:
        super().__init__(
            f"cannot run the MicroPython VM: {what}",
            hint="run ./scripts/setup (installs Node.js and the npm packages from package-lock.json)",
        )


@dataclass(frozen=True)
class MpyResult:
    """What a run on the VM produced."""

    stdout: str
    stderr: str
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> MpyResult:
        """Return self, or raise :class:`MicroPythonError` carrying the VM's traceback."""
        if not self.ok:
            raise MicroPythonError(
                f"MicroPython exited with {self.exit_code}\n{self.stderr}\n--- stdout ---\n{self.stdout}"
            )
        return self


def node_executable() -> str:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        raise NodeMissingError("Node.js (node) is not on PATH")
    if not (NODE_MODULES / "@micropython").exists():
        raise NodeMissingError(f"the MicroPython npm package is not installed under {NODE_MODULES}")
    return node


def _request(code: str, mounts: Mapping[Path | str, str] | None, heapsize: int | None = None) -> dict:
    mounts = DEFAULT_MOUNTS if mounts is None else mounts
    req: dict = {"code": code, "mounts": [[str(Path(h).resolve()), vm] for h, vm in mounts.items()]}
    if heapsize:
        req["heapsize"] = heapsize
    return req


def run_micropython(
    code: str,
    *,
    mounts: Mapping[Path | str, str] | None = None,
    heapsize: int | None = None,
    timeout: float = 60.0,
) -> MpyResult:
    """Run ``code`` on a fresh MicroPython VM with host directories copied in (``{host_dir: vm_dir}``).

    ``firmware/lib`` is mounted at ``/lib`` (and ``/lib`` is on ``sys.path``) unless ``mounts`` says otherwise.
    Top-level ``await`` works, so ``await main()`` runs an asyncio app.
    """
    proc = subprocess.run(
        [node_executable(), str(RUN_JS)],
        input=json.dumps(_request(code, mounts, heapsize)),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return MpyResult(proc.stdout, proc.stderr, proc.returncode)


class MicroPythonSession:
    """One MicroPython VM kept alive for many runs; state (globals, files, imports) persists between runs.

    Use as a context manager; each :meth:`run` returns an :class:`MpyResult`.
    """

    def __init__(
        self, mounts: Mapping[Path | str, str] | None = None, timeout: float = 60.0, romfs: Path | None = None
    ) -> None:
        """``romfs``: a ROMFS image file the VM gets as its ROM partition (mounted at ``/rom``)."""
        self._mounts = mounts
        self._romfs = romfs
        self._timeout = timeout
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> MicroPythonSession:
        self._proc = subprocess.Popen(
            [node_executable(), str(RUN_JS), "--session", *(["--romfs", str(self._romfs)] if self._romfs else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        ready = self._readline()
        if not ready.get("ready"):
            raise MicroPythonError(f"MicroPython session did not start: {ready}")
        if self._mounts is None or self._mounts:
            self.run("pass", mounts=self._mounts)
        return self

    def _readline(self) -> dict:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            err = self._proc.stderr.read() if self._proc.stderr else ""
            raise MicroPythonError(f"MicroPython session ended unexpectedly\n{err}")
        return json.loads(line)

    def run(self, code: str, *, mounts: Mapping[Path | str, str] | None = {}) -> MpyResult:
        """Run ``code`` in the session's VM. ``mounts`` copies host directories in first (none by default)."""
        assert self._proc is not None and self._proc.stdin is not None, "use MicroPythonSession as a context"
        req = _request(code, mounts)
        self._proc.stdin.write(json.dumps(req) + "\n")
        self._proc.stdin.flush()
        ans = self._readline()
        out = ans["out"] + ("\n" if ans["out"] else "")
        return MpyResult(out, ans["err"], int(ans["exit"]))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            if self._proc.stdin:
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            for stream in (self._proc.stdout, self._proc.stderr):
                if stream:
                    stream.close()
            self._proc = None
