"""The universal label space: polarity, intensity score and two emotion vocabularies.

A universal label is written ``polarity,score,meld_emotion,iemocap_emotion``, for example
``positive,1.8,joy,happy``. Parsing never raises: malformed text falls back field by field to the
best valid value (see :func:`parse_universal_label`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache

POLARITIES: tuple[str, ...] = ("negative", "neutral", "positive")
MELD_EMOTIONS: tuple[str, ...] = (
    "neutral",
    "joy",
    "surprise",
    "anger",
    "sadness",
    "disgust",
    "fear",
)
IEMOCAP_EMOTIONS: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "excited", "frustrated")
# Codes used by the IEMOCAP release in ../shared/data/iemocap.
IEMOCAP_CODES: dict[str, str] = {
    "hap": "happy",
    "sad": "sad",
    "neu": "neutral",
    "ang": "angry",
    "exc": "excited",
    "fru": "frustrated",
}
SCORE_RANGE: tuple[float, float] = (-3.0, 3.0)

# Polarity implied by an emotion, used where a dataset has no sentiment annotation (IEMOCAP) and
# as a fallback when a generated polarity is unreadable.
IEMOCAP_POLARITY: dict[str, str] = {
    "happy": "positive",
    "excited": "positive",
    "neutral": "neutral",
    "sad": "negative",
    "angry": "negative",
    "frustrated": "negative",
}


def polarity_of_score(score: float) -> str:
    """Sentiment polarity of a continuous score (MOSI convention: 0 is neutral)."""
    if score > 0:
        return "positive"
    if score < 0:
        return "negative"
    return "neutral"


@dataclass(frozen=True)
class UniversalLabel:
    polarity: str
    score: float
    meld_emotion: str
    iemocap_emotion: str

    def __post_init__(self) -> None:
        if self.polarity not in POLARITIES:
            raise ValueError(f"unknown polarity {self.polarity!r}")
        if self.meld_emotion not in MELD_EMOTIONS:
            raise ValueError(f"unknown MELD emotion {self.meld_emotion!r}")
        if self.iemocap_emotion not in IEMOCAP_EMOTIONS:
            raise ValueError(f"unknown IEMOCAP emotion {self.iemocap_emotion!r}")
        if not math.isfinite(self.score):
            raise ValueError(f"score must be finite, got {self.score}")

    def to_text(self) -> str:
        return f"{self.polarity},{self.score:.1f},{self.meld_emotion},{self.iemocap_emotion}"


# EMO-DB's seven classes in the universal label (train.audio_data gives the reasons; fields that
# come from this mapping rather than the annotation: train.audio_datasets.EMODB_DERIVED).
EMODB_LABELS: dict[str, UniversalLabel] = {
    "anger": UniversalLabel("negative", -2.0, "anger", "angry"),
    "boredom": UniversalLabel("negative", -0.8, "neutral", "neutral"),
    "disgust": UniversalLabel("negative", -2.0, "disgust", "frustrated"),
    "fear": UniversalLabel("negative", -1.6, "fear", "frustrated"),
    "happiness": UniversalLabel("positive", 2.0, "joy", "happy"),
    "sadness": UniversalLabel("negative", -2.0, "sadness", "sad"),
    "neutral": UniversalLabel("neutral", 0.0, "neutral", "neutral"),
}
# Each class as its (polarity, MELD emotion) pair. Boredom and neutral share the MELD emotion and
# differ in polarity, so a class is a joint decision of both heads.
EMODB_JOINT_CLASSES: dict[str, tuple[str, str]] = {
    name: (label.polarity, label.meld_emotion) for name, label in EMODB_LABELS.items()
}


@cache
def emodb_joint_indices() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per EMO-DB class (in :data:`EMODB_JOINT_CLASSES` order): its polarity index and its MELD
    emotion index. A class's joint log-probability is the sum of the two heads' log-probabilities
    at these indices."""
    pairs = EMODB_JOINT_CLASSES.values()
    return (
        tuple(POLARITIES.index(polarity) for polarity, _ in pairs),
        tuple(MELD_EMOTIONS.index(emotion) for _, emotion in pairs),
    )


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def _closest(token: str, vocabulary: tuple[str, ...]) -> str | None:
    token = token.strip().lower()
    if not token:
        return None
    if token in vocabulary:
        return token
    # A truncated or lightly corrupted word ("posit", "frustrat") still names one label.
    matches = [v for v in vocabulary if v.startswith(token) or token.startswith(v)]
    return matches[0] if len(matches) == 1 else None


def parse_universal_label(text: str, fallback: UniversalLabel | None = None) -> UniversalLabel:
    """Parse generated text into a valid label, never raising.

    Each field that cannot be read is taken from ``fallback`` (the model's best valid label, when
    the caller has one) or from a neutral default. Missing fields, extra fields, stray spaces,
    unknown words and out-of-range scores are all tolerated.
    """
    default = fallback or UniversalLabel("neutral", 0.0, "neutral", "neutral")
    fields = [f.strip() for f in text.replace("</s>", "").replace("<pad>", "").split(",")]
    fields += [""] * (4 - len(fields))

    polarity = _closest(fields[0], POLARITIES)
    match = _NUMBER.search(fields[1])
    score = float(match.group()) if match else None
    if score is not None and not math.isfinite(score):
        score = None
    meld = _closest(fields[2], MELD_EMOTIONS)
    iemocap = _closest(fields[3], IEMOCAP_EMOTIONS)

    if score is None:
        score = default.score
    score = min(max(score, SCORE_RANGE[0]), SCORE_RANGE[1])
    if polarity is None:
        polarity = polarity_of_score(score) if match else default.polarity
    return UniversalLabel(
        polarity=polarity,
        score=score,
        meld_emotion=meld or default.meld_emotion,
        iemocap_emotion=iemocap or default.iemocap_emotion,
    )
