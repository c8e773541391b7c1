"""Motion gate: decides on a small grey copy of each frame whether (and where) something moves.

A quiet street then costs one resize and a few tiny array operations per frame; the detector only runs
when the gate opens. The background is a running average, so slow light changes (dusk, clouds) fade
into it instead of opening the gate; sensor noise is filtered by a blur and a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

Region = tuple[int, int, int, int]  # x0, y0, x1, y1 in full-frame pixels


@dataclass
class GateResult:
    """What the gate saw in one frame: whether it moved, where, and the changed share of the image."""

    motion: bool
    regions: list[Region] = field(default_factory=list)
    changed: float = 0.0


class MotionGate:
    """Frame-difference motion detector on a downscaled grey frame.

    ``width``: analysis width in pixels (height keeps the aspect); ``threshold``: grey-level difference
    that counts as change; ``min_area``: smallest changed share of the frame (0..1) that opens the gate;
    ``learn``: how fast the background follows the scene (0..1 per frame); ``regions``: also say where
    (connected components; classifiers need it, whole-frame detectors do not).
    """

    def __init__(self, width: int = 160, threshold: int = 18, min_area: float = 0.0015,
                 learn: float = 0.05, regions: bool = True) -> None:
        if width < 16:
            raise ValueError("motion gate width must be at least 16 pixels")
        self.width = width
        self.threshold = threshold
        self.min_area = min_area
        self.learn = learn
        self._bg: np.ndarray | None = None
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        self._speck = np.ones((3, 3), np.uint8)
        self.regions = regions

    def reset(self) -> None:
        """Forget the background (after a reconnect the view may have changed)."""
        self._bg = None

    def __call__(self, frame: np.ndarray, small: np.ndarray | None = None) -> GateResult:
        """Judge ``frame``; ``small``: the frame already downscaled (e.g. to the detector's input), reused."""
        fh, fw = frame.shape[:2]
        if small is None:
            h = max(8, round(self.width * fh / fw))
            small = cv2.resize(frame, (self.width, h), interpolation=cv2.INTER_NEAREST)
        h, width = small.shape[:2]
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0)
        if self._bg is None or self._bg.shape != grey.shape:
            self._bg = grey.astype(np.float32)
            return GateResult(False)
        # Compensate a global brightness shift (dusk, auto-exposure) before comparing.
        shift = float(cv2.mean(grey)[0]) - float(cv2.mean(self._bg)[0])
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(self._bg, beta=shift))
        cv2.accumulateWeighted(grey, self._bg, self.learn)
        _, mask = cv2.threshold(diff, self.threshold, 255, cv2.THRESH_BINARY)
        changed = cv2.countNonZero(mask) / mask.size
        if changed < self.min_area:
            return GateResult(False, changed=changed)
        if not self.regions:  # detectors look at the whole frame: only "did something real move" matters
            solid = cv2.countNonZero(cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._speck)) / mask.size
            return GateResult(solid >= self.min_area, changed=changed)
        mask = cv2.dilate(mask, self._kernel, iterations=2)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        sx, sy = fw / width, fh / h
        min_px = self.min_area * mask.size
        regions = [
            (int(x * sx), int(y * sy), int(min(fw, (x + w) * sx)), int(min(fh, (y + hh) * sy)))
            for x, y, w, hh, area in stats[1:n]
            if area >= min_px
        ]
        return GateResult(bool(regions), regions, changed)
