"""The real sd_notify protocol over a datagram socket, and a watchdog that stops when a loop stalls."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.systemd import Notifier, Watchdog


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2.0)
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    sock.settimeout(2.0)
    return out


def test_ready_and_status_reach_the_socket(notify_socket: socket.socket, tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    assert n.enabled
    assert n.ready("2 links open")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=2 links open"
    assert n.status("line\nbreak")
    assert notify_socket.recv(4096) == b"STATUS=line break"
    n.close()


def test_abstract_socket_and_no_socket() -> None:
    name = f"cityedge-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.notify("READY=1")
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()
    quiet = Notifier({})
    assert not quiet.enabled and quiet.ready() is False


def test_watchdog_usec_is_ignored_for_another_pid(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "x"), "WATCHDOG_USEC": "2000000"}
    assert Notifier(env).watchdog_usec == 2_000_000
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_usec is None


async def test_watchdog_pings_only_while_every_loop_progresses(
    notify_socket: socket.socket, tmp_path: Path
) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "40000"})
    wd = Watchdog(n, stall_after_s=0.15)
    assert wd.interval_s == pytest.approx(0.02)
    reader = wd.register("serial:north")
    outbox = wd.register("outbox")

    async def healthy_loop() -> None:
        while True:
            outbox.beat()
            await asyncio.sleep(0.01)

    beater = asyncio.create_task(healthy_loop())
    runner = asyncio.create_task(wd.run())
    try:
        for _ in range(10):
            reader.beat()
            await asyncio.sleep(0.02)
        healthy = drain(notify_socket)
        assert healthy.count("WATCHDOG=1") >= 5
        # the serial reader stalls (no more beats): pings stop, STATUS says which loop
        await asyncio.sleep(0.35)
        msgs = drain(notify_socket)
        assert any(m.startswith("STATUS=STALLED: serial:north") for m in msgs)
        await asyncio.sleep(0.1)
        assert "WATCHDOG=1" not in drain(notify_socket)
        assert wd.withheld > 0 and wd.stalled() == ["serial:north"]
        # it recovers: pings resume
        for _ in range(5):
            reader.beat()
            await asyncio.sleep(0.02)
        assert "WATCHDOG=1" in drain(notify_socket)
    finally:
        beater.cancel()
        runner.cancel()
        await asyncio.gather(beater, runner, return_exceptions=True)
    n.close()
