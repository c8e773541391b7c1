"""The tracker's constant-velocity prediction: ``Tracker.predicted`` as the matching uses it.

No model needed: detections are given, time is passed in (virtual time). A track's velocity is an exponential
average of its measured centre speeds with a time constant of ``velocity_tau_s`` (1 s), starting at rest.
"""

from __future__ import annotations

import math

import pytest

from gateway.vision.detector import Detection
from gateway.vision.tracker import Tracker


def _car(x: float, y: float = 300.0) -> Detection:
    return Detection("vehicle", 0.9, (x, y, x + 60.0, y + 40.0))  # 60 × 40 px


def test_a_track_moving_right_is_predicted_shifted_right_with_its_size_kept() -> None:
    tr = Tracker(min_hits=1)
    for i in range(6):  # 10 px every 0.1 s: 100 px/s to the right, no vertical motion
        tr.update([_car(100.0 + 10.0 * i)], i * 0.1)
    (track,) = tr.tracks.values()
    vx, vy = track.velocity
    # five measurements of 100 px/s averaged from rest with a = 1 - exp(-0.1 s / 1 s)
    assert vx == pytest.approx(100.0 * (1.0 - math.exp(-0.5))) and vy == 0.0
    assert tr.predicted(0.5)[track.track_id] == pytest.approx(track.box)  # no time passed: where it was
    # last seen at t = 0.5 at x 150..210, rows 300..340; 0.4 s later: moved right by vx·0.4, same rows
    (box,) = tr.predicted(0.9).values()
    assert box == pytest.approx((150.0 + 0.4 * vx, 300.0, 210.0 + 0.4 * vx, 340.0))
    assert (box[2] - box[0], box[3] - box[1]) == pytest.approx((60.0, 40.0))


def test_a_track_moving_down_left_is_predicted_along_both_axes() -> None:
    tr = Tracker(min_hits=1)
    for i in range(4):  # (-20, +10) px every 0.1 s
        tr.update([_car(300.0 - 20.0 * i, 200.0 + 10.0 * i)], i * 0.1)
    (track,) = tr.tracks.values()
    vx, vy = track.velocity
    assert vx < 0.0 < vy and vx == pytest.approx(-2.0 * vy)
    (box,) = tr.predicted(0.5).values()  # last at (240, 230); 0.2 s later
    assert box == pytest.approx((240.0 + 0.2 * vx, 230.0 + 0.2 * vy, 300.0 + 0.2 * vx, 270.0 + 0.2 * vy))


def test_one_jittery_box_barely_moves_the_velocity() -> None:
    # a car at 100 px/s for 3 s, then one box 8 px off vertically (a merged box, a shadow): the vertical
    # speed measured for that frame is 80 px/s, the velocity takes less than a tenth of it
    tr = Tracker(min_hits=1)
    for i in range(30):
        tr.update([_car(100.0 + 10.0 * i)], i * 0.1)
    (track,) = tr.tracks.values()
    assert track.velocity[0] == pytest.approx(100.0, rel=0.06)
    tr.update([_car(400.0, 308.0)], 3.0)
    assert 0.0 < track.velocity[1] < 8.0


def test_a_walker_hidden_for_most_of_a_second_keeps_its_track_where_the_prediction_finds_it() -> None:
    # 45 px/s for 2 s; hidden for 0.9 s it reappears 45 px on, more than its own width (30 px) further: only
    # the prediction overlaps it (the distance fallback of an old track reaches half a box)
    tr = Tracker(min_hits=2)
    walk = [Detection("pedestrian", 0.9, (100.0 + 4.5 * i, 300.0, 130.0 + 4.5 * i, 380.0)) for i in range(21)]
    for i, d in enumerate(walk):
        tr.update([d], i * 0.1)
    (first,) = tr.tracks.values()
    t = 2.0
    for _ in range(8):  # behind a passing van: the detector runs and sees nothing
        t += 0.1
        tr.update([], t)
    t += 0.1
    x = walk[-1].box[0] + 45.0
    back = Detection("pedestrian", 0.9, (x, 300.0, x + 30.0, 380.0))
    updated, ended = tr.update([back], t)
    assert [u.track_id for u in updated] == [first.track_id] and not ended
    assert list(tr.tracks) == [first.track_id] and first.box == back.box


def test_a_still_track_is_predicted_where_it_was() -> None:
    tr = Tracker(min_hits=1)
    for i in range(5):
        tr.update([_car(200.0)], i * 0.1)
    (track,) = tr.tracks.values()
    assert track.velocity == (0.0, 0.0)
    assert tr.predicted(3.0) == {track.track_id: pytest.approx((200.0, 300.0, 260.0, 340.0))}
    assert Tracker().predicted(1.0) == {}


def test_a_second_box_on_a_tracked_object_starts_no_track_but_a_neighbour_does() -> None:
    # A pedestrian (30 px wide) walks east; for five frames the detector also gives a second box lagging
    # 20 px behind it (IoU 0.2: a stale or partial view at night). It is a second view of the tracked
    # object, not a new one: a track started from it split the object's path (and took over its counts).
    # A second pedestrian walking alongside, 26 px apart (IoU 0.07), is a new object and gets a track.
    def ped(x: float) -> Detection:
        return Detection("pedestrian", 0.9, (x, 300.0, x + 30.0, 400.0))

    tr = Tracker(min_hits=1)
    for i in range(20):
        x = 100.0 + 3.0 * i
        tr.update([ped(x), ped(x - 20.0)] if 10 <= i < 15 else [ped(x)], i / 15)
    assert len(tr.tracks) == 1
    for i in range(20, 25):
        x = 100.0 + 3.0 * i
        tr.update([ped(x), ped(x + 26.0)], i / 15)
    assert len(tr.tracks) == 2
