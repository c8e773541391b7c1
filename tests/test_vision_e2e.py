"""End to end: synthetic night video → detection → boost command → emulated streetlight's PWM goes up →
back to its program after the hold time; the upstream broker receives the zone events and the command ack.

Every part is real: the video file is decoded by OpenCV, the shipped int8 detector runs on ai-edge-litert,
the gateway agent (serial link, frame verification, durable outbox, command router, MQTT uplink) runs
in-process against its own mosquitto, and the streetlight is the project's firmware on the emulated board
(MicroPython VM behind a pty, PWM and light sensor models). Real time, because the agent and the camera are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from cityedge.manifest import provision
from gateway.agent import Agent
from gateway.broker import LocalBroker
from gateway.config import load_config
from gateway.uplink.codec import decode_batch
from gateway.vision.config import CameraConfig, LightingRule, VisionConfig
from gateway.vision.scenes import VideoSpec, write_video
from gateway.vision.service import VisionService
from gateway.vision.zones import Zone
from hil_tests.emulator.board import EmulatedBoard

NODE = 17
HOLD_S = 3.0
PROGRAM_PCT = 30


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_video_boosts_emulated_streetlight_and_upstream_sees_it(tmp_path: Path) -> None:
    # one car drives along the road at night, then the street is empty for ~8 s
    video = tmp_path / "night.avi"
    write_video(video, VideoSpec(seed=11, frames=210, fps=15, night=True, spawns=((5, 0, 1),)))

    rec = provision(tmp_path / "nodes.json", node_id=NODE, role="streetlight", site="harbour", lat=53.5, lon=10.0,
                    name="lamp-17")
    flash = tmp_path / "flash"
    board = EmulatedBoard(flash, role="streetlight", name="lamp17")
    (flash / "node.json").write_text(json.dumps(rec.node_config()))
    # a dim program (so a boost is visible) and switching by the light sensor alone (any time of day)
    (flash / "streetlight.json").write_text(json.dumps({
        "policy": "sensor", "sensor": {"dwell_s": 0},
        "dimming": {"fade_s": 0.2, "curve": "linear"},
        "programs": {"default": [["sunset", PROGRAM_PCT]]},
    }))

    with board, LocalBroker() as broker:
        board.hw.set("bh1750", lux=2.0)  # night
        (tmp_path / "gw.toml").write_text(f"""
[gateway]
id = "gw-e2e"
state_dir = "state"
[[serial]]
name = "street"
port = "{board.link_port}"
reopen_min_s = 0.05
[nodes]
manifest = "nodes.json"
[uplink]
url = "mqtt://127.0.0.1:{broker.port}"
batch_ms = 20
[health]
listen = "127.0.0.1:0"
""")
        agent = Agent(load_config(tmp_path / "gw.toml"), install_signals=False)
        stop = asyncio.Event()
        upstream: list[Any] = []
        agent_task = asyncio.create_task(agent.run(stop))
        sub_task = asyncio.create_task(_subscribe(broker.port, upstream))

        def duty() -> float:
            return float(board.hw.pwm_duty("PIN_LAMP_PWM"))

        try:
            await asyncio.wait_for(agent.ready.wait(), 20)
            # the node boots, says HELLO and is online on the serial link
            assert await _until(lambda: (st := agent.tracker.get(NODE)) is not None and st.online, 60)
            assert await _until_thread(lambda: abs(duty() - PROGRAM_PCT / 100) < 0.03, 30), duty()
            assert agent.router is not None and agent.outbox is not None

            cam = CameraConfig("north", str(video), fps=15, zones=(Zone("road", ((0, 215), (640, 215),
                                                                                 (640, 345), (0, 345))),),
                               stall_s=2.0)
            rule = LightingRule("north", "road", (NODE,), level=100, hold_s=HOLD_S, night="always")
            cfg = VisionConfig(enabled=True, cameras=(cam,), lighting=(rule,), interval_s=5)
            samples: list[tuple[float, float]] = []
            t0 = time.monotonic()
            async with VisionService(cfg, agent.outbox.put, submit=agent.router.submit) as vs:
                vs_task = asyncio.create_task(vs.run())
                try:
                    # sample the lamp's PWM while the car passes and after it left
                    while time.monotonic() - t0 < 16:
                        samples.append((time.monotonic() - t0, await asyncio.to_thread(duty)))
                        await asyncio.sleep(0.2)
                finally:
                    vs_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await vs_task
                lighting = vs.lighting
            assert lighting is not None
            await lighting.drain()
            assert lighting.results.get("ok", 0) >= 1, lighting.results

            peak_at = next((t for t, d in samples if d > 0.95), None)
            assert peak_at is not None, f"the lamp never went to 100 %: {samples}"
            after = [d for t, d in samples if t > peak_at]
            back = next((i for i, d in enumerate(after) if abs(d - PROGRAM_PCT / 100) < 0.03), None)
            assert back is not None, f"the lamp did not return to its program after the boost: {samples}"
            assert min(d for _, d in samples) >= PROGRAM_PCT / 100 - 0.03  # never below the program

            # upstream: zone events from the camera and the node's ack of the boost
            def seen() -> bool:
                kinds = {(e.kind, e.body.get("type") or e.body.get("name")) for e in upstream}
                return ("vision", "zone_enter") in kinds and ("cmd_status", "boost") in kinds

            assert await _until(seen, 15), [(e.kind, e.body) for e in upstream]
            acks = [e.body for e in upstream if e.kind == "cmd_status" and e.body.get("name") == "boost"]
            assert all(a["status"] == "ok" and a["node_id"] == NODE for a in acks)
            enters = [e for e in upstream if e.kind == "vision" and e.body.get("type") == "zone_enter"]
            assert all(e.source == "cam:north" for e in enters)
            assert any(e.body["label"] == "vehicle" and e.body["zone"] == "road" for e in enters), enters
        finally:
            stop.set()
            sub_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub_task
            await asyncio.wait_for(agent_task, 20)


async def _subscribe(port: int, out: list[Any]) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe("cityedge/+/+/ev/#", qos=1)
        async for msg in client.messages:
            payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else str(msg.payload).encode()
            out.extend(decode_batch(bytes(payload)))


async def _until(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.1)
    return False


async def _until_thread(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await asyncio.to_thread(pred):
            return True
        await asyncio.sleep(0.2)
    return False
