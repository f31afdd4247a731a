"""Writing files so that a crash or a full disk never leaves half a file under its final name."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], object], tmp: Path | None = None) -> Path:
    """``write`` a temporary file next to ``path``, then rename it over ``path`` (atomic on POSIX). On
    any failure (ENOSPC, a kill is another matter) the temporary file is removed and the error raised:
    ``path`` keeps its previous content, whole.

    The temporary file is ``tmp`` if given, else a name of its own (``unique_tmp``), so that writers of
    the same file at once (overlapping runs) each publish a whole file, the last one's; a writer killed
    midway leaves its hidden ``.tmp`` file, never read under ``path``'s name."""
    tmp = tmp or unique_tmp(path)
    try:
        write(tmp)
        swap_in(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def unique_tmp(path: Path) -> Path:
    """A temporary name next to ``path`` that no other writer uses: hidden, with this process's id and
    random bytes, ending ``.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")


def write_folder_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """``write`` the files of a temporary folder next to ``path``, then swap it in for what ``path``
    was (a file, a folder or nothing): a reader finds the old content whole, nothing (for the instant
    between two renames) or the new content whole, never part of it. On any failure the temporary
    folder is removed and ``path`` is untouched."""
    tmp = path.with_name(path.name + ".tmp")
    remove(tmp)  # the leftover of a write that was killed
    try:
        tmp.mkdir()
        write(tmp)
        swap_in(tmp, path)
    except BaseException:
        remove(tmp)
        raise
    return path


def swap_in(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``, over what ``path`` was. A file replaces a file atomically; a folder
    (or a file over a folder) cannot, so the old one is renamed aside first and removed after."""
    if not tmp.is_dir() and not path.is_dir():
        tmp.replace(path)
        return
    if not path.exists():
        tmp.rename(path)
        return
    old = path.with_name(path.name + ".old")
    remove(old)
    path.rename(old)
    tmp.rename(path)
    remove(old)


def remove(path: Path) -> None:
    """Remove a file or a folder tree, if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
