"""The detector on real TFLite runtimes: adapter choice from the model's outputs, decoding, labels, and the
shipped street detector's accuracy on held-out synthetic scenes.

Parametrised over every TFLite runtime installed in this Python: ai-edge-litert in .venv, tflite-runtime
in .venv-tflite (scripts/test.d/tflite_runtime.sh runs this file there too).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cityedge.paths import MODELS
from gateway.vision.detector import Detector, ModelError, installed_backends, load_labels
from gateway.vision.metrics import average_precision
from gateway.vision.scenes import CLASSES, HEIGHT, WIDTH, render_image

FIX = MODELS / "fixtures"
STREET = MODELS / "street_detector_int8.tflite"
STREET_FLOAT = MODELS / "street_detector_float.tflite"
LABELS = MODELS / "street_labels.txt"
BACKENDS = installed_backends()


def test_some_runtime_is_installed() -> None:
    assert BACKENDS, "neither ai-edge-litert nor tflite-runtime is importable"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _frame(bgr: tuple[int, int, int]) -> np.ndarray:
    img = np.zeros((480, 640, 3), np.uint8)
    img[:] = bgr
    return img


RED = _frame((0, 0, 255))  # BGR: the detector must hand the model RGB
BLACK = _frame((0, 0, 0))


@pytest.mark.parametrize("name", ["yolo5_float", "yolo5_int8", "yolo8_float"])
def test_yolo_adapter_decodes_and_suppresses(backend: str, name: str) -> None:
    det = Detector(FIX / f"{name}.tflite", FIX / "yolo_labels.txt", backend=backend, min_score=0.3)
    assert det.kind == "yolo"
    found = det.detect(RED)
    assert [d.label for d in found] == ["vehicle", "pedestrian"]  # A' removed by NMS, C below min_score
    vehicle, ped = found
    assert vehicle.score == pytest.approx(0.9, abs=0.02)
    assert ped.score == pytest.approx(0.72, abs=0.02)
    # candidate A: centre (0.25, 0.25), size 0.2 × 0.2 of a 640×480 frame
    assert ped.box == pytest.approx((96, 72, 224, 168), abs=3)
    assert vehicle.box == pytest.approx((352, 240, 544, 336), abs=3)
    # B's objectness follows the red channel: gone on a black frame
    assert [d.label for d in det.detect(BLACK)] == ["pedestrian"]


@pytest.mark.parametrize("name", ["classifier_float", "classifier_uint8"])
def test_classifier_adapter_labels_regions(backend: str, name: str) -> None:
    det = Detector(FIX / f"{name}.tflite", FIX / "colour_labels.txt", backend=backend)
    assert det.kind == "classifier"
    (whole,) = det.detect(RED)
    assert whole.label == "red" and whole.score > 0.95
    img = BLACK.copy()
    img[100:200, 100:200] = (0, 200, 0)
    img[300:400, 400:500] = (200, 0, 0)
    found = det.detect(img, [(100, 100, 200, 200), (400, 300, 500, 400)])
    assert [(d.label, d.box) for d in found] == [("green", (100, 100, 200, 200)), ("blue", (400, 300, 500, 400))]


def test_label_map_formats(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("vehicle\npedestrian\n\ncyclist\n")
    assert load_labels(plain) == ["vehicle", "pedestrian", "cyclist"]
    ids = tmp_path / "ids.txt"
    ids.write_text("0 person\n2 car\n3: motorcycle\n")
    assert load_labels(ids) == ["person", "???", "car", "motorcycle"]
    with pytest.raises(ModelError, match="cannot read label map"):
        load_labels(tmp_path / "missing.txt")


def test_bad_model_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        Detector(tmp_path / "nope.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(ModelError, match="cannot load TFLite model"):
        Detector(junk, backend=BACKENDS[0])
    with pytest.raises(ModelError, match="unknown TFLite backend"):
        Detector(FIX / "yolo5_float.tflite", backend="onnx")


def _held_out(n: int, seed: int) -> tuple[list[np.ndarray], list[list[tuple[int, tuple[float, float, float, float]]]]]:
    rng = np.random.default_rng(seed)
    frames, truth = [], []
    for _ in range(n):
        img, objs = render_image(rng)
        frames.append(img)
        truth.append([(o.cls, o.box) for o in objs])
    return frames, truth


@pytest.fixture(scope="module")
def held_out() -> tuple[list[np.ndarray], list[list[tuple[int, tuple[float, float, float, float]]]]]:
    return _held_out(60, seed=424242)  # a seed the training never used


@pytest.mark.parametrize("model", [STREET, STREET_FLOAT], ids=["int8", "float"])
def test_street_detector_ssd_accuracy(backend: str, model: Path, held_out: tuple) -> None:
    det = Detector(model, LABELS, backend=backend, min_score=0.05)
    assert det.kind == "ssd"
    assert det.labels == list(CLASSES)
    frames, truth = held_out
    preds = []
    for img in frames:
        preds.append([(CLASSES.index(d.label), d.score, d.box) for d in det.detect(img)])
        for d in det.detect(img):
            assert 0 <= d.box[0] <= d.box[2] <= WIDTH and 0 <= d.box[1] <= d.box[3] <= HEIGHT
    assert average_precision(preds, truth, len(CLASSES)) >= 0.8


def test_coco_style_label_map_with_unused_first_id(backend: str, tmp_path: Path) -> None:
    # COCO SSD label maps start with "???" for the unused id 0; the model's class 0 is the next line.
    coco = tmp_path / "labelmap.txt"
    coco.write_text("???\nvehicle\npedestrian\ncyclist\n")
    det = Detector(STREET, coco, backend=backend)
    rng = np.random.default_rng(5)
    img = cv2.resize(render_image(rng, night=False, max_objects=0)[0], (WIDTH, HEIGHT))
    from gateway.vision.scenes import draw_vehicle

    draw_vehicle(img, 200, 330, 150, (40, 40, 200), 0.5)
    labels = {d.label for d in det.detect(img)}
    assert labels == {"vehicle"}


def test_xnnpack_off_gives_same_detections(held_out: tuple) -> None:
    frames, _ = held_out
    on = Detector(STREET, LABELS, backend=BACKENDS[0], xnnpack=True)
    off = Detector(STREET, LABELS, backend=BACKENDS[0], xnnpack=False, threads=2)
    a = [(d.label, round(d.box[0] / 8)) for d in on.detect(frames[0])]
    b = [(d.label, round(d.box[0] / 8)) for d in off.detect(frames[0])]
    assert [x[0] for x in a] == [x[0] for x in b]
