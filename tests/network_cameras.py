"""Network cameras on loopback, read by the gateway through OpenCV's FFmpeg backend like any camera URL:

* :class:`MjpegCamera`: an HTTP MJPEG stream (``multipart/x-mixed-replace``), as many IP cameras serve;
* :class:`RtspCamera`: an RTSP server sending the same JPEG frames as RTP (RFC 2435), interleaved on the
  RTSP connection (RTP over TCP: FFmpeg asks for UDP first and is told to use TCP, as some cameras do).

No real camera or third-party server is on this machine; these speak the protocols FFmpeg speaks to one.
``stall()`` makes a camera go silent without closing anything (a camera that loses power mid-stream sends no
TCP reset): open streams stop delivering frames and new connections get no answer. ``resume()`` ends it.
"""

from __future__ import annotations

import contextlib
import random
import socketserver
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

BOUNDARY = b"frame"
RTP_JPEG = 26  # the static RTP payload type of JPEG
RTP_CHUNK = 1400  # JPEG scan bytes per RTP packet


class LoopbackCamera(ABC):
    """What both cameras share: ``frames`` (BGR) as JPEG, played in a loop at ``fps``; stall and resume."""

    scheme = ""

    def __init__(self, frames: list[np.ndarray], fps: float = 30.0) -> None:
        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        self.period = 1.0 / fps
        self.connections = 0  # streams started
        self._live = threading.Event()
        self._live.set()
        self._closing = threading.Event()
        self._server = self._make_server()
        self.url = f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}/stream"

    @abstractmethod
    def _make_server(self) -> socketserver.TCPServer:
        """A threading server on 127.0.0.1 with a free port, whose handler threads are daemons."""

    def stall(self) -> None:
        self._live.clear()

    def resume(self) -> None:
        self._live.set()

    def wait_live(self) -> bool:
        """Block while stalled; False once the camera is closing."""
        while not self._live.wait(0.05):
            if self._closing.is_set():
                return False
        return not self._closing.is_set()

    def stream(self, send: Callable[[int, bytes], None]) -> None:
        """Hand frame ``i``'s JPEG to ``send`` at the camera's rate, pausing while stalled, until the camera
        closes or the client goes away."""
        i = 0
        while self.wait_live():
            try:
                send(i, self.jpegs[i % len(self.jpegs)])
            except OSError:  # the client went away
                return
            i += 1
            time.sleep(self.period)

    @contextlib.contextmanager
    def serving(self) -> Iterator[LoopbackCamera]:
        thread = threading.Thread(target=self._server.serve_forever, name=f"{self.scheme}-camera", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._closing.set()
            self._server.shutdown()
            self._server.server_close()
            thread.join(5)


class MjpegCamera(LoopbackCamera):
    """``http://127.0.0.1:<port>/stream``: one JPEG part per frame."""

    scheme = "http"

    def _make_server(self) -> socketserver.TCPServer:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # quiet test output
                pass

            def do_GET(self) -> None:
                if not camera.wait_live():  # stalled: the connection is accepted, nothing is answered
                    return
                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=" + BOUNDARY.decode())
                self.end_headers()
                camera.stream(self.send_part)

            def send_part(self, i: int, jpg: bytes) -> None:
                part = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % (BOUNDARY, len(jpg))
                self.wfile.write(part + jpg + b"\r\n")

        return ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # daemon handler threads


def rtp_jpeg_packets(jpeg: bytes, seq: int, timestamp: int) -> list[bytes]:
    """One baseline 4:2:0 JPEG (as OpenCV writes it) as RTP packets (RFC 2435, type 1, tables in-band)."""
    tables, scan, i = b"", b"", 2
    width = height = 0
    while i < len(jpeg):
        marker, length = jpeg[i + 1], int.from_bytes(jpeg[i + 2 : i + 4], "big")
        body = jpeg[i + 4 : i + 2 + length]
        if marker == 0xDB:  # DQT: precision/id byte, then 64 values (zigzag order, as RTP wants them)
            for k in range(0, len(body), 65):
                tables += body[k + 1 : k + 65]
        elif marker == 0xC0:  # SOF0: 8-bit precision, height, width, components (Y sampled 2x2)
            height, width = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
            if body[7] != 0x22:
                raise ValueError("only 4:2:0 JPEG is packetised here")
        elif marker == 0xDA:  # SOS: the entropy-coded scan runs from here to the EOI marker
            scan = jpeg[i + 2 + length : -2]
            break
        i += 2 + length
    packets: list[bytes] = []
    for off in range(0, len(scan), RTP_CHUNK):
        last = off + RTP_CHUNK >= len(scan)
        rtp = bytes([0x80, (0x80 if last else 0) | RTP_JPEG]) + ((seq + len(packets)) & 0xFFFF).to_bytes(2, "big")
        rtp += (timestamp & 0xFFFFFFFF).to_bytes(4, "big") + (0x5EED).to_bytes(4, "big")
        header = bytes([0]) + off.to_bytes(3, "big") + bytes([1, 255, width // 8, height // 8])
        if off == 0:  # Q = 255: the quantisation tables travel with the frame's first packet
            header += bytes([0, 0]) + len(tables).to_bytes(2, "big") + tables
        packets.append(rtp + header + scan[off : off + RTP_CHUNK])
    return packets


class RtspCamera(LoopbackCamera):
    """``rtsp://127.0.0.1:<port>/stream``: OPTIONS, DESCRIBE, SETUP (TCP only), PLAY, TEARDOWN."""

    scheme = "rtsp"

    def _make_server(self) -> socketserver.TCPServer:
        camera = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                if not camera.wait_live():  # stalled: the connection is accepted, nothing is answered
                    return
                self.lock = threading.Lock()
                self.session = f"{random.getrandbits(31):08x}"
                with contextlib.suppress(OSError):  # the client went away (FFmpeg resets when it gives up)
                    self.serve_requests()

            def serve_requests(self) -> None:
                while True:
                    first = self.rfile.read(1)
                    if not first:
                        return
                    if first == b"$":  # the client's RTCP reports, interleaved: read and ignore
                        head = self.rfile.read(3)
                        self.rfile.read(int.from_bytes(head[1:3], "big"))
                        continue
                    lines = [(first + self.rfile.readline()).decode().strip()]
                    while lines[-1]:
                        lines.append(self.rfile.readline().decode().strip())
                    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:-1])}
                    if int(headers.get("content-length", 0)):
                        self.rfile.read(int(headers["content-length"]))
                    if not self.answer(lines[0].split(" ")[0], headers):
                        return

            def reply(self, cseq: str, status: str = "200 OK", extra: str = "", body: str = "") -> None:
                text = f"RTSP/1.0 {status}\r\nCSeq: {cseq}\r\n{extra}"
                if body:
                    text += f"Content-Length: {len(body)}\r\n"
                with self.lock:
                    self.wfile.write((text + "\r\n" + body).encode())

            def answer(self, method: str, headers: dict[str, str]) -> bool:
                cseq, session = headers.get("cseq", "0"), f"Session: {self.session}\r\n"
                if method == "OPTIONS":
                    self.reply(cseq, extra="Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n")
                elif method == "DESCRIBE":
                    sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=loopback camera\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
                           f"m=video 0 RTP/AVP {RTP_JPEG}\r\na=control:track0\r\n")
                    self.reply(cseq, extra=f"Content-Base: {camera.url}/\r\nContent-Type: application/sdp\r\n",
                               body=sdp)
                elif method == "SETUP":
                    if "TCP" not in headers.get("transport", ""):
                        self.reply(cseq, "461 Unsupported Transport")
                    else:
                        self.reply(cseq, extra=session + "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
                elif method == "PLAY":
                    self.reply(cseq, extra=session + "Range: npt=0.000-\r\n")
                    camera.connections += 1
                    threading.Thread(target=self.play, daemon=True).start()
                elif method == "TEARDOWN":
                    self.reply(cseq, extra=session)
                    return False
                else:  # GET_PARAMETER (keep-alive) and the rest
                    self.reply(cseq, extra=session)
                return True

            def play(self) -> None:
                self.seq = 0
                camera.stream(self.send_frame)

            def send_frame(self, i: int, jpeg: bytes) -> None:
                packets = rtp_jpeg_packets(jpeg, self.seq, round(i * camera.period * 90000))
                with self.lock:
                    for p in packets:
                        self.wfile.write(b"$\x00" + len(p).to_bytes(2, "big") + p)
                self.seq += len(packets)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True

        return Server(("127.0.0.1", 0), Handler)
