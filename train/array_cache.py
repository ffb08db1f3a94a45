"""Writing cached arrays safely: several processes may compute the same key at once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def save_array(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically, through a temporary file of this writer's own in the
    same folder: concurrent writers of one key never share a temporary name, and a reader sees
    either no file or a whole one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.npy")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
