"""`cityedge gateway check-config` / `run` as an operator meets them, and the shipped systemd unit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cityedge import cli
from cityedge.manifest import provision
from cityedge.paths import ROOT

UNIT = ROOT / "deploy" / "systemd" / "cityedge-gateway.service"


def test_check_config_reports_ok_and_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    provision(tmp_path / "nodes.json", node_id=5, role="streetlight", site="s", lat=0, lon=0)
    (tmp_path / "gw.toml").write_text(
        '[gateway]\nid = "gw1"\nstate_dir = "state"\n[[serial]]\nport = "/dev/does-not-exist"\n'
        '[nodes]\nmanifest = "nodes.json"\n'
    )
    assert cli.main(["gateway", "check-config", "--config", str(tmp_path / "gw.toml")]) == 0
    out = capsys.readouterr().out
    assert "ok — gateway gw1, 1 serial link(s), 1 node(s)" in out
    assert "/dev/does-not-exist does not exist now" in out and "[uplink] url is not set" in out


def test_bad_config_is_a_sentence_naming_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[gateway]\nid = "gw1"\n[uplink]\nformat = "xml"\n')
    out = subprocess.run([sys.executable, "-m", "cityedge", "gateway", "run", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 78
    assert out.stderr.startswith(f"error: {cfg}: uplink.format: must be one of cbor, json")
    assert "Traceback" not in out.stderr


def test_a_manifest_readable_by_others_stops_the_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    provision(tmp_path / "nodes.json", node_id=5, role="streetlight", site="s", lat=0, lon=0)
    (tmp_path / "nodes.json").chmod(0o644)
    (tmp_path / "gw.toml").write_text('[gateway]\nid = "gw1"\n[nodes]\nmanifest = "nodes.json"\n')
    assert cli.main(["gateway", "check-config", "--config", str(tmp_path / "gw.toml")]) == 78
    assert "holds node keys" in capsys.readouterr().err


def test_systemd_unit_is_notify_watchdog_hardened() -> None:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            current[key] = value  # repeated keys (DeviceAllow) keep the last: enough here
    svc = sections["Service"]
    assert svc["Type"] == "notify" and int(svc["WatchdogSec"]) > 0 and svc["NotifyAccess"] == "main"
    assert svc["User"] == "cityedge" and svc["SupplementaryGroups"] == "dialout"
    assert svc["ProtectSystem"] == "strict" and svc["StateDirectory"] == "cityedge"
    assert svc["NoNewPrivileges"] == "yes" and svc["CapabilityBoundingSet"] == ""
    assert svc["StandardError"] == "journal" and "gateway run --config" in svc["ExecStart"]
    assert svc["Restart"] == "always"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="needs systemd (systemd-analyze): this machine has none, a gateway box always does",
)
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    exe = tmp_path / "cityedge"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = tmp_path / "cityedge-gateway.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/cityedge", str(exe)))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Unknown key" not in out.stderr and "Unknown lvalue" not in out.stderr, out.stderr
