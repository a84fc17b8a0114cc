"""Every error lightmark raises on bad input, under one base class.

``LightmarkError`` is a ``ValueError`` (so code written against the older ``ValueError`` contract
keeps working); its message always names the file or argument and what is wrong with it. Anything
else escaping the library is a bug. The classes live here, not beside the code that raises them,
so that catching one never means importing a heavy module (torch, onnxruntime).
"""
from __future__ import annotations


class LightmarkError(ValueError):
    """Base of all of lightmark's input errors; the message names the file or argument."""


# --- core ----------------------------------------------------------------------------------------
class ConfigError(LightmarkError):
    """A run configuration with an unknown key, a wrong type or an unusable combination."""


class ImageError(LightmarkError):
    """An image file or array that cannot be used; the message names the file and the problem."""


class GeometryError(LightmarkError):
    """A box, crop or matrix that cannot be used (empty, non-finite, singular)."""


class CodecError(LightmarkError):
    """A network output or argument the codec cannot use; the message says what is wrong."""


class ConventionError(LightmarkError):
    """A landmark convention the model does not output, or that is not one of ``2d`` / ``3d``."""


class MetricsError(LightmarkError):
    """Inputs the metrics cannot use (shapes, degenerate ground truth); the message says which."""


class ModelFileError(LightmarkError):
    """A model file that is missing, tampered with or inconsistent; the message names the file."""


class PoseError(LightmarkError):
    """Points or an image shape that head pose cannot be estimated from."""


class AlignError(LightmarkError):
    """Points, a style or a size that an aligned crop cannot be made from."""


class SmoothingError(LightmarkError):
    """Bad filter parameters or input (shape change, non-increasing time, NaN)."""


class TrackingError(LightmarkError):
    """Bad tracker arguments or frames; the message says which."""


class VideoError(LightmarkError):
    """A video or frame folder that cannot be read, or an output that cannot be written."""


class BoxMappingError(LightmarkError):
    """A detector-box -> crop mapping file or value that cannot be used."""


# --- data ----------------------------------------------------------------------------------------
class DataError(LightmarkError):
    """A data file that cannot be used; the message names the file and the problem."""


# --- models, training, export (torch side) -------------------------------------------------------
class ModelConfigError(LightmarkError):
    """A model configuration that cannot be built; the message names the field."""


class ModelRuleError(LightmarkError):
    """A model breaking the size / float32 / single-network rules."""


class ExportError(LightmarkError):
    """An export that failed or produced a graph that does not match the torch model."""


class EvaluationError(LightmarkError):
    """Arguments or inputs evaluation cannot use; the message says which and why."""


# --- runtime and API -----------------------------------------------------------------------------
class DetectorError(LightmarkError):
    """A detector model that cannot be used; the message names the file."""


class LandmarkerError(LightmarkError):
    """Bad arguments to :class:`~lightmark.Landmarker` (box, model path, backend)."""


class ModelNotFoundError(LandmarkerError):
    """The requested (or bundled) landmark model file does not exist."""


class CliError(LightmarkError):
    """A problem with a command's input; printed as one line, exit status 2."""


# --- synthetic data engine -----------------------------------------------------------------------
class SynthError(LightmarkError):
    """Bad parameters for the synthetic data engine."""


class RasterError(SynthError):
    """Bad arguments to the rasteriser."""


class FaceModelError(SynthError):
    """The ICT face model file is missing or malformed."""


class ProfileError(SynthError):
    """Bad input to the fitter or the profiler."""
