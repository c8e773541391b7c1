"""The node registry: which nodes may talk to this gateway, their role, site and keys.

It is loaded from the provisioning manifest that ``cityedge flash`` writes (:mod:`cityedge.manifest`) and
turned into a ``cewire`` keyring for frame verification. It is reloadable without a restart — on SIGHUP or
when the file changes — so a technician who provisions a new node does not interrupt the street: a manifest
that fails to load leaves the previous registry in place (and the error in the log and the metrics).
Retired key ids are not put on the keyring, so frames signed with them are refused (``key_id``).

Nodes are identified by the frames' 32-bit node id (the manifest's ``node_id``); ``name`` is for people.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from cewire.frame import Keyring

from cityedge.errors import CityedgeError
from cityedge.manifest import Manifest, NodeRecord, load_manifest

log = logging.getLogger(__name__)


class Registry:
    """Nodes by id, plus the keyring. Swap in a new manifest with :meth:`reload`."""

    def __init__(self, path: Path | None, *, check_permissions: bool = True) -> None:
        self.path = path
        self.check_permissions = check_permissions
        self.keyring = Keyring()
        self._nodes: dict[int, NodeRecord] = {}
        self._stamp: tuple[int, int, int] | None = None
        self.loads = 0
        self.load_errors = 0
        self.last_error = ""
        self._listeners: list[Callable[[Registry], None]] = []

    def add_listener(self, listener: Callable[[Registry], None]) -> None:
        """Called after every successful (re)load (e.g. to swap the receiver's keyring)."""
        self._listeners.append(listener)

    def load(self) -> None:
        """Load the manifest now; raise :class:`cityedge.errors.ConfigError` if it is invalid."""
        if self.path is None:
            self._install(None)
            return
        stamp = self._file_stamp()
        manifest = load_manifest(self.path, check_permissions=self.check_permissions)
        self._install(manifest)
        self._stamp = stamp

    def reload(self) -> bool:
        """Load again, keeping the current registry if the new manifest is bad. True if it loaded."""
        try:
            self.load()
        except CityedgeError as exc:
            self.load_errors += 1
            self.last_error = str(exc)
            log.error("node registry not reloaded, keeping %d known nodes: %s", len(self), exc)
            self._stamp = self._file_stamp()  # do not retry the same broken file on every poll
            return False
        return True

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed_on_disk(self) -> bool:
        return self._file_stamp() != self._stamp

    def _install(self, manifest: Manifest | None) -> None:
        nodes: dict[int, NodeRecord] = {}
        keyring = Keyring()
        for rec in manifest or ():
            nodes[rec.node_id] = rec
            keyring.add(rec.node_id, rec.key, rec.key_id)
        old = set(self._nodes)
        self._nodes, self.keyring = nodes, keyring
        self.loads += 1
        self.last_error = ""
        added, removed = set(nodes) - old, old - set(nodes)
        log.info("node registry: %d nodes (%d added, %d removed)", len(nodes), len(added), len(removed))
        for listener in self._listeners:
            listener(self)

    async def watch(self, interval_s: float = 2.0, heartbeat: Callable[[], None] | None = None) -> None:
        """Reload whenever the manifest file changes (checked every ``interval_s``), until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            if heartbeat is not None:
                heartbeat()
            if self.path is not None and self.changed_on_disk():
                log.info("manifest %s changed on disk, reloading", self.path)
                self.reload()

    def get(self, node_id: int) -> NodeRecord | None:
        return self._nodes.get(node_id)

    def role_of(self, node_id: int) -> str | None:
        """The node's role, or None for an unknown node (the CommandRouter's lookup)."""
        rec = self._nodes.get(node_id)
        return rec.role if rec else None

    def __iter__(self) -> Iterator[NodeRecord]:
        return iter(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)
