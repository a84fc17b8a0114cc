"""The detector-box -> training-crop mapping: one type, used by the API, evaluation and tracking.

A face detector's box is not the box around the 68 points the model was trained on: it is
typically larger and its centre sits a little higher. A :class:`BoxMapping` holds the two fitted
numbers that bridge them (fitted on training data by :mod:`lightmark.training.box_mapping`):

* ``side_ratio``: larger side of the landmark box / larger side of the detector box (median);
* ``crop_shift``: landmark-box centre - detector-box centre, in detector-box widths and heights.

:meth:`BoxMapping.crop_for` turns them into the ``(scale, shift)`` that
``geometry.crop_matrix_from_box`` needs to give a model its own training crop.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from lightmark.core.errors import BoxMappingError
from lightmark.core.geometry import LANDMARK_CROP_SCALE

PathLike = Union[str, Path]

DEFAULT_MAPPING = Path(__file__).resolve().parent.parent / "assets" / "face_detector" / "box_mapping.json"


@dataclass(frozen=True)
class BoxMapping:
    """``side_ratio`` and ``crop_shift`` (see the module docstring) and how they were fitted."""

    side_ratio: float
    crop_shift: tuple[float, float]
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    def crop_for(self, model_crop_scale: float) -> tuple[float, tuple[float, float]]:
        """``(scale, shift)`` for ``crop_matrix_from_box`` from a detector box, for a model trained
        on crops of ``model_crop_scale`` x the landmark box."""
        return self.side_ratio * float(model_crop_scale), self.crop_shift

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (the file format of ``box_mapping.json``)."""
        return {**self.info, "crop_shift": [self.crop_shift[0], self.crop_shift[1]],
                "side_ratio": self.side_ratio}


def box_mapping_from_dict(data: Any, where: str = "box mapping") -> BoxMapping:
    """A :class:`BoxMapping` from its JSON form; :class:`BoxMappingError` naming ``where``.

    Older files hold only ``crop_scale`` (the crop side over the detector-box side for the 1.25x
    landmark crop, i.e. 1.25 x the side ratio); ``side_ratio`` wins when present.
    """
    if isinstance(data, BoxMapping):
        return data
    try:
        d = dict(data)
        scale = float(d["crop_scale"]) if "crop_scale" in d else None
        ratio = float(d["side_ratio"]) if "side_ratio" in d else None
        shift = tuple(float(v) for v in d["crop_shift"])
    except (ValueError, KeyError, TypeError) as e:
        raise BoxMappingError(f"{where}: not a valid box mapping ({type(e).__name__}: {e})") from None
    if ratio is None:
        ratio = scale / LANDMARK_CROP_SCALE if scale is not None else None
    if ratio is None or len(shift) != 2 or not (math.isfinite(ratio) and ratio > 0) \
            or not all(math.isfinite(v) for v in shift):
        raise BoxMappingError(f"{where}: crop_scale must be positive and crop_shift two finite numbers")
    info = {k: v for k, v in d.items() if k not in ("crop_scale", "crop_shift", "side_ratio",
                                                    "landmark_crop_scale")}
    return BoxMapping(side_ratio=ratio, crop_shift=(shift[0], shift[1]), info=info)


def load_box_mapping(path: PathLike = DEFAULT_MAPPING) -> BoxMapping:
    """Read a box-mapping JSON file; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise BoxMappingError(f"{p}: no such box-mapping file (fit one with "
                              "`lightmark fit-box-mapping`)")
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise BoxMappingError(f"{p}: not a valid box-mapping file ({type(e).__name__}: {e})") from None
    return box_mapping_from_dict(data, str(p))
