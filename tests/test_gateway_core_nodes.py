"""Node online/offline bookkeeping and the registry's file watch."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cityedge.manifest import provision
from gateway.links.base import LinkState, LinkStats
from gateway.nodes import NodeState, NodeTracker
from gateway.registry import Registry


class Bus:
    name = "bus"
    state = LinkState.OPEN
    stats = LinkStats()

    def send(self, data: bytes) -> bool:
        return True


def test_online_on_first_frame_offline_after_silence() -> None:
    changes: list[tuple[int, bool, str]] = []

    def on_change(st: NodeState, reason: str) -> None:
        changes.append((st.node_id, st.online, reason))

    tracker = NodeTracker(offline_after_s=60, on_change=on_change)
    tracker.seen(7, "sl-7", Bus(), now=1000.0)
    tracker.hello(8, "sl-8", Bus(), now=1000.0, body={"fw": "1.0", "boot": 3})
    assert changes == [(7, True, "frame"), (8, True, "frame")]
    tracker.seen(8, "sl-8", Bus(), now=1050.0)
    assert tracker.sweep(now=1061.0) == [tracker.get(7)]
    assert changes[-1] == (7, False, "silent")
    assert tracker.get(8).online and tracker.get(8).hello["boot"] == 3  # type: ignore[union-attr]
    tracker.seen(7, "sl-7", Bus(), now=1070.0)
    assert changes[-1] == (7, True, "frame")
    tracker.forget({8})
    assert tracker.get(7) is None and len(tracker) == 1


async def test_registry_reloads_when_the_manifest_file_changes(tmp_path: Path) -> None:
    manifest = tmp_path / "nodes.json"
    provision(manifest, node_id=1, role="streetlight", site="s", lat=0, lon=0)
    registry = Registry(manifest)
    registry.load()
    seen: list[int] = []
    registry.add_listener(lambda r: seen.append(len(r)))
    watcher = asyncio.create_task(registry.watch(0.05))
    try:
        provision(manifest, node_id=2, role="medical", site="s", lat=0, lon=0)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
        assert seen == [2] and registry.role_of(2) == "medical"
        # re-provisioning rotates the key: the old key id is no longer on the ring
        old_key_id = registry.get(1).key_id  # type: ignore[union-attr]
        provision(manifest, node_id=1, role="streetlight", site="s", lat=0, lon=0)
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.02)
        assert registry.get(1).key_id == old_key_id + 1  # type: ignore[union-attr]
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
