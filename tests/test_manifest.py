"""The provisioning manifest: 0600, validation naming file and key, key rotation, no key in public views."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from cityedge.errors import ConfigError
from cityedge.manifest import KEY_BYTES, NodeRecord, load_manifest, provision


def _prov(path: Path, node_id: int = 1001, **kw: object) -> NodeRecord:
    args: dict = {"node_id": node_id, "role": "streetlight", "site": "harbour", "lat": 53.5, "lon": 9.9}
    args.update(kw)
    return provision(path, **args)


def test_provision_creates_0600_manifest_the_gateway_can_load(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    rec = _prov(path, name="sl-17", chip_id="a4cf12")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reg = load_manifest(path)
    got = reg.get(1001)
    assert got is not None and got == rec
    assert len(got.key) == KEY_BYTES and got.key_id == 1 and got.name == "sl-17"
    # the node's /node.json matches the firmware's provisioning schema (firmware/lib/node/config.py)
    cfg = got.node_config()
    assert set(cfg) == {"node_id", "role", "site", "lat", "lon", "link", "key_id", "key"}
    assert bytes.fromhex(cfg["key"]) == got.key


def test_key_never_in_repr_or_public_dict(tmp_path: Path) -> None:
    rec = _prov(tmp_path / "m.json")
    key_hex = rec.key.hex()
    assert key_hex not in repr(rec)
    assert key_hex not in json.dumps(rec.public_dict())


def test_reprovision_rotates_key_with_new_key_id(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    first = _prov(path)
    second = _prov(path, site="moved")
    assert second.key_id == first.key_id + 1
    assert second.key != first.key
    assert second.retired_key_ids == (first.key_id,)
    assert load_manifest(path).get(1001) == second


def test_parallel_provisioning_loses_no_node(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    threads = [threading.Thread(target=_prov, args=(path, 2000 + i)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.node_id for r in load_manifest(path)) == [2000 + i for i in range(12)]


def test_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    _prov(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="mode 0644") as exc:
        load_manifest(path)
    assert exc.value.hint == f"chmod 600 {path}"


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda n: n.update(key="zz"), "nodes.1001.key"),
        (lambda n: n.update(key="00" * 5), "nodes.1001.key"),
        (lambda n: n.update(role="toaster"), "nodes.1001.role"),
        (lambda n: n.update(lat=123.0), "nodes.1001.lat"),
        (lambda n: n.pop("site"), "nodes.1001.site"),
        (lambda n: n.update(key_id=0), "nodes.1001.key_id"),
        (lambda n: n.update(node_id=5), "nodes.1001.node_id"),
    ],
)
def test_invalid_entries_name_file_and_key(tmp_path: Path, mutate: object, key: str) -> None:
    path = tmp_path / "nodes.json"
    _prov(path)
    raw = json.loads(path.read_text())
    mutate(raw["nodes"]["1001"])  # type: ignore[operator]
    path.write_text(json.dumps(raw))
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError) as exc:
        load_manifest(path)
    assert exc.value.path == str(path) and exc.value.key == key


def test_bad_input_on_provision(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="node id"):
        _prov(tmp_path / "m.json", node_id=0)
    with pytest.raises(ConfigError, match="unknown role"):
        _prov(tmp_path / "m.json", role="toaster")
    with pytest.raises(ConfigError, match="latitude"):
        _prov(tmp_path / "m.json", lat=91)
    with pytest.raises(ConfigError, match="link kind"):
        _prov(tmp_path / "m.json", link={"kind": "pigeon"})
    assert not (tmp_path / "m.json").exists()  # nothing half-written


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such manifest"):
        load_manifest(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    os.chmod(bad, 0o600)
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_manifest(bad)
