"""Writing files so that readers never see half of one: a temporary name in the same folder, then
an atomic rename. Shared by the CLI's reports, the dataset manifest, the HTML report and agents."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` to ``path`` (parents created) via ``.NAME.tmp-PID`` and ``os.replace``.

    ``fsync`` also flushes the data to disk before the rename (for files that must survive a power
    cut, such as a dataset manifest)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_json_atomic(
    path: str | os.PathLike, obj: Any, *, indent: int = 2, sort_keys: bool = False, fsync: bool = False
) -> Path:
    """``write_text_atomic`` of ``obj`` as JSON with a final newline."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n", fsync=fsync)
