"""The landmark model on onnxruntime: the torch-free implementation of the Predictor protocol.

A model is two files side by side: ``NAME.onnx`` (input ``"input"`` (N, 3, S, S) float32 from
``imaging.to_input``, output ``"output"``, and for an integral head ``"moments"``, the softmax
moments of each map that points and quality are read from) and ``NAME.json`` (``"model"``: the ModelConfig,
``"codec"``, ``"crop_scale"``, ``"onnx_sha256"``). The checksum is verified on load so a stale or
truncated ``.onnx`` never runs with the wrong metadata.
"""
from __future__ import annotations

from pathlib import Path
import functools
from typing import Any, Optional, Sequence, Union

import numpy as np

from lightmark.core.files import sha256
from lightmark.core.geometry import LANDMARK_CROP_SCALE
from lightmark.core.codec import (check_convention, conventions_of, decode, moments_to_points, point_offsets,
                                  select_convention, shift_points)
from lightmark.core.imaging import to_input
from lightmark.core.errors import CodecError, ConventionError, ModelFileError
from lightmark.core.modelfile import model_paths, read_meta
from lightmark.core.quality import face_quality, quality_from_spread, spread_from_moments
from lightmark.runtime.session import make_session

PathLike = Union[str, Path]

# Crops per onnxruntime call when the model's batch axis is dynamic. The time per face is the same
# from 1 to 32 crops a call (docs/SPEED.md), while onnxruntime's arena keeps the largest batch's
# activations for good (about 1.7 MB a crop), so 8 caps that at about 14 MB.
DEFAULT_CHUNK = 8


@functools.lru_cache(maxsize=1)
def cpu_channel_block() -> Optional[int]:
    """Channels per block of onnxruntime's blocked (NCHWc) convolutions on this CPU: 16 with
    AVX-512, 8 with AVX2 only; ``None`` where it cannot be told (not Linux, not x86), which keeps
    the main graph."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    if "avx512f" in flags:
        return 16
    if "avx2" in flags:
        return 8
    return None


class OnnxPredictor:
    """Predictor protocol on onnxruntime: ``predict_crops(uint8 (N, S, S, 3)) -> float32 (N, 68, 2)``.

    ``path``: ``NAME.onnx`` (or ``NAME`` / ``NAME.json``). ``threads``: onnxruntime intra-op threads.
    ``verify=False`` skips the checksum (for files being written by an export in progress only).
    ``channel_multiple``: which graph to run when the JSON lists ``"onnx_variants"`` (the same
    network padded to other channel multiples, same outputs): ``None`` picks the one that suits
    this CPU (:func:`cpu_channel_block`), else the main ``NAME.onnx``; a number asks for that one.
    """

    def __init__(self, path: PathLike, threads: int = 1, verify: bool = True,
                 channel_multiple: Optional[int] = None) -> None:
        paths = model_paths(path)
        self.onnx_path, self.json_path = paths.onnx, paths.json
        if not self.onnx_path.is_file():
            raise ModelFileError(f"{self.onnx_path}: no such ONNX model file")
        self.meta: dict[str, Any] = read_meta(self.json_path)
        want_sha = self.meta.get("onnx_sha256")
        variants = self.meta.get("onnx_variants") or {}
        block = channel_multiple if channel_multiple is not None else cpu_channel_block()
        main_multiple = self.meta.get("onnx_channel_multiple")
        if block is not None and str(block) in variants and block != main_multiple:
            v = variants[str(block)]
            self.onnx_path, want_sha = self.onnx_path.with_name(str(v["file"])), v.get("sha256")
            if not self.onnx_path.is_file():
                raise ModelFileError(f"{self.onnx_path}: no such ONNX model file (listed in "
                                     f"{self.json_path.name} under 'onnx_variants')")
        elif channel_multiple is not None and channel_multiple != main_multiple:
            raise ModelFileError(f"{self.json_path}: no graph padded to {channel_multiple} channels "
                                 f"(main: {main_multiple}, variants: {sorted(variants)})")
        self.channel_multiple: Optional[int] = block if str(block) in variants else main_multiple
        if verify:
            want = want_sha
            if not want:
                raise ModelFileError(f"{self.json_path}: no checksum to check {self.onnx_path.name} against")
            got = sha256(self.onnx_path)
            if got != want:
                raise ModelFileError(f"{self.onnx_path}: checksum {got[:12]}... does not match "
                                     f"'onnx_sha256' {str(want)[:12]}... in {self.json_path.name} "
                                     "(the model and its metadata are from different exports)")
        self.input_size: int = int(self.meta["model"]["input_size"])
        self.crop_scale: float = float(self.meta.get("crop_scale", LANDMARK_CROP_SCALE))
        self.num_points: int = int(self.meta["model"].get("num_points", 68))
        #: The landmark conventions the model outputs ("2d", "3d"), in output order.
        self.conventions: list[str] = conventions_of(self.meta["model"])
        #: {convention: (x, y)} crop-pixel shift added to decoded points (codec.offsets;
        #: checked by read_meta).
        self.point_offsets: dict[str, np.ndarray] = point_offsets(self.meta.get("codec"))
        self._session = make_session(self.onnx_path, threads, "ONNX landmark model")
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = [o.name for o in self._session.get_outputs()]
        if "input" not in inputs or "output" not in outputs:
            raise ModelFileError(f"{self.onnx_path}: expected input 'input' and output 'output', got "
                                 f"inputs {sorted(inputs)} and outputs {outputs}")
        shape = inputs["input"].shape
        if len(shape) != 4 or any(isinstance(v, int) and v != want for v, want in
                                  zip(shape[1:], (3, self.input_size, self.input_size))):
            raise ModelFileError(f"{self.onnx_path}: input shape {shape} does not match (N, 3, "
                                 f"{self.input_size}, {self.input_size}) from {self.json_path.name}")
        #: Points and quality come from the graph's ``"moments"`` output (integral heads exported
        #: with it): the maps are neither copied out nor decoded in numpy.
        self.uses_moments: bool = "moments" in outputs and self.meta["model"].get("head") == "integral"
        hm = int(self.meta["model"].get("heatmap_size") or 0)
        self._hm_size = (hm, hm)
        # A fixed batch axis (some exports) is honoured by chunking at exactly that size.
        self._fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.chunk: int = self._fixed_batch or DEFAULT_CHUNK

    def __repr__(self) -> str:
        return f"OnnxPredictor({str(self.onnx_path)!r}, input_size={self.input_size})"

    def run(self, x: np.ndarray, output: str = "output") -> np.ndarray:
        """Raw network output (or ``output="moments"``) for a normalised float32 (n, 3, S, S)
        batch (n <= chunk when fixed)."""
        return self._session.run([output], {"input": x})[0]

    def _check_crops(self, crops: np.ndarray) -> np.ndarray:
        c = np.asarray(crops)
        if c.ndim == 3:
            c = c[None]
        s = self.input_size
        if c.ndim != 4 or c.shape[1:] != (s, s, 3):
            raise ValueError(f"{self.onnx_path.name}: crops must be (N, {s}, {s}, 3), got shape {c.shape}")
        if c.dtype != np.uint8:
            raise ValueError(f"{self.onnx_path.name}: crops must be uint8, got {c.dtype}")
        return c

    def _run_chunks(self, c: np.ndarray, output: str = "output") -> list[np.ndarray]:
        """Raw outputs of the network over ``c`` in chunks (a fixed batch is padded)."""
        raw = []
        for i in range(0, len(c), self.chunk):
            x = to_input(c[i:i + self.chunk])
            n = len(x)
            if self._fixed_batch and n < self._fixed_batch:  # pad the last chunk of a fixed batch
                x = np.concatenate([x, np.zeros((self._fixed_batch - n,) + x.shape[1:], x.dtype)])
            try:
                raw.append(self.run(x, output)[:n])
            except Exception as e:  # onnxruntime's own types: a graph that loads but cannot run
                raise ModelFileError(f"{self.onnx_path}: the model failed to run "
                                     f"({type(e).__name__}: {str(e)[:300]})") from None
        return raw

    def _decode(self, y: np.ndarray, moments: bool = False, sets: int = 1) -> np.ndarray:
        """Points of one convention's raw output, or of the moments (``moments=True``) of
        ``sets`` conventions' maps side by side."""
        try:
            if moments:
                pts = moments_to_points(y, self.input_size, self._hm_size)
            else:
                pts = decode(y, self.meta["model"], self.meta.get("codec")).astype(np.float32)
        except CodecError as e:
            raise ModelFileError(f"{self.onnx_path}: its output does not fit {self.json_path.name} "
                                 f"({e})") from None
        want = (sets * self.num_points, 2)
        if pts.shape[1:] != want or not np.isfinite(pts).all():
            # NaN points are never an answer: the weights are broken (or the graph is not a model).
            what = "non-finite points" if pts.shape[1:] == want else f"output of shape {pts.shape}"
            raise ModelFileError(f"{self.onnx_path}: the model gave {what} (broken weights?)")
        return pts

    def _check_convention(self, convention: str) -> None:
        """:class:`ConventionError` naming the model file, before any work, for a missing set."""
        try:
            check_convention(self.meta["model"], convention)
        except ConventionError as e:
            raise ConventionError(f"{self.json_path.name}: {e}") from None

    def predict_crops(self, crops: np.ndarray, convention: str = "2d") -> np.ndarray:
        """Points in crop pixels, float32 (N, K, 2), for uint8 crops (N, S, S, 3) or one (S, S, 3);
        ``convention``: which of the model's landmark sets (``self.conventions``)."""
        return self.predict_crops_sets(crops, (convention,))[convention]

    def _sets(self, crops: np.ndarray, conventions: Sequence[str]
              ) -> tuple[dict[str, np.ndarray], Optional[np.ndarray]]:
        """Points of each of ``conventions`` from one pass, and the first convention's share of
        what the pass gave (its moments, or its maps for a graph without them; ``None`` for no
        crops)."""
        c = self._check_crops(crops)
        for name in conventions:
            self._check_convention(name)
        if len(c) == 0:
            return {name: np.zeros((0, self.num_points, 2), np.float32) for name in conventions}, None
        raw = self._run_chunks(c, self.pass_output)
        y = raw[0] if len(raw) == 1 else np.concatenate(raw)
        return self.decode_output(y, conventions), select_convention(y, self.meta["model"], conventions[0])

    @property
    def pass_output(self) -> str:
        """The graph output a pass reads: ``"moments"`` when the points come from them, else ``"output"``."""
        return "moments" if self.uses_moments else "output"

    def decode_output(self, y: np.ndarray, conventions: Sequence[str]) -> dict[str, np.ndarray]:
        """Points in crop pixels of each of ``conventions`` ({name: (N, K, 2)}) from a pass's
        :attr:`pass_output` ``y`` (all conventions' channels)."""
        model = self.meta["model"]
        if self.uses_moments:
            # The moments of every set's maps are one small array: one decode for all of them
            # (per set, the numpy calls' fixed cost was most of a tracked frame's decoding).
            every = self._decode(y, True, len(self.conventions))
            pts = {name: select_convention(every, model, name) for name in conventions}
        else:
            pts = {name: self._decode(select_convention(y, model, name)) for name in conventions}
        return shift_points(pts, self.point_offsets)

    def predict_crops_sets(self, crops: np.ndarray, conventions: Sequence[str]) -> dict[str, np.ndarray]:
        """Points of each of ``conventions`` from one pass of the network: {name: (N, K, 2)}."""
        return self._sets(crops, conventions)[0]

    def predict_crops_quality(self, crops: np.ndarray, conventions: Sequence[str] = ("2d",)
                              ) -> tuple[dict[str, np.ndarray], Optional[np.ndarray]]:
        """Points of each of ``conventions`` ({name: (N, K, 2)} in crop pixels) and each crop's
        face quality (N,) from the first convention's maps (:mod:`lightmark.core.quality`;
        ``None`` for heads without one), all from one pass."""
        pts, first = self._sets(crops, conventions)
        if first is None:
            return pts, np.zeros((0,), np.float32)
        if self.uses_moments:
            return pts, quality_from_spread(spread_from_moments(first, self._hm_size))
        return pts, face_quality(first, self.meta["model"])

    def predict_crops_raw(self, crops: np.ndarray, decode_points: bool = True, convention: str = "2d"
                          ) -> tuple[Optional[np.ndarray], np.ndarray]:
        """Like :meth:`predict_crops`, and the raw network output beside the points:
        (float32 (N, K, 2) points, the output array, e.g. (N, K, h, w) logits). For scores
        computed from the maps (:mod:`lightmark.core.quality`). ``decode_points=False``: points
        ``None`` (for a caller that decodes the output itself)."""
        c = self._check_crops(crops)
        self._check_convention(convention)
        if len(c) == 0:
            return np.zeros((0, self.num_points, 2), np.float32), np.zeros((0,), np.float32)
        raw = self._run_chunks(c)
        out = select_convention(np.concatenate(raw) if len(raw) > 1 else raw[0], self.meta["model"],
                                convention)
        if not decode_points:
            return None, out
        return shift_points({convention: self._decode(out)}, self.point_offsets)[convention], out
