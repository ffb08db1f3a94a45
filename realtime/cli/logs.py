"""Logging handlers: configured here, for the command line, and nowhere else."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any


class LogFileError(RuntimeError):
    """``--log-file`` cannot be opened: a missing folder, a directory, no permission."""


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time, so the dashboard can redirect it."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(verbosity: int, quiet: bool, log_file: str | None) -> None:
    """Set the root logger's level and handlers; a log file that cannot be opened is a
    one-line :class:`LogFileError`, as ``--output`` refuses its file (a missing folder is not
    made either)."""
    level = (
        logging.ERROR
        if quiet
        else [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    )
    handlers: list[logging.Handler] = [_StderrHandler()]
    if log_file:
        problem = log_file_problem(log_file)
        if problem is not None:
            raise LogFileError(problem)
        # Made at the first line logged: a command refused before it leaves no empty log behind.
        handlers.append(logging.FileHandler(log_file, encoding="utf-8", delay=True))
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    for handler in handlers:
        handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    logging.basicConfig(level=level, handlers=handlers, force=True)
    if verbosity < 2:  # faster-whisper logs every utterance at INFO
        logging.getLogger("faster_whisper").setLevel(max(level, logging.WARNING))
    if level > logging.INFO:
        silence_progress_bars()


def log_file_problem(log_file: str) -> str | None:
    """Why ``--log-file`` cannot be written, in the words ``--output`` uses for its file (None:
    it can; nothing is made)."""
    from unimse.output_paths import output_problem

    path = Path(log_file)
    problem = output_problem(path)
    if problem is None and path.exists() and not os.access(path, os.W_OK):
        problem = "permission denied"
    if problem is None:
        return None
    return f"cannot write the log to {log_file}: {problem} (choose another path)"


def silence_progress_bars() -> None:
    """No "Loading weights: 100%|..." bars from transformers / huggingface_hub on stderr.

    Both read ``HF_HUB_DISABLE_PROGRESS_BARS`` when they are imported, which is after this runs
    (the models load later); a library already imported is told directly. A value the user set
    is kept.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] != "1":
        return
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def quiet() -> bool:
    """Whether only errors are wanted (``-q``): no warnings and no summary line."""
    return not logging.getLogger().isEnabledFor(logging.WARNING)


def print_error(message: object) -> None:
    """The one line a user error gets on stderr."""
    print(f"emotrack: error: {message}", file=sys.stderr)
