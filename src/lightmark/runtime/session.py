"""onnxruntime sessions, made one way for every network lightmark runs (detector and landmarks)."""
from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any, Union

from lightmark.core.errors import ModelFileError

PathLike = Union[str, Path]

# Sessions by (file, its size and modification time, threads): a second Landmarker or detector on
# the same file shares the first one's session (onnxruntime allows concurrent run() calls on one
# session), so it costs no second copy of the weights, kernels and arena. Weak values: a session
# goes when nothing uses it any more.
_CACHE: "weakref.WeakValueDictionary[tuple, Any]" = weakref.WeakValueDictionary()
_LOCK = threading.Lock()


def make_session(path: PathLike, threads: int = 1, what: str = "ONNX model", shared: bool = True) -> Any:
    """An onnxruntime CPU session with quiet logging and a fixed number of threads.

    Shared by the detector and the landmark runtime; with ``shared`` (default) a session already
    open on the same unchanged file with the same threads is returned instead of a new one.
    Logging at severity 3 (errors only) keeps onnxruntime's load-time notes out of the user's
    terminal without hiding real failures, which raise.
    """
    import onnxruntime as ort

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: no such {what} file")
    if int(threads) < 1:
        raise ModelFileError(f"{p}: threads must be >= 1, got {threads}")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, int(threads))
    with _LOCK:
        if shared:
            cached = _CACHE.get(key)
            if cached is not None:
                return cached
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            sess = ort.InferenceSession(str(p), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for broken files
            raise ModelFileError(f"{p}: cannot load {what} ({type(e).__name__}: {e})") from None
        if shared:
            _CACHE[key] = sess
        return sess
