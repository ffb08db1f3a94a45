"""Checks of what a command will write, made before any work starts: whether a file can be
written at a path (:func:`output_problem`), whether a folder can be made and written
(:func:`folder_problem`), and whether two paths name one file (:func:`same_file`). The JSON-lines
sink, the session report, ``--log-file``, the command line's collision check and every command
that writes a checkpoint folder (:func:`unimse.checkpoint.check_output_folder`) share them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def output_problem(path: Path, *, make_parents: bool = False, probe: bool = True) -> str | None:
    """Why no file can be written at ``path``, or ``None`` when one can (blocking).

    ``path`` must not be a folder, and its folder must be one: the nearest part of it that
    exists must not be a file. A missing folder is made with ``make_parents``, else refused.
    ``probe`` creates (and removes) a file in the folder, which is the only sure test of
    permission (a read-only or virtual file system, ``root`` on a folder it may not write).
    """
    if path.is_dir():
        return "it is a directory"
    folder = path.parent
    present = nearest_existing(folder)
    if present is not None and not present.is_dir():
        return f"{present} is a file, not a folder"
    if present != folder:
        if not make_parents:
            return f"there is no folder {folder}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create the folder {folder}: {exc.strerror or exc}"
    if probe:
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
                pass
        except OSError as exc:
            return f"cannot create files in {folder}: {exc.strerror or exc}"
    return None


def nearest_existing(path: Path) -> Path | None:
    """``path`` or the nearest folder above it that exists (None: not even the root)."""
    return next((part for part in (path, *path.parents) if part.exists()), None)


def folder_problem(folder: Path) -> tuple[Path, str] | None:
    """Why no folder can be made and written at ``folder`` (a missing one is made when written),
    as the part of it at fault and the reason: ``folder`` or a folder above it is a file, or the
    nearest existing one is not writable; None when it can."""
    part = nearest_existing(folder)
    if part is None or (part.is_dir() and os.access(part, os.W_OK | os.X_OK)):
        return None
    return part, "a file" if not part.is_dir() else "not writable"


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name the same file: the same resolved path (``./a`` and ``a``,
    through symbolic links), or, where both exist, the same file on disk (hard links)."""
    first, second = Path(a).expanduser(), Path(b).expanduser()
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist (yet): different paths are different files
        return False
