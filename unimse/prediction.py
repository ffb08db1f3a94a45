"""The model's answer for one utterance."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from unimse.labels import UniversalLabel
from unimse.voice_trust import TrustRow


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
    # How the voice trust read it, when it did: what re-reads it with another voice history
    trust: TrustRow | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_distributions(
        cls,
        emotion_probs: dict[str, float],
        iemocap_probs: dict[str, float],
        polarity_probs: dict[str, float],
        intensity: float,
        modalities: tuple[str, ...],
        trust: TrustRow | None = None,
    ) -> Prediction:
        """The prediction whose labels are the argmax of each distribution."""
        return cls(
            emotion=max(emotion_probs, key=emotion_probs.__getitem__),
            emotion_probs=emotion_probs,
            iemocap_emotion=max(iemocap_probs, key=iemocap_probs.__getitem__),
            iemocap_probs=iemocap_probs,
            polarity=max(polarity_probs, key=polarity_probs.__getitem__),
            polarity_probs=polarity_probs,
            intensity=intensity,
            modalities=modalities,
            trust=trust,
        )

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
    return Prediction.from_distributions(
        _mean_probs([p.emotion_probs for p in predictions]),
        _mean_probs([p.iemocap_probs for p in predictions]),
        _mean_probs([p.polarity_probs for p in predictions]),
        sum(p.intensity for p in predictions) / len(predictions),
        predictions[0].modalities,
    )
