"""The ``[vision]`` table of the gateway's TOML configuration (see docs/vision.md for every key).

Errors are :class:`cityedge.errors.ConfigError` naming the file and the dotted key
(e.g. ``vision.camera[0].zone[1].polygon``), reusing the gateway config's typed section reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cityedge.errors import ConfigError
from cityedge.paths import MODELS
from gateway.config import _Section, read_toml
from gateway.vision.detector import BACKENDS
from gateway.vision.zones import CountLine, Zone

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TIME_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")

DEFAULT_MODEL = MODELS / "street_detector_int8.tflite"
DEFAULT_LABELS = MODELS / "street_labels.txt"


@dataclass(frozen=True)
class CameraConfig:
    """One camera: where frames come from, how often to analyse them, its zones and counting lines."""

    name: str
    source: str  # /dev/videoN, an integer index, rtsp://..., http(s)://..., or a video file
    fps: float = 15.0  # most frames per second analysed (files are also played at this rate)
    loop: bool = False  # video files: start again at the end (demo); otherwise the file's end is a drop-out
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    stall_s: float = 10.0  # no frame for this long counts as a lost camera
    motion_threshold: int = 18
    motion_min_area: float = 0.0015
    keepalive_s: float = 1.0  # analyse at least this often while tracks are alive (dwell/stopped alerts)
    zones: tuple[Zone, ...] = ()
    lines: tuple[CountLine, ...] = ()
    # (width, height) asked of a V4L2 camera; network streams and files deliver what they deliver
    capture_size: tuple[int, int] | None = None
    # (width, height) of the frame the zone and line coordinates were drawn on; frames of another size
    # have their detections scaled into it. None: capture_size if set, else the frames' own size
    zone_frame: tuple[int, int] | None = None

    @property
    def geometry_size(self) -> tuple[int, int] | None:
        """The frame size zones, lines and reported boxes are in (None: each frame's own pixels)."""
        return self.zone_frame or self.capture_size


@dataclass(frozen=True)
class LightingRule:
    """Boost streetlights ``nodes`` while a ``classes`` object is in ``camera``'s ``zone`` at night."""

    camera: str
    zone: str
    nodes: tuple[int, ...]
    classes: frozenset[str] = frozenset({"pedestrian", "vehicle", "cyclist"})
    level: int = 100  # percent; the node applies max(program level, boost level)
    hold_s: float = 60.0
    night: str = "clock"  # "clock" (night_start..night_end, local time), "always", "scene" (dark image)
    night_start: str = "18:00"
    night_end: str = "07:00"
    scene_dark_below: float = 60.0  # mean grey level under which a scene counts as night


@dataclass(frozen=True)
class VisionConfig:
    enabled: bool = False
    backend: str = "ai_edge_litert"
    threads: int = 1
    xnnpack: bool = True
    model: Path = DEFAULT_MODEL
    labels: Path | None = DEFAULT_LABELS
    min_score: float = 0.3
    interval_s: float = 60.0  # counts event period
    snapshots: bool = False  # frames never leave the gateway unless this is true (and then blurred)
    cameras: tuple[CameraConfig, ...] = ()
    lighting: tuple[LightingRule, ...] = field(default_factory=tuple)


def _name(s: _Section, key: str, default: str | None = None) -> str:
    value = s.string(key, default)
    if value is None:
        raise s.error(key, "is required")
    if not _NAME_RE.match(value):
        raise s.error(key, f"must be 1-64 letters, digits, '-', '_' or '.', got {value!r}")
    return value


def _points(s: _Section, key: str, n_min: int, n_max: int | None = None) -> tuple[tuple[float, float], ...]:
    raw = s.raw(key)
    if raw is None:
        raise s.error(key, "is required", hint="a list of [x, y] pixel points, e.g. [[0, 300], [640, 300]]")
    ok = isinstance(raw, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
        for p in raw)
    if not ok:
        raise s.error(key, f"must be a list of [x, y] number pairs, got {raw!r}")
    if len(raw) < n_min or (n_max is not None and len(raw) > n_max):
        want = f"{n_min}" if n_max == n_min else f"at least {n_min}"
        raise s.error(key, f"needs {want} points, got {len(raw)}")
    return tuple((float(p[0]), float(p[1])) for p in raw)


def _size(s: _Section, key: str) -> tuple[int, int] | None:
    """An optional ``[width, height]`` frame size in pixels."""
    raw = s.raw(key)
    if raw is None:
        return None
    ok = (isinstance(raw, list) and len(raw) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in raw))
    if not ok:
        raise s.error(key, f"must be [width, height] in whole pixels, got {raw!r}", hint="e.g. [320, 240]")
    w, h = raw
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise s.error(key, f"width and height must be 16..8192 pixels, got {w}x{h}")
    return int(w), int(h)


def _inside(s: _Section, key: str, points: tuple[tuple[float, float], ...], size: tuple[int, int] | None,
            size_key: str) -> None:
    """Points drawn for a frame of ``size`` must lie on it (catches zones drawn on another stream's size)."""
    if size is None:
        return
    w, h = size
    for x, y in points:
        if not (0 <= x <= w and 0 <= y <= h):
            raise s.error(key, f"point [{x:g}, {y:g}] is outside the {w}x{h} frame of {size_key}",
                          hint="coordinates are pixels of that frame; set zone_frame to the size they were "
                               "drawn on and they are scaled to the stream's")


def _classes(s: _Section, key: str, default: frozenset[str] = frozenset()) -> frozenset[str]:
    raw = s.raw(key)
    if raw is None:
        return default
    if not isinstance(raw, list) or not all(isinstance(c, str) and c for c in raw):
        raise s.error(key, f"must be a list of class names, got {raw!r}")
    return frozenset(raw)


def _tables(parent: _Section, key: str) -> list[Any]:
    raw = parent.raw(key) or []
    if not isinstance(raw, list):
        raise parent.error(key, f"must be an array of tables ([[{parent.key(key)}]])")
    return raw


def parse_vision(file: Path, data: Any) -> VisionConfig:
    """Validate the ``[vision]`` table (``data``: the parsed table or None) of config ``file``."""
    v = _Section(file, "vision", data)
    enabled = v.boolean("enabled", bool(data))
    backend = v.string("backend", "ai_edge_litert", choices=BACKENDS) or "ai_edge_litert"
    threads = v.integer("threads", 1, low=1, high=16)
    xnnpack = v.boolean("xnnpack", True)
    model = v.path("model", DEFAULT_MODEL, must_exist=True) or DEFAULT_MODEL
    labels = v.path("labels", DEFAULT_LABELS if model == DEFAULT_MODEL else None, must_exist=True)
    min_score = v.number("min_score", 0.3, low=0.01, high=1.0)
    interval_s = v.number("interval_s", 60.0, low=1.0, high=86400.0)
    snapshots = v.boolean("snapshots", False)
    cameras: list[CameraConfig] = []
    for i, item in enumerate(_tables(v, "camera")):
        c = _Section(file, f"vision.camera[{i}]", item)
        name = _name(c, "name")
        if any(cam.name == name for cam in cameras):
            raise c.error("name", f"duplicate camera name {name!r}")
        src = c.raw("source")
        if isinstance(src, int) and not isinstance(src, bool):
            src = str(src)
        if not isinstance(src, str) or not src:
            raise c.error("source", "is required: /dev/videoN, a device index, rtsp://..., http://... or a file")
        if "://" not in src and not src.isdigit() and not src.startswith("/dev/"):
            p = Path(src) if Path(src).is_absolute() else (file.parent / src).resolve()
            if not p.exists():
                raise c.error("source", f"video file {p} does not exist")
            src = str(p)
        capture_size = _size(c, "capture_size")
        zone_frame = _size(c, "zone_frame")
        geometry = zone_frame or capture_size
        geometry_key = c.key("zone_frame" if zone_frame else "capture_size")
        zones: list[Zone] = []
        for j, zitem in enumerate(_tables(c, "zone")):
            z = _Section(file, f"vision.camera[{i}].zone[{j}]", zitem)
            zname = _name(z, "name")
            if any(zz.name == zname for zz in zones):
                raise z.error("name", f"duplicate zone name {zname!r}")
            dwell = z.raw("dwell_s")
            stopped = z.raw("stopped_s")
            polygon = _points(z, "polygon", 3)
            _inside(z, "polygon", polygon, geometry, geometry_key)
            zone = Zone(zname, polygon, _classes(z, "classes"),
                        z.number("dwell_s", 0.0, low=0.1, high=86400) if dwell is not None else None,
                        z.number("stopped_s", 0.0, low=0.1, high=86400) if stopped is not None else None)
            z.finish()
            zones.append(zone)
        lines: list[CountLine] = []
        for j, litem in enumerate(_tables(c, "line")):
            ls = _Section(file, f"vision.camera[{i}].line[{j}]", litem)
            lname = _name(ls, "name")
            a, b = _points(ls, "points", 2, 2)
            _inside(ls, "points", (a, b), geometry, geometry_key)
            dirs = ls.raw("directions") or ["a_to_b", "b_to_a"]
            if not (isinstance(dirs, list) and len(dirs) == 2 and all(isinstance(d, str) and d for d in dirs)):
                raise ls.error("directions", f"must be two names, got {dirs!r}")
            lines.append(CountLine(lname, a, b, _classes(ls, "classes"), (dirs[0], dirs[1])))
            ls.finish()
        lo = c.number("reconnect_min_s", 0.5, low=0.01, high=60)
        cam = CameraConfig(
            name=name, source=src,
            fps=c.number("fps", 15.0, low=0.1, high=240),
            loop=c.boolean("loop", False),
            reconnect_min_s=lo,
            reconnect_max_s=c.number("reconnect_max_s", 30.0, low=lo, high=3600),
            stall_s=c.number("stall_s", 10.0, low=0.5, high=3600),
            motion_threshold=c.integer("motion_threshold", 18, low=1, high=255),
            motion_min_area=c.number("motion_min_area", 0.0015, low=0.0, high=1.0),
            keepalive_s=c.number("keepalive_s", 1.0, low=0.05, high=60),
            zones=tuple(zones), lines=tuple(lines),
            capture_size=capture_size, zone_frame=zone_frame,
        )
        c.finish()
        cameras.append(cam)
    rules: list[LightingRule] = []
    for i, item in enumerate(_tables(v, "lighting")):
        r = _Section(file, f"vision.lighting[{i}]", item)
        cam_name = r.string("camera")
        cam_cfg = next((cc for cc in cameras if cc.name == cam_name), None)
        if cam_cfg is None:
            raise r.error("camera", f"no [[vision.camera]] named {cam_name!r}")
        zone_name = r.string("zone")
        if not any(z.name == zone_name for z in cam_cfg.zones):
            raise r.error("zone", f"camera {cam_name!r} has no zone named {zone_name!r}")
        nodes = r.raw("nodes")
        if not (isinstance(nodes, list) and nodes and all(isinstance(n, int) and not isinstance(n, bool)
                                                           and 0 <= n < 2**32 for n in nodes)):
            raise r.error("nodes", f"must be a non-empty list of streetlight node ids (u32), got {nodes!r}")
        night = r.string("night", "clock", choices=("clock", "always", "scene")) or "clock"
        start = r.string("night_start", "18:00") or "18:00"
        end = r.string("night_end", "07:00") or "07:00"
        for key, val in (("night_start", start), ("night_end", end)):
            if not _TIME_RE.match(val):
                raise r.error(key, f"must be HH:MM, got {val!r}")
        rules.append(LightingRule(
            camera=cam_cfg.name, zone=str(zone_name), nodes=tuple(nodes),
            classes=_classes(r, "classes", LightingRule.classes),
            level=r.integer("level", 100, low=1, high=100),
            hold_s=r.number("hold_s", 60.0, low=1.0, high=3600.0),
            night=night, night_start=start, night_end=end,
            scene_dark_below=r.number("scene_dark_below", 60.0, low=0.0, high=255.0),
        ))
        r.finish()
    v.finish()
    return VisionConfig(enabled, backend, threads, xnnpack, model, labels, min_score, interval_s, snapshots,
                        tuple(cameras), tuple(rules))


def load_vision_config(path: str | Path) -> VisionConfig:
    """Read the ``[vision]`` table of a TOML file (the gateway's config, or a file of its own)."""
    file = Path(path)
    data = read_toml(file)
    if "vision" not in data:
        raise ConfigError(str(file), "vision", "no [vision] table", hint="see docs/vision.md for an example")
    return parse_vision(file, data["vision"])
