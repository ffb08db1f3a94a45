"""JSON lines sink: one result message per line, to a file or to standard output.

With diarisation, a speaker revision is a line of its own (``"kind": "speaker_revised"``), after
the result it revises; a reader applies it to the result with the same ``utterance_seq``. With
``--partial`` and ``partials``, each interim result is a line marked ``"kind": "partial"``. With
``--speculative``, a result marked ``"speculative": true`` is followed by a line marked
``"kind": "confirmed"`` (it stands) or by a result with the same ``utterance_seq`` and a higher
``"revision"``, which replaces it.

Each line is written whole and flushed before :meth:`JsonlSink.publish` returns, so a crash never
loses (or half-writes) a line that was already published. Files are opened in append mode; an
existing file that does not end with a newline gets one first, so old content is never glued to
the new lines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from realtime.messages import (
    EmotionResult,
    PartialResult,
    SpeakerRevision,
    StatsSnapshot,
    UtteranceConfirmed,
)
from realtime.serialize import (
    confirmation_to_dict,
    partial_to_dict,
    result_to_dict,
    revision_to_dict,
    to_json,
    validate,
)
from realtime.sinks.base import Sink, SinkError
from unimse.output_paths import output_problem

logger = logging.getLogger(__name__)

STDOUT = "-"


class JsonlSink(Sink):
    """Writes every result as one line of JSON.

    Args:
        path: output file, or ``"-"`` / ``None`` for standard output. The file is appended to.
        stream: write to this already-open text stream instead (it is flushed, never closed).
        fsync: also ``os.fsync`` after each line (survives power loss, slower).
        validate: check every message against the schema before writing it (raises on failure).
        name: the sink's name in logs and counters.
        partials: also write interim results (``--partial``) as lines of their own.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        stream: TextIO | None = None,
        fsync: bool = False,
        validate: bool = False,
        name: str = "jsonl",
        partials: bool = False,
    ) -> None:
        if path is not None and stream is not None:
            raise ValueError("JsonlSink takes a path or a stream, not both")
        self.name = name
        self.partials = partials
        self.path: Path | None = None if path is None or str(path) == STDOUT else Path(path)
        self._given_stream = stream
        self._fsync = fsync
        self._validate = validate
        self._file: TextIO | None = None
        self._owns_file = False
        # One worker thread: writes never block the event loop and stay in order.
        self._executor: ThreadPoolExecutor | None = None
        self.lines_written = 0

    @property
    def destination(self) -> str:
        return str(self.path) if self.path is not None else "<stdout>"

    async def open(self) -> None:
        if self._file is not None:
            raise SinkError(f"{self.name}: already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sink-{self.name}")
        loop = asyncio.get_running_loop()
        try:
            self._file = await loop.run_in_executor(self._executor, self._open_stream)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        logger.info("%s: writing JSON lines to %s", self.name, self.destination)

    def _open_stream(self) -> TextIO:
        if self.path is None:
            self._owns_file = False
            return self._given_stream if self._given_stream is not None else sys.stdout
        problem = output_problem(self.path, probe=False)  # opening it is the probe
        if problem is not None:
            raise SinkError(
                f"cannot write JSON lines to {self.path}: {problem} (choose another path)"
            )
        try:
            # buffering=1: line buffered, each complete line reaches the OS as it is written.
            fh = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise SinkError(f"cannot open JSON lines output {self.path}: {reason}") from None
        self._owns_file = True
        try:
            if fh.tell() > 0 and not _ends_with_newline(self.path):
                fh.write("\n")
                fh.flush()
        except OSError as exc:
            fh.close()
            raise SinkError(f"cannot write JSON lines output {self.path}: {exc.strerror}") from None
        return fh

    async def publish(self, result: EmotionResult) -> None:
        await self._write_message(result_to_dict(result))

    async def revise(self, revision: SpeakerRevision) -> None:
        await self._write_message(revision_to_dict(revision))

    async def partial(self, result: PartialResult) -> None:
        if self.partials:
            await self._write_message(partial_to_dict(result))

    async def confirm(self, confirmation: UtteranceConfirmed) -> None:
        await self._write_message(confirmation_to_dict(confirmation))

    async def _write_message(self, message: dict[str, Any]) -> None:
        if self._file is None or self._executor is None:
            raise SinkError(f"{self.name}: publish() called before open() or after close()")
        if self._validate:
            validate(message)
        line = to_json(message) + "\n"
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._write, self._file, line)
        self.lines_written += 1

    def _write(self, fh: TextIO, line: str) -> None:
        try:
            fh.write(line)
            fh.flush()
            if self._fsync and self._owns_file:
                os.fsync(fh.fileno())
        except OSError as exc:
            raise SinkError(f"cannot write to {self.destination}: {exc.strerror}") from None

    async def close(self, stats: StatsSnapshot) -> None:
        fh, executor = self._file, self._executor
        self._file = None
        self._executor = None
        if fh is None or executor is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._finish, fh)
        finally:
            executor.shutdown(wait=False)
        logger.info("%s: %d lines written to %s", self.name, self.lines_written, self.destination)

    def _finish(self, fh: TextIO) -> None:
        try:
            if self._owns_file:
                fh.close()
            else:
                fh.flush()
        except OSError as exc:
            raise SinkError(f"cannot finish writing {self.destination}: {exc.strerror}") from None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
