"""The model's answer for one utterance."""

from __future__ import annotations

from dataclasses import dataclass

from unimse.labels import UniversalLabel


@dataclass(frozen=True)
class Prediction:
    """Full distributions, not only the argmax.

    ``emotion`` / ``emotion_probs`` use the 7 MELD emotions (the general-purpose set shown live);
    ``iemocap_emotion`` / ``iemocap_probs`` the 6 IEMOCAP ones. ``intensity`` is the sentiment
    score in [-3, 3] (sign = polarity, magnitude = strength).
    """

    emotion: str
    emotion_probs: dict[str, float]
    iemocap_emotion: str
    iemocap_probs: dict[str, float]
    polarity: str
    polarity_probs: dict[str, float]
    intensity: float
    modalities: tuple[str, ...]

    @property
    def confidence(self) -> float:
        return self.emotion_probs[self.emotion]

    @property
    def label(self) -> UniversalLabel:
        return UniversalLabel(
            self.polarity, round(self.intensity, 1), self.emotion, self.iemocap_emotion
        )
