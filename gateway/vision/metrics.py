"""Detection accuracy: average precision at IoU 0.5 (Pascal VOC style, all-point interpolation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box4 = tuple[float, float, float, float]  # two corners, any consistent order (e.g. y0 x0 y1 x1)


def iou(a: Box4, b: Box4) -> float:
    """Intersection over union of two corner boxes."""
    i0 = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    i1 = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = i0 * i1
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def average_precision(
    predictions: Sequence[Sequence[tuple[int, float, Box4]]],
    truth: Sequence[Sequence[tuple[int, Box4]]],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> float:
    """mAP over classes that occur in ``truth``.

    ``predictions[i]``: (class, score, box) for image i; ``truth[i]``: (class, box). A prediction is a true
    positive if it overlaps a not-yet-matched truth box of its class with IoU ≥ ``iou_threshold``.
    """
    aps = []
    for cls in range(num_classes):
        n_true = sum(1 for img in truth for c, _ in img if c == cls)
        if n_true == 0:
            continue
        scored = [(s, i, b) for i, img in enumerate(predictions) for c, s, b in img if c == cls]
        scored.sort(key=lambda t: -t[0])
        used: set[tuple[int, int]] = set()
        tp = np.zeros(len(scored))
        for k, (_, i, box) in enumerate(scored):
            best, best_j = iou_threshold, -1
            for j, (c, tbox) in enumerate(truth[i]):
                if c != cls or (i, j) in used:
                    continue
                v = iou(box, tbox)
                if v >= best:
                    best, best_j = v, j
            if best_j >= 0:
                used.add((i, best_j))
                tp[k] = 1
        if not len(scored):
            aps.append(0.0)
            continue
        ctp = np.cumsum(tp)
        recall = ctp / n_true
        precision = ctp / np.arange(1, len(scored) + 1)
        # precision envelope, then area under the stepwise curve
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        for k in range(len(mpre) - 2, -1, -1):
            mpre[k] = max(mpre[k], mpre[k + 1])
        idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
        aps.append(float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1])))
    return float(np.mean(aps)) if aps else 0.0
