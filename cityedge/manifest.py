"""The provisioning manifest: which nodes exist, where they are, and the key each one signs with.

The flashing tool writes it (one record per node, re-provisioning rotates the key under a new key id);
the gateway loads it as its node registry. It holds secrets, so it is created with mode 0600 and refused
when group or others can read it. Format (JSON, ``"format": 1``)::

    {"format": 1,
     "nodes": {
       "1001": {"node_id": 1001, "name": "sl-harbour-17", "role": "streetlight", "site": "harbour-east",
                   "lat": 53.54, "lon": 9.98, "link": {"kind": "uart", "baud": 115200},
                   "key_id": 2, "key": "<64 hex digits>", "provisioned_at": "2026-11-21T15:04:05Z",
                   "chip_id": "a4cf12...", "retired_key_ids": [1]}}}

Gateway use::

    from cityedge.manifest import load_manifest
    registry = load_manifest("/etc/cityedge/nodes.json")
    rec = registry.get(1001)             # NodeRecord or None; node ids are the frames' u32 node id
    rec.key, rec.key_id                  # bytes (32), int 1..255 (the frames' u8 key id)
    rec.retired_key_ids                  # key ids that must no longer verify

The key never appears in ``repr()`` or in :meth:`NodeRecord.public_dict`; :meth:`NodeRecord.node_config`
is the node's ``/node.json`` (the only other place the key goes).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cityedge.errors import ConfigError
from cityedge.firmware_files import ROLES

FORMAT = 1
KEY_BYTES = 32
NODE_ID_MAX = 0xFFFFFFFF  # the frame header's u32 node id
KEY_ID_MAX = 0xFF  # the frame header's u8 key id
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
LINK_KINDS = ("uart", "rs485", "lora", "usb", "mqtt")
DEFAULT_LINK: Mapping[str, Any] = {"kind": "uart", "baud": 115200}


@dataclass(frozen=True)
class NodeRecord:
    """One provisioned node. ``key`` is the node's current MAC key (never shown in ``repr``)."""

    node_id: int
    role: str
    site: str
    lat: float
    lon: float
    link: dict[str, Any]
    key_id: int
    key: bytes = field(repr=False)
    provisioned_at: str = ""
    chip_id: str | None = None
    retired_key_ids: tuple[int, ...] = ()
    name: str = ""

    def public_dict(self) -> dict[str, Any]:
        """Everything but the key: safe for logs, ledgers and ``--json`` output."""
        return {
            "node_id": self.node_id,
            "name": self.name,
            "role": self.role,
            "site": self.site,
            "lat": self.lat,
            "lon": self.lon,
            "link": dict(self.link),
            "key_id": self.key_id,
            "provisioned_at": self.provisioned_at,
            "chip_id": self.chip_id,
            "retired_key_ids": list(self.retired_key_ids),
        }

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry, key included (hex)."""
        return {**self.public_dict(), "key": self.key.hex()}

    def node_config(self) -> dict[str, Any]:
        """The node's ``/node.json``: what the firmware needs to run and to sign its frames."""
        public = self.public_dict()
        return {**{k: public[k] for k in NODE_CONFIG_KEYS}, "key": self.key.hex()}


# what goes into /node.json (firmware/lib/node/config.py, PROVISIONING) besides the key
NODE_CONFIG_KEYS = ("node_id", "role", "site", "lat", "lon", "link", "key_id")


def _bad(path: Path, key: str, problem: str) -> ConfigError:
    return ConfigError(str(path), key, problem)


def _record_from(path: Path, node_id: int, raw: Any) -> NodeRecord:
    where = f"nodes.{node_id}"
    if not isinstance(raw, dict):
        raise _bad(path, where, "must be an object")

    def need(key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in raw:
            raise _bad(path, f"{where}.{key}", "missing")
        value = raw[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _bad(path, f"{where}.{key}", f"has the wrong type ({type(value).__name__})")
        return value

    if need("node_id", int) != node_id:
        raise _bad(path, f"{where}.node_id", f"does not match the entry name {node_id!r}")
    role = need("role", str)
    if role not in ROLES:
        raise _bad(path, f"{where}.role", f"unknown role {role!r} (one of {', '.join(ROLES)})")
    lat = float(need("lat", (int, float)))
    lon = float(need("lon", (int, float)))
    _check_position(path, where, lat, lon)
    link = need("link", dict)
    key_hex = need("key", str)
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise _bad(path, f"{where}.key", "is not hex") from None
    if len(key) != KEY_BYTES:
        raise _bad(path, f"{where}.key", f"must be {KEY_BYTES} bytes, is {len(key)}")
    key_id = need("key_id", int)
    if not 1 <= key_id <= KEY_ID_MAX:
        raise _bad(path, f"{where}.key_id", f"must be 1..{KEY_ID_MAX}")
    retired = raw.get("retired_key_ids", [])
    if not isinstance(retired, list) or not all(isinstance(k, int) for k in retired):
        raise _bad(path, f"{where}.retired_key_ids", "must be a list of integers")
    chip_id = raw.get("chip_id")
    return NodeRecord(
        node_id=node_id,
        role=role,
        site=need("site", str),
        lat=lat,
        lon=lon,
        link=link,
        key_id=key_id,
        key=key,
        provisioned_at=str(raw.get("provisioned_at", "")),
        chip_id=str(chip_id) if chip_id is not None else None,
        retired_key_ids=tuple(retired),
        name=str(raw.get("name", "")),
    )


def _check_position(path: Path, where: str, lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise _bad(path, f"{where}.lat", f"latitude {lat} is outside -90..90")
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise _bad(path, f"{where}.lon", f"longitude {lon} is outside -180..180")


@dataclass
class Manifest:
    """All provisioned nodes of one manifest file, by node id."""

    path: Path
    nodes: dict[int, NodeRecord] = field(default_factory=dict)

    def get(self, node_id: int) -> NodeRecord | None:
        return self.nodes.get(node_id)

    def __iter__(self) -> Iterator[NodeRecord]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "nodes": {str(nid): rec.to_dict() for nid, rec in sorted(self.nodes.items())}}


def load_manifest(path: str | Path, *, check_permissions: bool = True) -> Manifest:
    """Read and validate a manifest. A missing file is an error (the gateway needs its registry).

    Raises :class:`ConfigError` naming the file and the key for anything wrong, including a file that
    group or others may read (it holds keys).
    """
    path = Path(path)
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), None, "no such manifest", hint="provision a node with `cityedge flash`") from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc.strerror}") from None
    if check_permissions and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            str(path), None, f"holds node keys but has mode {stat.S_IMODE(st.st_mode):04o}",
            hint=f"chmod 600 {path}",
        )
    return _parse(path, text)


def _parse(path: Path, text: str) -> Manifest:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(str(path), None, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(raw, dict):
        raise _bad(path, "format", "the manifest must be a JSON object")
    if raw.get("format") != FORMAT:
        raise _bad(path, "format", f"unsupported format {raw.get('format')!r} (this version reads {FORMAT})")
    nodes = raw.get("nodes", {})
    if not isinstance(nodes, dict):
        raise _bad(path, "nodes", "must be an object")
    out: dict[int, NodeRecord] = {}
    for name, rec in nodes.items():
        try:
            nid = int(name)
        except ValueError:
            raise _bad(path, f"nodes.{name}", "entry names are node ids (integers)") from None
        out[nid] = _record_from(path, nid, rec)
    return Manifest(path, out)


def save_manifest(manifest: Manifest) -> None:
    """Write atomically (temp file 0600 + fsync + rename): a crash leaves the old or the new manifest."""
    path = manifest.path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(manifest.to_dict(), fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def locked_manifest(path: str | Path) -> Iterator[Manifest]:
    """Open a manifest for update under an exclusive lock (parallel flashing of a batch); saved on exit.

    A missing manifest starts empty.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        manifest = load_manifest(path) if path.exists() else Manifest(path)
        yield manifest
        save_manifest(manifest)
    finally:
        os.close(lock_fd)


def validate_node_id(node_id: int, name: str = "") -> int:
    if not isinstance(node_id, int) or not 1 <= node_id <= NODE_ID_MAX:
        raise ConfigError("command line", "node-id", f"{node_id!r} is not a valid node id",
                          hint=f"use an integer 1..{NODE_ID_MAX} (the node id in every frame)")
    if name and not NAME_RE.match(name):
        raise ConfigError("command line", "name", f"{name!r} is not a valid node name",
                          hint="use 1–32 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return node_id


def provision(
    path: str | Path,
    *,
    node_id: int,
    role: str,
    site: str,
    lat: float,
    lon: float,
    link: Mapping[str, Any] | None = None,
    chip_id: str | None = None,
    name: str = "",
) -> NodeRecord:
    """Create or re-provision ``node_id`` in the manifest at ``path`` with a fresh random key.

    Re-provisioning keeps the node's entry, retires the old key id and issues ``key_id + 1``. The record is
    saved before it is returned, so a key that reaches a node is always on record.
    """
    validate_node_id(node_id, name)
    if role not in ROLES:
        raise ConfigError("command line", "role", f"unknown role {role!r}", hint=f"choose one of: {', '.join(ROLES)}")
    _check_position(Path("command line"), "position", float(lat), float(lon))
    link = dict(DEFAULT_LINK if link is None else link)
    if link.get("kind") not in LINK_KINDS:
        raise ConfigError("command line", "link.kind", f"unknown link kind {link.get('kind')!r}",
                          hint=f"choose one of: {', '.join(LINK_KINDS)}")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with locked_manifest(path) as manifest:
        old = manifest.get(node_id)
        record = NodeRecord(
            node_id=node_id, role=role, site=site, lat=float(lat), lon=float(lon), link=link,
            key_id=1, key=secrets.token_bytes(KEY_BYTES), provisioned_at=now, chip_id=chip_id, name=name,
        )
        if old is not None:
            if old.key_id >= KEY_ID_MAX:
                raise ConfigError(str(manifest.path), f"nodes.{node_id}.key_id",
                                  f"all {KEY_ID_MAX} key ids of this node are used",
                                  hint="give the node a new node id")
            record = replace(
                record,
                key_id=old.key_id + 1,
                retired_key_ids=(*old.retired_key_ids, old.key_id),
                chip_id=chip_id or old.chip_id,
                name=name or old.name,
            )
        manifest.nodes[node_id] = record
    return record
