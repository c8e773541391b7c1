"""Kill the agent with SIGKILL at random moments while frames flow; nothing acknowledged to a node is lost.

The agent runs as a real subprocess (`python -m cityedge gateway run`), reads a real pty with pyserial and
stores into its SQLite outbox; readiness is learnt through the real sd_notify socket. Three nodes stream
telemetry and events, keep every frame until it is acknowledged and resend what was not (as firmware does).
After many kills, every (node, channel, seq) ever acknowledged must be in the outbox exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tty
from pathlib import Path

from cewire import codes, payloads

from cityedge.manifest import provision
from gateway.simnode import SimNode

KILLS = 12


def start_agent(config: Path, notify: socket.socket, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": notify.getsockname()}
    proc = subprocess.Popen([sys.executable, "-m", "cityedge", "gateway", "run", "--config", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if b"READY=1" in notify.recv(4096):
                return proc
        except TimeoutError:
            pass
        assert proc.poll() is None, log.read_text()[-2000:]
    raise AssertionError("agent did not send READY=1")


def write_all(master: int, data: bytes, nodes: list[SimNode]) -> None:
    """Write everything (a pty takes a few KB at a time), reading the gateway's answers meanwhile."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(master, view)
            view = view[n:]
        except BlockingIOError:
            pass
        read_answers(master, nodes)


def read_answers(master: int, nodes: list[SimNode]) -> None:
    try:
        answer = os.read(master, 1 << 16)
    except (BlockingIOError, OSError):
        return
    for node in nodes:
        node.receive(answer)


def exchange(master: int, nodes: list[SimNode], seconds: float, rng: random.Random) -> None:
    end = time.monotonic() + seconds
    last_resend = 0.0
    while time.monotonic() < end:
        out = bytearray()
        for node in nodes:
            if node.pending < 200:
                out += node.data({payloads.L_LEVEL: rng.randrange(1000), payloads.L_POWER: rng.randrange(900)})
                if rng.random() < 0.1:
                    out += node.event(codes.LAMP_FAILURE, prio=2)
        if time.monotonic() - last_resend > 0.3:  # the node's retransmission timer
            last_resend = time.monotonic()
            for node in nodes:
                out += node.resend_unacked()
        write_all(master, bytes(out), nodes)
        time.sleep(0.005)
        read_answers(master, nodes)


def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(20261121)
    manifest = tmp_path / "nodes.json"
    nodes = []
    for i in range(3):
        rec = provision(manifest, node_id=100 + i, role="streetlight", site="s", lat=0, lon=0)
        nodes.append(SimNode(rec.node_id, rec.key, rec.key_id))
    master, slave = os.openpty()
    tty.setraw(slave)
    port = os.ttyname(slave)
    os.close(slave)
    os.set_blocking(master, False)
    config = tmp_path / "gw.toml"
    config.write_text(f"""
[gateway]
id = "gw-kill"
state_dir = "state"
[[serial]]
name = "bus"
port = "{port}"
reopen_min_s = 0.02
reopen_max_s = 0.2
[nodes]
manifest = "nodes.json"
[health]
listen = false
""")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(0.2)
    log = tmp_path / "agent.log"
    acked: set[tuple[int, int, int]] = set()

    def note_acks() -> None:
        for node in nodes:
            for ch, cum in node.acked.items():
                acked.update((node.node_id, ch, s) for s in range(1, cum + 1))

    inflight_kills = 0
    try:
        for _ in range(KILLS):
            proc = start_agent(config, notify, log)
            exchange(master, nodes, rng.uniform(0.05, 0.5), rng)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            note_acks()
            inflight_kills += any(n.pending for n in nodes)
        # a last, clean run: the nodes' retransmissions catch up, then SIGTERM
        proc = start_agent(config, notify, log)
        acked_while_killing = len(acked)
        deadline = time.monotonic() + 20
        while any(n.pending for n in nodes) and time.monotonic() < deadline:
            write_all(master, b"".join(n.resend_unacked() for n in nodes), nodes)
            time.sleep(0.1)
            read_answers(master, nodes)
        note_acks()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        os.close(master)
        notify.close()

    sent = sum(n.next_seq[0] - 1 + n.next_seq[1] - 1 for n in nodes)
    assert all(n.pending == 0 for n in nodes), [(n.acked, {c: sorted(v) for c, v in n.unacked.items()}) for n in nodes]
    assert len(acked) == sent and sent > 100
    # the kills really hit a flowing stream: much was acknowledged between kills, and some was in flight
    assert acked_while_killing > sent // 2 and inflight_kills >= KILLS // 3, (acked_while_killing, sent)
    db = sqlite3.connect(tmp_path / "state" / "outbox.sqlite3")
    origins = [r[0] for r in db.execute("SELECT origin FROM events WHERE origin IS NOT NULL")]
    db.close()
    stored = {tuple(int(x) for x in o.split(":")) for o in origins}
    assert len(origins) == len(stored), "no frame stored twice"
    missing = acked - stored
    assert not missing, f"{len(missing)} acknowledged frames lost, e.g. {sorted(missing)[:5]}"
