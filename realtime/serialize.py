"""The wire format of results: JSON-ready dictionaries, validated by a versioned JSON Schema.

The schema lives in ``realtime/schemas/emotion_result.v1.json``; :data:`SCHEMA_VERSION` is the
version every message carries. Minor versions only add: optional fields, or a new message kind
told apart by its ``kind`` field (1.1: ``speaker_revised`` and ``partial``; 1.2: a result's
``speculative`` and ``revision``, and ``confirmed``). A result has no ``kind``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from realtime.messages import (
    EmotionResult,
    PartialResult,
    SpeakerRevision,
    StatsSnapshot,
    UtteranceConfirmed,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1.4"
REVISION_KIND = "speaker_revised"
PARTIAL_KIND = "partial"
CONFIRMED_KIND = "confirmed"
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "emotion_result.v1.json"

# Probabilities computed in float32 can overshoot [0, 1] by a rounding error; such values are
# clamped. Anything further out is left alone so that validation reports it.
_PROBABILITY_TOLERANCE = 1e-6


class SchemaValidationError(ValueError):
    """A message does not follow the result schema; the text names the offending field."""


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC time with millisecond precision, e.g. ``2024-05-01T12:00:00.123Z``."""
    moment = datetime.now(UTC) if moment is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _probabilities(probs: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in probs.items():
        p = float(value)
        if -_PROBABILITY_TOLERANCE <= p < 0.0:
            p = 0.0
        elif 1.0 < p <= 1.0 + _PROBABILITY_TOLERANCE:
            p = 1.0
        out[str(key)] = p
    return out


def result_to_dict(result: EmotionResult, *, timestamp: datetime | None = None) -> dict[str, Any]:
    """The JSON-ready form of ``result`` (plain ``str``/``int``/``float``/``list``/``dict``).

    ``timestamp`` defaults to the time the result was made (:attr:`EmotionResult.timestamp`), so
    every sink publishes the same one; pass one to get reproducible output. ``speculative`` and
    ``revision`` (``--speculative``) are there only when set: true, and above 0; ``language``
    only when known.
    """
    out = {
        "schema_version": SCHEMA_VERSION,
        "session": result.session,
        "seq": int(result.seq),
        "utterance_seq": int(result.utterance_seq),
        "speaker": result.speaker,
        "start": float(result.start),
        "end": float(result.end),
        "text": result.text,
        "emotion": result.emotion,
        "emotion_probs": _probabilities(result.emotion_probs),
        "polarity": result.polarity,
        "polarity_probs": _probabilities(result.polarity_probs),
        "intensity": float(result.intensity),
        "modalities": list(result.modalities),
        "latency": {str(stage): float(seconds) for stage, seconds in result.latency.items()},
        "model_version": result.model_version,
        "timestamp": utc_timestamp(result.timestamp if timestamp is None else timestamp),
    }
    if result.language:
        out["language"] = result.language
    if result.speculative:
        out["speculative"] = True
    if result.revision:
        out["revision"] = int(result.revision)
    if result.reread:
        out["reread"] = True
    return out


def revision_to_dict(
    revision: SpeakerRevision, *, timestamp: datetime | None = None
) -> dict[str, Any]:
    """The JSON-ready form of a speaker revision (``kind`` ``speaker_revised``)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": REVISION_KIND,
        "session": revision.session,
        "seq": int(revision.seq),
        "utterance_seq": int(revision.utterance_seq),
        "speaker": revision.new,
        "previous_speaker": revision.old,
        "channel": int(revision.channel),
        "timestamp": utc_timestamp(revision.timestamp if timestamp is None else timestamp),
    }


def confirmation_to_dict(
    confirmation: UtteranceConfirmed, *, timestamp: datetime | None = None
) -> dict[str, Any]:
    """The JSON-ready form of a confirmation of a speculative result (``kind`` ``confirmed``)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": CONFIRMED_KIND,
        "session": confirmation.session,
        "seq": int(confirmation.seq),
        "utterance_seq": int(confirmation.utterance_seq),
        "revision": int(confirmation.revision),
        "channel": int(confirmation.channel),
        "timestamp": utc_timestamp(confirmation.timestamp if timestamp is None else timestamp),
    }


def partial_to_dict(result: PartialResult, *, timestamp: datetime | None = None) -> dict[str, Any]:
    """The JSON-ready form of an interim result (``kind`` ``partial``, ``final`` false)."""
    prediction = result.prediction
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": PARTIAL_KIND,
        "final": False,
        "session": result.session,
        "seq": int(result.seq),
        "speaker": result.speaker,
        "channel": int(result.channel),
        "start": float(result.start),
        "end": float(result.end),
        "text": result.text,
        "emotion": prediction.emotion,
        "emotion_probs": _probabilities(prediction.emotion_probs),
        "polarity": prediction.polarity,
        "polarity_probs": _probabilities(prediction.polarity_probs),
        "intensity": float(prediction.intensity),
        "latency": float(result.latency),
        "model_version": result.model_version,
        "timestamp": utc_timestamp(result.timestamp if timestamp is None else timestamp),
    }


# How every message's line begins: each message puts schema_version first and to_json is compact.
MESSAGE_START = '{"schema_version":'


def to_json(obj: Mapping[str, Any]) -> str:
    """Compact one-line JSON; raises :class:`ValueError` on NaN or infinity (not valid JSON)."""
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        raise ValueError(f"cannot serialise message: {exc}") from None


def result_to_json(result: EmotionResult, *, timestamp: datetime | None = None) -> str:
    """:func:`result_to_dict` as one line of JSON (no trailing newline)."""
    return to_json(result_to_dict(result, timestamp=timestamp))


def stats_to_dict(stats: StatsSnapshot) -> dict[str, Any]:
    """The JSON-ready form of the pipeline counters (used in MQTT status messages)."""
    out: dict[str, Any] = {
        "elapsed": float(stats.elapsed),
        "utterances": int(stats.utterances),
        "results": int(stats.results),
        "dropped": {str(k): int(v) for k, v in stats.dropped.items()},
        "queue_depths": {str(k): int(v) for k, v in stats.queue_depths.items()},
        "latency_p50": {str(k): float(v) for k, v in stats.latency_p50.items()},
    }
    if stats.ended is not None:  # the input has ended: eof, stopped or "error: ..."
        out["ended"] = stats.ended
    return out


@functools.cache
def load_schema() -> dict[str, Any]:
    """The result JSON Schema (draft 2020-12) as a dictionary. Do not mutate it."""
    with SCHEMA_PATH.open(encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


@functools.cache
def _validator() -> Any:
    import jsonschema

    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def is_revision(obj: Any) -> bool:
    """Whether a message (a parsed JSON object) is a speaker revision rather than a result."""
    return isinstance(obj, dict) and obj.get("kind") == REVISION_KIND


def is_partial(obj: Any) -> bool:
    """Whether a message (a parsed JSON object) is an interim result (not final)."""
    return isinstance(obj, dict) and obj.get("kind") == PARTIAL_KIND


def is_confirmation(obj: Any) -> bool:
    """Whether a message (a parsed JSON object) confirms a speculative result."""
    return isinstance(obj, dict) and obj.get("kind") == CONFIRMED_KIND


def final_results(messages: Iterable[Any]) -> list[dict[str, Any]]:
    """The results among ``messages`` (parsed JSON lines or MQTT payloads), each utterance's last
    version in the place of its first: a result with a higher ``revision`` (more speech with
    ``--speculative``, or a re-read) replaces its utterance's earlier one, whatever order they
    came in (MQTT delivers at least once: an old version may come again). Speaker revisions,
    interim results and confirmations are left out."""
    final: dict[tuple[str, int], dict[str, Any]] = {}
    for obj in messages:
        if not isinstance(obj, dict) or "kind" in obj:
            continue
        key = (obj["session"], obj["utterance_seq"])
        kept = final.get(key)
        if kept is None or _version(obj) >= _version(kept):
            final[key] = obj  # a dict keeps the first's place
    return list(final.values())


def _version(result: dict[str, Any]) -> tuple[int, int]:
    return int(result.get("revision", 0)), int(result["seq"])


KIND_NAMES = {
    REVISION_KIND: "speaker revision",
    PARTIAL_KIND: "partial result",
    CONFIRMED_KIND: "confirmation",
}


def has_times(obj: Any) -> bool:
    """Whether a message carries ``start`` and ``end`` (results and interim results do)."""
    return not (is_revision(obj) or is_confirmation(obj))


def validate(obj: Any) -> None:
    """Check that ``obj`` is a valid message (a result, a speaker revision, an interim result or
    a confirmation); raises :class:`SchemaValidationError`.

    Besides the schema, checks the one rule JSON Schema cannot express: a result's
    ``end >= start``.
    """
    import jsonschema

    kind = obj.get("kind") if isinstance(obj, dict) else None
    what = KIND_NAMES.get(kind, "emotion result") if isinstance(kind, str) else "emotion result"
    error = jsonschema.exceptions.best_match(_validator().iter_errors(obj))
    if error is not None:
        where = error.json_path if error.path else "message"
        message = error.message if len(error.message) <= 200 else error.message[:199] + "…"
        raise SchemaValidationError(f"invalid {what}: {where}: {message}")
    if has_times(obj) and obj["end"] < obj["start"]:
        raise SchemaValidationError(
            f"invalid emotion result: $.end: {obj['end']} is before start {obj['start']}"
        )
