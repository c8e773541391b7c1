"""Synthetic street scenes drawn with OpenCV: training images for the shipped detector, and test videos
with ground truth for the tests, the benchmark and the demo.

Nothing here is downloaded: a scene is a street (buildings, sidewalks, road, lamp posts) with vehicles,
pedestrians and cyclists drawn as simple side-view shapes, by day or by night, with sensor noise.
Ground truth is exact: every object knows the box it was drawn in.

Only OpenCV and numpy are needed (the training script in ``models/train`` imports this module too).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ("vehicle", "pedestrian", "cyclist")
WIDTH, HEIGHT = 640, 480

# Street layout (y coordinates in a 640×480 frame): far sidewalk, road, near sidewalk.
FAR_WALK = (170, 215)
ROAD = (215, 345)
NEAR_WALK = (345, 420)

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass
class SceneObject:
    """One drawn object: class index, box (pixels, x0 y0 x1 y1) and, in a video, its track id."""

    cls: int
    box: Box
    track: int = -1

    def as_dict(self) -> dict[str, object]:
        return {"cls": CLASSES[self.cls], "box": [round(v, 1) for v in self.box], "track": self.track}


def _color(rng: np.random.Generator, lo: int = 30, hi: int = 230) -> tuple[int, int, int]:
    c = rng.integers(lo, hi, size=3)
    return int(c[0]), int(c[1]), int(c[2])


def render_background(rng: np.random.Generator, night: bool, size: tuple[int, int] = (WIDTH, HEIGHT)) -> np.ndarray:
    """A street without moving objects: sky, buildings with windows, sidewalks, road markings, lamp posts.

    Laid out in 640×480 scene coordinates and drawn scaled to ``size``: the same ``rng`` state gives the
    same street at any frame size (a camera's main stream and its smaller sub-stream).
    """
    w, h = size
    sx, sy = w / WIDTH, h / HEIGHT
    img = np.empty((h, w, 3), np.uint8)
    sky = (70, 40, 25) if night else (int(rng.integers(170, 235)), int(rng.integers(150, 200)), 120)
    img[:] = sky
    x = 0
    while x < WIDTH:  # buildings
        bw = int(rng.integers(60, 160))
        top = int(rng.integers(20, 120) * sy)
        shade = int(rng.integers(50, 90)) if night else int(rng.integers(90, 180))
        cv2.rectangle(img, (int(x * sx), top), (int((x + bw) * sx), int(FAR_WALK[0] * sy)),
                      (shade, shade + 5, shade + 10), -1)
        for wy in range(top + 10, int(FAR_WALK[0] * sy) - 18, 28):
            for wx in range(x + 8, x + bw - 14, 24):
                lit = night and rng.random() < 0.35
                col = (90, 200, 230) if lit else ((40, 40, 45) if night else (150, 120, 90))
                cv2.rectangle(img, (int(wx * sx), wy), (int((wx + 10) * sx), int(wy + 14 * sy)), col, -1)
        x += bw + int(rng.integers(0, 12))
    walk = (60, 60, 62) if night else (150, 150, 155)
    road = (35, 35, 38) if night else (85, 85, 90)
    cv2.rectangle(img, (0, int(FAR_WALK[0] * sy)), (w, int(FAR_WALK[1] * sy)), walk, -1)
    cv2.rectangle(img, (0, int(ROAD[0] * sy)), (w, int(ROAD[1] * sy)), road, -1)
    cv2.rectangle(img, (0, int(NEAR_WALK[0] * sy)), (w, h), walk, -1)
    mid = int((ROAD[0] + ROAD[1]) / 2 * sy)
    mark = max(1, round(2 * sy))
    for mx in range(0, WIDTH, 60):
        cv2.rectangle(img, (int(mx * sx), mid - mark), (int((mx + 30) * sx), mid + mark),
                      (200, 200, 200) if not night else (120, 120, 120), -1)
    for lx in range(int(rng.integers(20, 120)), WIDTH, int(rng.integers(180, 260))):  # lamp posts
        top = int(FAR_WALK[0] * sy) - int(90 * sy)
        px = int(lx * sx)
        cv2.line(img, (px, int(FAR_WALK[1] * sy)), (px, top), (40, 40, 40), max(1, round(3 * sx)))
        cv2.circle(img, (px, top), max(1, round(5 * sx)), (180, 240, 255) if night else (90, 90, 90), -1)
        if night:
            cv2.circle(img, (px, top + round(60 * sy)), round(60 * sx), (55, 60, 62), -1, lineType=cv2.LINE_AA)
    return img


def draw_vehicle(img: np.ndarray, x: float, y_bottom: float, w: float, color: tuple[int, int, int],
                 rng_val: float, facing: int = 1, night: bool = False) -> Box:
    """Side view of a car or van; returns its box."""
    h = w * (0.42 + 0.18 * rng_val)
    x0, y1 = int(x), int(y_bottom)
    x1, y0 = int(x + w), int(y_bottom - h)
    body_top = int(y1 - h * 0.55)
    wheel_r = max(3, int(h * 0.2))
    cv2.rectangle(img, (x0, body_top), (x1, y1 - wheel_r // 2), color, -1)
    cab = np.array([[x0 + w * 0.18, body_top], [x0 + w * 0.3, y0], [x0 + w * 0.72, y0],
                    [x0 + w * 0.85, body_top]], np.int32)
    cv2.fillPoly(img, [cab], color)
    glass = (60, 50, 40) if night else (200, 170, 140)
    win = np.array([[x0 + w * 0.25, body_top], [x0 + w * 0.33, y0 + h * 0.08], [x0 + w * 0.69, y0 + h * 0.08],
                    [x0 + w * 0.78, body_top]], np.int32)
    cv2.fillPoly(img, [win], glass)
    for wx in (x0 + w * 0.2, x0 + w * 0.8):
        cv2.circle(img, (int(wx), y1 - wheel_r), wheel_r, (15, 15, 15), -1)
        cv2.circle(img, (int(wx), y1 - wheel_r), max(1, wheel_r // 2), (150, 150, 150), -1)
    front = x1 if facing > 0 else x0
    lamp = (200, 255, 255) if night else (180, 220, 230)
    cv2.circle(img, (front - 3 * facing, body_top + int(h * 0.15)), max(2, int(h * 0.07)), lamp, -1)
    return float(x0), float(y0), float(x1), float(y1)


def draw_pedestrian(img: np.ndarray, x: float, y_bottom: float, h: float, color: tuple[int, int, int],
                    phase: float) -> Box:
    """A walking person seen from the side; returns its box."""
    w = h * 0.3
    cx = x + w / 2
    head_r = max(2, int(h * 0.08))
    y0 = y_bottom - h
    skin = (120, 160, 200)
    cv2.circle(img, (int(cx), int(y0 + head_r)), head_r, skin, -1)
    torso_top, torso_bot = y0 + 2 * head_r, y0 + h * 0.58
    cv2.rectangle(img, (int(cx - w * 0.28), int(torso_top)), (int(cx + w * 0.28), int(torso_bot)), color, -1)
    stride = np.sin(phase) * w * 0.5
    legs = (50, 40, 40)
    thick = max(2, int(w * 0.22))
    cv2.line(img, (int(cx), int(torso_bot)), (int(cx + stride), int(y_bottom)), legs, thick)
    cv2.line(img, (int(cx), int(torso_bot)), (int(cx - stride), int(y_bottom)), legs, thick)
    cv2.line(img, (int(cx), int(torso_top + 2)), (int(cx - stride * 0.8), int(torso_bot - 2)), color,
             max(1, thick - 1))
    return float(x), float(y0), float(x + w), float(y_bottom)


def draw_cyclist(img: np.ndarray, x: float, y_bottom: float, w: float, color: tuple[int, int, int],
                 facing: int = 1) -> Box:
    """A person riding a bicycle, side view; returns its box."""
    r = w * 0.22
    y_axle = y_bottom - r
    back, front = (x + r, x + w - r) if facing > 0 else (x + w - r, x + r)
    frame = (30, 30, 160)
    thick = max(1, int(w * 0.04))
    for cx in (back, front):
        cv2.circle(img, (int(cx), int(y_axle)), int(r), (20, 20, 20), max(2, thick + 1))
    seat = (back + (front - back) * 0.3, y_axle - r * 1.3)
    bars = (back + (front - back) * 0.85, y_axle - r * 1.5)
    crank = ((back + front) / 2, y_axle)
    for a, b in ((back, seat), (seat, crank), (crank, front), (seat, bars), (bars, front), (crank, back)):
        pa = (int(a[0]), int(a[1])) if isinstance(a, tuple) else (int(a), int(y_axle))
        pb = (int(b[0]), int(b[1])) if isinstance(b, tuple) else (int(b), int(y_axle))
        cv2.line(img, pa, pb, frame, thick + 1)
    body_h = w * 0.75
    head_r = max(2, int(w * 0.09))
    shoulder = (seat[0] + (bars[0] - seat[0]) * 0.5, seat[1] - body_h * 0.55)
    cv2.line(img, (int(seat[0]), int(seat[1])), (int(shoulder[0]), int(shoulder[1])), color, max(3, int(w * 0.12)))
    cv2.line(img, (int(shoulder[0]), int(shoulder[1])), (int(bars[0]), int(bars[1])), color, max(1, thick + 1))
    cv2.line(img, (int(seat[0]), int(seat[1])), (int(crank[0]), int(crank[1])), (50, 40, 40), max(2, thick + 2))
    head_c = (int(shoulder[0] + (bars[0] - seat[0]) * 0.15), int(shoulder[1] - head_r * 1.4))
    cv2.circle(img, head_c, head_r, (120, 160, 200), -1)
    y0 = head_c[1] - head_r
    return float(x), float(y0), float(x + w), float(y_bottom)


def _finish(img: np.ndarray, rng: np.random.Generator, night: bool, noise: float) -> np.ndarray:
    """Lighting and sensor noise: the same for training images and video frames."""
    if night:
        img = cv2.convertScaleAbs(img, alpha=0.75, beta=0)
    if noise > 0:
        n = rng.normal(0.0, noise, img.shape).astype(np.int16)
        img = np.clip(img.astype(np.int16) + n, 0, 255).astype(np.uint8)
    return img


def _draw(img: np.ndarray, cls: int, x: float, yb: float, size: float, color: tuple[int, int, int],
          aux: float, facing: int, night: bool) -> Box:
    if cls == 0:
        return draw_vehicle(img, x, yb, size, color, aux, facing, night)
    if cls == 1:
        return draw_pedestrian(img, x, yb, size, color, aux * 6.28)
    return draw_cyclist(img, x, yb, size, color, facing)


def _random_size(rng: np.random.Generator, cls: int) -> float:
    return float(rng.uniform(*((95, 170), (65, 110), (60, 95))[cls]))


def _lane_bottom(rng: np.random.Generator, cls: int) -> float:
    if cls == 0:
        return float(rng.uniform(ROAD[0] + 55, ROAD[1] - 5))
    if cls == 2:
        return float(rng.choice([rng.uniform(ROAD[0] + 40, ROAD[0] + 65), rng.uniform(ROAD[1] - 25, ROAD[1])]))
    return float(rng.choice([rng.uniform(FAR_WALK[0] + 20, FAR_WALK[1]), rng.uniform(NEAR_WALK[0] + 15, NEAR_WALK[1])]))


def render_image(rng: np.random.Generator, night: bool | None = None,
                 max_objects: int = 5) -> tuple[np.ndarray, list[SceneObject]]:
    """One random 640×480 street image and the boxes of the objects in it (for training and mAP)."""
    if night is None:
        night = bool(rng.random() < 0.35)
    img = render_background(rng, night)
    n = int(rng.integers(0, max_objects + 1))
    objs: list[SceneObject] = []
    placed: list[tuple[float, int]] = []
    for _ in range(n):
        cls = int(rng.integers(0, 3))
        size = _random_size(rng, cls)
        yb = _lane_bottom(rng, cls)
        x = float(rng.uniform(-size * 0.2, WIDTH - size * 0.8))
        placed.append((yb, cls))
        box = _draw(img, cls, x, yb, size, _color(rng), float(rng.random()), int(rng.choice([-1, 1])), night)
        objs.append(SceneObject(cls, box))
    # Objects drawn later hide earlier ones: drop boxes that are mostly covered by a later box.
    visible = [o for i, o in enumerate(objs) if all(_covered(o.box, p.box) < 0.6 for p in objs[i + 1:])]
    img = _finish(img, rng, night, float(rng.uniform(2, 8)))
    return img, [SceneObject(o.cls, _clip(o.box)) for o in visible if _area(_clip(o.box)) > 150]


def _clip(b: Box, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Box:
    return max(0.0, b[0]), max(0.0, b[1]), min(float(size[0]), b[2]), min(float(size[1]), b[3])


def _area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _covered(a: Box, b: Box) -> float:
    """Share of box ``a`` covered by box ``b``."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / max(_area(a), 1e-6)


# ---------------------------------------------------------------------------------------------- videos


@dataclass
class _Mover:
    track: int
    cls: int
    x: float
    yb: float
    size: float
    speed: float  # px per frame, sign = direction
    color: tuple[int, int, int]
    aux: float
    phase: float = 0.0


@dataclass
class VideoSpec:
    """What a synthetic video shows. ``rate`` is new objects per second; ``quiet`` means no objects.

    ``size`` is the frame size: the scene (layout, objects, their motion, ``line_x`` and the ground-truth
    crossings) lives in 640×480 scene coordinates and is drawn scaled to it, so a 320×240 video shows the
    same street and traffic as the 640×480 one with the same seed (as a camera's sub-stream does); its
    ground-truth boxes are in its own frame pixels.
    """

    seed: int = 1
    frames: int = 300
    fps: float = 15.0
    night: bool = False
    rate: float = 0.8
    classes: tuple[int, ...] = (0, 1, 2)
    noise: float = 2.0
    size: tuple[int, int] = (WIDTH, HEIGHT)
    line_x: float = WIDTH / 2  # the vertical counting line the ground truth counts crossings of
    spawns: tuple[tuple[int, int, int], ...] = ()  # (frame, class, direction ±1): exactly these, no random ones


@dataclass
class GroundTruth:
    """Per-frame boxes, and crossings of the vertical line at ``spec.line_x`` per class and direction."""

    spec: VideoSpec
    frames: list[list[SceneObject]] = field(default_factory=list)
    crossings: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({
            "fps": self.spec.fps, "night": self.spec.night, "line_x": self.spec.line_x,
            "crossings": self.crossings,
            "frames": [[o.as_dict() for o in f] for f in self.frames],
        })


class SceneVideo:
    """A reproducible synthetic street video: iterate to get ``(frame, objects)`` pairs."""

    def __init__(self, spec: VideoSpec) -> None:
        self.spec = spec
        self.truth = GroundTruth(spec, crossings={c: {"ltr": 0, "rtl": 0} for c in CLASSES})

    def __iter__(self) -> Iterator[tuple[np.ndarray, list[SceneObject]]]:
        spec = self.spec
        rng = np.random.default_rng(spec.seed)
        bg = render_background(rng, spec.night, spec.size)
        w, h = spec.size
        scale = w / WIDTH  # scene coordinates -> frame pixels (the frame keeps the scene's 4:3 aspect)
        min_area = 150 * scale * scale
        bank = []
        if spec.noise > 0:
            for _ in range(6):
                # drawn at 640×480 whatever the frame size, so that the random draws after it (and so
                # the traffic) are the same at every size; a smaller frame takes a corner of it
                n = rng.normal(0.0, spec.noise, (HEIGHT, WIDTH, 3))[:h, :w]
                bank.append((np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)))
        movers: list[_Mover] = []
        next_track = 1
        self.truth.frames.clear()
        for c in self.truth.crossings.values():
            c["ltr"] = c["rtl"] = 0
        lanes_busy: dict[tuple[int, int], int] = {}
        for _ in range(spec.frames):
            frame_no = len(self.truth.frames)
            scripted = [(c, d) for f, c, d in spec.spawns if f == frame_no]
            random_spawn = not spec.spawns and bool(spec.classes) and rng.random() < spec.rate / spec.fps
            spawn = bool(scripted) or random_spawn
            if spawn:
                if scripted:
                    cls, direction = scripted[0]
                else:
                    cls = int(rng.choice(spec.classes))
                    direction = int(rng.choice([-1, 1]))
                size = _random_size(rng, cls)
                yb = _lane_bottom(rng, cls)
                lane = (cls, int(yb // 40))
                # Keep same-lane objects apart so the ground truth never has one object hiding another.
                if scripted or lanes_busy.get(lane, -10_000) < len(self.truth.frames) - int(size / 2):
                    lanes_busy[lane] = len(self.truth.frames)
                    speed = float(rng.uniform(*((6, 12), (1.5, 3), (3.5, 6))[cls])) * direction
                    x = -size if direction > 0 else float(WIDTH)
                    movers.append(_Mover(next_track, cls, x, yb, size, speed, _color(rng), float(rng.random())))
                    next_track += 1
            img = bg.copy()
            objs: list[SceneObject] = []
            for m in sorted(movers, key=lambda m: m.yb):  # far objects first
                aux = (m.phase % 6.28) / 6.28 if m.cls == 1 else m.aux
                box = _draw(img, m.cls, m.x * scale, m.yb * scale, m.size * scale, m.color, aux,
                            1 if m.speed > 0 else -1, spec.night)
                clipped = _clip(box, spec.size)
                if _area(clipped) > min_area:
                    objs.append(SceneObject(m.cls, clipped, m.track))
            if spec.night:
                img = cv2.convertScaleAbs(img, alpha=0.75, beta=0)
            if bank:  # sensor noise: a few precomputed fields, applied with saturating uint8 arithmetic
                pos, neg = bank[int(rng.integers(len(bank)))]
                img = cv2.subtract(cv2.add(img, pos), neg)
            self.truth.frames.append(objs)
            yield img, objs
            last = len(self.truth.frames) == spec.frames
            for m in movers:
                before = m.x + m.size / 2
                m.x += m.speed
                m.phase += abs(m.speed) * 0.15
                after = m.x + m.size / 2
                # a crossing counts once a frame shows it (not after the last frame)
                if not last and ((before - spec.line_x) * (after - spec.line_x) < 0 or after == spec.line_x):
                    self.truth.crossings[CLASSES[m.cls]]["ltr" if m.speed > 0 else "rtl"] += 1
            movers = [m for m in movers if -m.size - 5 <= m.x <= WIDTH + 5]


def write_video(path: Path | str, spec: VideoSpec) -> GroundTruth:
    """Render ``spec`` to a video file (MJPG in .avi) and ``<path>.json`` with the ground truth."""
    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), spec.fps, spec.size)
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write video {path}")
    video = SceneVideo(spec)
    try:
        for frame, _ in video:
            writer.write(frame)
    finally:
        writer.release()
    path.with_suffix(path.suffix + ".json").write_text(video.truth.to_json())
    return video.truth


def quiet_frames(seed: int = 3, n: int = 30, night: bool = True, noise: float = 2.0) -> list[np.ndarray]:
    """Frames of an empty street: only sensor noise changes (the motion gate must stay closed)."""
    rng = np.random.default_rng(seed)
    bg = render_background(rng, night)
    return [_finish(bg.copy(), rng, night, noise) for _ in range(n)]
