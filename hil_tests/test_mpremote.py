"""Stock mpremote, the technician's tool, on the board's REPL port: every command the issue names."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil_tests.emulator.board import Board

pytestmark = pytest.mark.board(role="bare")
MPREMOTE = [sys.executable, "-m", "mpremote"]


def mpremote(board: Board, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MPREMOTE, "connect", board.repl_port, *args], capture_output=True, text=True, timeout=timeout
    )


def test_exec_eval_and_run(board: Board, tmp_path: Path) -> None:
    r = mpremote(board, "exec", "import sys; print(sys.implementation.name, 6 * 7)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["micropython", "42"]
    r = mpremote(board, "eval", "[n * n for n in range(4)]")
    assert r.stdout.strip() == "[0, 1, 4, 9]"
    script = tmp_path / "script.py"
    script.write_text("import machine\nprint('unique', len(machine.unique_id()))\n")
    r = mpremote(board, "run", str(script))
    assert r.returncode == 0 and r.stdout.strip() == "unique 6", r.stderr
    r = mpremote(board, "exec", "raise ValueError('bad lux')")
    assert r.returncode == 1 and "ValueError: bad lux" in r.stdout + r.stderr


def test_filesystem_commands_and_persistence(board: Board, tmp_path: Path) -> None:
    payload = os.urandom(20_000)
    src = tmp_path / "blob.bin"
    src.write_bytes(payload)
    assert mpremote(board, "fs", "mkdir", ":data").returncode == 0
    assert mpremote(board, "fs", "cp", str(src), ":data/blob.bin").returncode == 0
    if isinstance(board, Board):  # written through to the host folder that backs the flash
        assert (board.flash_dir / "data" / "blob.bin").read_bytes() == payload
    ls = mpremote(board, "fs", "ls", ":data")
    assert "20000 blob.bin" in " ".join(ls.stdout.split())
    sha = mpremote(board, "fs", "sha256sum", ":data/blob.bin")
    assert hashlib.sha256(payload).hexdigest() in sha.stdout
    back = tmp_path / "back.bin"
    assert mpremote(board, "fs", "cp", ":data/blob.bin", str(back)).returncode == 0
    assert back.read_bytes() == payload
    assert mpremote(board, "exec", "with open('note.txt', 'w') as f: f.write('hello flash')").returncode == 0
    assert mpremote(board, "fs", "cat", ":note.txt").stdout.endswith("hello flash")
    missing = mpremote(board, "fs", "cat", ":nope.txt")
    assert missing.returncode != 0 and "No such file" in missing.stderr
    assert mpremote(board, "fs", "rm", ":data/blob.bin").returncode == 0
    assert mpremote(board, "fs", "rmdir", ":data").returncode == 0
    assert "data/" not in mpremote(board, "fs", "ls").stdout
    # survives a soft reset and a hard reset
    assert mpremote(board, "soft-reset").returncode == 0
    assert mpremote(board, "reset").returncode == 0
    time.sleep(0.3)
    assert mpremote(board, "fs", "cat", ":note.txt").stdout.endswith("hello flash")


def test_reset_commands_reset_the_board(board: Board) -> None:
    # within one mpremote session RAM persists between commands; soft-reset clears it
    keep = "print('m2' in globals())"
    r = mpremote(board, "exec", "m2 = 1", "exec", keep)
    assert r.stdout.strip() == "True"
    r = mpremote(board, "exec", "m2 = 1", "soft-reset", "exec", keep)
    assert r.stdout.strip() == "False"
    assert mpremote(board, "reset").returncode == 0
    time.sleep(0.3)
    assert mpremote(board, "exec", "import machine; print(machine.reset_cause())").stdout.strip() == "2"


def test_mount_serves_a_host_folder(board: Board, tmp_path: Path) -> None:
    (tmp_path / "hostmod.py").write_text("VALUE = 'from the host'\n")
    r = mpremote(board, "mount", str(tmp_path), "exec", "import hostmod, os; print(hostmod.VALUE, os.getcwd())")
    assert r.returncode == 0, r.stderr
    assert "from the host /remote" in r.stdout


def test_repl_interactive(board: Board) -> None:
    master, slave = os.openpty()
    proc = subprocess.Popen([*MPREMOTE, "connect", board.repl_port, "repl"], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 15
        sent = False
        while time.monotonic() < deadline and b"4242" not in out:
            import select

            if select.select([master], [], [], 0.2)[0]:
                out += os.read(master, 4096)
            if b"Use Ctrl-] or Ctrl-x to exit" in out and not sent:
                time.sleep(0.2)
                os.write(master, b"\r\nprint(2121 * 2)\r\n")
                sent = True
        os.write(master, b"\x1d")
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert b"4242" in out, out[-500:]
