"""The model's answer for one utterance."""

from __future__ import annotations

from collections.abc import Sequence
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


def _mean_probs(dists: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: sum(d[key] for d in dists) / len(dists) for key in dists[0]}


def mean_prediction(predictions: Sequence[Prediction]) -> Prediction:
    """The average of several models' answers for one utterance (an ensemble): every
    distribution and the intensity averaged, each label the argmax of its averaged
    distribution."""
    if not predictions:
        raise ValueError("no predictions to average")
    emotion = _mean_probs([p.emotion_probs for p in predictions])
    iemocap = _mean_probs([p.iemocap_probs for p in predictions])
    polarity = _mean_probs([p.polarity_probs for p in predictions])
    return Prediction(
        emotion=max(emotion, key=emotion.__getitem__),
        emotion_probs=emotion,
        iemocap_emotion=max(iemocap, key=iemocap.__getitem__),
        iemocap_probs=iemocap,
        polarity=max(polarity, key=polarity.__getitem__),
        polarity_probs=polarity,
        intensity=sum(p.intensity for p in predictions) / len(predictions),
        modalities=predictions[0].modalities,
    )
