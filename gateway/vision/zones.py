"""Zones (polygons) and counting lines: turn tracks into the events the operations center wants.

Events (``VisionEvent.kind``):

* ``zone_enter`` / ``zone_leave``: a tracked object's ground point (bottom centre of its box) entered or
  left a zone; ``zone_leave`` carries the ``dwell_s`` it spent there;
* ``line_cross``: the ground point crossed a counting line, with the class and the ``direction``
  (``a_to_b`` = from the left of the line's first→second point to its right, or the names configured);
* ``dwell``: an object has been in a zone longer than the zone's ``dwell_s`` (once per object and zone);
* ``stopped``: an object has not moved for the zone's ``stopped_s`` (a stopped car in a no-stopping zone);
* ``counts``: every ``interval_s``, line crossings per class and direction, zone entries and occupancy.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from gateway.vision.tracker import Track

Point = tuple[float, float]


@dataclass(frozen=True)
class Zone:
    """A polygon in frame pixels, with optional class filter and dwell / stopped alert thresholds."""

    name: str
    polygon: tuple[Point, ...]
    classes: frozenset[str] = frozenset()  # empty: every class
    dwell_s: float | None = None
    stopped_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_contour", np.array(self.polygon, np.float32).reshape(-1, 1, 2))

    def contains(self, p: Point) -> bool:
        return cv2.pointPolygonTest(self._contour, (float(p[0]), float(p[1])), False) >= 0  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CountLine:
    """A counting line from ``a`` to ``b``; ``directions`` names crossings (left→right of a→b, right→left)."""

    name: str
    a: Point
    b: Point
    classes: frozenset[str] = frozenset()
    directions: tuple[str, str] = ("a_to_b", "b_to_a")
    margin: float = 3.0  # pixels either side that do not count: no double counts from jitter on the line

    def side(self, p: Point) -> float:
        """Signed distance of ``p`` from the line (positive on the left of a→b, in image coordinates)."""
        dx, dy = self.b[0] - self.a[0], self.b[1] - self.a[1]
        length = max((dx * dx + dy * dy) ** 0.5, 1e-9)
        return (dx * (p[1] - self.a[1]) - dy * (p[0] - self.a[0])) / -length

    def rate(self, v: Point) -> float:
        """How fast a point moving with velocity ``v`` changes its :meth:`side` (px/s)."""
        dx, dy = self.b[0] - self.a[0], self.b[1] - self.a[1]
        length = max((dx * dx + dy * dy) ** 0.5, 1e-9)
        return (dx * v[1] - dy * v[0]) / -length

    def within(self, p: Point, q: Point) -> bool:
        """Whether the move p→q passes between the line's end points (not beyond them)."""
        dx, dy = self.b[0] - self.a[0], self.b[1] - self.a[1]
        length2 = max(dx * dx + dy * dy, 1e-9)
        mid = ((p[0] + q[0]) / 2, (p[1] + q[1]) / 2)
        t = ((mid[0] - self.a[0]) * dx + (mid[1] - self.a[1]) * dy) / length2
        return -0.05 <= t <= 1.05


@dataclass
class VisionEvent:
    """One analytics event from a camera (converted to a gateway outbox Event by the service)."""

    kind: str
    ts: float
    body: dict[str, Any] = field(default_factory=dict)


def ground_point(track: Track) -> Point:
    """Where the object touches the ground: the bottom centre of its box."""
    return (track.box[0] + track.box[2]) / 2, track.box[3]


class Analytics:
    """Zone membership, line crossings, dwell/stopped alerts and per-interval counts for one camera."""

    def __init__(self, zones: list[Zone], lines: list[CountLine], *, interval_s: float = 60.0,
                 min_hits: int = 2, edge_wait_s: float = 1.0, min_quality: float = 0.5) -> None:
        self.zones = zones
        self.min_quality = min_quality
        self.edge_wait_s = edge_wait_s
        self.lines = lines
        self.interval_s = interval_s
        self.min_hits = min_hits
        self._inside: dict[tuple[int, str], float] = {}  # (track, zone) -> entered at
        self._alerted: set[tuple[int, str, str]] = set()
        self._side: dict[tuple[int, str], int] = {}  # (track, line) -> -1 / +1
        self._labels: dict[int, str] = {}
        self._tracks: dict[int, Track] = {}  # live tracks by id
        self._kin: dict[int, list[int]] = {}  # track -> live tracks that may follow the same object (Track.kin)
        self._line_counts: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
        self._zone_entries: dict[str, dict[str, int]] = defaultdict(dict)
        self._interval_start: float | None = None
        self.totals: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))

    def occupancy(self) -> dict[str, dict[str, int]]:
        """Objects in each zone right now, by class."""
        out: dict[str, dict[str, int]] = {z.name: {} for z in self.zones}
        for (tid, zone), _ in self._inside.items():
            label = self._labels.get(tid, "?")
            out[zone][label] = out[zone].get(label, 0) + 1
        return out

    def update(self, tracks: list[Track], ended: list[Track], now: float) -> list[VisionEvent]:
        """Feed the tracker's output for one analysed frame; returns the events it caused."""
        events: list[VisionEvent] = []
        if self._interval_start is None:
            self._interval_start = now
        for t in tracks:
            self._labels[t.track_id] = t.label
            if t.track_id not in self._tracks:
                self._new_track(t)
            p = ground_point(t)
            confirmed = t.hits >= self.min_hits and t.quality >= self.min_quality
            for line in self.lines:
                self._check_line(line, t, p, confirmed, now, events)
            if not confirmed:
                continue
            # A box cut by the frame edge is unreliable (class and extent): an object coming into view is
            # not in a zone yet (for at most edge_wait_s), and one leaving the view keeps its zones until
            # its track ends.
            if t.at_edge and (now - t.first_seen < self.edge_wait_s
                              or any((t.track_id, z.name) in self._inside for z in self.zones)):
                continue
            for zone in self.zones:
                if zone.classes and t.label not in zone.classes:
                    continue
                key = (t.track_id, zone.name)
                if zone.contains(p):
                    if key not in self._inside:
                        self._inside[key] = now
                        entries = self._zone_entries[zone.name]
                        entries[t.label] = entries.get(t.label, 0) + 1
                        events.append(VisionEvent("zone_enter", now, {"zone": zone.name, "track": t.track_id,
                                                                       "label": t.label}))
                    self._check_alerts(zone, t, now, events)
                elif key in self._inside:
                    events.append(self._leave(zone.name, t, now))
        for t in ended:
            for zone in self.zones:
                if (t.track_id, zone.name) in self._inside:
                    events.append(self._leave(zone.name, t, now))
            for line in self.lines:
                self._side.pop((t.track_id, line.name), None)
            self._tracks.pop(t.track_id, None)
            for k in self._kin.pop(t.track_id, []):
                if k in self._kin:
                    self._kin[k] = [x for x in self._kin[k] if x != t.track_id]
            self._labels.pop(t.track_id, None)
            self._alerted = {a for a in self._alerted if a[0] != t.track_id}
        if now - self._interval_start >= self.interval_s:
            events.append(self.flush_counts(now))
        return events

    def _new_track(self, t: Track) -> None:
        """A track seen for the first time. One born next to a same-class track (its ``kin``) is often
        the same object, its path split in two where the old track took another box: it starts on its kin's
        side of each line rather than on its own, so that a split right at a line does not lose the
        crossing (neither part saw both sides)."""
        self._tracks[t.track_id] = t
        if t.kin is None or t.kin not in self._tracks:
            return
        self._kin.setdefault(t.kin, []).append(t.track_id)
        self._kin.setdefault(t.track_id, []).append(t.kin)
        for line in self.lines:
            side = self._side.get((t.kin, line.name))
            if side is not None:
                self._side[(t.track_id, line.name)] = side

    def _leave(self, zone: str, t: Track, now: float) -> VisionEvent:
        entered = self._inside.pop((t.track_id, zone))
        return VisionEvent("zone_leave", now, {"zone": zone, "track": t.track_id, "label": t.label,
                                               "dwell_s": round(now - entered, 1)})

    def _check_line(self, line: CountLine, t: Track, p: Point, confirmed: bool, now: float,
                    events: list[VisionEvent]) -> None:
        if line.classes and t.label not in line.classes:
            return
        d = line.side(p)
        if abs(d) < line.margin:
            return
        side = 1 if d > 0 else -1
        key = (t.track_id, line.name)
        before = self._side.get(key)
        if before is None:
            self._side[key] = side
            return
        # The side a track is on changes only with a counted crossing. A crossing not counted yet stays
        # pending while the track is on the other side: it counts once the track is confirmed (a weak
        # pedestrian at night often is only after some detections), and only while the track's own
        # averaged motion goes that way. A ground point that jumps back across the line against it is a
        # box taking another object or a merged box for a frame or two, not an object turning round: it
        # counted twice or three times (there and back) before.
        if before == side or not confirmed or line.rate(t.velocity) * side <= 0:
            return
        self._side[key] = side
        # Kin that lost its object in this frame and moves the same way is, most likely, the same object
        # seen by two tracks: it takes the new side too, so that it does not count this crossing again when
        # it finds the object back. (Kin moving another way, or still seeing its own object, is left alone.)
        for k in self._kin.get(t.track_id, ()):
            other, kin_key = self._tracks[k], (k, line.name)
            if other.last_seen < now and self._side.get(kin_key) == before and line.rate(other.velocity) * side > 0:
                self._side[kin_key] = side
        prev = t.prev_center if t.prev_center is not None else p
        if not line.within((prev[0], p[1]), p):
            return
        direction = line.directions[0] if before > 0 else line.directions[1]
        per_class = self._line_counts[line.name][t.label]
        per_class[direction] = per_class.get(direction, 0) + 1
        total = self.totals[line.name][t.label]
        total[direction] = total.get(direction, 0) + 1
        events.append(VisionEvent("line_cross", now, {"line": line.name, "label": t.label,
                                                      "direction": direction, "track": t.track_id}))

    def _check_alerts(self, zone: Zone, t: Track, now: float, events: list[VisionEvent]) -> None:
        entered = self._inside[(t.track_id, zone.name)]
        if zone.dwell_s is not None and now - entered >= zone.dwell_s:
            key = (t.track_id, zone.name, "dwell")
            if key not in self._alerted:
                self._alerted.add(key)
                events.append(VisionEvent("dwell", now, {"zone": zone.name, "track": t.track_id, "label": t.label,
                                                         "seconds": round(now - entered, 1)}))
        if zone.stopped_s is not None and t.still_since is not None and now - t.still_since >= zone.stopped_s:
            key = (t.track_id, zone.name, "stopped")
            if key not in self._alerted:
                self._alerted.add(key)
                events.append(VisionEvent("stopped", now, {"zone": zone.name, "track": t.track_id,
                                                           "label": t.label,
                                                           "seconds": round(now - t.still_since, 1)}))

    def tick(self, now: float) -> list[VisionEvent]:
        """The ``counts`` event if its interval has ended (called when no frame comes: quiet or lost camera)."""
        if self._interval_start is None:
            self._interval_start = now
        if now - self._interval_start >= self.interval_s:
            return [self.flush_counts(now)]
        return []

    def flush_counts(self, now: float) -> VisionEvent:
        """The ``counts`` event for the interval ending now; starts a new interval."""
        start = self._interval_start if self._interval_start is not None else now
        body = {
            "interval_s": round(now - start, 1),
            "lines": {k: {lb: dict(v) for lb, v in per.items()} for k, per in self._line_counts.items()},
            "zones": {k: dict(v) for k, v in self._zone_entries.items()},
            "occupancy": self.occupancy(),
        }
        self._line_counts.clear()
        self._zone_entries.clear()
        self._interval_start = now
        return VisionEvent("counts", now, body)
