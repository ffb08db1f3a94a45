"""Read a session for the report: a JSON lines file of results, or a folder written by ``--record``.

Every line must be a message of a schema version this emotrack reads (``1.x`` up to the one it
writes, ``realtime/schemas/emotion_result.v1.json``): a result, or a speaker revision
(``"kind": "speaker_revised"``, diarisation), which re-labels the result with its
``utterance_seq``; the report shows every utterance with its last speaker (interim results,
``"kind": "partial"``, and confirmations of speculative results, ``"kind": "confirmed"``, are
skipped; a result with a ``revision`` replaces the earlier result of its ``utterance_seq``, in
its place). Lines are checked
with a compiled validator (``jsonschema-rs``, microseconds a line, so an 8-hour session reads in
well under a second); a line that fails is checked again by :func:`realtime.serialize.validate`,
whose message names the field. Anything unusable raises :class:`~realtime.report.errors.ReportError`
with one line saying which file and line.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realtime.recorder import RESULTS
from realtime.report.errors import ReportError
from realtime.serialize import (
    MESSAGE_START,
    SCHEMA_VERSION,
    SchemaValidationError,
    final_results,
    has_times,
    is_revision,
    load_schema,
    validate,
)
from realtime.sources.base import SourceError
from realtime.sources.session import SessionManifest, is_session_folder, read_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Utterance:
    """One result as the report shows it; ``index`` is its position in the session (0-based)."""

    index: int
    seq: int
    speaker: str
    start: float
    end: float
    text: str
    emotion: str
    emotion_probs: dict[str, float]
    polarity: str
    intensity: float
    modalities: tuple[str, ...]
    latency: dict[str, float]
    model_version: str
    timestamp: str

    @property
    def confidence(self) -> float:
        """The probability of the predicted emotion."""
        return self.emotion_probs.get(self.emotion, 0.0)


@dataclass(frozen=True)
class Session:
    """The results of one session, in the order they were written, and where they came from."""

    session: str
    input_path: Path
    utterances: tuple[Utterance, ...]
    speakers: tuple[str, ...]  # in order of first appearance
    manifest: SessionManifest | None = None  # for a folder written by --record
    other_sessions: tuple[str, ...] = ()  # further sessions in the same JSON lines file

    @property
    def duration(self) -> float:
        """Stream seconds from 0 to the end of the last utterance."""
        return max(u.end for u in self.utterances)


def load_session(path: str | os.PathLike[str], *, session: str | None = None) -> Session:
    """Read ``path`` (a JSON lines file or a ``--record`` folder) into a :class:`Session`.

    A JSON lines file may hold several sessions (the sink appends): ``session`` picks one by its
    id; by default the last one in the file is used.
    """
    root = Path(path).expanduser()
    manifest: SessionManifest | None = None
    if root.is_dir():
        if not is_session_folder(root):
            raise ReportError(f"{root} is a folder but not a recorded session (no manifest.json)")
        try:
            manifest = read_manifest(root)
        except SourceError as exc:
            raise ReportError(str(exc)) from None
        results = root / RESULTS
        if not results.is_file():
            raise ReportError(f"recorded session {root} has no {RESULTS}")
    elif root.exists():
        results = root
    else:
        raise ReportError(f"no such file or folder: {root}")

    relabel: dict[str, dict[int, str]] = {}  # session -> utterance_seq -> its last speaker
    read: list[dict[str, Any]] = []
    for obj in _read_results(results):
        if is_revision(obj):
            relabel.setdefault(obj["session"], {})[obj["utterance_seq"]] = obj["speaker"]
        else:
            read.append(obj)
    by_session: dict[str, list[dict[str, Any]]] = {}
    for obj in final_results(read):  # interim results and confirmations left out
        by_session.setdefault(obj["session"], []).append(obj)
    if not by_session:
        raise ReportError(f"{results} holds no results: the session is empty")
    ids = list(by_session)
    if session is None:
        chosen = manifest.session if manifest and manifest.session in by_session else ids[-1]
        if len(ids) > 1:
            logger.warning(
                "%s holds %d sessions (%s); reporting on %s (choose another with --session)",
                results,
                len(ids),
                ", ".join(ids),
                chosen,
            )
    elif session in by_session:
        chosen = session
    else:
        raise ReportError(f"{results} holds no session {session!r} (it has: {', '.join(ids)})")
    speaker_of = relabel.get(chosen, {})
    utterances = tuple(
        _utterance(i, obj, speaker_of.get(obj["utterance_seq"], obj["speaker"]))
        for i, obj in enumerate(by_session[chosen])
    )
    return Session(
        session=chosen,
        input_path=root,
        utterances=utterances,
        speakers=tuple(dict.fromkeys(u.speaker for u in utterances)),
        manifest=manifest,
        other_sessions=tuple(i for i in ids if i != chosen),
    )


def _read_results(path: Path) -> Iterator[dict[str, Any]]:
    """Every non-blank line of ``path``, parsed and checked against the result schema; a line
    cut short (an emotrack line's start, not JSON: its writer was stopped mid-line, and a later
    session may have appended after it) is left out with a warning, so that a crashed session's
    results can still be reported."""
    is_valid = _fast_validator()
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                if _cut_short(line):
                    logger.warning(
                        "%s line %d is cut short (its writer stopped mid-line): left out",
                        path,
                        number,
                    )
                    continue
                yield _checked(path, number, line, is_valid)
    except UnicodeDecodeError:
        raise ReportError(f"{path} is not a JSON lines file (not UTF-8 text)") from None
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from None


def _cut_short(line: str) -> bool:
    """Whether ``line`` starts as emotrack writes a line (:data:`MESSAGE_START`) but does not
    parse as JSON: the head of a line whose writing was cut off, not a damaged file."""
    if not line.startswith(MESSAGE_START):
        return False
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return True
    return False


def _checked(path: Path, number: int, line: str, is_valid: Any) -> dict[str, Any]:
    where = f"{path} line {number}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{where} is not JSON ({exc.msg}): expected emotrack JSON lines"
        ) from None
    if not isinstance(obj, dict):
        raise ReportError(f"{where} is not a JSON object: expected an emotrack result")
    version = obj.get("schema_version")
    if version is None:
        raise ReportError(f"{where} has no schema_version: not an emotrack result")
    if not _readable(version):
        raise ReportError(
            f"{where} has schema version {version!r}; this emotrack reads 1.0 to {SCHEMA_VERSION}"
        )
    if not is_valid(obj) or (has_times(obj) and obj["end"] < obj["start"]):
        try:
            validate(obj)
        except SchemaValidationError as exc:
            raise ReportError(f"{where}: {exc}") from None
    return obj


def _readable(version: object) -> bool:
    """Whether this emotrack reads ``version``: the same major version, minor up to its own."""
    major, _, minor = SCHEMA_VERSION.partition(".")
    if not isinstance(version, str) or version.count(".") != 1:
        return False
    their_major, their_minor = version.split(".")
    return their_major == major and their_minor.isdigit() and int(their_minor) <= int(minor)


@functools.cache
def _fast_validator() -> Any:
    """``is_valid(obj) -> bool`` for the result schema, compiled once."""
    import jsonschema_rs

    return jsonschema_rs.validator_for(load_schema(), validate_formats=True).is_valid


def _utterance(index: int, obj: dict[str, Any], speaker: str) -> Utterance:
    return Utterance(
        index=index,
        seq=obj["seq"],
        speaker=speaker,
        start=float(obj["start"]),
        end=float(obj["end"]),
        text=obj["text"],
        emotion=obj["emotion"],
        emotion_probs={k: float(v) for k, v in obj["emotion_probs"].items()},
        polarity=obj["polarity"],
        intensity=float(obj["intensity"]),
        modalities=tuple(obj["modalities"]),
        latency={k: float(v) for k, v in obj["latency"].items()},
        model_version=obj["model_version"],
        timestamp=obj["timestamp"],
    )
