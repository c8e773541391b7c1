"""SerialLink on real pseudo-terminals through pyserial: reading, writing, unplug/replug, crash restart.

A pty pair stands in for a USB-serial adapter: the test holds the master side and plays the node; the link
opens the slave side by a symlink, as an operator's config names ``/dev/serial/by-id/...``. Closing the
master is an unplug (the link's reads fail with EIO); re-pointing the symlink at a new pty is a replug.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import SerialLinkConfig
from gateway.links import LinkState, SerialLink
from gateway.links.base import Link
from gateway.systemd import Heartbeat


class Pty:
    """One end of a fake USB-serial adapter: the test writes/reads the master; the slave path is the port."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes pass as on a real UART
        self.path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self.master, False)

    def read(self) -> bytes:
        try:
            return os.read(self.master, 65536)
        except (BlockingIOError, OSError):
            return b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.master)


@pytest.fixture
def port_link(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "usb-FTDI_node_bus-if00"


def replug(link_path: Path) -> Pty:
    pty = Pty()
    tmp = link_path.with_suffix(".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(pty.path)
    tmp.replace(link_path)
    return pty


async def wait_for(cond: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_reads_writes_survives_unplug_replug_and_a_crashing_callback(port_link: Path) -> None:
    received: list[bytes] = []
    crash_next = [False]

    def on_data(link: Link, data: bytes) -> None:
        if crash_next[0]:
            crash_next[0] = False
            raise RuntimeError("bug in a frame handler")
        received.append(data)

    hb = Heartbeat("serial:bus")
    cfg = SerialLinkConfig("bus", str(port_link), 115200, reopen_min_s=0.02, reopen_max_s=0.1)
    link = SerialLink(cfg, on_data, hb)
    task = asyncio.create_task(link.run())
    try:
        # not plugged in yet: open fails, keeps trying, keeps beating
        await wait_for(lambda: link.stats.open_failures >= 2)
        assert link.state is LinkState.BACKOFF and hb.beats > 0
        pty = replug(port_link)
        await wait_for(lambda: link.state is LinkState.OPEN)

        os.write(pty.master, b"\x01frame-one\x00")
        await wait_for(lambda: b"".join(received) == b"\x01frame-one\x00")
        assert link.send(b"ACK\x00")
        await asyncio.sleep(0.05)
        assert pty.read() == b"ACK\x00"

        # unplug: reads fail, link goes to backoff; a send meanwhile is dropped and counted
        pty.close()
        await wait_for(lambda: link.stats.disconnects == 1)
        assert link.state is not LinkState.OPEN
        assert link.send(b"lost") is False and link.stats.dropped_out == 4

        # replug (possibly a different pty behind the same by-id name): reading resumes
        pty2 = replug(port_link)
        await wait_for(lambda: link.stats.opens == 2)
        os.write(pty2.master, b"two\x00")
        await wait_for(lambda: received[-1:] == [b"two\x00"])

        # a bug in the callback: counted as a restart, the link reopens and carries on
        crash_next[0] = True
        os.write(pty2.master, b"boom\x00")
        await wait_for(lambda: link.stats.restarts == 1)
        await wait_for(lambda: link.stats.opens == 3)
        os.write(pty2.master, b"three\x00")
        await wait_for(lambda: received[-1:] == [b"three\x00"])
        assert "bug in a frame handler" in link.stats.last_error
        pty2.close()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert link.state is LinkState.STOPPED


async def test_a_node_that_does_not_read_never_blocks_the_agent(port_link: Path) -> None:
    pty = replug(port_link)
    cfg = SerialLinkConfig("bus", str(port_link), 115200, reopen_min_s=0.02, reopen_max_s=0.1)
    link = SerialLink(cfg, lambda _l, _d: None)
    task = asyncio.create_task(link.run())
    try:
        await wait_for(lambda: link.state is LinkState.OPEN)
        chunk = b"x" * 4096
        accepted = sum(link.send(chunk) for _ in range(200))  # the pty holds only a few KB
        assert 0 < accepted < 200 and link.stats.dropped_out > 0
        # the event loop stayed responsive throughout
        t0 = asyncio.get_running_loop().time()
        await asyncio.sleep(0.01)
        assert asyncio.get_running_loop().time() - t0 < 0.5
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        pty.close()
