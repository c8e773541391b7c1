"""Track detected objects across frames, so that zones and lines see objects rather than boxes.

Greedy matching by IoU, with a centre-distance fallback for fast or small objects (a pedestrian box
moves by more than its own width between two analysed frames when the detector skips frames). A track
keeps its label by majority vote, survives ``max_missed_s`` without a detection, and records its centre
history for line crossings and its stillness for stopped-object alerts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from gateway.vision.detector import Detection
from gateway.vision.metrics import iou


@dataclass
class Track:
    """An object followed across frames."""

    track_id: int
    box: tuple[float, float, float, float]
    first_seen: float
    last_seen: float
    score: float
    votes: Counter[str] = field(default_factory=Counter)
    hits: int = 1
    prev_center: tuple[float, float] | None = None
    still_since: float | None = None  # when it stopped moving, if it has

    @property
    def label(self) -> str:
        return self.votes.most_common(1)[0][0] if self.votes else "?"

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


class Tracker:
    """Greedy IoU / distance tracker.

    ``min_hits``: detections before a track is reported (filters one-frame false positives);
    ``max_missed_s``: how long a track lives without detections; ``still_px``: centre movement per second
    below which an object counts as stopped.
    """

    def __init__(self, *, min_iou: float = 0.2, max_dist: float = 1.5, min_hits: int = 2,
                 max_missed_s: float = 1.0, still_px_per_s: float = 8.0) -> None:
        self.min_iou = min_iou
        self.max_dist = max_dist
        self.min_hits = min_hits
        self.max_missed_s = max_missed_s
        self.still_px_per_s = still_px_per_s
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def confirmed(self) -> list[Track]:
        """Tracks seen often enough to be reported."""
        return [t for t in self.tracks.values() if t.hits >= self.min_hits]

    def update(self, detections: list[Detection], now: float) -> tuple[list[Track], list[Track]]:
        """Feed one frame's detections at time ``now`` (seconds). Returns (updated tracks, tracks ended)."""
        pairs: list[tuple[float, int, int]] = []
        tracks = list(self.tracks.values())
        for ti, t in enumerate(tracks):
            tw = max(t.box[2] - t.box[0], 1.0)
            th = max(t.box[3] - t.box[1], 1.0)
            tc = t.center
            for di, d in enumerate(detections):
                overlap = iou(t.box, d.box)
                if overlap >= self.min_iou:
                    pairs.append((1.0 + overlap, ti, di))
                    continue
                dc = d.center
                # distance in units of the track's size: tolerant along the direction of travel
                dist = ((dc[0] - tc[0]) / tw) ** 2 + ((dc[1] - tc[1]) / th) ** 2
                if dist <= self.max_dist**2 and d.label == t.label:
                    pairs.append((1.0 - dist**0.5 / (self.max_dist + 1e-9), ti, di))
        pairs.sort(reverse=True)
        used_t: set[int] = set()
        used_d: set[int] = set()
        updated: list[Track] = []
        for _, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            t, d = tracks[ti], detections[di]
            dt = max(now - t.last_seen, 1e-3)
            old = t.center
            t.prev_center = old
            t.box = d.box
            speed = ((t.center[0] - old[0]) ** 2 + (t.center[1] - old[1]) ** 2) ** 0.5 / dt
            if speed < self.still_px_per_s:
                t.still_since = t.still_since if t.still_since is not None else t.last_seen
            else:
                t.still_since = None
            t.last_seen = now
            t.score = d.score
            t.votes[d.label] += 1
            t.hits += 1
            updated.append(t)
        for di, d in enumerate(detections):
            if di in used_d:
                continue
            t = Track(self._next_id, d.box, now, now, d.score, Counter({d.label: 1}))
            self._next_id += 1
            self.tracks[t.track_id] = t
            updated.append(t)
        ended = [t for t in self.tracks.values() if now - t.last_seen > self.max_missed_s]
        for t in ended:
            del self.tracks[t.track_id]
        return updated, ended

    def update_missing(self, now: float) -> tuple[list[Track], list[Track]]:
        """A frame analysed without running the detector: only end tracks that are too old."""
        ended = [t for t in self.tracks.values() if now - t.last_seen > self.max_missed_s]
        for t in ended:
            del self.tracks[t.track_id]
        return [], ended
