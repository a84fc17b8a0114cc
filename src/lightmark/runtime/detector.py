"""The bundled face detector: Ultra-Light-Fast-Generic-Face-Detector-1MB (RFB-320), run by onnxruntime.

No torch here. ``FaceDetector.detect`` returns boxes in image pixels. A detector box is not a
landmark box: it is typically larger, reaching above the brows, and its centre sits a little
higher than the landmarks' centre. The detector carries the :class:`~lightmark.core.boxmap.BoxMapping`
fitted for it (``assets/face_detector/box_mapping.json``; refit with `lightmark fit-box-mapping`),
which turns its boxes into the crop the landmark model was trained on. Any other detector plugs in
by the :class:`~lightmark.core.types.Detector` protocol: ``detect`` and a ``box_mapping``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from lightmark.core.boxmap import DEFAULT_MAPPING, BoxMapping, box_mapping_from_dict, load_box_mapping
from lightmark.core.errors import DetectorError, ModelFileError
from lightmark.core.geometry import box_iou
from lightmark.core.imaging import ImageLike, as_image
from lightmark.runtime.session import make_session

PathLike = Union[str, Path]

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "face_detector"
DEFAULT_MODEL = ASSET_DIR / "version-RFB-320.onnx"
#: The same network with free input size and without the baked-in box decoding (runtime/rfb.py):
#: what ``min_face`` runs at sizes other than the fixed graph's.
ANYSIZE_MODEL = ASSET_DIR / "version-RFB-anysize.onnx"

# The detector's own normalisation (README of the shared models): (pixel - 127) / 128.
_MEAN = 127.0
_SCALE = 1.0 / 128.0
# Letterbox scales below this (photos 8x the detector input or more: 12 MP) halve the photo first.
# Every AFW, aflw2000_val and 640x480 photo is above it, so their input is what it always was.
_HALVE_BELOW = 0.125


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3,
        top_k: Optional[int] = None) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first.

    ``boxes`` (N, 4) x1, y1, x2, y2; a box is dropped when its IoU with a kept, higher-scoring box
    exceeds ``iou_threshold``. ``top_k`` caps the number kept.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(b) != len(s):
        raise ValueError(f"nms: {len(b)} boxes but {len(s)} scores")
    # Stable sort so that equal scores keep their input order (reproducible results).
    order = np.argsort(-s, kind="stable")
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if top_k is not None and len(keep) >= top_k:
            break
        rest = order[1:]
        xx1 = np.maximum(b[i, 0], b[rest, 0])
        yy1 = np.maximum(b[i, 1], b[rest, 1])
        xx2 = np.minimum(b[i, 2], b[rest, 2])
        yy2 = np.minimum(b[i, 3], b[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        union = area[i] + area[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class FaceDetector:
    """Ultra-Light face detector on onnxruntime (CPU, no torch).

    ``detect(image)`` -> float32 ``(N, 5)``: x1, y1, x2, y2, score in pixels of ``image``, best
    first. Boxes are not clipped to the image: a face at the border keeps its true shape, which the
    crop mapping relies on.

    ``box_mapping``: the fitted :class:`~lightmark.core.boxmap.BoxMapping` for its boxes
    (``box_mapping.crop_for(model_crop_scale)`` gives a model's training crop).

    ``min_face``: the smallest face wanted, in pixels of the photo (its larger box side), or
    ``None`` (default: the fixed 320x240 input, whatever the photo). With a number, the detector
    input is sized per photo so that such a face spans about 20 input pixels (twice the
    smallest anchor), in steps of 80x60: smaller than 320x240 (faster) when only large faces are
    wanted, larger (slower, finds smaller faces) for small faces in big photos. Sizes other than
    320x240 run ``version-RFB-anysize.onnx``. docs/SPEED.md has recall and time per setting.

    ``mirror``: also run the network on the mirror image of its input and add the faces only that
    pass finds (its boxes that overlap none of the first pass's). The network is not left-right
    symmetric: it scores many profiles facing one way far lower than their mirror images, so the
    second pass finds most of the profiles the first misses, for twice the network's time
    (docs/MODEL_CARD.md, "Detector: the mirror pass").
    """

    def __init__(self, model_path: Optional[PathLike] = None, score_threshold: float = 0.7,
                 nms_iou: float = 0.3, top_k: int = 200, threads: int = 1,
                 box_mapping: Union[PathLike, dict, BoxMapping, None] = None,
                 min_face: Optional[float] = None, mirror: bool = False) -> None:
        if min_face is not None and not (isinstance(min_face, (int, float)) and np.isfinite(min_face)
                                         and min_face > 0):
            raise DetectorError(f"min_face must be a positive number of pixels or None, got {min_face!r}")
        if not 0.0 <= score_threshold <= 1.0:
            raise DetectorError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 < nms_iou <= 1.0:
            raise DetectorError(f"nms_iou must be in (0, 1], got {nms_iou}")
        if top_k < 1:
            raise DetectorError(f"top_k must be >= 1, got {top_k}")
        self.model_path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.top_k = int(top_k)
        self.min_face = None if min_face is None else float(min_face)
        self.threads = int(threads)
        self.mirror = bool(mirror)
        self._anysize: Optional[object] = None
        try:
            self._session = make_session(self.model_path, threads, "face detector")
        except ModelFileError as e:
            raise DetectorError(str(e)) from None
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        shape = inp.shape  # [1, 3, H, W]; both published variants have fixed sizes
        if len(shape) != 4 or not all(isinstance(v, int) for v in shape[2:]):
            raise DetectorError(f"{self.model_path}: expected a fixed (1, 3, H, W) input, got {shape}")
        self.input_hw = (int(shape[2]), int(shape[3]))
        outs = {o.name for o in self._session.get_outputs()}
        if not {"scores", "boxes"} <= outs:
            raise DetectorError(f"{self.model_path}: expected outputs 'scores' and 'boxes', got {sorted(outs)}")

        if isinstance(box_mapping, (dict, BoxMapping)):
            mapping = box_mapping_from_dict(box_mapping, "FaceDetector(box_mapping=...)")
        else:
            mapping = load_box_mapping(box_mapping if box_mapping is not None else DEFAULT_MAPPING)
        self.box_mapping: BoxMapping = mapping


    def canvas_size(self, image: np.ndarray) -> tuple[int, int]:
        """(width, height) of the image padded right/bottom to the detector's aspect ratio.

        Letterboxing instead of stretching keeps faces their true shape in wide group photos and
        tall portraits alike, so one box mapping fits every image shape.
        """
        return self._canvas_wh(image.shape)

    def _canvas_wh(self, shape: tuple[int, ...]) -> tuple[int, int]:
        h_in, w_in = self.input_hw
        h, w = shape[:2]
        if w * h_in >= h * w_in:
            return w, int(np.ceil(w * h_in / w_in))
        return int(np.ceil(h * w_in / h_in)), h

    def input_hw_for(self, image_shape: tuple[int, ...]) -> tuple[int, int]:
        """(height, width) of the detector input for a photo of this shape (see ``min_face``)."""
        if self.min_face is None:
            return self.input_hw
        from lightmark.runtime.rfb import input_size_for

        return input_size_for(self._canvas_wh(image_shape), self.min_face, self.input_hw)

    def preprocess(self, image: np.ndarray, input_hw: Optional[tuple[int, int]] = None) -> np.ndarray:
        """HxWx3 uint8 RGB -> (1, 3, H_in, W_in) float32, letterboxed with the normalisation's zero.

        ``input_hw``: another input size of the same aspect ratio (default: the graph's own)."""
        import cv2

        h_in, w_in = input_hw or self.input_hw
        cw, ch = self.canvas_size(image)
        h, w = image.shape[:2]
        scale = min(w_in / cw, h_in / ch)
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        # Resized straight into the padded canvas; pixel value 127 is 0 after normalisation.
        canvas = np.full((h_in, w_in, 3), int(_MEAN), np.uint8)
        small = canvas[:sh, :sw]
        src = image
        if scale < _HALVE_BELOW:
            # A photo 8x the input or more (12 MP: 12.5x) is first halved by exact 2x2 averages,
            # OpenCV's vectorised fast path, while it stays 4x the target: INTER_AREA at 12.5x
            # directly took 4x as long, for a picture within a grey level on average. The odd last row
            # or column a halving drops moves the picture by at most that many photo pixels.
            while src.shape[1] >= 4 * sw and src.shape[0] >= 4 * sh:
                h2, w2 = src.shape[0] // 2, src.shape[1] // 2
                src = cv2.resize(src[:2 * h2, :2 * w2], (w2, h2), interpolation=cv2.INTER_AREA)
        out = cv2.resize(src, (sw, sh), dst=small,
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        if out is not small and not np.shares_memory(out, canvas):  # an OpenCV that ignored dst
            small[...] = out
        # Plane by plane into NCHW, then one in-place multiply-add: (x - 127) / 128 is exact in
        # float32 in either order, so this equals the broadcast formula bit for bit.
        x = np.empty((1, 3, h_in, w_in), np.float32)
        for c, plane in enumerate(cv2.split(canvas)):
            x[0, c] = plane
        x -= _MEAN
        x *= _SCALE
        return x

    def detect(self, image: ImageLike) -> np.ndarray:
        """Faces in ``image`` (array or path): float32 (N, 5) x1, y1, x2, y2, score, best first."""
        img = as_image(image)
        hw = self.input_hw_for(img.shape)
        run = self.run_network if hw == self.input_hw else self.run_anysize
        x = self.preprocess(img, hw)
        found = self.postprocess(*run(x), img.shape)
        if not self.mirror:
            return found
        # The mirrored input is the mirror of the whole padded canvas, so its boxes map back
        # exactly by x -> 1 - x in fractions of the canvas. They only add faces the first pass
        # missed: where both passes see a face the first pass's box is kept, the one the fitted
        # box mapping was made for.
        s2, b2 = run(np.ascontiguousarray(x[..., ::-1]))
        b2 = np.stack([1.0 - b2[..., 2], b2[..., 1], 1.0 - b2[..., 0], b2[..., 3]], axis=-1)
        extra = self.postprocess(s2, b2, img.shape)
        if len(found) and len(extra):
            extra = extra[box_iou(extra[:, :4], found[:, :4]).max(axis=1) < self.nms_iou]
        if not len(extra):
            return found
        both = np.concatenate([found, extra])
        return both[np.argsort(-both[:, 4], kind="stable")][:self.top_k]

    def run_anysize(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``scores`` and decoded ``boxes`` (fractions) for an input of any size, by the
        any-size graph and :mod:`lightmark.runtime.rfb`'s priors."""
        from lightmark.runtime.rfb import decode_boxes, priors

        if self._anysize is None:
            try:
                self._anysize = make_session(ANYSIZE_MODEL, self.threads, "face detector (any size)")
            except ModelFileError as e:
                raise DetectorError(str(e)) from None
        scores, loc = self._anysize.run(["scores", "locations"], {self._input_name: x})
        h, w = x.shape[2:]
        return scores, decode_boxes(loc[0], priors(int(w), int(h)))[None]

    def run_network(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network on a :meth:`preprocess` output: raw ``scores`` (1, N, 2), ``boxes`` (1, N, 4)."""
        scores, boxes = self._session.run(["scores", "boxes"], {self._input_name: x})
        return scores, boxes

    def postprocess(self, scores: np.ndarray, boxes: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
        """Threshold, boxes to image pixels and NMS: float32 (N, 5) x1, y1, x2, y2, score."""
        face = scores[0, :, 1]
        sel = face > self.score_threshold
        if not np.any(sel):
            return np.zeros((0, 5), np.float32)
        cw, ch = self._canvas_wh(image_shape)
        b = boxes[0, sel].astype(np.float64) * np.array([cw, ch] * 2)
        s = face[sel].astype(np.float64)
        # Degenerate boxes (zero width or height) cannot be cropped; drop them before NMS.
        ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        b, s = b[ok], s[ok]
        keep = nms(b, s, self.nms_iou, self.top_k)
        return np.hstack([b[keep], s[keep, None]]).astype(np.float32)
