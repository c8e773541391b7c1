"""Privacy filter for the rare frame that may leave the gateway (a snapshot an operator asked for).

Every person (``pedestrian``, ``person``, ``cyclist``) is blurred whole; every vehicle (``vehicle``, ``car``,
``truck``, ``bus``, ``motorcycle``) has the lower half of its box blurred, where number plates are. The
blur is strong (a kernel of a third of the box, then pixelation) so that faces and characters cannot be
recovered. No detector for plates is assumed: blurring the whole plate band is the safe choice.
"""

from __future__ import annotations

import cv2
import numpy as np

from gateway.vision.detector import Detection

PERSON_LABELS = frozenset({"pedestrian", "person", "cyclist", "bicycle"})
VEHICLE_LABELS = frozenset({"vehicle", "car", "truck", "bus", "motorcycle", "van"})


def _obscure(img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
    roi = img[y0:y1, x0:x1]
    if roi.size == 0:
        return
    h, w = roi.shape[:2]
    small = cv2.resize(roi, (max(1, w // 12), max(1, h // 12)), interpolation=cv2.INTER_AREA)
    k = max(3, (min(h, w) // 3) | 1)
    img[y0:y1, x0:x1] = cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST), (k, k), 0)


def blur_private(frame: np.ndarray, detections: list[Detection], *, pad: float = 0.1) -> np.ndarray:
    """A copy of ``frame`` with persons and plate areas obscured (boxes grown by ``pad`` of their size)."""
    out = frame.copy()
    fh, fw = frame.shape[:2]
    for d in detections:
        x0, y0, x1, y1 = d.box
        px, py = (x1 - x0) * pad, (y1 - y0) * pad
        if d.label in VEHICLE_LABELS:
            y0 = y0 + (y1 - y0) * 0.5
        elif d.label not in PERSON_LABELS:
            continue
        _obscure(out, max(0, int(x0 - px)), max(0, int(y0 - py)), min(fw, int(x1 + px)), min(fh, int(y1 + py)))
    return out
