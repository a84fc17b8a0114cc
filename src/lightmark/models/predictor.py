"""A torch model behind the Predictor protocol (:class:`lightmark.core.types.Predictor`)."""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from lightmark.core.codec import (check_convention, conventions_of, decode, point_offsets, select_convention,
                                  shift_points)
from lightmark.core.errors import CodecError, ModelFileError
from lightmark.core.config import CodecConfig, config_from_dict, model_config_from_dict, to_dict
from lightmark.core.imaging import to_input
from lightmark.core.quality import face_quality


class TorchPredictor:
    """A torch model behind the Predictor protocol (see docs/ARCHITECTURE.md).

    ``predict_crops(crops uint8 (N, S, S, 3)) -> float32 (N, 68, 2)`` points in crop pixels,
    via :func:`lightmark.imaging.to_input`, the model and :func:`lightmark.heatmap.decode`.
    The model is put in eval mode (a caller validating mid-training switches it back).
    """

    def __init__(self, model: nn.Module, meta: dict, device: Union[str, torch.device, None] = None,
                 batch_size: int = 64, name: str = "torch model") -> None:
        #: What errors name: the model file, when the model came from one.
        self.name = name
        if "model" not in meta:
            raise ValueError("TorchPredictor: meta has no 'model' entry (the ModelConfig)")
        model_cfg = meta["model"]
        self.model_cfg = model_config_from_dict(to_dict(model_cfg) if dataclasses.is_dataclass(model_cfg)
                                                else dict(model_cfg), "meta.model")
        codec = meta.get("codec") or {}
        self.codec_cfg: CodecConfig = config_from_dict(
            {"codec": to_dict(codec) if dataclasses.is_dataclass(codec) else dict(codec)}, "meta").codec
        if "crop_scale" not in meta:
            raise ValueError("TorchPredictor: meta has no 'crop_scale' entry")
        self.meta = meta
        self.input_size: int = int(self.model_cfg.input_size)
        #: The landmark conventions the model outputs ("2d", "3d"), in output order.
        self.conventions: list[str] = conventions_of(self.model_cfg)
        self.crop_scale: float = float(meta["crop_scale"])
        #: {convention: (x, y)} crop-pixel shift added to decoded points (codec.offsets).
        self.point_offsets: dict[str, np.ndarray] = point_offsets(self.codec_cfg)
        # Default: stay where the model is, so validating a model mid-training on a GPU neither
        # moves it to the CPU nor copies it.
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else "cpu"
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model = model.to(self.device).eval()

    def _check_crops(self, crops: np.ndarray) -> np.ndarray:
        c = np.asarray(crops)
        if c.ndim == 3:
            c = c[None]
        s = self.input_size
        if c.dtype != np.uint8 or c.ndim != 4 or c.shape[1:] != (s, s, 3):
            raise ValueError(f"predict_crops: expected uint8 crops of shape (N, {s}, {s}, 3), "
                             f"got {c.dtype} {c.shape}")
        return c

    def _raw(self, c: np.ndarray) -> np.ndarray:
        raw: list[np.ndarray] = []
        with torch.inference_mode():
            for i in range(0, len(c), self.batch_size):
                x = torch.from_numpy(to_input(c[i:i + self.batch_size])).to(self.device)
                raw.append(self.model(x).float().cpu().numpy())
        return np.concatenate(raw)

    def _decode(self, y: np.ndarray) -> np.ndarray:
        """Points of one convention's outputs (:func:`select_convention` already applied)."""
        try:
            pts = decode(y, self.model_cfg, self.codec_cfg).astype(np.float32)
        except CodecError as e:
            raise ModelFileError(f"{self.name}: its output cannot be decoded ({e})") from None
        if not np.all(np.isfinite(pts)):
            raise ModelFileError(f"{self.name}: the model gave non-finite points (broken weights?)")
        return pts

    def predict_crops(self, crops: np.ndarray, convention: str = "2d") -> np.ndarray:
        return self.predict_crops_sets(crops, (convention,))[convention]

    def _sets(self, crops: np.ndarray, conventions: Sequence[str]
              ) -> tuple[dict[str, np.ndarray], Optional[np.ndarray]]:
        """Points of each of ``conventions`` from one pass, and the first convention's raw output
        (``None`` for no crops)."""
        c = self._check_crops(crops)
        for name in conventions:
            check_convention(self.model_cfg, name)  # before any work
        if len(c) == 0:
            return {name: np.zeros((0, self.model_cfg.num_points, 2), np.float32) for name in conventions}, None
        out = self._raw(c)
        maps = {name: select_convention(out, self.model_cfg, name) for name in conventions}
        return (shift_points({name: self._decode(m) for name, m in maps.items()}, self.point_offsets),
                maps[conventions[0]])

    def predict_crops_sets(self, crops: np.ndarray, conventions: Sequence[str]) -> dict[str, np.ndarray]:
        """Points of each of ``conventions`` from one pass of the model: {name: (N, K, 2)}."""
        return self._sets(crops, conventions)[0]

    def predict_crops_raw(self, crops: np.ndarray, decode_points: bool = True, convention: str = "2d"
                          ) -> tuple[Optional[np.ndarray], np.ndarray]:
        """Like :meth:`predict_crops`, and the raw model output of that convention (numpy) beside
        the points (points ``None`` with ``decode_points=False``)."""
        c = self._check_crops(crops)
        check_convention(self.model_cfg, convention)  # before any work
        if len(c) == 0:
            return np.zeros((0, self.model_cfg.num_points, 2), np.float32), np.zeros((0,), np.float32)
        out = select_convention(self._raw(c), self.model_cfg, convention)
        if not decode_points:
            return None, out
        return shift_points({convention: self._decode(out)}, self.point_offsets)[convention], out

    def predict_crops_quality(self, crops: np.ndarray, conventions: Sequence[str] = ("2d",)
                              ) -> tuple[dict[str, np.ndarray], Optional[np.ndarray]]:
        """Points of each of ``conventions`` ({name: (N, K, 2)} in crop pixels) and each crop's
        face quality (N,) from the first convention's maps (:mod:`lightmark.core.quality`;
        ``None`` for heads without one), all from one pass."""
        pts, first = self._sets(crops, conventions)
        return pts, (np.zeros((0,), np.float32) if first is None else face_quality(first, self.model_cfg))
