"""A network camera on loopback: an HTTP MJPEG stream (``multipart/x-mixed-replace``), as many IP cameras
serve, read by the gateway through OpenCV's FFmpeg backend like any other URL.

``stall()`` makes the camera go silent without closing anything (a camera that loses power mid-stream sends
no TCP reset): open streams stop delivering frames and new connections get no answer. ``resume()`` ends it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

BOUNDARY = b"frame"


class MjpegCamera:
    """Serves ``frames`` (BGR) in a loop at ``fps`` on ``http://127.0.0.1:<port>/stream.mjpg``."""

    def __init__(self, frames: list[np.ndarray], fps: float = 30.0) -> None:
        self._jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        self._period = 1.0 / fps
        self._live = threading.Event()
        self._live.set()
        self._closing = threading.Event()
        self.connections = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/stream.mjpg"

    def stall(self) -> None:
        self._live.clear()

    def resume(self) -> None:
        self._live.set()

    def _wait_live(self) -> bool:
        """Block while stalled; False once the camera is closing."""
        while not self._live.wait(0.05):
            if self._closing.is_set():
                return False
        return not self._closing.is_set()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # quiet test output
                pass

            def do_GET(self) -> None:
                if not camera._wait_live():  # stalled: the connection is accepted, nothing is answered
                    return
                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=" + BOUNDARY.decode())
                self.end_headers()
                i = 0
                while camera._wait_live():
                    jpg = camera._jpegs[i % len(camera._jpegs)]
                    part = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % (BOUNDARY, len(jpg))
                    try:
                        self.wfile.write(part + jpg + b"\r\n")
                    except OSError:  # the client went away
                        return
                    i += 1
                    time.sleep(camera._period)

        return Handler

    @contextmanager
    def serving(self) -> Iterator[MjpegCamera]:
        thread = threading.Thread(target=self._server.serve_forever, name="mjpeg-camera", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._closing.set()
            self._server.shutdown()
            self._server.server_close()
            thread.join(5)
