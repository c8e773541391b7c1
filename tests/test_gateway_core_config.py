"""Gateway configuration: the example validates; every mistake names the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityedge.errors import ConfigError
from cityedge.paths import ROOT
from gateway.config import load_config

EXAMPLE = ROOT / "deploy" / "gateway.example.toml"


def test_the_shipped_example_is_valid() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.gateway_id == "gw-harbour-01"
    assert cfg.serial[0].port.startswith("/dev/serial/by-id/")
    assert cfg.outbox.path == Path("/var/lib/cityedge/outbox.sqlite3")
    assert cfg.uplink.tls and cfg.uplink.port == 8883
    assert cfg.health.host_port == ("127.0.0.1", 9108)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gateway.toml"
    p.write_text(text)
    return p


BASE = '[gateway]\nid = "gw1"\nstate_dir = "state"\n'


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[gateway]\n", "gateway.id", "is required"),
        (BASE + '[[serial]]\nport = "/dev/ttyUSB0"\nbaudrate = 12345\n', "serial[0].baudrate", "unusual baud"),
        (BASE + '[[serial]]\nname="a"\n', "serial[0].port", "is required"),
        (BASE + '[[serial]]\nport="/dev/x"\n[[serial]]\nport="/dev/x"\n', "serial[1].port", "already used"),
        (BASE + '[uplink]\nurl = "http://x"\n', "uplink.url", "mqtt://"),
        (BASE + '[uplink]\nformat = "xml"\n', "uplink.format", "one of cbor, json"),
        (BASE + '[uplink]\nca_file = "missing.pem"\n', "uplink.ca_file", "does not exist"),
        (BASE + '[uplink]\npassword_file = "nope"\n', "uplink.password_file", "cannot read secret"),
        (BASE + "[outbox]\nquota_mb = -1\n", "outbox.quota_mb", "between"),
        (BASE + "[nodes]\nofline_after_s = 5\n", "nodes.ofline_after_s", "unknown key"),
        (BASE + '[health]\nlisten = "nope"\n', "health.listen", "host:port"),
        (BASE + '[local_mqtt]\nup_topic = "a/b"\n', "local_mqtt.up_topic", "'+'"),
        (BASE + '[uplink]\nsite = "harbour/north"\n', "uplink.site", "must be 1-64 characters"),
        (BASE + '[uplink]\nallowed_commands = ["ping", "dim"]\n', "uplink.allowed_commands", "unknown command 'dim'"),
        (BASE + '[uplink]\nallowed_commands = "ping"\n', "uplink.allowed_commands", "must be a list"),
        (BASE + "[nodes]\nkeepalive_s = 120\n", "nodes.keepalive_s", "between"),
    ],
)
def test_errors_name_file_key_and_problem(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.path == str(path)
    assert err.value.key == key
    assert problem in err.value.problem


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[gateway\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")


def test_secret_from_file_is_read_and_redacted(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    cfg = load_config(write(tmp_path, BASE + '[uplink]\nurl = "mqtt://127.0.0.1"\npassword_file = "pw"\n'))
    assert cfg.uplink.password == "s3cret"
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg.redacted())
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.health.listen == "127.0.0.1:9108"
    cfg2 = load_config(write(tmp_path, BASE + "[health]\nlisten = false\n"))
    assert cfg2.health.host_port is None


def test_uplink_site_and_allowed_commands_reach_the_uplink(tmp_path: Path) -> None:
    from gateway.uplink.client import UplinkSettings

    cfg = load_config(write(tmp_path, BASE + '[uplink]\nurl = "mqtt://127.0.0.1"\nsite = "harbour"\n'
                                      'allowed_commands = ["ping", "boost"]\n'))
    settings = UplinkSettings.from_gateway_config(cfg)
    assert settings.site == "harbour" and settings.allowed_commands == frozenset({"ping", "boost"})
    default = UplinkSettings.from_gateway_config(load_config(write(tmp_path, BASE)) , url="mqtt://h")
    assert default.site == "default" and "reboot" in default.allowed_commands
    example = load_config(EXAMPLE)
    assert example.nodes.keepalive_s == 30 and example.outbox.synchronous == "full"


async def test_the_agent_opens_the_outbox_with_the_configured_synchronous_policy(tmp_path: Path) -> None:
    import asyncio

    from gateway.agent import Agent

    (tmp_path / "nodes.json").write_text('{"format": 1, "nodes": {}}')
    (tmp_path / "nodes.json").chmod(0o600)
    cfg = load_config(write(tmp_path, BASE + '[nodes]\nmanifest = "nodes.json"\n[health]\nlisten = false\n'
                                      '[outbox]\nsynchronous = "normal"\n'))
    agent = Agent(cfg, install_signals=False)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        assert agent.outbox is not None and agent.outbox.synchronous == "normal"
        assert agent.outbox._db is not None
        assert agent.outbox._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL (FULL is 2)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
