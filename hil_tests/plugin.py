"""The HIL bench as pytest fixtures: a board, its REPL, its link, its sensors, its power.

Resources (labgrid's word) are the ports of a board, emulated by default or real with ``--board-port``;
drivers are :class:`Repl` (stock mpremote's serial transport) and pyserial for the link; the strategy that
puts a board into a known state is chosen per test module with ``@pytest.mark.board(...)``:

    pytestmark = pytest.mark.board(role="streetlight", virtual_time=True)   # fresh flash, app deployed

    def test_dusk(board, sensors, repl): ...

Emulator-only capabilities (``sensors``, ``power``, ``link_faults``, ``@pytest.mark.emulator_only``) are
skipped on real boards with the missing bench capability as the reason. A failing test's report carries the
serial log and peripheral state of every board it used.
"""

from __future__ import annotations

import ast
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hil_tests.emulator.board import DEFAULT_ROM_KB, Board, BoardError, EmulatedBoard, Peripherals, rom_image_path

_ACTIVE: list[Any] = []  # boards alive now (for failure reports)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop boards")
    group.addoption("--board-port", help="run HIL tests on the real board at this REPL port (e.g. /dev/ttyUSB0)")
    group.addoption("--board-role", default=None, help="app the real board runs (streetlight, medical, bare)")
    group.addoption("--link-port", default=None, help="the real board's link UART as seen by the host")
    group.addoption(
        "--board",
        action="append",
        default=[],
        metavar="NAME=PORT[,ROLE[,LINK]]",
        help="name several real boards (repeatable); the first is the default board",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "board(role='bare', virtual_time=False, flash=None, rom_kb=256, layout='files'): board strategy"
    )


@dataclass
class RealBoard:
    """A board on the bench: only its ports. Emulator capabilities are absent (tests needing them skip)."""

    name: str
    repl_port: str
    role: str | None = None
    link_port: str | None = None
    emulated: bool = False

    @property
    def serial_log(self) -> str:
        return "(a real board: its serial log is what the test read from the REPL)"


def _real_boards(config: pytest.Config) -> list[RealBoard]:
    boards = []
    port = config.getoption("--board-port")
    if port:
        boards.append(RealBoard("board0", port, config.getoption("--board-role"), config.getoption("--link-port")))
    for spec in config.getoption("--board"):
        name, _, rest = spec.partition("=")
        parts = rest.split(",")
        if not name or not parts[0]:
            raise pytest.UsageError(f"--board {spec!r}: expected NAME=PORT[,ROLE[,LINK]]")
        boards.append(
            RealBoard(name, parts[0], parts[1] if len(parts) > 1 else None, parts[2] if len(parts) > 2 else None)
        )
    return boards


def on_real_hardware(config: pytest.Config) -> bool:
    return bool(_real_boards(config))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not on_real_hardware(config):
        return
    skip = pytest.mark.skip(reason="needs emulator-only fault injection: no power/fault-injection rig on this bench")
    for item in items:
        if item.get_closest_marker("emulator_only"):
            item.add_marker(skip)


class BoardExecError(AssertionError):
    """Code run on the board raised; the message is the board's own traceback."""

    def __init__(self, traceback: str, stdout: str = "") -> None:
        super().__init__(f"the board raised:\n{traceback}" + (f"\n--- it printed ---\n{stdout}" if stdout else ""))
        self.traceback = traceback
        self.stdout = stdout


class Repl:
    """The board's REPL driven by stock mpremote (raw REPL, raw-paste): ``exec`` returns stdout."""

    def __init__(self, port: str, attempts: int = 3) -> None:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port = port
        self._t = SerialTransport(port, baudrate=115200)
        # mpremote reads a pty without a timeout: a board that never answers would block the test for good.
        # With one, its own overall timeout applies, and a Ctrl-C that a board never answered (lost while it
        # reset) is sent again. The wait is long: a board busy booting on a loaded machine is slow, and a
        # second Ctrl-C to a board that was only slow would interrupt what it runs next (its asyncio loop).
        # Reset afterwards: raw-paste mode reads fixed-size answers.
        self._t.serial.timeout = 0.5
        for attempt in range(attempts):
            try:
                self._t.enter_raw_repl(soft_reset=False, timeout_overall=45)
                break
            except TransportError:
                if attempt == attempts - 1:
                    self._t.close()
                    raise
        self._t.serial.timeout = None

    def exec(self, code: str, timeout: float = 10.0) -> str:
        """Run ``code`` on the board; return what it printed. A board exception raises :class:`BoardExecError`."""
        out, err = self._t.exec_raw(code, timeout=timeout)
        if err:
            raise BoardExecError(err.decode("utf-8", "replace"), bytes(out).decode("utf-8", "replace"))
        return bytes(out).decode("utf-8", "replace").replace("\r\n", "\n")

    def eval(self, expr: str, timeout: float = 10.0) -> Any:
        """Evaluate ``expr`` on the board and return the value (through its repr)."""
        return ast.literal_eval(self.exec(f"print(repr({expr}))", timeout=timeout).strip())

    def soft_reset(self) -> None:
        """Ctrl-D in the raw REPL: a soft reset that stays in the raw REPL (main.py does not run)."""
        self._t.exit_raw_repl()
        self._t.enter_raw_repl(soft_reset=True)

    def close(self) -> None:
        try:
            self._t.exit_raw_repl()
        except Exception:
            pass
        self._t.close()


def _strategy(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("board")
    opts: dict[str, Any] = {"role": "bare", "virtual_time": False, "flash": None}
    if marker is not None:
        opts.update(marker.kwargs)
    return opts


def _start_board(opts: dict[str, Any], name: str = "board0") -> EmulatedBoard:
    flash = opts.get("flash")
    tmp = Path(tempfile.mkdtemp(prefix=f"cityedge-{name}-"))
    if flash is not None:  # strategy "given flash folder": boot a copy, the original stays as it was
        shutil.copytree(flash, tmp / "flash")
        if rom_image_path(flash).exists():  # its ROM partition too
            shutil.copyfile(rom_image_path(flash), rom_image_path(tmp / "flash"))
        role = None
    else:  # strategy "fresh flash with the app deployed"
        role = opts.get("role", "bare")
    try:
        board = EmulatedBoard(
            tmp / "flash",
            role=role,
            virtual_time=opts.get("virtual_time", False),
            name=name,
            start_time=opts.get("start_time"),
            rom_kb=opts.get("rom_kb", DEFAULT_ROM_KB),
            layout=opts.get("layout", "files"),
        )
    except BaseException:  # e.g. an app image that does not fit the ROM partition: nothing to stop
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    board._tmp_root = tmp  # type: ignore[attr-defined]
    board.__enter__()
    _ACTIVE.append(board)
    try:
        board.wait_booted(timeout=20)
    except BoardError:
        _stop_board(board)
        raise
    return board


def _stop_board(board: EmulatedBoard) -> None:
    if board in _ACTIVE:
        _ACTIVE.remove(board)
    board.close()
    shutil.rmtree(getattr(board, "_tmp_root", ""), ignore_errors=True)


@pytest.fixture(scope="module")
def board(request: pytest.FixtureRequest) -> Iterator[Board | RealBoard]:
    """The board under test: emulated (fresh flash with the module's role) unless ``--board-port`` is given."""
    real = _real_boards(request.config)
    if real:
        role = _strategy(request)["role"]
        if real[0].role and role not in ("bare", real[0].role):
            pytest.skip(f"needs a {role} board; the bench board runs {real[0].role}")
        _ACTIVE.append(real[0])
        yield real[0]
        _ACTIVE.remove(real[0])
        return
    b = _start_board(_strategy(request))
    yield b
    _stop_board(b)


@pytest.fixture
def board_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., EmulatedBoard]]:
    """Start more emulated boards in a test: ``board_factory(role="medical", virtual_time=True, name="m1")``."""
    if on_real_hardware(request.config):
        pytest.skip("needs emulated boards: extra boards cannot be created on a real bench")
    started: list[EmulatedBoard] = []

    def make(name: str | None = None, **opts: Any) -> EmulatedBoard:
        b = _start_board({"role": "bare", **opts}, name=name or f"board{len(started) + 1}")
        started.append(b)
        return b

    yield make
    for b in started:
        _stop_board(b)


@pytest.fixture
def repl(board: Board | RealBoard) -> Iterator[Repl]:
    """The board's REPL through stock mpremote's transport (raw REPL, no soft reset on entry)."""
    r = Repl(board.repl_port)
    yield r
    r.close()


@pytest.fixture
def link(board: Board | RealBoard) -> Iterator[Any]:
    """The link UART, opened with pyserial as the gateway opens it."""
    import serial

    if not board.link_port:
        pytest.skip("needs the board's link UART: pass --link-port for a real board")
    s = serial.Serial(board.link_port, 115200, timeout=1)
    yield s
    s.close()


def _emulated(board: Board | RealBoard, what: str) -> Board:
    if not isinstance(board, Board):
        pytest.skip(f"needs {what}: not available on a real bench board")
    return board


@pytest.fixture
def sensors(board: Board | RealBoard) -> Peripherals:
    """Peripheral models (light, lamp health, PIR, battery, thermometer...). Emulator only."""
    return _emulated(board, "controllable sensor models").hw


@pytest.fixture
def power(board: Board | RealBoard) -> Board:
    """Power control: ``power.power_cut()``, ``brownout()``, ``hard_reset()``, ``watchdog_expire()``."""
    return _emulated(board, "a controllable power supply")


@pytest.fixture
def link_faults(board: Board | RealBoard) -> Iterator[Callable[..., dict[str, Any]]]:
    """Inject link UART faults (``ber``, ``drop``, ``delay_ms``, ``cut``); cleared after the test."""
    b = _emulated(board, "link fault injection")
    yield b.link_faults
    b.link_faults(ber=0, drop=0, delay_ms=0, cut=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.failed:
        return
    for b in list(_ACTIVE):
        try:
            log = b.serial_log
            state = b.hw.state() if isinstance(b, Board) else None
        except Exception as exc:
            log, state = f"(could not read: {exc})", None
        sections = [(f"board {b.name} serial log (tail)", log[-4000:])]
        if state is not None:
            import json

            sections.append((f"board {b.name} peripheral state", json.dumps(state, indent=1, sort_keys=True)))
        for title, text in sections:
            report.sections.append((f"Captured stdout {title}", text))
            if hasattr(report.longrepr, "addsection"):
                report.longrepr.addsection(title, text)


def hil_env() -> dict[str, str]:
    """Environment for subprocesses that talk to a board (unbuffered output)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
