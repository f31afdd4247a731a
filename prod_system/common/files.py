"""Writing files so that a crash or a full disk never leaves half a file under its final name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], object], tmp: Path | None = None) -> Path:
    """``write`` a temporary file next to ``path``, then rename it over ``path`` (atomic on POSIX). On
    any failure (ENOSPC, a kill is another matter) the temporary file is removed and the error raised:
    ``path`` keeps its previous content, whole."""
    tmp = tmp or path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
