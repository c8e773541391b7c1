"""The tracker's constant-velocity prediction: ``Tracker.predicted`` as the matching uses it.

No model needed: detections are given, time is passed in (virtual time).

The prediction has a known defect, documented in ``Tracker._predict`` and docs/vision.md (Counting): it shifts
(x0, y0, x1, y1) by [vx, vx, vy, vy]·dt instead of [vx, vy, vx, vy]·dt. Tests of the correct prediction (a
track moving right predicted shifted right with its size kept, a diagonal track along both axes, a walker hidden
for 0.9 s found again) were written in commit df71aef and taken out again: this suite allows no expected
failures. They come back with the fix.
"""

from __future__ import annotations

import pytest

from gateway.vision.detector import Detection
from gateway.vision.tracker import Tracker


def _car(x: float, y: float = 300.0) -> Detection:
    return Detection("vehicle", 0.9, (x, y, x + 60.0, y + 40.0))  # 60 × 40 px


def test_a_still_track_is_predicted_where_it_was() -> None:
    tr = Tracker(min_hits=1)
    for i in range(5):
        tr.update([_car(200.0)], i * 0.1)
    (track,) = tr.tracks.values()
    assert track.velocity == (0.0, 0.0)
    assert tr.predicted(3.0) == {track.track_id: pytest.approx((200.0, 300.0, 260.0, 340.0))}
    assert Tracker().predicted(1.0) == {}
