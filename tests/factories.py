"""Builders of valid pipeline messages for tests."""

from __future__ import annotations

import time
from typing import Any

from realtime.messages import EmotionResult, StatsSnapshot
from unimse.labels import IEMOCAP_EMOTIONS
from unimse.prediction import Prediction

MELD_EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
POLARITIES = ("negative", "neutral", "positive")
IEMOCAP_OF = {"neutral": "neutral", "joy": "happy", "sadness": "sad", "anger": "angry"}


def result_factory(**overrides: Any) -> EmotionResult:
    """A plausible EmotionResult; ``seq`` also sets ``utterance_seq`` and the times by default."""
    seq = int(overrides.pop("seq", 0))
    emotion = overrides.pop("emotion", MELD_EMOTIONS[seq % len(MELD_EMOTIONS)])
    polarity = overrides.pop("polarity", POLARITIES[seq % len(POLARITIES)])
    emotion_probs = overrides.pop(
        "emotion_probs", {e: (0.7 if e == emotion else 0.05) for e in MELD_EMOTIONS}
    )
    polarity_probs = {p: (0.8 if p == polarity else 0.1) for p in POLARITIES}
    intensity = overrides.pop(
        "intensity", {"negative": -1.5, "neutral": 0.0, "positive": 1.5}[polarity]
    )
    fields: dict[str, Any] = {
        "session": "test-session",
        "seq": seq,
        "monotonic": time.monotonic(),
        "utterance_seq": seq,
        "speaker": ("alice", "bob")[seq % 2],
        "start": 2.0 * seq,
        "end": 2.0 * seq + 1.5,
        "text": f"utterance number {seq}",
        "prediction": Prediction(
            emotion=emotion,
            emotion_probs=emotion_probs,
            iemocap_emotion=IEMOCAP_OF.get(emotion, "neutral"),
            iemocap_probs={
                e: (0.9 if e == IEMOCAP_OF.get(emotion) else 0.02) for e in IEMOCAP_EMOTIONS
            },
            polarity=polarity,
            polarity_probs=polarity_probs,
            intensity=intensity,
            modalities=tuple(overrides.pop("modalities", ("text", "audio"))),
        ),
        "latency": {"vad": 0.3, "asr": 0.2, "inference": 0.05, "total": 0.6},
        "model_version": "test-model-1",
    }
    fields.update(overrides)
    return EmotionResult(**fields)


def stats_factory(**overrides: Any) -> StatsSnapshot:
    fields: dict[str, Any] = {
        "elapsed": 12.5,
        "utterances": 3,
        "results": 3,
        "dropped": {},
        "queue_depths": {},
        "latency_p50": {},
    }
    fields.update(overrides)
    return StatsSnapshot(**fields)


def heads_output(meld_logits: Any) -> Any:
    """A ``UniMSEOutput`` whose MELD logits are ``meld_logits`` (B, 7), every other head zero."""
    import torch

    from unimse.modeling import UniMSEOutput

    n = len(meld_logits)
    return UniMSEOutput(
        torch.zeros(n, len(POLARITIES)),
        meld_logits,
        torch.zeros(n, len(IEMOCAP_EMOTIONS)),
        torch.zeros(n),
    )
