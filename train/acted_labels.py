"""Universal labels of the acted-emotion corpora (RAVDESS speech, CK+ faces), by MELD emotion.

These corpora annotate a category only. The polarity follows from it; the score is a fixed valence
choice for prototypical acted emotions (negative ones -2.0, fear -1.6: more arousal than
displeasure; joy +2.0; surprise positive with low intensity, +0.8), as for EMO-DB
(:mod:`train.audio_data`); the IEMOCAP emotion is the nearest of its six (no fear, disgust or
surprise there). :data:`ACTED_DERIVED` names the fields that come from this mapping, not from the
annotation: they train with the borrowed-label weight, like fields filled in by label unification.
"""

from __future__ import annotations

from unimse.labels import UniversalLabel

ACTED_LABELS: dict[str, UniversalLabel] = {
    "neutral": UniversalLabel("neutral", 0.0, "neutral", "neutral"),
    "joy": UniversalLabel("positive", 2.0, "joy", "happy"),
    "surprise": UniversalLabel("positive", 0.8, "surprise", "excited"),
    "anger": UniversalLabel("negative", -2.0, "anger", "angry"),
    "sadness": UniversalLabel("negative", -2.0, "sadness", "sad"),
    "disgust": UniversalLabel("negative", -2.0, "disgust", "frustrated"),
    "fear": UniversalLabel("negative", -1.6, "fear", "frustrated"),
}
ACTED_DERIVED: dict[str, frozenset[str]] = {
    "neutral": frozenset(),
    "joy": frozenset({"score"}),
    "sadness": frozenset({"score"}),
    "anger": frozenset({"score"}),
    "surprise": frozenset({"score", "iemocap_emotion"}),
    "disgust": frozenset({"score", "iemocap_emotion"}),
    "fear": frozenset({"score", "iemocap_emotion"}),
}
