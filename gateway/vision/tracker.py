"""Track detected objects across frames, so that zones and lines see objects rather than boxes.

Greedy matching by IoU, with a centre-distance fallback for fast or small objects (a pedestrian box
moves by more than its own width between two analysed frames when the detector skips frames). A track
keeps its label by majority vote, survives ``max_missed_s`` without a detection, and records its centre
history for line crossings and its stillness for stopped-object alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gateway.vision.detector import Detection

DIST_MIN_WIDTH = 0.5  # the distance fallback's horizontal unit: at least this share of the box height
VOTE_DECAY = 0.95  # per detection: a label seen 14 detections ago counts half
EDGE_VOTE = 0.3  # weight of a label seen on a box cut by the frame edge (a car's front looks like anything)


@dataclass
class Track:
    """An object followed across frames."""

    track_id: int
    box: tuple[float, float, float, float]
    first_seen: float
    last_seen: float
    score: float
    votes: dict[str, float] = field(default_factory=dict)
    score_sum: float = 0.0  # label -> summed score (partial views weigh less)
    hits: int = 1
    prev_center: tuple[float, float] | None = None
    still_since: float | None = None  # when it stopped moving, if it has
    velocity: tuple[float, float] = (0.0, 0.0)  # px/s, smoothed
    at_edge: bool = False  # its last box touched the frame's edge (partly in view)

    @property
    def label(self) -> str:
        return max(self.votes, key=self.votes.__getitem__) if self.votes else "?"

    def vote(self, d: Detection) -> None:
        """Count ``d``'s label for this track; a partial view (box at the frame edge) counts a third."""
        for label in self.votes:  # older views fade: the label follows what the track shows now
            self.votes[label] *= VOTE_DECAY
        self.votes[d.label] = self.votes.get(d.label, 0.0) + d.score * (EDGE_VOTE if d.truncated else 1.0)
        self.score_sum += d.score
        self.at_edge = d.truncated

    @property
    def quality(self) -> float:
        """Mean detector score over the track's detections (ghosts of overlaps score low)."""
        return self.score_sum / max(self.hits, 1)

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


class Tracker:
    """Greedy IoU / distance tracker.

    ``min_hits``: detections before a track is reported (filters one-frame false positives);
    ``max_missed_s``: how long a track lives without detections; ``still_px``: centre movement per second
    below which an object counts as stopped; ``birth_iou``: an unmatched detection overlapping a
    same-class track matched in the same frame at least this much starts no track (1.0: always starts one).
    """

    def __init__(self, *, min_iou: float = 0.2, max_dist: float = 1.0, min_hits: int = 2,
                 max_missed_s: float = 1.0, still_px_per_s: float = 8.0, birth_iou: float = 0.3) -> None:
        self.min_iou = min_iou
        self.birth_iou = birth_iou
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
        if tracks and detections:
            pairs = self._candidates(tracks, detections, now)
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
            vx, vy = (t.center[0] - old[0]) / dt, (t.center[1] - old[1]) / dt
            t.velocity = (0.5 * t.velocity[0] + 0.5 * vx, 0.5 * t.velocity[1] + 0.5 * vy)
            speed = (vx * vx + vy * vy) ** 0.5
            if speed < self.still_px_per_s:
                t.still_since = t.still_since if t.still_since is not None else t.last_seen
            else:
                t.still_since = None
            t.last_seen = now
            t.score = d.score
            t.vote(d)
            t.hits += 1
            updated.append(t)
        for di, d in enumerate(detections):
            if di in used_d or self._second_view(d, updated):
                continue
            t = Track(self._next_id, d.box, now, now, d.score)
            t.vote(d)
            self._next_id += 1
            self.tracks[t.track_id] = t
            updated.append(t)
        ended = [t for t in self.tracks.values() if now - t.last_seen > self.max_missed_s]
        for t in ended:
            del self.tracks[t.track_id]
        return updated, ended

    def _second_view(self, d: Detection, seen_now: list[Track]) -> bool:
        """Whether an unmatched detection overlaps a same-class track matched in this frame by ``birth_iou``:
        a second, shifted box on an object already followed (typically one partly hidden behind a passing
        object), not a new object. Made a track of its own, it takes over from the first one and splits
        the object's path in two, so a line crossing falls between them and is lost."""
        if self.birth_iou >= 1.0:
            return False
        for t in seen_now:
            if t.label != d.label:
                continue
            ix = min(t.box[2], d.box[2]) - max(t.box[0], d.box[0])
            iy = min(t.box[3], d.box[3]) - max(t.box[1], d.box[1])
            if ix <= 0 or iy <= 0:
                continue
            inter = ix * iy
            union = ((t.box[2] - t.box[0]) * (t.box[3] - t.box[1]) + (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])
                     - inter)
            if inter >= self.birth_iou * union:
                return True
        return False

    def _candidates(self, tracks: list[Track], detections: list[Detection],
                    now: float) -> list[tuple[float, int, int]]:
        """(affinity, track index, detection index) for every plausible pair, numpy for the T×N part."""
        # constant-velocity prediction: fast objects overlap where they will be, not where they were
        dt = np.array([now - t.last_seen for t in tracks])
        vel = np.array([t.velocity for t in tracks])
        tb = np.array([t.box for t in tracks]) + np.repeat(vel * dt[:, None], 2, axis=1)
        db = np.array([d.box for d in detections])
        ix = np.clip(np.minimum(tb[:, None, 2], db[None, :, 2]) - np.maximum(tb[:, None, 0], db[None, :, 0]), 0, None)
        iy = np.clip(np.minimum(tb[:, None, 3], db[None, :, 3]) - np.maximum(tb[:, None, 1], db[None, :, 1]), 0, None)
        inter = ix * iy
        area_t = (tb[:, 2] - tb[:, 0]) * (tb[:, 3] - tb[:, 1])
        area_d = (db[:, 2] - db[:, 0]) * (db[:, 3] - db[:, 1])
        overlap = inter / np.maximum(area_t[:, None] + area_d[None, :] - inter, 1e-9)
        # centre distance in units of the track's size (tolerant along the direction of travel); the width
        # unit is at least half the height: a walking person's box is narrow and jitters with the stride
        tw = np.maximum(np.maximum(tb[:, 2] - tb[:, 0], 1.0), DIST_MIN_WIDTH * (tb[:, 3] - tb[:, 1]))[:, None]
        th = np.maximum(tb[:, 3] - tb[:, 1], 1.0)[:, None]
        dx = ((db[None, :, 0] + db[None, :, 2]) - (tb[:, None, 0] + tb[:, None, 2])) / 2 / tw
        dy = ((db[None, :, 1] + db[None, :, 3]) - (tb[:, None, 1] + tb[:, None, 3])) / 2 / th
        dist = np.sqrt(dx * dx + dy * dy)
        near = np.where(dt <= 0.5, self.max_dist, self.max_dist / 2)[:, None]  # an old track does not jump far
        out: list[tuple[float, int, int]] = []
        for ti, di in zip(*np.nonzero((overlap >= self.min_iou) | (dist <= near))):
            t, d = tracks[ti], detections[di]
            o = float(overlap[ti, di])
            # Another class needs a clear overlap (a car passing in front of a pedestrian must not take
            # over the pedestrian's track), unless the object is still coming into view at the edge.
            same = d.label == t.label or t.at_edge or d.truncated
            if o >= (self.min_iou if same else max(0.5, self.min_iou)):
                out.append((1.0 + o, int(ti), int(di)))
            elif d.label == t.label and dist[ti, di] <= near[ti, 0]:
                out.append((1.0 - float(dist[ti, di]) / (float(near[ti, 0]) + 1e-9), int(ti), int(di)))
        return out

    def update_missing(self, now: float) -> tuple[list[Track], list[Track]]:
        """A frame analysed without running the detector: only end tracks that are too old."""
        ended = [t for t in self.tracks.values() if now - t.last_seen > self.max_missed_s]
        for t in ended:
            del self.tracks[t.track_id]
        return [], ended
