"""The stable user API.

    from lightmark import Landmarker
    lm = Landmarker()                  # the bundled model (ONNX, no torch); Landmarker(model=PATH)
    pts = lm.predict(image, box)       # (68, 2) float32, 0-based pixels of the original image
    pts = lm.predict_batch(image, boxes)  # (N, 68, 2): many boxes on ONE image, one model batch
    faces = lm.predict_all(image)      # detect, then landmarks for every face
    faces = lm.predict_many(images)    # predict_all over MANY images, their faces in one batch

Boxes. ``predict(image, box)`` takes a *face box* of the detector kind by default
(``box_kind="face"``): any detector's x1, y1, x2, y2 around a face works, and the bundled detector's
fitted :class:`~lightmark.core.boxmap.BoxMapping` turns it into the crop the model was trained on. Pass
``box_kind="landmarks"`` when the box is the tight box around the 68 points (e.g. evaluation with
ground-truth boxes). With ``refine=True`` (default) the first prediction's own landmark box gives a
second, better-centred crop and the model runs once more, at twice the model cost (the detector
runs once either way): the mapped detector box is right on average but spreads from face to face
(measured in ``docs/ABLATIONS.md``), and the refined crop removes most of that spread when the model
is good. Faces whose first answer is implausibly small or large
(see ``REFINE_SIDE_RANGE``) keep their first answer. ``box_kind="landmarks"`` boxes already give
the training crop and are never refined, so evaluation on ground-truth boxes is a single pass.

This module never imports torch unless ``backend="torch"`` or a ``.safetensors`` model is asked for.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from lightmark.core import geometry
from lightmark.core.boxmap import load_box_mapping
from lightmark.core.imaging import ImageLike, as_image
from lightmark.core.modelfile import model_paths
from lightmark.core.types import Detector, Face, Predictor
from lightmark.core.errors import ConventionError, LandmarkerError, LightmarkError, ModelNotFoundError

PathLike = Union[str, Path]

ASSET_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = ASSET_DIR / "model" / "lightmark.onnx"
#: Bundled models by name (``Landmarker(model=NAME)``, ``--model NAME``): ``"default"`` is the fast
#: one used when no model is given; ``"accurate"`` a larger network (docs/MODEL_CARD.md).
BUNDLED_MODELS = {"default": DEFAULT_MODEL, "accurate": ASSET_DIR / "model" / "lightmark-accurate.onnx"}

BACKENDS = ("auto", "onnx", "torch")
BOX_KINDS = ("face", "landmarks")
#: Refinement is skipped for a face when its predicted landmark crop is this far (ratio) from the
#: first crop: well outside the face-to-face spread of the fitted detector mapping.
REFINE_SIDE_RANGE = (0.7, 1.4)
#: A box may be at most this many times the image's larger side, and at least one pixel: anything
#: else is not a face in this image (and a 1e9-pixel box would only crop a dot).
MAX_BOX_TO_IMAGE = 16.0
ON_ERROR = ("raise", "skip", "return")






def _resolve_model(model: Optional[PathLike], backend: str) -> tuple[str, Path]:
    """(backend, path) for a model argument; errors name the missing file."""
    if backend not in BACKENDS:
        raise LandmarkerError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if model is None:
        model = "default"
    if isinstance(model, str) and model in BUNDLED_MODELS and not Path(model).exists():
        path = BUNDLED_MODELS[model]
        if backend == "torch":
            path = path.with_suffix(".safetensors")
        if not path.is_file():
            raise ModelNotFoundError(
                f"{path}: the bundled {model!r} landmark model is missing from this installation "
                "(it is added by the training/export step). Pass Landmarker(model=PATH) with a "
                "NAME.onnx (+ NAME.json) or NAME.safetensors (+ NAME.json) model.")
        return ("torch" if backend == "torch" else "onnx"), path
    p = Path(model)
    suffix = p.suffix.lower()
    paths = model_paths(p)
    onnx_path, st_path = paths.onnx, paths.safetensors
    if backend == "auto":
        if suffix == ".safetensors":
            backend = "torch"
        elif suffix == ".onnx" or onnx_path.is_file():
            backend = "onnx"
        elif st_path.is_file():
            backend = "torch"
        else:
            raise ModelNotFoundError(f"{p}: no such model (looked for {onnx_path.name} and {st_path.name}; "
                                     f"bundled models by name: {', '.join(BUNDLED_MODELS)})")
    path = onnx_path if backend == "onnx" else st_path
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: no such {'ONNX' if backend == 'onnx' else 'safetensors'} model file")
    return backend, path


def _load_predictor(backend: str, path: Path, threads: int) -> Predictor:
    if backend == "onnx":
        from lightmark.runtime.onnx import OnnxPredictor

        return OnnxPredictor(path, threads=threads)
    try:
        import torch  # only here: the torch backend is opt-in
        import safetensors  # noqa: F401

        from lightmark.models import TorchPredictor, load_model
    except ImportError as e:
        raise LandmarkerError(
            f"{path}: a .safetensors model needs the torch backend, which is not installed "
            f"({e}); install it with `pip install lightmark[train]`, or use the model's "
            f"{path.with_suffix('.onnx').name} (export it with `lightmark export`)") from None

    torch.set_num_threads(threads)
    model, meta = load_model(path)
    return TorchPredictor(model, meta, name=str(path))


class Landmarker:
    """68-point landmarks for faces in photos.

    ``model``: ``None`` or ``"default"`` (the bundled fast model), ``"accurate"`` (the bundled larger
    one, :data:`BUNDLED_MODELS`), or a path to ``NAME.onnx`` / ``NAME.safetensors`` (each with
    ``NAME.json`` beside it). ``backend``: ``"auto"`` (from the file), ``"onnx"`` or
    ``"torch"``. ``threads``: CPU threads for the model and the detector. ``refine``: re-crop on the
    first prediction's landmark box and predict again. ``detector``: a ready
    :class:`~lightmark.runtime.detector.FaceDetector` (default: the bundled one, loaded on first use).
    ``min_face``: the smallest face wanted, in photo pixels, for the bundled detector to size its
    input by (``FaceDetector(min_face=...)``); ``None`` (default) keeps its fixed 320x240 input.
    ``flip``: also run each face's mirror image and average the two answers
    (:mod:`lightmark.core.mirror`): more accurate, one more crop a face for the landmark model.
    ``detect_mirror``: the bundled detector also runs on each photo's mirror image
    (``FaceDetector(mirror=True)``): it then finds most of the profiles it misses, for twice its time.
    """

    def __init__(self, model: Optional[PathLike] = None, backend: str = "auto", threads: int = 1,
                 refine: bool = True, detector: Optional[Detector] = None,
                 score_threshold: float = 0.7, min_face: Optional[float] = None,
                 flip: bool = False, detect_mirror: bool = False) -> None:
        if not isinstance(threads, int) or threads < 1:
            raise LandmarkerError(f"threads must be a positive integer, got {threads!r}")
        self.backend, self.model_path = _resolve_model(model, backend)
        self.predictor = _load_predictor(self.backend, self.model_path, threads)
        self.flip = bool(flip)
        if self.flip:
            from lightmark.core.mirror import MirrorAveraged

            self.predictor = MirrorAveraged(self.predictor)
        self.threads = threads
        self.refine = bool(refine)
        self.score_threshold = float(score_threshold)
        if detect_mirror and detector is not None:
            raise LandmarkerError("detect_mirror applies to the bundled detector; pass "
                                  "FaceDetector(mirror=True) as the detector instead")
        self.detect_mirror = bool(detect_mirror)
        if min_face is not None and detector is not None:
            raise LandmarkerError("min_face applies to the bundled detector; set it on the detector "
                                  "you pass instead")
        self.min_face = min_face
        self._detector = detector
        self._mapping: Optional[tuple[float, tuple[float, float]]] = None
        self._lazy_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"Landmarker(model={str(self.model_path)!r}, backend={self.backend!r}, "
                f"input_size={self.input_size}, refine={self.refine}, flip={self.flip})")

    @property
    def input_size(self) -> int:
        return int(self.predictor.input_size)

    @property
    def crop_scale(self) -> float:
        """Crop side / larger side of the landmark box, as the model was trained."""
        return float(self.predictor.crop_scale)

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            with self._lazy_lock:  # threads sharing a Landmarker make one detector, not several
                if self._detector is None:
                    from lightmark.runtime.detector import FaceDetector

                    self._detector = FaceDetector(score_threshold=self.score_threshold,
                                                  threads=self.threads, min_face=self.min_face,
                                                  mirror=self.detect_mirror)
        return self._detector

    def face_box_mapping(self) -> tuple[float, tuple[float, float]]:
        """(scale, shift) for ``geometry.crop_matrix_from_box`` from a face (detector) box.

        The detector's :class:`~lightmark.core.boxmap.BoxMapping` for this model's own crop scale,
        so a model trained with another crop scale still gets its training crop. Read from the
        detector given to the constructor, else from the bundled mapping file (no detector
        session needed).
        """
        if self._mapping is None:
            mapping = self._detector.box_mapping if self._detector is not None else load_box_mapping()
            self._mapping = mapping.crop_for(self.crop_scale)
        return self._mapping

    # ------------------------------------------------------------------------------------------

    def detect(self, image: ImageLike) -> np.ndarray:
        """Faces by the bundled detector: float32 (N, 5) x1, y1, x2, y2, score, best first."""
        return self.detector.detect(as_image(image))

    @property
    def conventions(self) -> list[str]:
        """The landmark conventions this model outputs: ``"2d"`` (300W: the jaw on the visible
        contour) and, for models that have it, ``"3d"`` (projected 3D points, AFLW2000-3D's)."""
        return list(getattr(self.predictor, "conventions", None) or ["2d"])

    def predict(self, image: ImageLike, box: Sequence[float], box_kind: str = "face",
                convention: str = "2d") -> np.ndarray:
        """68 points, float32 (68, 2), 0-based pixels of ``image`` (array or path).

        ``box``: (x1, y1, x2, y2) around the face (a detector row with a 5th score value is also
        accepted). ``box_kind``: ``"face"`` (any face detector's box) or ``"landmarks"`` (the tight
        box around the 68 points). ``convention``: ``"2d"`` or ``"3d"`` (one of :attr:`conventions`).
        """
        b = np.asarray(box, dtype=np.float64) if _is_numeric(box) else None
        if b is None or b.shape not in ((4,), (5,)):
            raise LandmarkerError(f"box must be (x1, y1, x2, y2), got {box!r}")
        return self.predict_batch(image, b[None, :4], box_kind, convention)[0]

    def predict_batch(self, image: ImageLike, boxes: Any, box_kind: str = "face",
                      convention: str = "2d") -> np.ndarray:
        """Points for many boxes on one image: float32 (N, 68, 2). ``boxes``: (N, 4) or (N, 5)."""
        img = as_image(image)
        return self._predict_groups([img], [self._check_boxes(boxes, img.shape)], box_kind,
                                    convention)[0][0]

    def predict_all(self, image: ImageLike, convention: str = "2d") -> list[Face]:
        """Detect every face and predict its landmarks; faces best score first."""
        return self.predict_many([image], convention=convention)[0]

    def predict_boxes(self, images: Sequence[ImageLike], boxes: Sequence[Any],
                      box_kind: str = "face", convention: str = "2d") -> list[np.ndarray]:
        """:meth:`predict_batch` for several images, each with its own boxes: a list of float32
        (N_i, 68, 2). The model sees the faces of all the images together (in chunks of
        ``predictor.chunk``), as :meth:`predict_many` does after detection."""
        if len(images) != len(boxes):
            raise LandmarkerError(f"predict_boxes: {len(images)} images but {len(boxes)} box arrays")
        imgs = [as_image(i) for i in images]
        checked = [self._check_boxes(b, img.shape) for img, b in zip(imgs, boxes)]
        return self._predict_groups(imgs, checked, box_kind, convention)[0]

    def predict_many(self, images: Sequence[ImageLike], on_error: str = "raise",
                     convention: str = "2d") -> list[Union[list[Face], LightmarkError]]:
        """:meth:`predict_all` for several images; the landmark model sees all their faces in one
        batch (per pass), which is faster than image after image on a CPU.

        ``on_error`` says what an image that cannot be used (a missing or corrupt file, a bad
        array: a :class:`~lightmark.core.errors.LightmarkError`) does: ``"raise"`` (the default)
        raises it and nothing is returned; ``"skip"`` gives that image an empty list (as for a
        photo with no face); ``"return"`` puts the error object itself in that image's place, so
        the caller can tell "no face" from "unreadable". The other images are processed either way.
        ``convention``: as for :meth:`predict`; each ``Face`` also carries ``points_3d`` when the
        model has 3D-convention points and another convention was asked for (its pose uses them).
        """
        if on_error not in ON_ERROR:
            raise LandmarkerError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        imgs: list[Optional[np.ndarray]] = []
        failed: dict[int, LightmarkError] = {}
        for k, image in enumerate(images):
            try:
                imgs.append(as_image(image))
            except LightmarkError as e:
                if on_error == "raise":
                    raise
                failed[k] = e
                imgs.append(None)
        good = [i for i in imgs if i is not None]
        dets = [self.detect(i) for i in good]
        points, points_3d = self._predict_groups(good, [d[:, :4].astype(np.float64) for d in dets],
                                                 "face", convention, with_3d=True)
        faces = iter([[Face(box=d[:4].astype(np.float32), score=float(d[4]), points=p,
                            convention=convention, points_3d=None if p3 is None else p3[j])
                       for j, (d, p) in enumerate(zip(ds, pts))]
                      for ds, pts, p3 in zip(dets, points, points_3d)])
        return [next(faces) if k not in failed else ([] if on_error == "skip" else failed[k])
                for k in range(len(imgs))]

    def track(self, frames: Iterable[ImageLike], detect_every: int = 30, smooth: bool = True,
              fps: float = 30.0, timestamps: Optional[Iterable[float]] = None,
              **options: Any) -> Iterator[list[Face]]:
        """Track faces over video frames (RGB uint8 arrays); yields each frame's list of ``Face``
        (with ``track_id``, ``quality`` and ``pose``) as soon as that frame is done.

        The detector runs on the first frame, every ``detect_every`` frames and when a face is
        lost; in between each face is cropped from its own previous landmarks (one model pass).
        ``smooth``: One Euro filter on the points. ``fps`` gives the frame times unless
        ``timestamps`` (seconds) are given. ``options`` go to
        :class:`lightmark.tracking.FaceTracker` (e.g. ``max_faces``, ``min_quality``).
        """
        from lightmark.tracking import FaceTracker

        # Built here, not inside a generator, so bad options fail at the call.
        tracker = FaceTracker(self, detect_every=detect_every, smooth=smooth, fps=fps, **options)
        return tracker.run(frames, timestamps)

    def align(self, image: ImageLike, face_or_points: Union[Face, np.ndarray], style: str = "ffhq",
              size: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """Aligned crop of one face: ``(crop uint8 (size, size, 3), 2x3 matrix image -> crop)``.

        ``face_or_points``: a :class:`Face` from :meth:`predict_all` or (68, 2) points.
        ``style``: ``"ffhq"`` (FFHQ/StyleGAN crop, default size 1024) or ``"arcface"`` (the
        112x112 five-point ArcFace crop). See :mod:`lightmark.core.align`.
        """
        from lightmark.core.align import align_face

        points = face_or_points.points if isinstance(face_or_points, Face) else face_or_points
        return align_face(image, points, style=style, size=size)

    # ------------------------------------------------------------------------------------------

    def _predict_groups(self, imgs: list[np.ndarray], boxes: list[np.ndarray], box_kind: str,
                        convention: str, with_3d: bool = False
                        ) -> tuple[list[np.ndarray], list[Optional[np.ndarray]]]:
        """Points of ``convention`` for each image's boxes, the model run once per pass over all
        of them; beside them the 3D-convention points of the same pass when ``with_3d``, the
        model has them and ``convention`` is another (else ``None`` per image)."""
        if box_kind not in BOX_KINDS:
            raise LandmarkerError(f"box_kind must be one of {BOX_KINDS}, got {box_kind!r}")
        if convention not in self.conventions:
            raise ConventionError(f"{self.model_path.name}: no {convention!r} landmarks in this model "
                                  f"(its conventions: {', '.join(self.conventions)})")
        sets = [convention]
        if with_3d and convention != "3d" and "3d" in self.conventions:
            sets.append("3d")
        if box_kind == "face":
            scale, shift = self.face_box_mapping()
        else:
            scale, shift = self.crop_scale, (0.0, 0.0)
        first = self._run(imgs, boxes, scale, shift, sets)
        pts, extra = first[0], (first[1] if len(sets) > 1 else None)
        if self.refine and box_kind == "face":
            # Second pass on the predicted landmarks' own box: the training crop, up to model error.
            # (A "landmarks" box already gives the training crop: nothing to refine.)
            # Refine only faces whose first answer is plausible: a crop of the new box must be
            # within REFINE_SIDE_RANGE of the first crop's side. A collapsed or exploded prediction
            # (no face in the box, a poorly trained model) would otherwise feed on itself.
            lo, hi = REFINE_SIDE_RANGE
            again = []
            for b, p in zip(boxes, pts):
                lm_boxes = _safe_landmark_boxes(p)
                side1 = scale * np.max(b[:, 2:] - b[:, :2], axis=1)
                side2 = self.crop_scale * np.max(lm_boxes[:, 2:] - lm_boxes[:, :2], axis=1)
                again.append((lm_boxes, (side2 >= lo * side1) & (side2 <= hi * side1)))
            refined = self._run(imgs, [lm[ok] for lm, ok in again], self.crop_scale, (0.0, 0.0), sets)
            for kept, new in zip([pts, extra], refined):
                for p, (_, ok), r in zip(kept or [], again, new):
                    p[ok] = r
        return pts, (extra if extra is not None else [None] * len(imgs))

    def _run(self, imgs: list[np.ndarray], boxes: list[np.ndarray], scale: float,
             shift: tuple[float, float], conventions: Sequence[str]) -> list[list[np.ndarray]]:
        """Crop every box of every image, run the model once, map the points back per image:
        for each of ``conventions`` a list of (N_i, 68, 2) arrays."""
        s = self.input_size
        counts = [len(b) for b in boxes]
        total = sum(counts)
        if total == 0:
            return [[np.zeros((0, 68, 2), np.float32) for _ in imgs] for _ in conventions]
        # Every crop goes straight into one batch array: no per-image arrays to concatenate.
        crops = np.empty((total, s, s, 3), np.uint8)
        mats = []
        start = 0
        for img, b, n in zip(imgs, boxes, counts):
            if n:
                m = geometry.crop_matrices_from_boxes(b, s, scale, shift)
                for j in range(n):
                    geometry.warp_image(img, m[j], s, out=crops[start + j])
                mats.append(m)
            else:
                mats.append(None)
            start += n
        if hasattr(self.predictor, "predict_crops_sets"):
            found = self.predictor.predict_crops_sets(crops, conventions)
        else:  # a predictor of one convention (the Predictor protocol's minimum)
            found = {conventions[0]: self.predictor.predict_crops(crops)}
        out = []
        for name in conventions:
            crop_pts, per_image, start = found[name], [], 0
            for m, n in zip(mats, counts):
                per_image.append(geometry.points_to_image(crop_pts[start:start + n], m) if n
                                 else np.zeros((0, 68, 2), np.float32))
                start += n
            out.append(per_image)
        return out

    @staticmethod
    def _check_boxes(boxes: Any, shape: tuple[int, ...]) -> np.ndarray:
        if not _is_numeric(boxes):
            raise LandmarkerError(f"boxes must be numbers, an (N, 4) array; got {type(boxes).__name__}")
        b = np.asarray(boxes, dtype=np.float64)
        if b.ndim == 1 and b.shape[0] in (4, 5):
            b = b[None]
        if b.size == 0:
            return np.zeros((0, 4))
        if b.ndim != 2 or b.shape[1] not in (4, 5):
            raise LandmarkerError(f"boxes must be (N, 4) x1, y1, x2, y2 (or (N, 5) with scores), "
                                  f"got shape {b.shape}")
        b = b[:, :4]
        h, w = shape[:2]
        finite = np.isfinite(b).all(axis=1)
        bad = ~finite | ~(b[:, 2] > b[:, 0]) | ~(b[:, 3] > b[:, 1])
        if bad.any():  # the first bad box, with geometry.as_box's message
            i = int(np.argmax(bad))
            try:
                geometry.as_box(b[i])
            except ValueError as e:
                raise LandmarkerError(f"box {i}: {e}") from None
        # A box wholly outside the picture would give an all-black crop and confident nonsense.
        outside = (b[:, 2] <= 0) | (b[:, 3] <= 0) | (b[:, 0] >= w) | (b[:, 1] >= h)
        side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        absurd = (side < 1) | (side > MAX_BOX_TO_IMAGE * max(w, h))
        if outside.any() or absurd.any():
            i = int(np.argmax(outside | absurd))
            shown = tuple(round(float(v), 1) for v in b[i])
            if outside[i]:
                raise LandmarkerError(f"box {i} {shown} lies outside the {w}x{h} image")
            raise LandmarkerError(
                f"box {i} {shown}: a side of {float(side[i]):.3g} px is absurd for the {w}x{h} "
                f"image (boxes span 1 px to {MAX_BOX_TO_IMAGE:g}x the image's larger side)")
        return b


def _is_numeric(x: Any) -> bool:
    try:
        a = np.asarray(x)
    except Exception:  # ragged sequences and the like
        return False
    return a.dtype.kind in "biuf"


def _safe_landmark_boxes(points: np.ndarray) -> np.ndarray:
    """``(N, 4)`` landmark boxes of ``(N, 68, 2)`` points, each widened to at least 2 pixels so a
    collapsed prediction cannot make an empty box (float64, as ``geometry.landmark_box``)."""
    if len(points) == 0:
        return np.zeros((0, 4))
    p = np.asarray(points, dtype=np.float64).reshape(len(points), -1, 2)
    lo, hi = p.min(axis=1), p.max(axis=1)
    c = (lo + hi) / 2
    half = np.maximum((hi - lo) / 2, 1.0)
    return np.concatenate([c - half, c + half], axis=1)
