"""Helpers shared by the command modules."""
from __future__ import annotations

import json
from typing import Any, Optional

from lightmark.core.files import write_text


def print_json(obj: Any, path: Optional[str]) -> None:
    """JSON to stdout (``path`` None or "-") or atomically to a file."""
    text = json.dumps(obj, indent=1)
    if path in (None, "-"):
        print(text)
    else:
        write_text(path, text + "\n")
