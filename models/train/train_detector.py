"""Train the shipped street-scene detector on synthetic scenes and export it as an int8 TFLite SSD.

    .venv-train/bin/python models/train/train_detector.py            # full run, ~10-15 min on 2 cores
    .venv-train/bin/python models/train/train_detector.py --quick    # a smoke run (worse model)

Needs TensorFlow (only here: ``python3 -m venv .venv-train && .venv-train/bin/pip install tensorflow
opencv-python-headless``); the gateway never imports TensorFlow. Nothing is downloaded: images come from
``gateway.vision.scenes`` (OpenCV drawings), weights start random.

The model is a small SSD: a depthwise-separable CNN down to a 20×20 grid (stride 8 on a 160×160 input),
five anchors per cell shaped for pedestrians, cyclists and vehicles, and the standard
``TFLite_Detection_PostProcess`` op at the end, so its outputs (boxes, classes, scores, count) look exactly
like a COCO SSD MobileNet's. Writes ``models/street_detector_int8.tflite`` (uint8 input, int8 weights and
activations), ``models/street_detector_float.tflite`` and ``models/street_labels.txt``, and prints the
held-out mAP@0.5 of the int8 file measured with the TFLite interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.vision.scenes import CLASSES, HEIGHT, WIDTH, render_image  # noqa: E402

INPUT = 160
GRID = 20
# anchor (w, h) as fractions of the image: pedestrian, cyclist, small and large vehicle, tall cyclist/near person
ANCHOR_WH = ((0.045, 0.18), (0.12, 0.19), (0.17, 0.11), (0.24, 0.15), (0.07, 0.25))
SCALES = (10.0, 10.0, 5.0, 5.0)  # y, x, h, w: the usual SSD box-coder scales
MAX_DETECTIONS = 25


def anchors() -> np.ndarray:
    """(N, 4) anchors as (y_center, x_center, h, w), normalised, in grid-cell-major order."""
    out = []
    for gy in range(GRID):
        for gx in range(GRID):
            for w, h in ANCHOR_WH:
                out.append(((gy + 0.5) / GRID, (gx + 0.5) / GRID, h, w))
    return np.array(out, np.float32)


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 pixels → float32 in [-1, 1] (what the float model takes)."""
    return images.astype(np.float32) / 127.5 - 1.0


def make_dataset(n: int, seed: int, night_share: float | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """``n`` RGB images resized to the model input, and per image an (k, 5) array [cls, y0, x0, y1, x1] normalised."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, INPUT, INPUT, 3), np.uint8)
    boxes: list[np.ndarray] = []
    for i in range(n):
        night = None if night_share is None else bool(rng.random() < night_share)  # None: 35 % night
        img, objs = render_image(rng, night=night)
        small = cv2.resize(img, (INPUT, INPUT), interpolation=cv2.INTER_AREA)
        images[i] = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)  # models take RGB, like COCO SSD models
        boxes.append(np.array([[o.cls, o.box[1] / HEIGHT, o.box[0] / WIDTH, o.box[3] / HEIGHT, o.box[2] / WIDTH]
                               for o in objs], np.float32).reshape(-1, 5))
    return images, boxes


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of corner boxes (y0, x0, y1, x1): a (N,4) × b (M,4) → (N, M)."""
    y0 = np.maximum(a[:, None, 0], b[None, :, 0])
    x0 = np.maximum(a[:, None, 1], b[None, :, 1])
    y1 = np.minimum(a[:, None, 2], b[None, :, 2])
    x1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def encode_targets(gt: list[np.ndarray], anc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: class targets (N, C) one-hot (all zero = background) and box targets (N, 5) [ty tx th tw mask]."""
    anc_corners = np.stack([anc[:, 0] - anc[:, 2] / 2, anc[:, 1] - anc[:, 3] / 2,
                            anc[:, 0] + anc[:, 2] / 2, anc[:, 1] + anc[:, 3] / 2], 1)
    cls_t = np.zeros((len(gt), len(anc), len(CLASSES)), np.float32)
    box_t = np.zeros((len(gt), len(anc), 5), np.float32)
    for i, g in enumerate(gt):
        if len(g) == 0:
            continue
        iou = iou_matrix(anc_corners, g[:, 1:])
        best_gt = iou.argmax(1)
        best_iou = iou.max(1)
        pos = best_iou >= 0.45
        pos[iou.argmax(0)] = True  # every object gets at least its best anchor
        best_gt[iou.argmax(0)] = np.arange(len(g))
        ignore = (best_iou >= 0.3) & ~pos
        idx = np.nonzero(pos)[0]
        m = g[best_gt[idx]]
        cls_t[i, idx, m[:, 0].astype(int)] = 1.0
        cls_t[i, ignore, :] = -1.0  # neither positive nor background: no classification loss
        gh, gw = m[:, 3] - m[:, 1], m[:, 4] - m[:, 2]
        gy, gx = (m[:, 1] + m[:, 3]) / 2, (m[:, 2] + m[:, 4]) / 2
        a = anc[idx]
        box_t[i, idx, 0] = (gy - a[:, 0]) / a[:, 2] * SCALES[0]
        box_t[i, idx, 1] = (gx - a[:, 1]) / a[:, 3] * SCALES[1]
        box_t[i, idx, 2] = np.log(np.maximum(gh, 1e-4) / a[:, 2]) * SCALES[2]
        box_t[i, idx, 3] = np.log(np.maximum(gw, 1e-4) / a[:, 3]) * SCALES[3]
        box_t[i, idx, 4] = 1.0
    return cls_t, box_t


def build_model(keras):  # type: ignore[no-untyped-def]
    """The raw network: image in [-1, 1] → (box encodings (N,4), class logits (N,C))."""
    layers = keras.layers
    na = len(ANCHOR_WH)

    def bn(x):  # type: ignore[no-untyped-def]
        return layers.BatchNormalization(momentum=0.9)(x)  # low momentum: see docs/notes on small data

    def sep(x, filters, stride=1):  # type: ignore[no-untyped-def]
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.ReLU(6.0)(bn(x))
        x = layers.Conv2D(filters, 1, use_bias=False)(x)
        return layers.ReLU(6.0)(bn(x))

    inp = keras.Input((INPUT, INPUT, 3), name="image")  # pixels scaled to [-1, 1], as in COCO SSD models
    x = layers.ReLU(6.0)(bn(layers.Conv2D(24, 3, strides=2, padding="same", use_bias=False)(inp)))  # 80
    x = sep(x, 32)
    x = sep(x, 48, 2)  # 40
    x = sep(x, 48)
    x = sep(x, 64, 2)  # 20
    x = sep(x, 64)
    y = sep(x, 96, 2)  # 10: context for large vehicles
    y = sep(y, 96)
    y = layers.UpSampling2D(2)(y)
    x = layers.Concatenate()([x, y])
    x = sep(x, 96)
    x = sep(x, 96)
    box = layers.Conv2D(na * 4, 3, padding="same", name="box_head")(x)
    cls = layers.Conv2D(na * len(CLASSES), 3, padding="same", name="cls_head",
                        bias_initializer=keras.initializers.Constant(-4.6))(x)
    box = layers.Reshape((GRID * GRID * na, 4), name="box_encodings")(box)
    cls = layers.Reshape((GRID * GRID * na, len(CLASSES)), name="class_logits")(cls)
    return keras.Model(inp, [box, cls], name="street_ssd")


def implements_signature(score_threshold: float) -> str:
    attrs = [
        'name: "TFLite_Detection_PostProcess"',
        f'attr {{ key: "max_detections" value {{ i: {MAX_DETECTIONS} }} }}',
        'attr { key: "max_classes_per_detection" value { i: 1 } }',
        'attr { key: "use_regular_nms" value { b: false } }',
        f'attr {{ key: "nms_score_threshold" value {{ f: {score_threshold:f} }} }}',
        'attr { key: "nms_iou_threshold" value { f: 0.500000 } }',
        f'attr {{ key: "y_scale" value {{ f: {SCALES[0]:f} }} }}',
        f'attr {{ key: "x_scale" value {{ f: {SCALES[1]:f} }} }}',
        f'attr {{ key: "h_scale" value {{ f: {SCALES[2]:f} }} }}',
        f'attr {{ key: "w_scale" value {{ f: {SCALES[3]:f} }} }}',
        f'attr {{ key: "num_classes" value {{ i: {len(CLASSES)} }} }}',
    ]
    return " ".join(attrs)


def export_tflite(tf, keras, model, calib: np.ndarray, out_int8: Path, out_float: Path) -> None:  # type: ignore[no-untyped-def]
    """Attach TFLite_Detection_PostProcess and convert: an int8 file (uint8 input) and a float one."""
    anc = tf.constant(anchors())

    @tf.function(experimental_implements=implements_signature(0.05))
    def postprocess(box_encodings, class_predictions, anchor_boxes):  # type: ignore[no-untyped-def]
        # Stands in for the TFLite custom op; the converter replaces the whole function by it.
        boxes = tf.constant(0.0, dtype=tf.float32, name="boxes")
        classes = tf.constant(0.0, dtype=tf.float32, name="classes")
        scores = tf.constant(0.0, dtype=tf.float32, name="scores")
        count = tf.constant(0.0, dtype=tf.float32, name="num_detections")
        return boxes, classes, scores, count

    def serve(image):  # type: ignore[no-untyped-def]
        box, logits = model(image, training=False)
        scores = tf.sigmoid(logits)
        with_bg = tf.concat([tf.zeros_like(scores[..., :1]), scores], axis=-1)  # column 0 = background
        return postprocess(box, with_bg, anc)

    tmp = out_int8.parent / "_export"
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve,
                         input_signature=[tf.TensorSpec([1, INPUT, INPUT, 3], tf.float32, name="image")])
    archive.write_out(str(tmp))

    def representative():  # type: ignore[no-untyped-def]
        # One image spanning 0..255 pins the input quantisation to [-1, 1], i.e. uint8 input = raw pixels.
        yield [normalise(np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (INPUT, 1, 3))[None, :, :INPUT])]
        yield [normalise(np.tile(np.arange(256, dtype=np.uint8)[None, 96:, None], (INPUT, 1, 3))[None])]
        for img in calib:
            yield [normalise(img[None])]

    conv = tf.lite.TFLiteConverter.from_saved_model(str(tmp))
    conv.allow_custom_ops = True
    out_float.write_bytes(conv.convert())

    conv = tf.lite.TFLiteConverter.from_saved_model(str(tmp))
    conv.allow_custom_ops = True
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    conv.inference_input_type = tf.uint8
    out_int8.write_bytes(conv.convert())
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small data and few epochs: a smoke run")
    ap.add_argument("--train", type=int, default=5000, help="training images")
    ap.add_argument("--val", type=int, default=400, help="held-out images for mAP")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=ROOT / "models")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--night-share", type=float, default=None, help="share of night scenes (default 0.35)")
    args = ap.parse_args()
    if args.quick:
        args.train, args.val, args.epochs = 600, 100, 2

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    tf.random.set_seed(args.seed)
    keras.utils.set_random_seed(args.seed)
    t0 = time.time()
    x_train, gt_train = make_dataset(args.train, args.seed, args.night_share)
    anc = anchors()
    cls_t, box_t = encode_targets(gt_train, anc)
    print(f"data: {args.train} images in {time.time() - t0:.0f} s, "
          f"{int((box_t[..., 4] > 0).sum())} positive anchors", flush=True)

    model = build_model(keras)
    print(f"parameters: {model.count_params()}", flush=True)
    steps = args.epochs * (args.train // 32)
    sched = keras.optimizers.schedules.CosineDecay(0.0, steps, alpha=0.02, warmup_target=3e-3,
                                                   warmup_steps=min(300, steps // 10))
    opt = keras.optimizers.Adam(sched)

    @tf.function
    def train_step(x, ct, bt):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            box, logits = model(x, training=True)
            valid = tf.cast(ct >= 0, tf.float32)
            target = tf.maximum(ct, 0.0)
            p = tf.sigmoid(logits)
            ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
            p_t = target * p + (1 - target) * (1 - p)
            alpha = target * 0.25 + (1 - target) * 0.75
            focal = alpha * tf.pow(1 - p_t, 2.0) * ce * valid
            npos = tf.maximum(tf.reduce_sum(bt[..., 4]), 1.0)
            cls_loss = tf.reduce_sum(focal) / npos
            huber = tf.keras.losses.Huber(reduction="none")(bt[..., :4, None], box[..., None])
            box_loss = tf.reduce_sum(tf.reduce_sum(huber, -1) * bt[..., 4]) / npos
            loss = cls_loss + box_loss
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return cls_loss, box_loss

    ds = (tf.data.Dataset.from_tensor_slices((x_train, cls_t, box_t)).shuffle(2048, seed=args.seed)
          .batch(32, drop_remainder=True).prefetch(2))

    def flip(x, ct, bt):  # type: ignore[no-untyped-def]
        # Mirror images left-right; anchors are symmetric per row, so flip the anchor grid the same way.
        x = x[:, :, ::-1]
        ct = tf.reshape(tf.reshape(ct, (-1, GRID, GRID, len(ANCHOR_WH), len(CLASSES)))[:, :, ::-1], tf.shape(ct))
        bt5 = tf.reshape(bt, (-1, GRID, GRID, len(ANCHOR_WH), 5))[:, :, ::-1]
        bt5 = bt5 * tf.constant([1.0, -1.0, 1.0, 1.0, 1.0])
        return x, ct, tf.reshape(bt5, tf.shape(bt))

    ds = ds.map(lambda x, c, b: tf.cond(tf.random.uniform(()) < 0.5, lambda: flip(x, c, b), lambda: (x, c, b)))
    for epoch in range(args.epochs):
        te = time.time()
        tot_c = tot_b = 0.0
        n = 0
        for x, ct, bt in ds:
            c, b = train_step(tf.cast(x, tf.float32) / 127.5 - 1.0, ct, bt)
            tot_c += float(c)
            tot_b += float(b)
            n += 1
        print(f"epoch {epoch + 1}/{args.epochs}: cls {tot_c / n:.3f} box {tot_b / n:.3f} "
              f"({time.time() - te:.0f} s)", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "street_labels.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    out_int8 = args.out / "street_detector_int8.tflite"
    out_float = args.out / "street_detector_float.tflite"
    export_tflite(tf, keras, model, x_train[:200], out_int8, out_float)
    print(f"wrote {out_int8} ({out_int8.stat().st_size} bytes), {out_float} ({out_float.stat().st_size} bytes)")

    # Held-out evaluation with the TFLite interpreter on images the model never saw (another seed).
    x_val, gt_val = make_dataset(args.val, args.seed + 1000)
    report = {}
    for path in (out_int8, out_float):
        report[path.name] = evaluate(tf, path, x_val, gt_val)
    print(json.dumps({"map50": report, "train_images": args.train, "epochs": args.epochs,
                      "train_seconds": round(time.time() - t0)}))
    return 0


def evaluate(tf, path: Path, x_val: np.ndarray, gt_val: list[np.ndarray]) -> float:  # type: ignore[no-untyped-def]
    """mAP@0.5 over the classes, computed from the TFLite file's own outputs."""
    sys.path.insert(0, str(ROOT))
    from gateway.vision.metrics import average_precision

    interp = tf.lite.Interpreter(model_path=str(path))
    runner = interp.get_signature_runner()
    in_name = next(iter(runner.get_input_details()))
    dtype = runner.get_input_details()[in_name]["dtype"]
    preds = []
    for img in x_val:
        # uint8 models take raw pixels (their input quantisation maps them to [-1, 1]); float ones [-1, 1]
        feed = img[None] if dtype == np.uint8 else normalise(img[None])
        out = runner(**{in_name: feed})
        vals = sorted(out.values(), key=lambda v: v.size)  # count(1), then classes/scores (N), boxes (N*4)
        count = int(vals[0].reshape(-1)[0])
        boxes = next(v for v in out.values() if v.ndim == 3)[0][:count]
        two = [v[0][:count] for v in out.values() if v.ndim == 2]
        classes, scores = (two[0], two[1]) if np.all(two[0] == np.round(two[0])) else (two[1], two[0])
        preds.append([(int(c), float(s), tuple(float(t) for t in b)) for b, c, s in zip(boxes, classes, scores)])
    truth = [[(int(r[0]), tuple(float(t) for t in r[1:])) for r in g] for g in gt_val]
    return round(average_precision(preds, truth, len(CLASSES)), 4)


if __name__ == "__main__":
    sys.exit(main())
