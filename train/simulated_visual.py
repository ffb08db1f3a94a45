"""SIMULATED visual evidence for training the visual branch (calibration by simulation).

No data on these machines pairs video of a face with an utterance-level emotion label, so the
visual branch (an LSTM over per-frame FER-2013 probabilities, ``emotrack-visual-v1``) cannot be
trained on real faces. Instead, for text samples with a gold emotion (MELD; IEMOCAP mapped), the
trainer may attach a *simulated* visual sequence: what the FER network would plausibly output for
a face showing that emotion. The LSTM and PMF then learn how far to trust FER evidence of a given
shape, knowing that the network is often wrong. Nothing here is real video; every config key,
log line and document names it "simulated".

Generative model, per utterance with gold MELD emotion ``e``:

1. Displayed expression: ``neutral`` with probability ``neutral_display`` (people often do not
   show what they say), otherwise ``e``.
2. Frames: ``n`` uniform in ``[min_frames, max_frames]`` (5 frames/s over a 1-3 s utterance).
3. FER's decision per frame: a class drawn once per utterance from row ``displayed`` of
   :data:`FER_CONFUSION`, kept for each frame with probability ``persistence``, otherwise redrawn
   from the same row (a face's misreading tends to persist).
4. FER's output per frame: a Dirichlet draw with mean ``peak * onehot(decision) + (1 - peak) *
   row`` and concentration ``concentration``: a valid probability row, confident but noisy, like a
   softmax output.

:data:`FER_CONFUSION` is an assumption, not a measurement: a row-stochastic confusion matrix shaped
after published FER-2013 test confusion matrices of mini-Xception-class CNNs (about 66 % accuracy,
Arriaga et al. 2017, "Real-time Convolutional Neural Networks for Emotion and Gender
Classification"; typical confusions: fear with sadness and surprise, sadness with neutral, disgust
with anger). Values are rounded; their FER-2013-frequency-weighted diagonal is 0.67. No labelled
face data exists here to measure the shipped network's own matrix; live webcam faces are likely
read *less* accurately than FER-2013 test faces, which ``neutral_display`` partly reflects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from unimse.labels import MELD_EMOTIONS

logger = logging.getLogger(__name__)

# Rows: true expression; columns: FER prediction; both in MELD order
# (neutral, joy, surprise, anger, sadness, disgust, fear) = FER-2013's 7 classes renamed.
_ROWS: dict[str, dict[str, float]] = {
    "neutral": {
        "neutral": 0.68, "joy": 0.06, "surprise": 0.02, "anger": 0.05,
        "sadness": 0.14, "disgust": 0.00, "fear": 0.05,
    },
    "joy": {
        "neutral": 0.05, "joy": 0.87, "surprise": 0.02, "anger": 0.02,
        "sadness": 0.02, "disgust": 0.00, "fear": 0.02,
    },
    "surprise": {
        "neutral": 0.04, "joy": 0.04, "surprise": 0.79, "anger": 0.02,
        "sadness": 0.02, "disgust": 0.00, "fear": 0.09,
    },
    "anger": {
        "neutral": 0.11, "joy": 0.05, "surprise": 0.02, "anger": 0.58,
        "sadness": 0.14, "disgust": 0.01, "fear": 0.09,
    },
    "sadness": {
        "neutral": 0.22, "joy": 0.04, "surprise": 0.01, "anger": 0.08,
        "sadness": 0.55, "disgust": 0.00, "fear": 0.10,
    },
    "disgust": {
        "neutral": 0.05, "joy": 0.04, "surprise": 0.02, "anger": 0.24,
        "sadness": 0.07, "disgust": 0.52, "fear": 0.06,
    },
    "fear": {
        "neutral": 0.12, "joy": 0.04, "surprise": 0.10, "anger": 0.10,
        "sadness": 0.18, "disgust": 0.01, "fear": 0.45,
    },
}  # fmt: skip
FER_CONFUSION: np.ndarray = np.array(
    [[_ROWS[true][pred] for pred in MELD_EMOTIONS] for true in MELD_EMOTIONS], dtype=np.float64
)
FER_CONFUSION /= FER_CONFUSION.sum(axis=1, keepdims=True)

# IEMOCAP emotions whose facial expression has a FER-2013 counterpart. Frustration has none
# (it shows as anger, disgust or sadness), so frustrated samples get no simulated video.
IEMOCAP_TO_EXPRESSION: dict[str, str] = {
    "happy": "joy",
    "excited": "joy",
    "sad": "sadness",
    "angry": "anger",
    "neutral": "neutral",
}


@dataclass(frozen=True)
class SimulatedVisualOptions:
    """Parameters of the simulation (see the module docstring)."""

    neutral_display: float = 0.3
    min_frames: int = 3
    max_frames: int = 12
    persistence: float = 0.8
    peak: float = 0.6
    concentration: float = 10.0

    def __post_init__(self) -> None:
        for name in ("neutral_display", "persistence", "peak"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"simulated visual {name} must be in [0, 1]")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError("simulated visual frames need 1 <= min_frames <= max_frames")
        if self.concentration <= 0:
            raise ValueError("simulated visual concentration must be > 0")


def expression_of(
    dataset: str, meld_emotion: str | None, iemocap_emotion: str | None
) -> str | None:
    """The gold expression a simulated face shows, or None where the dataset has no gold emotion
    with a facial counterpart (MOSI, IEMOCAP frustration, audio corpora)."""
    if dataset == "meld" and meld_emotion in MELD_EMOTIONS:
        return meld_emotion
    if dataset == "iemocap" and iemocap_emotion is not None:
        return IEMOCAP_TO_EXPRESSION.get(iemocap_emotion)
    return None


def simulate_fer_sequence(
    expression: str,
    rng: np.random.Generator,
    options: SimulatedVisualOptions | None = None,
) -> np.ndarray:
    """A SIMULATED ``(frames, 7)`` float32 sequence of FER probability rows (MELD order) for a face
    whose gold emotion is ``expression``."""
    opts = options or SimulatedVisualOptions()
    if expression not in MELD_EMOTIONS:
        raise ValueError(f"unknown expression {expression!r}; expected one of {MELD_EMOTIONS}")
    shown = "neutral" if rng.random() < opts.neutral_display else expression
    row = FER_CONFUSION[MELD_EMOTIONS.index(shown)]
    frames = int(rng.integers(opts.min_frames, opts.max_frames + 1))
    decision = int(rng.choice(len(row), p=row))
    out = np.empty((frames, len(row)), dtype=np.float64)
    for t in range(frames):
        if rng.random() >= opts.persistence:
            decision = int(rng.choice(len(row), p=row))
        mean = (1.0 - opts.peak) * row
        mean[decision] += opts.peak
        alpha = np.maximum(opts.concentration * mean, 1e-3)
        out[t] = rng.dirichlet(alpha)
    out = np.clip(out, 1e-6, None)
    out /= out.sum(axis=1, keepdims=True)
    return out.astype(np.float32)
