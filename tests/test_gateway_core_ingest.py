"""The southbound pipeline end to end on a real pty, a real SQLite outbox and a manifest from the flash API.

A test-held pty master plays the node bus; SimNode frames (signed by cewire) are written into it and the
gateway's answers (ACK/TIME/CMD) are read back out of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cewire import PRIO_HIGH, cobs_decode, codes, payloads

from cityedge.manifest import provision
from gateway.commands import CommandRequest, CommandRouter, CommandStatus
from gateway.config import SerialLinkConfig
from gateway.downlink import Downlink, SeqReservation
from gateway.events import Priority
from gateway.ingest import Ingest
from gateway.links import LinkState, SerialLink
from gateway.nodes import NodeTracker
from gateway.outbox import Outbox
from gateway.registry import Registry
from gateway.simnode import SimNode


@dataclass
class Site:
    ingest: Ingest
    outbox: Outbox
    registry: Registry
    router: CommandRouter
    link: SerialLink
    master: int
    manifest: Path
    light: SimNode
    medic: SimNode

    async def talk(self, data: bytes, node: SimNode | None = None, settle: float = 0.08) -> None:
        if data:
            os.write(self.master, data)
        await asyncio.sleep(settle)
        answer = b""
        with contextlib.suppress(BlockingIOError):
            answer = os.read(self.master, 65536)
        for n in (self.light, self.medic) if node is None else (node,):
            n.receive(answer)
        # a commit on a loaded machine can take longer than the pause: give the one node spoken for a little
        # more time to get its frames acknowledged (a node whose frames the gateway refuses waits it out)
        end = asyncio.get_running_loop().time() + 1.0
        while node is not None and node.pending and asyncio.get_running_loop().time() < end:
            await asyncio.sleep(0.01)
            with contextlib.suppress(BlockingIOError):
                node.receive(os.read(self.master, 65536))


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    manifest = tmp_path / "nodes.json"
    lrec = provision(manifest, node_id=1001, role="streetlight", site="harbour", lat=53.5, lon=9.9, name="sl-1")
    mrec = provision(manifest, node_id=2001, role="medical", site="harbour", lat=53.5, lon=9.9, name="med-1")
    registry = Registry(manifest)
    registry.load()
    master, slave = os.openpty()
    tty.setraw(slave)
    port = os.ttyname(slave)
    os.close(slave)
    os.set_blocking(master, False)
    tracker = NodeTracker(offline_after_s=60)
    downlink = Downlink(registry, tracker, SeqReservation(tmp_path / "downlink.seq"))
    router = CommandRouter(downlink, registry.role_of, retry_s=0.2)
    async with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        ingest = Ingest(registry, outbox, tracker, downlink, router, flush_s=0.002)
        link = SerialLink(SerialLinkConfig("bus", port, 115200, 0.02, 0.1), ingest.feed)
        tasks = [asyncio.create_task(link.run()), asyncio.create_task(ingest.run())]
        await until(lambda: link.state is LinkState.OPEN)
        yield Site(ingest, outbox, registry, router, link, master, manifest,
                   SimNode(1001, lrec.key, lrec.key_id, "streetlight"), SimNode(2001, mrec.key, mrec.key_id, "medical"))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    os.close(master)


async def test_frames_become_durable_events_and_only_then_are_acked(site: Site) -> None:
    light = site.light
    wire = light.hello() + b"".join(light.data({payloads.L_LEVEL: 505, payloads.L_POWER: 423}) for _ in range(20))
    await site.talk(wire, light)
    assert light.times, "HELLO is answered with TIME"
    assert light.pending == 0 and light.acked == {0: 1, 1: 20}
    assert site.outbox.depth()[Priority.TELEMETRY] == 20 and site.outbox.depth()[Priority.FAULT] == 1
    batch = await site.outbox.next_batch()
    assert batch[0].event.kind == "hello" and batch[0].event.body["role"] == "streetlight"
    tel = (await site.outbox.next_batch())[0].event
    assert tel.source == "node:1001" and tel.origin == "1001:1:1"
    assert tel.body["records"][0]["level"] == 50.5 and tel.body["records"][0]["power"] == 42.3
    node = site.ingest.tracker.get(1001)
    assert node is not None and node.online and node.name == "sl-1" and node.frames == 21


async def test_bad_frames_are_counted_and_dropped_duplicates_reacked(site: Site) -> None:
    light = site.light
    good = light.data({payloads.L_LEVEL: 1})
    forged = bytearray(SimNode(1001, b"k" * 32, 1).data({payloads.L_LEVEL: 2}))
    stranger = SimNode(4242, b"s" * 32, 1).data({payloads.L_LEVEL: 3})
    retired = SimNode(1001, b"r" * 32, 9).data({payloads.L_LEVEL: 4})
    garbage = b"\x05\x01\x02\x00" + bytes(range(1, 200)) * 3 + b"\x00"
    await site.talk(good + bytes(forged) + stranger + retired + garbage, light)
    rejected = site.ingest.stats.rejected
    assert rejected.get("mac") == 1 and rejected.get("unknown_node") == 1 and rejected.get("key_id") == 1
    assert sum(rejected.values()) >= 5  # + the garbage blocks (truncated / oversize)
    assert site.outbox.total == 1 and light.pending == 0
    # the node missed our ACK and resends: dropped as a duplicate, acknowledged again, stored once
    await site.talk(good, light)
    assert site.ingest.stats.duplicates == 1 and light.pending == 0
    assert site.outbox.total == 1


async def test_alarm_is_stored_as_alarm_and_commands_round_trip(site: Site) -> None:
    medic, light = site.medic, site.light
    await site.talk(medic.hello() + light.hello())
    await site.talk(medic.event(codes.DESATURATION, prio=PRIO_HIGH, value=780, label=payloads.L_SPO2), medic)
    assert site.outbox.depth()[Priority.ALARM] == 1
    alarm = (await site.outbox.next_batch())[0].event
    assert alarm.body["name"] == "desaturation" and alarm.body["value"] == 78.0 and alarm.body["unit"] == "%"

    seen: list[str] = []
    light.handler = lambda op, args: (seen.append(f"{op}:{args}") or payloads.CS_OK, "")  # type: ignore[func-returns-value]
    task = asyncio.create_task(site.router.submit(CommandRequest("ops-1", 1001, "override", {"level": 300})))
    await site.talk(b"", light)  # the CMD arrives at the node, which executes it and queues CMD_ACK
    assert seen == ["override:{'level': 300}"]
    await site.talk(bytes(light.replies), light)
    result = await asyncio.wait_for(task, 2)
    assert result.status is CommandStatus.OK and result.node_id == 1001
    assert light.pending == 0  # the CMD_ACK itself was acknowledged
    assert site.outbox.depth()[Priority.COMMAND_ACK] == 1


async def test_new_node_is_accepted_after_a_manifest_reload(site: Site) -> None:
    rec = provision(site.manifest, node_id=1002, role="streetlight", site="h", lat=1, lon=1)
    newbie = SimNode(1002, rec.key, rec.key_id)
    await site.talk(newbie.data({payloads.L_LEVEL: 1}), newbie)
    assert site.ingest.stats.rejected.get("unknown_node") == 1 and newbie.pending == 1
    assert site.registry.changed_on_disk()
    assert site.registry.reload()
    await site.talk(newbie.resend_unacked(), newbie)
    assert newbie.pending == 0
    # a broken manifest does not take the known nodes away
    site.manifest.write_text("{broken")
    assert not site.registry.reload() and len(site.registry) == 3 and site.registry.load_errors == 1


async def test_nothing_is_acked_when_the_outbox_cannot_store(site: Site) -> None:
    light = site.light
    await site.outbox.close()  # stands in for a failing disk: every put raises OutboxError
    await site.talk(light.data({payloads.L_LEVEL: 1}), light)
    assert site.ingest.stats.store_errors == 1 and light.pending == 1 and site.ingest.stats.acked == 0


async def test_replay_windows_survive_a_restart(site: Site, tmp_path: Path) -> None:
    light = site.light
    old = light.data({payloads.L_LEVEL: 9})
    await site.talk(old, light)
    assert light.pending == 0
    site.ingest.save_windows(tmp_path / "windows.json")
    # a restarted gateway: fresh pipeline, windows restored from disk
    fresh = Ingest(site.registry, site.outbox, NodeTracker(60), site.ingest.downlink)
    assert fresh.load_windows(tmp_path / "windows.json") == 1
    fresh.frame(site.link, cobs_decode(old))  # an attacker replays a recorded (authentic) frame
    assert fresh.stats.duplicates == 1 and not fresh._pending
    assert fresh.load_windows(tmp_path / "absent.json") == 0


def test_telemetry_passes_scaled_integers_through_to_the_compact_body() -> None:
    """The fast DATA path gives byte for byte what the general path (floats, then the codec) gives."""
    from cewire import DIR_UP, Key, decode_frame

    from gateway.ingest import packed_telemetry, telemetry_body
    from gateway.uplink import codec

    key = os.urandom(32)
    node = SimNode(7, key, 1)
    cases: list[tuple[object, int | None]] = [
        ({payloads.L_LEVEL: 500, payloads.L_POWER: 423, payloads.L_VOLTAGE: 2301, payloads.L_ENERGY: 123456}, None),
        ({payloads.L_LEVEL: -3, payloads.L_T: -30}, None),  # a record stamped 30 s before the frame
        ({payloads.L_LEVEL: 1, 200: 5}, None),  # an app's own label (general path: "l200")
        ({payloads.L_POWER: 2**60}, None),  # beyond a float's exact range (general path)
        ({payloads.L_POWER: 423}, 0),  # a node that does not know the time yet (gateway clock)
    ]
    for (values, ts), seq in zip(cases * 2, [1, 30, 300, 70_000, 5_000_000, 23, 24, 255, 256, 65_536]):
        node.next_seq = dict.fromkeys(node.next_seq, seq)  # every width of the seq's CBOR encoding
        wire = node.data(values, ts=ts)  # type: ignore[arg-type]
        frame = decode_frame(cobs_decode(wire[:-1]), Key(key, 1), DIR_UP)
        ts_ms = frame.ts * 1000 if frame.ts else 1_700_000_000_123
        fast = packed_telemetry(frame, ts_ms)
        assert fast.packed == codec.pack_body(telemetry_body(frame), ts_ms), values
        assert dict(fast) == telemetry_body(frame)  # what the operations center decodes: 423 -> 42.3 W


async def test_a_retried_command_is_resigned_and_runs_once_on_the_node(site: Site) -> None:
    """§7.5: each attempt is a new frame (fresh seq, same id and content); the node runs the id once."""
    light = site.light
    await site.talk(light.hello(), light)
    runs: list[str] = []
    light.handler = lambda op, args: (runs.append(op) or payloads.CS_OK, "")  # type: ignore[func-returns-value]
    task = asyncio.create_task(site.router.submit(CommandRequest("ops-7", 1001, "boost", {"level": 800})))
    await site.talk(b"", light, settle=0.05)
    assert runs == ["boost"]
    light.replies.clear()  # the CMD_ACK is lost on the way: the router retries after retry_s (0.2 s)
    first_seq = max(light.gw_window.top, 0)
    await site.talk(b"", light, settle=0.35)
    assert light.cmd_dups >= 1 and runs == ["boost"]  # received again, accepted (fresh seq), not run again
    assert light.gw_window.top > first_seq and "replay" not in light.refused
    await site.talk(bytes(light.replies), light)  # the node's repeated CMD_ACK ends the command
    result = await asyncio.wait_for(task, 2)
    assert result.status is CommandStatus.OK and runs == ["boost"]


async def test_a_reprovisioned_node_counts_from_one_again(site: Site) -> None:
    light = site.light
    await site.talk(b"".join(light.data({payloads.L_LEVEL: i}) for i in range(5)), light)
    assert light.pending == 0
    # the node's flash is wiped and it is provisioned again: a new key id, sequence numbers from 1
    rec = provision(site.manifest, node_id=1001, role="streetlight", site="harbour", lat=53.5, lon=9.9, name="sl-1")
    assert rec.key_id == 2
    assert site.registry.reload()
    fresh = SimNode(1001, rec.key, rec.key_id, "streetlight")
    stats = site.ingest.stats
    accepted, dups = stats.accepted, stats.duplicates
    await site.talk(fresh.data({payloads.L_LEVEL: 7}), fresh)
    # stored and acknowledged — not taken for a replay of the old seq 1 (re-acked and silently lost)
    assert fresh.pending == 0 and (stats.accepted, stats.duplicates) == (accepted + 1, dups)
    # and the old key's frames are refused now
    before = site.ingest.stats.rejected.get("key_id", 0)
    await site.talk(light.data({payloads.L_LEVEL: 8}), light)
    assert site.ingest.stats.rejected.get("key_id", 0) == before + 1


async def test_quiet_nodes_get_a_keepalive_before_they_think_the_gateway_lost(site: Site) -> None:
    import time

    light = site.light
    await site.talk(light.hello(), light)  # answered with a TIME (and an ACK)
    times = len(light.times)
    downlink = site.ingest.downlink
    now = time.monotonic()
    assert downlink.keepalive(now + 10, keepalive_s=30, time_sync_s=3600) == 0  # spoke 10 s ago: nothing
    assert downlink.keepalive(now + 31, keepalive_s=30, time_sync_s=3600) == 1  # silent 31 s: a TIME
    await site.talk(b"", light)
    assert len(light.times) == times + 1 and light.refused == []
    assert downlink.keepalive(time.monotonic() + 5, keepalive_s=30, time_sync_s=3600) == 0
    # the medical node never spoke: not online, no keepalive; the TIME also refreshes the clock periodically
    assert downlink.keepalive(time.monotonic() + 4000, keepalive_s=30, time_sync_s=3600) == 1


async def test_a_node_removed_and_restored_with_the_same_key_keeps_its_replay_window(site: Site) -> None:
    light = site.light
    old = light.data({payloads.L_LEVEL: 1})
    await site.talk(old, light)
    text = site.manifest.read_text()
    import json

    doc = json.loads(text)
    del doc["nodes"]["1001"]
    site.manifest.write_text(json.dumps(doc))
    assert site.registry.reload() and site.registry.get(1001) is None
    site.manifest.write_text(text)  # restored as it was: same key id, same key
    assert site.registry.reload()
    accepted = site.ingest.stats.accepted
    await site.talk(old, light)  # a captured frame replayed: still refused
    assert site.ingest.stats.accepted == accepted and site.ingest.stats.duplicates >= 1
