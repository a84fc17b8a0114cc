"""Helpers shared by the command modules."""
from __future__ import annotations

import json
from typing import Any, Optional

from lightmark.core.files import write_text


def landmarker_from(args: Any, **options: Any) -> Any:
    """The :class:`~lightmark.api.Landmarker` that the options every model command shares ask for
    (``model_args`` in ``cli/__init__.py``: --model, --backend, --threads, --flip,
    --detect-mirror), with a command's own ``options`` beside them."""
    from lightmark.api import Landmarker  # local: `lightmark --help` stays fast

    return Landmarker(model=args.model, backend=args.backend, threads=args.threads, flip=args.flip,
                      detect_mirror=args.detect_mirror, **options)


def print_json(obj: Any, path: Optional[str]) -> None:
    """JSON to stdout (``path`` None or "-") or atomically to a file."""
    text = json.dumps(obj, indent=1)
    if path in (None, "-"):
        print(text)
    else:
        write_text(path, text + "\n")
