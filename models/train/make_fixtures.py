"""Build the tiny TFLite test models in ``models/fixtures/`` (for the adapter tests, not for use).

    .venv-train/bin/python models/train/make_fixtures.py

They reproduce the output formats of models a user may drop in, with weights set by hand so that what
they output is known exactly (the tests assert it):

* ``yolo5_float.tflite`` / ``yolo5_int8.tflite``: one output ``[1, 4, 8]`` = 4 candidates × (x, y, w, h,
  objectness, 3 class scores), normalised coordinates, YOLOv5 layout; the int8 file has int8 input and
  output tensors (as full-integer YOLO exports have);
* ``yolo8_float.tflite``: the same candidates transposed, ``[1, 7, 4]`` = (x, y, w, h, 3 class scores) × 4,
  YOLOv8 layout (no objectness);
* ``classifier_float.tflite`` / ``classifier_uint8.tflite``: ``[1, 3]`` softmax over red / green / blue,
  from the mean colour of the image (uint8 input and output, like quantised MobileNet classifiers).

The candidates: A = box (0.25, 0.25, 0.2, 0.2) class 1, score 0.9 × 0.8 = 0.72; A' = nearly the same box,
class 1, 0.8 × 0.7 = 0.56 (NMS must remove it); B = box (0.7, 0.6, 0.3, 0.2) class 0 with objectness
following the image's red channel (1.0 on a red image, 0.0 on a black one); C = a low-score candidate.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "models" / "fixtures"

ROWS = np.array([
    # x     y     w    h    obj  c0    c1    c2
    [0.25, 0.25, 0.2, 0.2, 0.9, 0.1, 0.8, 0.1],
    [0.26, 0.25, 0.2, 0.2, 0.8, 0.1, 0.7, 0.2],
    [0.70, 0.60, 0.3, 0.2, 0.0, 0.9, 0.05, 0.05],  # objectness filled in from the red channel
    [0.50, 0.50, 0.1, 0.1, 0.1, 0.3, 0.3, 0.4],
], np.float32)


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    OUT.mkdir(parents=True, exist_ok=True)
    layers = keras.layers

    def yolo(transposed: bool) -> keras.Model:
        inp = keras.Input((64, 64, 3), name="images")  # RGB in [-1, 1]
        gap = layers.GlobalAveragePooling2D()(inp)  # mean R, G, B in [-1, 1]
        dense = layers.Dense(ROWS.size, name="rows")
        flat = dense(gap)
        kernel = np.zeros((3, ROWS.size), np.float32)
        bias = ROWS.reshape(-1).copy()
        obj_b = 2 * 8 + 4
        kernel[0, obj_b] = 0.5  # objectness of candidate B = 0.5 + 0.5 × mean red
        bias[obj_b] = 0.5
        out = layers.Reshape((4, 8))(flat)
        if transposed:  # drop the objectness column (fold it into the class scores), then [1, 7, 4]
            scores = layers.Lambda(lambda t: t[..., 5:] * t[..., 4:5])(out)
            out = layers.Permute((2, 1))(layers.Concatenate()([layers.Lambda(lambda t: t[..., :4])(out), scores]))
        model = keras.Model(inp, out)
        dense.set_weights([kernel, bias])
        return model

    def classifier() -> keras.Model:
        inp = keras.Input((32, 32, 3), name="input")
        gap = layers.GlobalAveragePooling2D()(inp)
        dense = layers.Dense(3, activation="softmax")
        model = keras.Model(inp, dense(gap))
        dense.set_weights([np.eye(3, dtype=np.float32) * 8.0, np.zeros(3, np.float32)])
        return model

    def calib(size: int):  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(0)
        def gen():  # type: ignore[no-untyped-def]
            for c in ((1, -1, -1), (-1, 1, -1), (-1, -1, 1), (-1, -1, -1), (1, 1, 1)):
                yield [np.broadcast_to(np.array(c, np.float32), (1, size, size, 3)).copy()]
            for _ in range(20):
                yield [rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)]
        return gen

    def convert(model: keras.Model, path: Path, quant: str | None, size: int) -> None:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if quant:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = calib(size)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8 if quant == "int8" else tf.uint8
            conv.inference_output_type = tf.int8 if quant == "int8" else tf.uint8
        path.write_bytes(conv.convert())
        print(f"wrote {path} ({path.stat().st_size} bytes)")

    convert(yolo(False), OUT / "yolo5_float.tflite", None, 64)
    convert(yolo(False), OUT / "yolo5_int8.tflite", "int8", 64)
    convert(yolo(True), OUT / "yolo8_float.tflite", None, 64)
    convert(classifier(), OUT / "classifier_float.tflite", None, 32)
    convert(classifier(), OUT / "classifier_uint8.tflite", "uint8", 32)
    (OUT / "yolo_labels.txt").write_text("0 vehicle\n1 pedestrian\n2 cyclist\n")
    (OUT / "colour_labels.txt").write_text("red\ngreen\nblue\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
