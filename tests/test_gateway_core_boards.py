"""The gateway against the real node firmware: an emulated streetlight board (MicroPython VM) on a pty link.

Provisioned through the flashing tool's manifest API, exactly as the demo does; the agent must verify the
board's frames, acknowledge them, set its clock and get commands executed end to end.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from cityedge.firmware_files import install_into
from cityedge.manifest import provision
from gateway.agent import Agent
from gateway.commands import CommandRequest, CommandStatus
from gateway.config import load_config
from hil_tests.emulator.board import EmulatedBoard


async def test_commands_reach_the_real_firmware_and_come_back_acknowledged(tmp_path: Path) -> None:
    rec = provision(tmp_path / "nodes.json", node_id=301, role="streetlight", site="t", lat=1, lon=2, name="sl-t")
    flash = tmp_path / "flash"
    flash.mkdir()
    install_into(flash, "streetlight")
    (flash / "node.json").write_text(json.dumps(rec.node_config()))
    board = await asyncio.to_thread(EmulatedBoard, flash, role=None)
    await asyncio.to_thread(board.__enter__)
    try:
        (tmp_path / "gw.toml").write_text(
            f'[gateway]\nid = "gw-hw"\nstate_dir = "state"\n[[serial]]\nname = "pole"\nport = "{board.link_port}"\n'
            f'reopen_min_s = 0.1\n[nodes]\nmanifest = "nodes.json"\n[health]\nlisten = false\n'
        )
        agent = Agent(load_config(tmp_path / "gw.toml"), install_signals=False)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            for _ in range(300):  # the board boots and says HELLO
                st = agent.tracker.get(301)
                if st is not None and st.hellos:
                    break
                await asyncio.sleep(0.05)
            assert st is not None and st.hellos and st.hello["role"] == "streetlight"
            assert agent.router is not None and agent.downlink is not None
            assert agent.downlink.sent["time"] >= 1  # HELLO answered with TIME
            ping = await agent.router.submit(CommandRequest("t-ping", 301, "ping", timeout_s=10))
            assert ping.status is CommandStatus.OK, ping
            boost = await agent.router.submit(
                CommandRequest("t-boost", 301, "boost", {"level": 1000, "duration": 60}, timeout_s=10))
            assert boost.status is CommandStatus.OK, boost
            bad = await agent.router.submit(CommandRequest("t-bad", 301, "override", {"kind": "x"}, timeout_s=10))
            assert bad.status is CommandStatus.REJECTED and bad.result == {"text": "kind"}
            assert agent.ingest is not None and agent.ingest.stats.rejected == {}
            # the router hears a CMD_ACK as it arrives; ingest counts it once its batch is durable
            for _ in range(100):
                if agent.ingest.stats.accepted >= 4:
                    break
                await asyncio.sleep(0.02)
            assert agent.ingest.stats.accepted >= 4  # HELLO, the override event, three CMD_ACKs
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
    finally:
        await asyncio.to_thread(board.__exit__, None, None, None)
