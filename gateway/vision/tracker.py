"""Track detected objects across frames, so that zones and lines see objects rather than boxes.

Greedy matching by IoU, with a centre-distance fallback for fast or small objects (a pedestrian box
moves by more than its own width between two analysed frames when the detector skips frames). A track
keeps its label by majority vote, survives ``max_missed_s`` without a detection, and records its centre
history for line crossings and its stillness for stopped-object alerts.
"""

from __future__ import annotations

import math
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
    # the label with the most votes, kept by vote(): the tracker and analytics ask for it dozens of times
    # per frame, and the votes change only there
    label: str = "?"
    # the track this one may continue (see Tracker.update), if any: its id
    kin: int | None = None

    def vote(self, d: Detection) -> None:
        """Count ``d``'s label for this track; a partial view (box at the frame edge) counts a third."""
        votes = self.votes
        for label in votes:  # older views fade: the label follows what the track shows now
            votes[label] *= VOTE_DECAY
        votes[d.label] = votes.get(d.label, 0.0) + d.score * (EDGE_VOTE if d.truncated else 1.0)
        self.label = max(votes, key=votes.__getitem__)
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
    same-class track matched in the same frame at least this much starts no track (1.0: always starts one);
    ``velocity_tau_s``: time constant of the velocity average the prediction uses.
    """

    def __init__(
        self,
        *,
        min_iou: float = 0.2,
        max_dist: float = 1.0,
        min_hits: int = 2,
        max_missed_s: float = 1.0,
        still_px_per_s: float = 8.0,
        birth_iou: float = 0.15,
        velocity_tau_s: float = 1.0,
    ) -> None:
        self.min_iou = min_iou
        self.birth_iou = birth_iou
        self.max_dist = max_dist
        self.min_hits = min_hits
        self.max_missed_s = max_missed_s
        self.still_px_per_s = still_px_per_s
        self.velocity_tau_s = velocity_tau_s
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
            t.box = box = d.box
            vx, vy = ((box[0] + box[2]) / 2 - old[0]) / dt, ((box[1] + box[3]) / 2 - old[1]) / dt
            # an exponential average over ~velocity_tau_s: the box centre jitters by a few px between frames,
            # tens of px/s at 15 frames/s, as much as a pedestrian's whole speed
            a = 1.0 - math.exp(-dt / self.velocity_tau_s)
            t.velocity = (t.velocity[0] + a * (vx - t.velocity[0]), t.velocity[1] + a * (vy - t.velocity[1]))
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
        # A detection left over although it lay inside a same-class track's gate may be that track's object
        # seen again after the track took another box (a stale or second box of the same object, or a
        # neighbour's): its new track remembers the best such track (pairs are sorted best first) as its
        # kin. The tracker itself does nothing with it; the line counts use it (zones.Analytics).
        kin: dict[int, int] = {}
        for _, ti, di in pairs:
            if di not in used_d and di not in kin and tracks[ti].label == detections[di].label:
                kin[di] = tracks[ti].track_id
        for di, d in enumerate(detections):
            if di in used_d or self._second_view(d, updated):
                continue
            t = Track(self._next_id, d.box, now, now, d.score, kin=kin.get(di))
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
            union = (
                (t.box[2] - t.box[0]) * (t.box[3] - t.box[1]) + (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) - inter
            )
            if inter >= self.birth_iou * union:
                return True
        return False

    def predicted(self, now: float) -> dict[int, tuple[float, float, float, float]]:
        """Where each track's box is expected at ``now`` (track id -> box), as matching uses it."""
        tracks = list(self.tracks.values())
        if not tracks:
            return {}
        tb, _ = self._predict(tracks, now)
        return {t.track_id: (b[0], b[1], b[2], b[3]) for t, b in zip(tracks, tb.tolist())}

    @staticmethod
    def _predict(tracks: list[Track], now: float) -> tuple[np.ndarray, np.ndarray]:
        """Constant-velocity prediction of ``tracks``' boxes at ``now`` (T×4), and the time since each was seen.

        Fast objects overlap where they will be, not where they were. The box keeps its size and moves by
        the track's averaged velocity: (x0, y0, x1, y1) + (vx, vy, vx, vy)·dt.
        """
        ta = np.array([(*t.box, *t.velocity, t.last_seen) for t in tracks])
        dt = now - ta[:, 6]
        shift = ta[:, 4:6] * dt[:, None]
        return ta[:, :4] + shift[:, (0, 1, 0, 1)], dt

    def _candidates(self, tracks: list[Track], detections: list[Detection], now: float) -> list[tuple[float, int, int]]:
        """(affinity, track index, detection index) for every plausible pair, numpy for the T×N part.

        A busy street has 15 tracks and 10 boxes a frame: the arrays are tiny, so the numpy calls are
        kept few and the per-pair loop reads plain Python lists (indexing numpy scalars cost more than
        the arithmetic).
        """
        tb, dt = self._predict(tracks, now)
        db = np.array([d.box for d in detections])
        tx0, ty0, tx1, ty1 = tb[:, 0, None], tb[:, 1, None], tb[:, 2, None], tb[:, 3, None]
        dx0, dy0, dx1, dy1 = db[:, 0], db[:, 1], db[:, 2], db[:, 3]
        ix = np.maximum(np.minimum(tx1, dx1) - np.maximum(tx0, dx0), 0.0)
        iy = np.maximum(np.minimum(ty1, dy1) - np.maximum(ty0, dy0), 0.0)
        inter = ix * iy
        area_t = (tx1 - tx0) * (ty1 - ty0)
        area_d = (dx1 - dx0) * (dy1 - dy0)
        overlap = inter / np.maximum(area_t + area_d - inter, 1e-9)
        # centre distance in units of the track's size (tolerant along the direction of travel); the width
        # unit is at least half the height: a walking person's box is narrow and jitters with the stride
        tw = np.maximum(np.maximum(tx1 - tx0, 1.0), DIST_MIN_WIDTH * (ty1 - ty0))
        th = np.maximum(ty1 - ty0, 1.0)
        ddx = ((dx0 + dx1) - (tx0 + tx1)) / 2 / tw
        ddy = ((dy0 + dy1) - (ty0 + ty1)) / 2 / th
        dist = np.sqrt(ddx * ddx + ddy * ddy)
        near = np.where(dt <= 0.5, self.max_dist, self.max_dist / 2)  # an old track does not jump far
        hit = (overlap >= self.min_iou) | (dist <= near[:, None])
        t_idx, d_idx = np.nonzero(hit)
        if not len(t_idx):
            return []
        overlap_l, dist_l, near_l = overlap.tolist(), dist.tolist(), near.tolist()
        strict = max(0.5, self.min_iou)
        out: list[tuple[float, int, int]] = []
        for ti, di in zip(t_idx.tolist(), d_idx.tolist()):
            t, d = tracks[ti], detections[di]
            o = overlap_l[ti][di]
            # Another class needs a clear overlap (a car passing in front of a pedestrian must not take
            # over the pedestrian's track), unless the object is still coming into view at the edge.
            same = d.label == t.label or t.at_edge or d.truncated
            if o >= (self.min_iou if same else strict):
                out.append((1.0 + o, ti, di))
            elif d.label == t.label and dist_l[ti][di] <= near_l[ti]:
                out.append((1.0 - dist_l[ti][di] / (near_l[ti] + 1e-9), ti, di))
        return out

    def update_missing(self, now: float) -> tuple[list[Track], list[Track]]:
        """A frame analysed without running the detector: only end tracks that are too old."""
        ended = [t for t in self.tracks.values() if now - t.last_seen > self.max_missed_s]
        for t in ended:
            del self.tracks[t.track_id]
        return [], ended
