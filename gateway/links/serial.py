"""A serial port with nodes behind it, read by a supervised asyncio task.

pyserial opens and configures the port (baud rate, raw mode, exclusive lock); reading and writing then use
the port's non-blocking descriptor through the event loop (``add_reader``/``add_writer``), so one agent
serves many ports without a thread per port and a node that stops reading can never block the agent.

Supervision (the complaint about existing gateways is a reader that dies on one exception and never comes
back): :meth:`SerialLink.run` loops forever — open, read until the port fails (unplug: EIO/EOF), close,
back off (capped exponential with jitter), open again. An unexpected exception in the reader or in the
agent's ``on_data`` callback is logged and counted as a restart; the link reopens and carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os

import serial

from gateway.config import SerialLinkConfig
from gateway.links.base import Backoff, DataCallback, LinkState, LinkStats
from gateway.systemd import Heartbeat

log = logging.getLogger(__name__)

READ_CHUNK = 8192  # small reads keep the event loop responsive (an alarm on another port)
MAX_OUT_BUFFER = 256 * 1024  # bytes queued for a node that does not read; beyond that frames are dropped
BEAT_S = 1.0


class _PortLost(Exception):
    """The open port failed (unplugged, I/O error)."""


class SerialLink:
    """One serial port. Start :meth:`run` as a task; cancel it to stop."""

    def __init__(self, config: SerialLinkConfig, on_data: DataCallback, heartbeat: Heartbeat | None = None) -> None:
        self.config = config
        self.name = config.name
        self.on_data = on_data
        self.heartbeat = heartbeat
        self.state = LinkState.STARTING
        self.stats = LinkStats()
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._out = bytearray()
        self._lost: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_soon = False
        self._backoff = Backoff(config.reopen_min_s, config.reopen_max_s)

    def __repr__(self) -> str:
        return f"<SerialLink {self.name} {self.config.port} {self.state.value}>"

    # --- supervision -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Open, read, reopen after failures — until cancelled."""
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except _PortLost as exc:
                    self.stats.disconnects += 1
                    self.stats.last_error = str(exc)
                    log.warning("link %s: port %s lost: %s", self.name, self.config.port, exc)
                except (serial.SerialException, OSError) as exc:
                    self.stats.open_failures += 1
                    self.stats.last_error = str(exc)
                    if self.stats.open_failures == 1 or self.stats.open_failures % 100 == 0:
                        log.warning("link %s: cannot open %s: %s", self.name, self.config.port, exc)
                except Exception as exc:  # a bug must not end reading for good: count, log, restart
                    self.stats.restarts += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("link %s: reader crashed, restarting", self.name)
                finally:
                    self._close()
                self.state = LinkState.BACKOFF
                await self._sleep_beating(self._backoff.next())
        finally:
            self._close()
            self.state = LinkState.STOPPED

    async def _sleep_beating(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + delay
        while True:
            self._beat()
            left = end - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, BEAT_S))

    def _beat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.beat()

    async def _session(self) -> None:
        self._open()
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        loop.add_reader(self._fd, self._on_readable)
        self.state = LinkState.OPEN
        self.stats.opens += 1
        log.info("link %s: %s open at %d baud", self.name, self.config.port, self.config.baudrate)
        opened_at = loop.time()
        while True:
            self._beat()
            done, _ = await asyncio.wait({self._lost}, timeout=BEAT_S)
            if loop.time() - opened_at > 5.0:
                self._backoff.reset()  # stayed up a while: the next failure starts with a short wait
            if done:
                self._lost.result()  # raises what ended the session

    def _open(self) -> None:
        self.state = LinkState.STARTING
        ser = serial.Serial()
        ser.port = self.config.port
        ser.baudrate = self.config.baudrate
        ser.timeout = 0
        ser.write_timeout = 0
        ser.exclusive = True  # a second program on the same port would steal frames
        ser.open()  # raises SerialException: absent, busy, no permission
        self._serial = ser
        self._fd = ser.fileno()
        os.set_blocking(self._fd, False)
        if self._out:
            self._flush()

    def _close(self) -> None:
        if self._fd >= 0 and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._fd)
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
        self._serial = None
        self._fd = -1
        if self.state is LinkState.OPEN:
            self.state = LinkState.BACKOFF

    def _fail(self, exc: BaseException) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_exception(exc)
        if self._fd >= 0 and self._loop is not None:  # stop callbacks until the supervisor closes the port
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._fd)

    # --- reading -----------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO when a USB adapter is pulled or a pty's other side closes
            self._fail(_PortLost(f"read failed: {os.strerror(exc.errno or errno.EIO)}"))
            return
        if not data:
            self._fail(_PortLost("end of file (device disconnected)"))
            return
        self.stats.bytes_in += len(data)
        try:
            self.on_data(self, data)
        except Exception as exc:
            self._fail(exc)

    # --- writing -----------------------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Queue ``data`` for the port. Written at once if possible, else when the port can take it."""
        if self._fd < 0:
            self.stats.dropped_out += len(data)
            return False
        if len(self._out) + len(data) > MAX_OUT_BUFFER:
            self.stats.dropped_out += len(data)
            return False
        self._out += data
        if self._loop is None:
            self._flush()
        elif not self._flush_soon:
            # written after the current callback: the ACKs of one commit go out in one write, not one each
            self._flush_soon = True
            self._loop.call_soon(self._flush_queued)
        return True

    def _flush_queued(self) -> None:
        self._flush_soon = False
        self._flush()

    def _flush(self) -> None:
        if self._fd < 0 or not self._out:
            return
        try:
            n = os.write(self._fd, self._out)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._fail(_PortLost(f"write failed: {os.strerror(exc.errno or errno.EIO)}"))
            return
        self.stats.bytes_out += n
        del self._out[:n]
        if self._loop is None:
            return
        if self._out:
            self._loop.add_writer(self._fd, self._flush)
        else:
            self._loop.remove_writer(self._fd)
