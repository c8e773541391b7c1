"""The gateway's configuration: one TOML file, validated completely at start.

Every problem is reported as :class:`cityedge.errors.ConfigError` naming the file, the key (dotted, e.g.
``serial[1].baudrate``) and what is wrong, so an operator can fix it without reading code. Secrets (the
uplink password, TLS key) can be given as ``*_file`` keys pointing at files only the service user reads;
they never appear in logs or in :meth:`GatewayConfig.redacted`.

See ``deploy/gateway.example.toml`` for every key with its default and ``docs/gateway.md`` for the meaning.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cityedge.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1000000)


@dataclass(frozen=True)
class SerialLinkConfig:
    """One serial port with nodes behind it (UART, RS-485 adapter, LoRa UART modem, USB)."""

    name: str
    port: str
    baudrate: int = 115200
    reopen_min_s: float = 0.5
    reopen_max_s: float = 30.0


@dataclass(frozen=True)
class LocalMqttConfig:
    """Nodes on WiFi publish the same frames to a local broker; the gateway subscribes there."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 1883
    up_topic: str = "cityedge/node/+/up"  # frames from nodes; '+' is the node id
    down_topic: str = "cityedge/node/{node}/down"  # ACK/TIME/CMD frames to a node


@dataclass(frozen=True)
class NodesConfig:
    manifest: Path | None = None  # the provisioning manifest written by `cityedge flash`
    offline_after_s: float = 2400.0  # silence after which a node counts as offline (2+ missed 15-min reports)
    time_sync_s: float = 3600.0  # TIME frame to each online node this often (and after HELLO)
    keepalive_s: float = 30.0  # a TIME to each online node the gateway has sent nothing for this long
    watch_manifest: bool = True  # reload the manifest when the file changes (SIGHUP always reloads)


@dataclass(frozen=True)
class OutboxConfig:
    path: Path
    quota_mb: float = 512.0
    synchronous: str = "full"  # SQLite synchronous: "full" (fsync per commit) or "normal"
    batch_max: int = 2000  # frames per commit
    flush_ms: float = 5.0  # longest a frame waits for its commit


@dataclass(frozen=True)
class UplinkConfig:
    url: str | None = None  # mqtt://host:1883 or mqtts://host:8883; None: no uplink (buffer only)
    client_id: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_prefix: str = "cityedge"
    format: str = "cbor"  # "cbor" or "json"
    batch_max: int = 500
    batch_ms: float = 20.0
    keepalive_s: int = 30
    site: str | None = None  # topic level; None: the site most nodes in the manifest belong to
    allowed_commands: tuple[str, ...] | None = None  # node commands taken from upstream; None: all of COMMANDS

    @property
    def host(self) -> str | None:
        return urlsplit(self.url).hostname if self.url else None

    @property
    def port(self) -> int | None:
        if not self.url:
            return None
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return bool(self.url and urlsplit(self.url).scheme == "mqtts")


@dataclass(frozen=True)
class HealthConfig:
    listen: str | None = "127.0.0.1:9108"  # host:port of /metrics and /status; None disables it

    @property
    def host_port(self) -> tuple[str, int] | None:
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)


@dataclass(frozen=True)
class WatchdogConfig:
    stall_after_s: float = 30.0  # a critical loop with no progress for this long stops WATCHDOG=1


@dataclass(frozen=True)
class GatewayConfig:
    path: Path
    gateway_id: str
    state_dir: Path
    serial: tuple[SerialLinkConfig, ...]
    local_mqtt: LocalMqttConfig
    nodes: NodesConfig
    outbox: OutboxConfig
    uplink: UplinkConfig
    health: HealthConfig
    watchdog: WatchdogConfig
    log_level: str = "info"
    vision: Any = None  # gateway.vision.config.VisionConfig when a [vision] table is present

    def redacted(self) -> dict[str, Any]:
        """The configuration as a dict with secrets replaced, for logs and the JSON status."""
        out = asdict(self)
        out["vision"] = None if self.vision is None else {"enabled": bool(getattr(self.vision, "enabled", False))}
        if out["uplink"].get("password"):
            out["uplink"]["password"] = "***"
        return _stringify(out)


def _stringify(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stringify(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_stringify(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class _Section:
    """Typed access to one table of the file, with errors naming file and dotted key."""

    def __init__(self, file: Path, prefix: str, data: Any) -> None:
        self.file = file
        self.prefix = prefix
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(str(file), prefix or None, f"must be a table, got {type(data).__name__}")
        self.data: dict[str, Any] = dict(data)
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str, hint: str | None = None) -> ConfigError:
        return ConfigError(str(self.file), self.key(name), problem, hint=hint)

    def raw(self, name: str) -> Any:
        self.used.add(name)
        return self.data.get(name)

    def string(self, name: str, default: str | None = None, *, choices: tuple[str, ...] = ()) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.error(name, f"must be a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"must be a number, got {value!r}")
        if not (low <= value <= high):
            raise self.error(name, f"must be between {low:g} and {high:g}, got {value!r}")
        return float(value)

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be an integer, got {value!r}")
        if not (low <= value <= high):
            raise self.error(name, f"must be between {low} and {high}, got {value!r}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, got {value!r}")
        return value

    def path(self, name: str, default: Path | None = None, *, must_exist: bool = False) -> Path | None:
        value = self.string(name)
        if value is None:
            return default
        p = Path(value)
        if not p.is_absolute():  # relative paths are relative to the config file, not the cwd
            p = (self.file.parent / p).resolve()
        if must_exist and not p.exists():
            raise self.error(name, f"file {p} does not exist")
        return p

    def secret(self, name: str) -> str | None:
        """``name`` inline or ``name_file`` (a file holding it); never both."""
        inline = self.string(name)
        file = self.path(f"{name}_file")
        if inline is not None and file is not None:
            raise self.error(f"{name}_file", f"give either {self.key(name)} or {self.key(name + '_file')}, not both")
        if file is None:
            return inline
        try:
            text = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise self.error(f"{name}_file", f"cannot read secret file {file}: {exc.strerror or exc}") from exc
        if not text:
            raise self.error(f"{name}_file", f"secret file {file} is empty")
        return text

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key", hint=f"known keys: {', '.join(sorted(self.used))}")


def _site(section: _Section) -> str | None:
    from gateway.uplink.topics import check_segment

    site = section.string("site")
    if site is not None:
        try:
            check_segment("site", site)
        except ValueError as exc:
            raise section.error("site", str(exc), hint="the site is one MQTT topic level") from exc
    return site


def _allowed_commands(section: _Section) -> tuple[str, ...] | None:
    from gateway.commands import COMMANDS

    value = section.raw("allowed_commands")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise section.error("allowed_commands", f"must be a list of command names, got {value!r}")
    unknown = [v for v in value if v not in COMMANDS]
    if unknown:
        raise section.error("allowed_commands", f"unknown command {unknown[0]!r}",
                            hint=f"known commands: {', '.join(COMMANDS)}")
    return tuple(dict.fromkeys(value))


def _parse_host_port(section: _Section, name: str, value: str | None) -> None:
    if value is None:
        return
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535) or not host:
        raise section.error(name, f"must look like host:port (e.g. 127.0.0.1:9108), got {value!r}")


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate the gateway's TOML configuration; raise ConfigError naming file+key on a problem."""
    file = Path(path)
    return parse_config(file, read_toml(file))


def read_toml(file: Path) -> dict[str, Any]:
    """The parsed TOML document at ``file``; ConfigError (naming the file) if it is missing or invalid."""
    try:
        with file.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        hint = "pass --config with the path of gateway.toml"
        raise ConfigError(str(file), None, "file not found", hint=hint) from exc
    except OSError as exc:
        raise ConfigError(str(file), None, f"cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), None, f"not valid TOML: {exc}") from exc
    return data


def parse_config(file: Path, data: Mapping[str, Any]) -> GatewayConfig:
    """Validate an already-parsed TOML document (see :func:`load_config`)."""
    top = _Section(file, "", dict(data))
    gw = _Section(file, "gateway", top.raw("gateway"))
    gateway_id = gw.string("id")
    if gateway_id is None:
        raise gw.error("id", "is required", hint='e.g. id = "gw-harbour-01"')
    if not _NAME_RE.match(gateway_id):
        raise gw.error("id", f"must be 1-64 letters, digits, '-', '_' or '.', got {gateway_id!r}")
    state_dir = gw.path("state_dir", Path("/var/lib/cityedge"))
    assert state_dir is not None
    log_level = gw.string("log_level", "info", choices=("debug", "info", "warning", "error"))
    assert log_level is not None
    gw.finish()

    serial_raw = top.raw("serial") or []
    if not isinstance(serial_raw, list):
        raise top.error("serial", "must be an array of tables ([[serial]])")
    links: list[SerialLinkConfig] = []
    for i, item in enumerate(serial_raw):
        s = _Section(file, f"serial[{i}]", item)
        port = s.string("port")
        if port is None:
            raise s.error("port", "is required", hint='e.g. port = "/dev/serial/by-id/usb-FTDI_..."')
        name = s.string("name", f"serial{i}")
        assert name is not None
        if not _NAME_RE.match(name):
            raise s.error("name", f"must be 1-64 letters, digits, '-', '_' or '.', got {name!r}")
        if any(link.name == name for link in links):
            raise s.error("name", f"duplicate link name {name!r}")
        if any(link.port == port for link in links):
            raise s.error("port", f"port {port} is already used by another [[serial]] entry")
        baud = s.integer("baudrate", 115200, low=1200, high=4_000_000)
        if baud not in _BAUDRATES:
            raise s.error("baudrate", f"unusual baud rate {baud}", hint=f"use one of {', '.join(map(str, _BAUDRATES))}")
        lo = s.number("reopen_min_s", 0.5, low=0.01, high=60)
        hi = s.number("reopen_max_s", 30.0, low=lo, high=3600)
        s.finish()
        links.append(SerialLinkConfig(name, port, baud, lo, hi))

    lm = _Section(file, "local_mqtt", top.raw("local_mqtt"))
    local = LocalMqttConfig(
        enabled=lm.boolean("enabled", False),
        host=lm.string("host", "127.0.0.1") or "127.0.0.1",
        port=lm.integer("port", 1883, low=1, high=65535),
        up_topic=lm.string("up_topic", LocalMqttConfig.up_topic) or LocalMqttConfig.up_topic,
        down_topic=lm.string("down_topic", LocalMqttConfig.down_topic) or LocalMqttConfig.down_topic,
    )
    if local.up_topic.count("+") != 1:
        raise lm.error("up_topic", "must contain exactly one '+' standing for the node id")
    if "{node}" not in local.down_topic:
        raise lm.error("down_topic", "must contain {node}, replaced by the node id")
    lm.finish()

    nd = _Section(file, "nodes", top.raw("nodes"))
    nodes = NodesConfig(
        manifest=nd.path("manifest"),
        offline_after_s=nd.number("offline_after_s", 2400.0, low=1, high=7 * 86400),
        time_sync_s=nd.number("time_sync_s", 3600.0, low=1, high=7 * 86400),
        # nodes declare the gateway lost after 90 s without a frame from it (firmware node.link lost_ms)
        keepalive_s=nd.number("keepalive_s", 30.0, low=1, high=80),
        watch_manifest=nd.boolean("watch_manifest", True),
    )
    nd.finish()

    ob = _Section(file, "outbox", top.raw("outbox"))
    outbox = OutboxConfig(
        path=ob.path("path", state_dir / "outbox.sqlite3") or state_dir / "outbox.sqlite3",
        quota_mb=ob.number("quota_mb", 512.0, low=1, high=1_000_000),
        synchronous=ob.string("synchronous", "full", choices=("full", "normal")) or "full",
        batch_max=ob.integer("batch_max", 2000, low=1, high=100_000),
        flush_ms=ob.number("flush_ms", 5.0, low=0, high=10_000),
    )
    ob.finish()

    up = _Section(file, "uplink", top.raw("uplink"))
    url = up.string("url")
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise up.error("url", f"must be mqtt://host[:port] or mqtts://host[:port], got {url!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise up.error("url", f"bad port in {url!r}") from exc
    uplink = UplinkConfig(
        url=url,
        client_id=up.string("client_id"),
        username=up.string("username"),
        password=up.secret("password"),
        ca_file=up.path("ca_file", must_exist=True),
        cert_file=up.path("cert_file", must_exist=True),
        key_file=up.path("key_file", must_exist=True),
        topic_prefix=up.string("topic_prefix", "cityedge") or "cityedge",
        format=up.string("format", "cbor", choices=("cbor", "json")) or "cbor",
        batch_max=up.integer("batch_max", 500, low=1, high=100_000),
        batch_ms=up.number("batch_ms", 20.0, low=0, high=60_000),
        keepalive_s=up.integer("keepalive_s", 30, low=5, high=3600),
        site=_site(up),
        allowed_commands=_allowed_commands(up),
    )
    if (uplink.cert_file is None) != (uplink.key_file is None):
        raise up.error("key_file" if uplink.key_file is None else "cert_file", "cert_file and key_file go together")
    if uplink.cert_file is not None and not uplink.tls:
        raise up.error("url", "a client certificate needs an mqtts:// url")
    if any(c in uplink.topic_prefix for c in "+#") or uplink.topic_prefix.startswith("/"):
        raise up.error("topic_prefix", "must not contain '+', '#' or start with '/'")
    up.finish()

    hs = _Section(file, "health", top.raw("health"))
    listen_raw = hs.raw("listen")
    if listen_raw is False or listen_raw == "":
        listen: str | None = None
    else:
        hs.used.discard("listen")
        listen = hs.string("listen", HealthConfig.listen)
        _parse_host_port(hs, "listen", listen)
    health = HealthConfig(listen)
    hs.finish()

    vision_raw = top.raw("vision")
    vision = None
    if vision_raw is not None:  # cameras (docs/vision.md); imported only when configured
        from gateway.vision.config import parse_vision

        vision = parse_vision(file, vision_raw)

    wd = _Section(file, "watchdog", top.raw("watchdog"))
    # loops report progress about once a second, so anything much shorter would be a false alarm
    watchdog = WatchdogConfig(stall_after_s=wd.number("stall_after_s", 30.0, low=3, high=3600))
    wd.finish()
    top.finish()

    return GatewayConfig(
        path=file,
        gateway_id=gateway_id,
        state_dir=state_dir,
        serial=tuple(links),
        local_mqtt=local,
        nodes=nodes,
        outbox=outbox,
        uplink=uplink,
        health=health,
        watchdog=watchdog,
        log_level=log_level,
        vision=vision,
    )
