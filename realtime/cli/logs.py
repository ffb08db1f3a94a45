"""Logging handlers: configured here, for the command line, and nowhere else."""

from __future__ import annotations

import logging
import sys
from typing import Any


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time, so the dashboard can redirect it."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(verbosity: int, quiet: bool, log_file: str | None) -> None:
    level = (
        logging.ERROR
        if quiet
        else [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    )
    handlers: list[logging.Handler] = [_StderrHandler()]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    for handler in handlers:
        handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    logging.basicConfig(level=level, handlers=handlers, force=True)
    if verbosity < 2:  # faster-whisper logs every utterance at INFO
        logging.getLogger("faster_whisper").setLevel(max(level, logging.WARNING))
