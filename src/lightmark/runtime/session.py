"""onnxruntime sessions, made one way for every network lightmark runs (detector and landmarks)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from lightmark.core.errors import ModelFileError

PathLike = Union[str, Path]


def make_session(path: PathLike, threads: int = 1, what: str = "ONNX model") -> Any:
    """An onnxruntime CPU session with quiet logging and a fixed number of threads.

    Shared by the detector and the landmark runtime. The detector files list their initializers
    among the graph inputs, which makes onnxruntime warn on every load; severity 3 (errors only)
    silences that without hiding real failures, which raise.
    """
    import onnxruntime as ort

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: no such {what} file")
    if int(threads) < 1:
        raise ModelFileError(f"{p}: threads must be >= 1, got {threads}")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(p), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for broken files
        raise ModelFileError(f"{p}: cannot load {what} ({type(e).__name__}: {e})") from None
