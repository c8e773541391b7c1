"""Run a TFLite model on frames: runtime choice, and an adapter picked from the model's own outputs.

Backends: ``ai_edge_litert`` (primary; XNNPACK accelerates float and int8) and ``tflite_runtime`` (fallback
for old images; needs ``numpy<2``). The adapter is chosen from what the model outputs:

* ``ssd``: the ``TFLite_Detection_PostProcess`` op (boxes, classes, scores, count), as in COCO SSD MobileNet,
  EfficientDet-Lite and the project's own street detector;
* ``yolo``: one raw tensor ``[1, N, 5+C]`` (YOLOv5 style: xywh, objectness, class scores) or ``[1, 4+C, N]``
  (YOLOv8 style: xywh, class scores), decoded here with per-class non-maximum suppression;
* ``classifier``: one tensor ``[1, C]``: the class of the whole image (or of each motion region).

Inputs are resized (squashed) to the model's input size and given as RGB: raw pixels to uint8/int8
models (their input quantisation says how they read them), ``(pixel - mean) / std`` to float models.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cityedge.errors import CityedgeError

log = logging.getLogger(__name__)

BACKENDS = ("ai_edge_litert", "tflite_runtime")
EDGE = 0.02  # a box this close (share of the frame) to an edge is "truncated": the object is partly out of view


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object: label, score in 0..1 and box in frame pixels (x0, y0, x1, y1)."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    class_id: int = -1
    truncated: bool = False  # the box touches the frame's edge: the object is only partly in view

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


def suppress_duplicates(found: list[Detection], max_iou: float, max_cover: float = 0.8) -> list[Detection]:
    """Class-agnostic NMS: drop a detection overlapping a better one by more than ``max_iou``, or lying
    (``max_cover``) inside clearly better ones.

    Models suppress per class; the same object seen as both "cyclist" and "vehicle" would otherwise become
    two tracks (and two counts). A weak box mostly inside clearly better ones (score lower by 0.2 or more;
    the covered shares are summed, so an overlap counted twice errs towards keeping less) is a ghost of
    the overlap of two objects, not a third object.

    Plain Python on purpose: a frame has a dozen boxes, most pairs do not touch, and per-call numpy
    overhead on 12×12 arrays cost several times the arithmetic (and held the GIL the detector thread
    was waiting for).
    """
    if len(found) < 2 or max_iou >= 1.0:
        return found
    kept: list[Detection] = []
    kept_area: list[float] = []
    for d in sorted(found, key=lambda d: -d.score):
        x0, y0, x1, y1 = d.box
        area = (x1 - x0) * (y1 - y0)
        better = d.score + 0.2
        covered = 0.0
        duplicate = False
        for k, k_area in zip(kept, kept_area):
            kx0, ky0, kx1, ky1 = k.box
            ix = min(x1, kx1) - max(x0, kx0)
            if ix <= 0.0:
                continue
            iy = min(y1, ky1) - max(y0, ky0)
            if iy <= 0.0:
                continue
            inter = ix * iy
            union = area + k_area - inter
            if union > 0.0 and inter / union > max_iou:
                duplicate = True
                break
            if k.score >= better:
                covered += inter / max(area, 1e-6)
        if not duplicate and covered < max_cover:
            kept.append(d)
            kept_area.append(area)
    return kept


class ModelError(CityedgeError):
    """A model file that cannot be loaded or understood."""


def installed_backends() -> list[str]:
    """The TFLite runtimes importable in this Python, primary first."""
    found = []
    for name in BACKENDS:
        try:
            _interpreter_class(name)
        except ModelError:
            continue
        found.append(name)
    return found


def _interpreter_class(backend: str) -> Any:
    module = {"ai_edge_litert": "ai_edge_litert.interpreter", "tflite_runtime": "tflite_runtime.interpreter"}.get(
        backend
    )
    if module is None:
        raise ModelError(f"unknown TFLite backend {backend!r}", hint=f"use one of: {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = (
            "pip install ai-edge-litert"
            if backend == "ai_edge_litert"
            else "pip install 'tflite-runtime==2.14.*' 'numpy<2' (Python ≤ 3.11)"
        )
        raise ModelError(f"TFLite backend {backend} is not installed ({exc})", hint=hint) from exc


def load_labels(path: str | os.PathLike[str] | None) -> list[str]:
    """Read a label map: one label per line, or ``<id> <label>`` / ``<id>: <label>`` lines (ids may skip).

    Lines ``???`` (unused COCO ids) are kept so that ids stay aligned.
    """
    if path is None:
        return []
    p = Path(path)
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise ModelError(f"cannot read label map {p}: {exc.strerror}", hint="check the labels path") from exc
    lines = [ln for ln in lines if ln]
    pairs: dict[int, str] = {}
    for ln in lines:
        head, _, rest = ln.replace(":", " ", 1).partition(" ")
        if head.isdigit() and rest.strip():
            pairs[int(head)] = rest.strip()
        else:
            pairs = {}
            break
    if pairs:
        return [pairs.get(i, "???") for i in range(max(pairs) + 1)]
    return lines


class Detector:
    """A loaded model with its adapter. Not thread-safe: one detector per camera thread.

    ``detect(frame)`` returns :class:`Detection` objects in frame pixels, above ``min_score``.
    ``regions`` limit a classifier to those crops; detectors always see the whole frame.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        labels: Sequence[str] | str | os.PathLike[str] | None = None,
        *,
        backend: str = "ai_edge_litert",
        threads: int = 1,
        xnnpack: bool = True,
        min_score: float = 0.3,
        iou_threshold: float = 0.5,
        agnostic_iou: float = 0.6,
        input_mean: float = 127.5,
        input_std: float = 127.5,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"model file {self.model_path} does not exist", hint="check vision.model in the config")
        self.backend = backend
        mod = _interpreter_class(backend)
        kwargs: dict[str, Any] = {"model_path": str(self.model_path), "num_threads": max(1, int(threads))}
        if not xnnpack:
            kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self._interp = mod.Interpreter(**kwargs)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(
                f"cannot load TFLite model {self.model_path}: {exc}",
                hint="is it a .tflite file made for this runtime version?",
            ) from exc
        self.labels = list(load_labels(labels) if isinstance(labels, str | os.PathLike) else (labels or []))
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        self.agnostic_iou = agnostic_iou
        self._mean, self._std = input_mean, input_std
        inputs = self._interp.get_input_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or inputs[0]["shape"][3] != 3:
            raise ModelError(
                f"{self.model_path}: expected one image input [1, H, W, 3], got {[list(d['shape']) for d in inputs]}"
            )
        self._input = inputs[0]
        self.input_size = (int(self._input["shape"][2]), int(self._input["shape"][1]))  # w, h
        self._outputs = self._interp.get_output_details()
        self.kind, self._out_index = self._choose_adapter()
        # (index, scale, zero point) of each output the adapter reads; scale 0: used as it comes
        self._out_quant: list[tuple[int, float, int]] = []
        for index in self._out_index:
            detail = next(d for d in self._outputs if int(d["index"]) == index)
            scale, zero = detail["quantization"]
            quantized = np.dtype(detail["dtype"]) in (np.dtype(np.int8), np.dtype(np.uint8))
            self._out_quant.append((index, float(scale) if quantized else 0.0, int(zero)))
        log.info(
            "loaded %s with %s: %s adapter, input %s %s",
            self.model_path.name,
            backend,
            self.kind,
            self.input_size,
            np.dtype(self._input["dtype"]).name,
        )

    # ------------------------------------------------------------------ adapter choice

    def _choose_adapter(self) -> tuple[str, list[int]]:
        ops: list[dict[str, Any]] = []
        try:
            ops = self._interp._get_ops_details()
        except AttributeError:  # very old runtimes: fall back to output shapes
            pass
        for op in ops:
            if op.get("op_name") == "TFLite_Detection_PostProcess":
                return "ssd", [int(i) for i in op["outputs"]]  # boxes, classes, scores, count
        shapes = [tuple(int(v) for v in d["shape"]) for d in self._outputs]
        if len(shapes) == 4 and sorted(len(s) for s in shapes) == [1, 2, 2, 3]:
            return "ssd", self._ssd_order_by_shape(shapes)
        if len(shapes) == 1 and len(shapes[0]) == 3:
            return "yolo", [int(self._outputs[0]["index"])]
        if len(shapes) == 1 and len(shapes[0]) == 2:
            return "classifier", [int(self._outputs[0]["index"])]
        raise ModelError(
            f"{self.model_path}: outputs {shapes} match no known model kind",
            hint="supported: SSD with TFLite_Detection_PostProcess, YOLO-style [1,N,5+C] or "
            "[1,4+C,N], classifier [1,C]",
        )

    def _ssd_order_by_shape(self, shapes: list[tuple[int, ...]]) -> list[int]:
        # Without op details: boxes are 3-D, count 1-D; of the two [1,N] outputs, the signature's order
        # (as the converter emits it) puts classes before scores.
        idx = [int(d["index"]) for d in self._outputs]
        boxes = next(i for i, s in zip(idx, shapes) if len(s) == 3)
        count = next(i for i, s in zip(idx, shapes) if len(s) == 1)
        two = [(d["name"], i) for d, i, s in zip(self._outputs, idx, shapes) if len(s) == 2]
        two.sort()
        return [boxes, two[0][1], two[1][1], count]

    # ------------------------------------------------------------------ inference

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The model's input tensor for a BGR image (resized, RGB, scaled as the input type needs)."""
        return self._prepare(image)

    def invoke_prepared(self, tensor: np.ndarray) -> None:
        """Run the model on an already prepared input (the detector-only rate the benchmark quotes)."""
        self._interp.set_tensor(self._input["index"], tensor)
        self._interp.invoke()

    def resize(self, image: np.ndarray) -> np.ndarray:
        """``image`` (BGR) resized to the model's input size (the motion gate can use it too).

        Area averaging, as in training: bilinear is 9× cheaper but aliases at 3-4× downscaling and cost
        the street detector false positives and miscounts. (A cheaper two-step area resize, halving first,
        differs by half a grey level on average and already counted worse on the held-out videos.)
        """
        return cv2.resize(image, self.input_size, interpolation=cv2.INTER_AREA)

    def tensor(self, resized: np.ndarray) -> np.ndarray:
        """The input tensor from a BGR image already at the model's input size."""
        rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        dtype = self._input["dtype"]
        if dtype == np.uint8:
            return rgb[None]
        if dtype == np.int8:
            return (rgb.astype(np.int16) - 128).astype(np.int8)[None]
        return ((rgb.astype(np.float32) - self._mean) / self._std)[None].astype(dtype)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        return self.tensor(self.resize(image))

    def invoke(self, image: np.ndarray) -> None:
        """Run the model once on a BGR image."""
        self.invoke_prepared(self._prepare(image))

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run the model on a prepared input; returns copies of the outputs the adapter reads (float)."""
        self.invoke_prepared(tensor)
        get = self._interp.get_tensor
        return [(get(i).astype(np.float32) - zero) * scale if scale else get(i) for i, scale, zero in self._out_quant]

    def decode(self, outputs: list[np.ndarray], frame_size: tuple[int, int]) -> list[Detection]:
        """Detections (frame pixels) from :meth:`infer` outputs; ``frame_size`` = (width, height)."""
        fw, fh = frame_size
        if self.kind == "ssd":
            found = self._decode_ssd(outputs, fw, fh)
        elif self.kind == "yolo":
            found = self._decode_yolo(outputs, fw, fh)
        else:
            raise ModelError("decode() is for detectors; classifiers use detect()")
        return suppress_duplicates(found, self.agnostic_iou)

    def detect(
        self,
        frame: np.ndarray,
        regions: Sequence[tuple[int, int, int, int]] | None = None,
        tensor: np.ndarray | None = None,
    ) -> list[Detection]:
        """Detections in ``frame`` (BGR, any size). ``regions`` (x0, y0, x1, y1) only matter to classifiers;
        ``tensor``: the frame already prepared with :meth:`prepare` (saves the resize)."""
        if self.kind == "classifier":
            out = []
            for x0, y0, x1, y1 in regions or [(0, 0, frame.shape[1], frame.shape[0])]:
                crop = frame[y0:y1, x0:x1]
                if crop.size:
                    out.extend(self._classify(crop, (x0, y0, x1, y1)))
            return out
        outputs = self.infer(self._prepare(frame) if tensor is None else tensor)
        return self.decode(outputs, (frame.shape[1], frame.shape[0]))

    def _label(self, class_id: int) -> str:
        if self.labels and self.labels[0] == "???" and len(self.labels) > 1:
            class_id += 1  # COCO label maps that start with the unused id 0
        if 0 <= class_id < len(self.labels):
            return self.labels[class_id]
        return str(class_id)

    def _decode_ssd(self, outputs: list[np.ndarray], fw: int, fh: int) -> list[Detection]:
        boxes, classes, scores, count_t = (o.reshape(-1) for o in outputs)
        count = min(int(count_t[0]), len(scores))
        keep = np.flatnonzero(scores[:count] >= self.min_score)
        if not len(keep):
            return []
        out = []
        label = self._label
        for (y0, x0, y1, x1), cid, score in zip(
            np.clip(boxes.reshape(-1, 4)[keep], 0.0, 1.0).tolist(),
            classes[keep].astype(int).tolist(),
            scores[keep].tolist(),
        ):
            cut = min(x0, y0) < EDGE or max(x1, y1) > 1.0 - EDGE
            out.append(Detection(label(cid), score, (x0 * fw, y0 * fh, x1 * fw, y1 * fh), cid, cut))
        return out

    def _decode_yolo(self, outputs: list[np.ndarray], fw: int, fh: int) -> list[Detection]:
        raw = outputs[0][0].astype(np.float32)
        n_labels = len([lb for lb in self.labels if lb != "???"]) if self.labels else 0
        widths = (4 + n_labels, 5 + n_labels) if n_labels else ()
        if widths and raw.shape[1] in widths and raw.shape[0] not in widths:
            transposed = False
        elif widths and raw.shape[0] in widths and raw.shape[1] not in widths:
            transposed = True
        else:  # no labels to tell: real models have far more candidates than values per candidate
            transposed = raw.shape[0] < raw.shape[1]
        if transposed:  # [4+C, N]: YOLOv8 layout, no objectness
            rows = raw.T
            scores_all = rows[:, 4:]
        else:  # [N, 5+C]: YOLOv5 layout with objectness (or [N, 4+C] without, when the labels say so)
            rows = raw
            has_obj = n_labels == 0 or rows.shape[1] == 5 + n_labels
            scores_all = rows[:, 5:] * rows[:, 4:5] if has_obj else rows[:, 4:]
        cls = scores_all.argmax(1)
        score = scores_all[np.arange(len(rows)), cls]
        keep = score >= self.min_score
        if not keep.any():
            return []
        xywh = rows[keep, :4]
        cls, score = cls[keep], score[keep]
        if float(np.max(xywh)) > 2.0:  # pixel units of the model input
            xywh = xywh / np.array([*self.input_size, *self.input_size], np.float32)
        x0 = (xywh[:, 0] - xywh[:, 2] / 2) * fw
        y0 = (xywh[:, 1] - xywh[:, 3] / 2) * fh
        x1 = (xywh[:, 0] + xywh[:, 2] / 2) * fw
        y1 = (xywh[:, 1] + xywh[:, 3] / 2) * fh
        out = []
        for c in np.unique(cls):
            sel = np.nonzero(cls == c)[0]
            rects = [[float(x0[i]), float(y0[i]), float(x1[i] - x0[i]), float(y1[i] - y0[i])] for i in sel]
            kept = cv2.dnn.NMSBoxes(rects, [float(score[i]) for i in sel], self.min_score, self.iou_threshold)
            for k in np.array(kept).reshape(-1):
                i = sel[int(k)]
                box = (
                    max(0.0, float(x0[i])),
                    max(0.0, float(y0[i])),
                    min(float(fw), float(x1[i])),
                    min(float(fh), float(y1[i])),
                )
                cut = min(box[0] / fw, box[1] / fh) < EDGE or box[2] / fw > 1.0 - EDGE or box[3] / fh > 1.0 - EDGE
                out.append(Detection(self._label(int(c)), float(score[i]), box, int(c), cut))
        out.sort(key=lambda d: -d.score)
        return out

    def _classify(self, crop: np.ndarray, box: tuple[int, int, int, int]) -> list[Detection]:
        probs = self.infer(self._prepare(crop))[0][0].astype(np.float32)
        cid = int(np.argmax(probs))
        score = float(probs[cid])
        if score < self.min_score:
            return []
        return [Detection(self._label(cid), score, tuple(float(v) for v in box), cid)]  # type: ignore[arg-type]
