"""Frame sources: OpenCV capture from a V4L2 device, an RTSP/HTTP stream or a video file.

:func:`open_source` turns a camera's ``source`` string into a :class:`FrameSource`; the camera worker
(:mod:`gateway.vision.pipeline`) reads from it in its own thread and reopens it with backoff when it fails.
Files are played at the configured frame rate (like a camera), optionally looping; a file's end is
treated like a camera dropping out unless it loops.

Frame size (a camera's ``capture_size``): a V4L2 device is asked for it (``CAP_PROP_FRAME_WIDTH`` /
``HEIGHT``; the driver picks its nearest supported mode, which is logged when it differs). An RTSP/HTTP
stream's size is chosen by its URL (the camera's sub-stream, see docs/vision.md): the first frame of
another size is logged as a warning, since the URL probably names the main stream. Files and in-memory
sources deliver what they hold. Whatever size comes, the pipeline scales detections into the frame the
zones were drawn on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)


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
    """``cv2.VideoCapture`` on a device, URL or file. ``pace_fps`` > 0 plays files in real time;
    ``size`` (width, height): the frame size wanted (asked of V4L2 devices, checked on network streams);
    ``timeout_s``: how long a network stream may take to open or to deliver the next frame before
    :meth:`read` gives up (FFmpeg's own default is 30 s, and a camera that loses power mid-stream
    sends no reset: without a bound the capture thread would sit in ``read`` and report "streaming")."""

    def __init__(
        self,
        source: str,
        *,
        pace_fps: float = 0.0,
        loop: bool = False,
        size: tuple[int, int] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.source = source
        self.size = size
        is_device = source.isdigit() or source.startswith("/dev/")
        self._is_file = not (is_device or "://" in source)
        if source.isdigit():
            cap = cv2.VideoCapture(int(source), cv2.CAP_V4L2)
        elif source.startswith("/dev/"):
            cap = cv2.VideoCapture(source, cv2.CAP_V4L2)
        elif "://" in source and timeout_s is not None:
            ms = max(1, round(timeout_s * 1000))
            timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, timeouts)
        else:
            cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"cannot open video source {source!r}")
        if not self._is_file:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # live sources: keep only the newest frame
        if is_device and size is not None:
            # the driver picks its nearest mode; what it picked is read back and said if it differs
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
            got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            if got != size:
                log.warning("%s: asked for %dx%d frames, the device delivers %dx%d", source, *size, *got)
        self._check_first = size is not None and "://" in source
        self._cap = cap
        self._pacer = _Pacer(pace_fps if self._is_file else 0.0)
        self._loop = loop and self._is_file

    def read(self) -> np.ndarray | None:
        self._pacer.wait()
        ok, frame = self._cap.read()
        if not ok and self._loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        if ok and self._check_first and self.size is not None:
            self._check_first = False
            got = (frame.shape[1], frame.shape[0])
            if got != self.size:
                log.warning(
                    "%s: capture_size is %dx%d but the stream delivers %dx%d; the URL of the "
                    "camera's sub-stream gives small frames (docs/vision.md)",
                    self.source,
                    *self.size,
                    *got,
                )
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


def open_source(
    source: str,
    *,
    fps: float = 0.0,
    loop: bool = False,
    size: tuple[int, int] | None = None,
    timeout_s: float | None = None,
) -> FrameSource:
    """Open a camera's ``source`` (raises :class:`CaptureError` if it cannot be opened now); ``size``: the
    camera's ``capture_size``, if configured; ``timeout_s``: bound on a network stream's open and reads."""
    return OpenCVSource(source, pace_fps=fps, loop=loop, size=size, timeout_s=timeout_s)
