"""The Ultra-Light RFB detector at any input size: prior boxes and box decoding in numpy.

The published RFB-320 graph decodes its box regressions against 4,420 prior boxes baked in for a
320x240 input, so it only runs at that size. ``assets/face_detector/version-RFB-anysize.onnx``
(made by ``scripts/clean_detector_onnx.py``) is the same network with free input height and
width that stops before that decoding: outputs ``scores`` (1, N, 2) and the raw ``locations``
(1, N, 4). :func:`priors` rebuilds the prior boxes for any input size the way the detector's
authors generate them (feature maps at strides 8, 16, 32, 64; anchors of 10-256 input pixels),
and :func:`decode_boxes` applies the graph's own decoding to them. At 320x240 the priors equal
the baked constants exactly (tested).
"""
from __future__ import annotations

import functools
import math

import numpy as np

STRIDES = (8, 16, 32, 64)
MIN_BOXES = ((10.0, 16.0, 24.0), (32.0, 48.0), (64.0, 96.0), (128.0, 192.0, 256.0))
CENTER_VARIANCE = 0.1
SIZE_VARIANCE = 0.2
#: The smallest anchor, in detector-input pixels: faces much smaller than this are not found.
SMALLEST_ANCHOR = MIN_BOXES[0][0]


@functools.lru_cache(maxsize=16)
def priors(width: int, height: int) -> np.ndarray:
    """``(N, 4)`` float32 prior boxes (centre x, centre y, width, height as fractions of the input)
    for a ``width`` x ``height`` input, in the order of the network's outputs."""
    out = []
    for stride, sizes in zip(STRIDES, MIN_BOXES):
        fw, fh = math.ceil(width / stride), math.ceil(height / stride)
        # Centres divide by the feature-map size (not size / stride): 7.5 cells of 32 rows in 240
        # are 8 cells spread over the whole input, as in the authors' configuration.
        j, i = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cx = ((i + 0.5) / fw).ravel()
        cy = ((j + 0.5) / fh).ravel()
        for_cell = [np.stack([cx, cy, np.full_like(cx, s / width), np.full_like(cy, s / height)], axis=1)
                    for s in sizes]
        out.append(np.stack(for_cell, axis=1).reshape(-1, 4))  # anchors of a cell side by side
    p = np.clip(np.concatenate(out), 0.0, 1.0).astype(np.float32)
    p.flags.writeable = False
    return p


def decode_boxes(locations: np.ndarray, prior_boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` float32 x1, y1, x2, y2 (fractions of the input) from raw ``(N, 4)`` regressions:
    the published graph's decoding, operation for operation, in float32."""
    loc = np.asarray(locations, np.float32)
    c = loc[:, :2] * np.float32(CENTER_VARIANCE) * prior_boxes[:, 2:] + prior_boxes[:, :2]
    wh = np.exp(loc[:, 2:] * np.float32(SIZE_VARIANCE)) * prior_boxes[:, 2:]
    half = wh / np.float32(2.0)
    return np.concatenate([c - half, c + half], axis=1)


def input_size_for(canvas_wh: tuple[int, int], min_face: float, base_hw: tuple[int, int],
                   face_px: float = 2 * SMALLEST_ANCHOR, step: int = 80,
                   max_width: int = 1280) -> tuple[int, int]:
    """(height, width) of the detector input that shows a ``min_face``-pixel face of a
    ``canvas_wh`` letterbox canvas at ``face_px`` input pixels, in steps of ``step`` columns
    (a few distinct sizes keep onnxruntime's per-shape memory plans few), the aspect ratio of
    ``base_hw``, between ``step`` and ``max_width`` columns."""
    h0, w0 = base_hw
    want = canvas_wh[0] * face_px / float(min_face)
    w = int(min(max(step * math.ceil(want / step), step), max_width))
    return int(round(w * h0 / w0)), w
