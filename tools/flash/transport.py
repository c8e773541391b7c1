"""A small MicroPython raw-REPL client on pyserial, with raw-paste flow control and byte counters.

Raw REPL: Ctrl-A enters (``raw REPL; CTRL-B to exit\\r\\n>``), the code ends with Ctrl-D, the board answers
``OK``, the output, ``\\x04``, the error output, ``\\x04`` and ``>``. Raw-paste (``\\x05A\\x01``; the board
answers ``R\\x01`` and a 16-bit window size) lets the board pace the host, so code streams at full speed
without overflowing the board's UART buffer; boards that answer ``R\\x00`` (or nothing) get plain raw mode
in 256-byte chunks. ``tx_bytes``/``rx_bytes`` count every byte on the wire for the flashing benchmark.

The code sent may hold a node key (provisioning): nothing here logs what is sent.
"""

from __future__ import annotations

import time
from types import TracebackType

import serial

from tools.flash.errors import EXIT_BOARD, EXIT_NO_REPL, EXIT_PORT_GONE, FlashError
from tools.flash.ports import open_port, port_by_usb_serial, port_error

RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"
SOFT_REBOOT = b"soft reboot"
NO_REPL_HINT = (
    "press the board's RESET/EN button and run again; check that the board runs MicroPython "
    "(flash it with --firmware) and that nothing else prints to this port; if a main.py blocks the REPL, "
    "the tool's Ctrl-C should stop it: try unplugging and replugging the board"
)


class BoardException(FlashError):
    """Code run on the board raised; ``board_error`` is the board's traceback."""

    def __init__(self, port: str, what: str, board_error: str) -> None:
        last = board_error.strip().splitlines()[-1] if board_error.strip() else "error"
        hint = None
        if "ENOSPC" in board_error or ("28" in last and "OSError" in last):
            hint = ("the board's flash is full: remove files the node does not need (mpremote rm), "
                    "or reflash MicroPython with --firmware IMAGE --erase")
        super().__init__(f"the board failed while {what}: {last}", hint=hint, exit_code=EXIT_BOARD, port=port)
        self.board_error = board_error


class RawRepl:
    """One open serial connection to a MicroPython board, driven through its raw REPL."""

    def __init__(self, port: str, baudrate: int = 115200, *, timeout: float = 5.0,
                 usb_serial: str | None = None) -> None:
        self.port = port
        self.usb_serial = usb_serial  # to find the board again if its port is renamed by a reset
        self.baudrate = baudrate
        self.timeout = timeout
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.raw_paste: bool | None = None  # unknown until the first exec
        self.in_raw = False
        self._buf = bytearray()
        self._ser: serial.Serial | None = None

    # --- connection -------------------------------------------------------------------------------

    def open(self) -> RawRepl:
        self._ser = open_port(self.port, self.baudrate)
        return self

    def close(self) -> None:
        if self._ser is not None:
            try:
                if self.in_raw:
                    self._write(b"\x02")  # leave the board in its friendly REPL
                self._ser.close()
            except (OSError, serial.SerialException):
                pass
            self._ser = None
            self.in_raw = False

    def __enter__(self) -> RawRepl:
        return self if self._ser is not None else self.open()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def serial(self) -> serial.Serial:
        if self._ser is None:
            raise RuntimeError("RawRepl is not open")
        return self._ser

    # --- bytes ------------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        try:
            self.serial.write(data)
        except (OSError, serial.SerialException) as exc:
            raise self._gone(exc) from None
        self.tx_bytes += len(data)

    def _fill(self, wait: float) -> bool:
        """Read what is waiting (up to ``wait`` s for the first byte); True if anything came."""
        ser = self.serial
        try:
            ser.timeout = max(wait, 0.0)
            first = ser.read(1)
            if not first:
                return False
            more = ser.read(ser.in_waiting) if ser.in_waiting else b""
        except (OSError, serial.SerialException) as exc:
            raise self._gone(exc) from None
        self.rx_bytes += len(first) + len(more)
        self._buf += first + more
        return True

    def _gone(self, exc: BaseException) -> FlashError:
        err = port_error(self.port, exc)
        if err.exit_code != EXIT_PORT_GONE:
            return err
        return FlashError("the board went away (serial I/O failed)", port=self.port, exit_code=EXIT_PORT_GONE,
                          hint="check the USB cable and run again; a board that resets may come back under "
                          "another port name: choose it with --usb-serial")

    def read_until(self, marker: bytes, timeout: float | None = None) -> bytes:
        """Bytes up to and including ``marker``; raises TimeoutError (with what came) after ``timeout``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            i = self._buf.find(marker)
            if i >= 0:
                out = bytes(self._buf[: i + len(marker)])
                del self._buf[: i + len(marker)]
                return out
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(bytes(self._buf))
            self._fill(min(left, 0.2))

    def drain(self, quiet: float = 0.05) -> bytes:
        """Discard input until the line is quiet for ``quiet`` seconds; return what was discarded."""
        got = bytes(self._buf)
        self._buf.clear()
        while self._fill(quiet):
            got += bytes(self._buf)
            self._buf.clear()
        return got

    # --- raw REPL ---------------------------------------------------------------------------------

    def enter_raw(self, *, wait: float = 6.0) -> None:
        """Stop whatever runs (Ctrl-C) and enter the raw REPL, trying for up to ``wait`` s (a board may still
        be booting); FlashError(EXIT_NO_REPL) if it never answers."""
        deadline = time.monotonic() + wait
        attempt = 0
        while True:
            self._write(b"\r\x03\x03")
            self.drain(0.05 + 0.05 * min(attempt, 4))
            self._write(b"\r\x01")
            try:
                self.read_until(RAW_PROMPT, timeout=max(0.1, min(1.0 + 0.5 * attempt, deadline - time.monotonic())))
                self.in_raw = True
                return
            except TimeoutError:
                attempt += 1
                if time.monotonic() >= deadline:
                    break
        raise FlashError("the board does not answer on its MicroPython REPL (could not enter the raw REPL)",
                         port=self.port, exit_code=EXIT_NO_REPL, hint=NO_REPL_HINT)

    def exec(self, code: str | bytes, *, timeout: float | None = None, what: str = "running a step") -> bytes:
        """Run ``code`` in the raw REPL; return its stdout. Raises BoardException on a board-side error."""
        out, err = self.exec_raw(code, timeout=timeout)
        if err:
            raise BoardException(self.port, what, err.decode(errors="replace"))
        return out

    def exec_raw(self, code: str | bytes, *, timeout: float | None = None) -> tuple[bytes, bytes]:
        """Run ``code``; return (stdout, stderr) as the board printed them."""
        if not self.in_raw:
            self.enter_raw()
        data = code.encode() if isinstance(code, str) else code
        if self.raw_paste is not False:
            self._write(b"\x05A\x01")
            try:
                head = self.read_until(b"\x01", timeout=2.0)
            except TimeoutError as exc:
                raise FlashError("the board stopped answering", port=self.port, exit_code=EXIT_NO_REPL,
                                 hint=NO_REPL_HINT) from exc
            if head.endswith(b"R\x01"):
                self.raw_paste = True
                self._paste(data)
            else:
                # "R\x00": raw-paste known but refused; anything else: an old firmware that ignored it
                self.raw_paste = False
                if not head.endswith(b"R\x00"):
                    self.read_until(b">", timeout=1.0)
                self._raw(data)
        else:
            self._raw(data)
        limit = self.timeout if timeout is None else timeout
        try:
            out = self.read_until(b"\x04", timeout=limit)[:-1]
            err = self.read_until(b"\x04", timeout=limit)[:-1]
            self.read_until(b">", timeout=limit)
        except TimeoutError as exc:
            raise FlashError("the board did not finish a step in time", port=self.port, exit_code=EXIT_NO_REPL,
                             hint=NO_REPL_HINT) from exc
        return out, err

    def _paste(self, data: bytes) -> None:
        """Stream ``data`` under the board's window flow control (raw-paste)."""
        # the header after R\x01 is a little-endian u16 window increment
        while len(self._buf) < 2:
            if not self._fill(2.0):
                raise FlashError("the board stopped answering", port=self.port, exit_code=EXIT_NO_REPL,
                                 hint=NO_REPL_HINT)
        increment = self._buf[0] | self._buf[1] << 8
        del self._buf[:2]
        window = increment
        i = 0
        while i < len(data):
            while window == 0 or self._buf or self.serial.in_waiting:
                if not self._buf and not self._fill(2.0 if window == 0 else 0):
                    if window == 0:
                        raise FlashError("the board stopped taking code", port=self.port, exit_code=EXIT_NO_REPL,
                                         hint=NO_REPL_HINT)
                    break
                b = self._buf[0]
                del self._buf[:1]
                if b == 0x01:
                    window += increment
                elif b == 0x04:  # the board ended the transfer (e.g. a syntax error is coming)
                    self._write(b"\x04")
                    return
            n = min(window, len(data) - i)
            self._write(data[i : i + n])
            window -= n
            i += n
        # the board confirms the end of the code with \x04 (flow-control \x01s may come first)
        self._end_code(b"\x04")

    def _raw(self, data: bytes) -> None:
        for i in range(0, len(data), 256):
            self._write(data[i : i + 256])
            time.sleep(0.01)  # plain raw mode has no flow control: give the board time to take it
        self._end_code(b"OK")

    def _end_code(self, answer: bytes) -> None:
        """Send the end of the code (Ctrl-D) and wait for the board's ``answer`` to it."""
        self._write(b"\x04")
        try:
            self.read_until(answer, timeout=self.timeout)
        except TimeoutError as exc:
            raise FlashError("the board did not take the code", port=self.port, exit_code=EXIT_NO_REPL,
                             hint=NO_REPL_HINT) from exc

    # --- resets -----------------------------------------------------------------------------------

    def soft_reset_raw(self, timeout: float = 10.0) -> bytes:
        """Soft reset and stay in the raw REPL (main.py does not run); returns the boot output."""
        if not self.in_raw:
            self.enter_raw()
        self._write(b"\x04")
        got = self.read_until(RAW_PROMPT, timeout=timeout)
        return got

    def soft_reset_run(self) -> None:
        """Leave the raw REPL and soft reset: boot.py and main.py run as at power-on."""
        if self.in_raw:
            self._write(b"\x02")
            self.in_raw = False
            try:
                self.read_until(b">>> ", timeout=2.0)
            except TimeoutError:
                pass
        self._buf.clear()
        self._write(b"\x04")

    def hard_reset_run(self) -> None:
        """Reset the board as at power-on (``machine.reset()``); boot.py and main.py run.

        Used rather than a soft reset so that nothing of the interrupted app survives into the boot being
        verified. A board with native USB drops off the bus while it resets: :meth:`read_console` then
        reopens the port when it is back.
        """
        if not self.in_raw:
            self.enter_raw()
        self._write(b"import machine\nmachine.reset()\x04")  # plain raw mode: no answer is awaited
        self.in_raw = False
        time.sleep(0.05)
        self._buf.clear()

    def reopen(self, wait: float = 10.0) -> None:
        """Close and open the port again, waiting up to ``wait`` s for it to come back (USB re-enumeration)."""
        if self._ser is not None:
            try:
                self._ser.close()
            except (OSError, serial.SerialException):
                pass
            self._ser = None
        deadline = time.monotonic() + wait
        while True:
            try:
                if self.usb_serial:
                    self.port = port_by_usb_serial(self.usb_serial)
                self._ser = open_port(self.port, self.baudrate)
                return
            except FlashError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def read_console(self, wait: float) -> bytes:
        """What the board prints within ``wait`` seconds (boot messages, logs); survives a USB re-enumeration."""
        try:
            self._fill(wait)
        except FlashError as exc:
            if exc.exit_code != EXIT_PORT_GONE:
                raise
            self.reopen()
        out = bytes(self._buf)
        self._buf.clear()
        return out
