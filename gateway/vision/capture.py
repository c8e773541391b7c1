"""Frame sources: OpenCV capture from a V4L2 device, an RTSP/HTTP stream or a video file.

:func:`open_source` turns a camera's ``source`` string into a :class:`FrameSource`; the camera worker
(:mod:`gateway.vision.pipeline`) reads from it in its own thread and reopens it with backoff when it fails.
Files are played at the configured frame rate (like a camera), optionally looping; a file's end is
treated like a camera dropping out unless it loops.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Protocol

import cv2
import numpy as np


class FrameSource(Protocol):
    """Something that yields BGR frames; ``read()`` returns None when the source has failed or ended."""

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


class CaptureError(OSError):
    """A source that cannot be opened (camera absent, stream unreachable, unreadable file)."""


class _Pacer:
    """Sleeps so that successive ``wait()`` calls return at most ``fps`` times a second (0: no pacing)."""

    def __init__(self, fps: float) -> None:
        self._period = 1.0 / fps if fps > 0 else 0.0
        self._next = time.monotonic()

    def wait(self) -> None:
        if not self._period:
            return
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        # a consumer that fell behind catches up by at most one period, never by a burst
        self._next = max(self._next + self._period, time.monotonic() - self._period)


class OpenCVSource:
    """``cv2.VideoCapture`` on a device, URL or file. ``pace_fps`` > 0 plays files in real time."""

    def __init__(self, source: str, *, pace_fps: float = 0.0, loop: bool = False) -> None:
        self.source = source
        self._is_file = not (source.isdigit() or source.startswith("/dev/") or "://" in source)
        if source.isdigit():
            cap = cv2.VideoCapture(int(source), cv2.CAP_V4L2)
        elif source.startswith("/dev/"):
            cap = cv2.VideoCapture(source, cv2.CAP_V4L2)
        else:
            cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"cannot open video source {source!r}")
        if not self._is_file:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # live sources: keep only the newest frame
        self._cap = cap
        self._pacer = _Pacer(pace_fps if self._is_file else 0.0)
        self._loop = loop and self._is_file

    def read(self) -> np.ndarray | None:
        self._pacer.wait()
        ok, frame = self._cap.read()
        if not ok and self._loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        return frame if ok else None

    def close(self) -> None:
        self._cap.release()


class ArraySource:
    """Frames from memory (benchmarks, tests): ``pace_fps`` > 0 paces them; ``loop`` repeats them."""

    def __init__(self, frames: Sequence[np.ndarray], *, pace_fps: float = 0.0, loop: bool = False) -> None:
        self._frames = frames
        self._it: Iterator[np.ndarray] = iter(frames)
        self._pacer = _Pacer(pace_fps)
        self._loop = loop

    def read(self) -> np.ndarray | None:
        self._pacer.wait()
        frame = next(self._it, None)
        if frame is None and self._loop and len(self._frames):
            self._it = iter(self._frames)
            frame = next(self._it, None)
        return frame

    def close(self) -> None:
        self._it = iter(())


def open_source(source: str, *, fps: float = 0.0, loop: bool = False) -> FrameSource:
    """Open a camera's ``source`` (raises :class:`CaptureError` if it cannot be opened now)."""
    return OpenCVSource(source, pace_fps=fps, loop=loop)
