"""The result schema: emitted messages validate; malformed ones are rejected with a clear error."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from factories import MELD_EMOTIONS, result_factory

from realtime.serialize import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    SchemaValidationError,
    load_schema,
    result_to_dict,
    result_to_json,
    validate,
)


def test_schema_is_valid_draft_2020_12_and_versioned() -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA_VERSION in schema["$id"]
    assert SCHEMA_PATH.name == f"emotion_result.v{SCHEMA_VERSION.split('.')[0]}.json"
    for kind in ("result", "speaker_revised"):
        assert schema["$defs"][kind]["additionalProperties"] is False
    assert schema["$defs"]["emotion"]["enum"] == list(MELD_EMOTIONS)


def test_result_to_dict_has_every_field_and_validates() -> None:
    result = result_factory(seq=4, text="I can't believe it!", speaker="alice")
    obj = result_to_dict(result, timestamp=datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC))
    validate(obj)
    assert obj["timestamp"] == "2024-05-01T12:00:00.123Z"
    assert obj["schema_version"] == SCHEMA_VERSION
    assert obj["seq"] == 4 and obj["utterance_seq"] == 4
    assert obj["emotion_probs"] == dict(result.emotion_probs)
    assert obj["modalities"] == ["text", "audio"]
    assert obj["latency"] == {"vad": 0.3, "asr": 0.2, "inference": 0.05, "total": 0.6}
    assert set(obj) == set(load_schema()["$defs"]["result"]["required"])
    # The JSON text round-trips and stays one line.
    line = result_to_json(result)
    assert "\n" not in line
    validate(json.loads(line))


def test_a_known_language_is_published_and_checked() -> None:
    from dataclasses import replace

    german = result_to_dict(replace(result_factory(), language="de"))
    validate(german)
    assert german["language"] == "de" and german["schema_version"] == SCHEMA_VERSION
    assert "language" not in result_to_dict(result_factory())  # not known: absent
    with pytest.raises(SchemaValidationError, match="language"):
        validate({**german, "language": "German"})


def test_numpy_scalars_and_float32_rounding_are_serialisable() -> None:
    np = pytest.importorskip("numpy")
    probs = {e: np.float32(0.0) for e in MELD_EMOTIONS}
    probs["joy"] = np.float32(1.0000001)  # softmax rounding in float32
    result = result_factory(
        emotion="joy", emotion_probs=probs, intensity=np.float32(2.5), seq=np.int64(3)
    )
    obj = result_to_dict(result)
    validate(obj)
    assert obj["emotion_probs"]["joy"] == 1.0
    json.loads(result_to_json(result))


def _valid() -> dict[str, Any]:
    return result_to_dict(result_factory(seq=1))


def _drop(key: str) -> Any:
    def mutate(obj: dict[str, Any]) -> None:
        del obj[key]

    return mutate


def _set(path: str, value: Any) -> Any:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = obj
        for part in parents:
            target = target[part]
        target[last] = value

    return mutate


INVALID = {
    "missing emotion": (_drop("emotion"), "'emotion' is a required property"),
    "missing timestamp": (_drop("timestamp"), "'timestamp'"),
    "unknown emotion": (_set("emotion", "happy"), "$.emotion"),
    "unknown polarity": (_set("polarity", "mixed"), "$.polarity"),
    "probability above 1": (_set("emotion_probs.joy", 1.5), "$.emotion_probs.joy"),
    "negative probability": (_set("polarity_probs.negative", -0.1), "$.polarity_probs.negative"),
    "incomplete distribution": (
        lambda o: o["emotion_probs"].pop("fear"),
        "'fear' is a required property",
    ),
    "extra emotion key": (_set("emotion_probs.happy", 0.1), "$.emotion_probs"),
    "intensity above 3": (_set("intensity", 3.5), "$.intensity"),
    "intensity below -3": (_set("intensity", -4), "$.intensity"),
    "unknown modality": (_set("modalities", ["text", "smell"]), "$.modalities[1]"),
    "duplicate modality": (_set("modalities", ["text", "text"]), "$.modalities"),
    "no modality": (_set("modalities", []), "$.modalities"),
    "negative latency": (_set("latency.asr", -0.2), "$.latency.asr"),
    "extra top-level field": (_set("mood", "great"), "Additional properties"),
    "wrong schema version": (_set("schema_version", "2.0"), "$.schema_version"),
    "seq is a string": (_set("seq", "7"), "$.seq"),
    "negative seq": (_set("seq", -1), "$.seq"),
    "empty session": (_set("session", ""), "$.session"),
    "timestamp not ISO": (_set("timestamp", "yesterday"), "$.timestamp"),
    "end before start": (_set("end", 0.5), "before start"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_messages_are_rejected_with_a_one_line_error(case: str) -> None:
    mutate, expected = INVALID[case]
    obj = copy.deepcopy(_valid())
    mutate(obj)
    with pytest.raises(SchemaValidationError) as info:
        validate(obj)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("invalid emotion result: ")
    assert expected in message


def test_not_an_object_is_rejected() -> None:
    with pytest.raises(SchemaValidationError, match="is not of type 'object'"):
        validate(["not", "a", "message"])


def test_nan_is_refused_when_serialising() -> None:
    result = result_factory(intensity=float("nan"))
    with pytest.raises(ValueError, match="cannot serialise message"):
        result_to_json(result)
