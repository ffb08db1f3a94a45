"""Each speaker's own voice as the reference: emotion is how a voice departs from its usual self.

Speakers differ far more than one speaker's emotions do, so on unseen speakers a model reading raw
speech states mostly hears who speaks. :class:`SpeakerBaselines` keeps, per speaker, the running
mean of the utterance-mean states seen so far, starts it from a prior (the mean over the training
utterances, worth ``prior_weight`` utterances) and subtracts it from every frame of the speaker's
next utterance. Online and causal: an utterance is normalised by what came before it and itself,
never by later speech, exactly as live use can.

On the speaker-independent folds of ``benchmarks/voice_probe.py --specs tiny.en-mid --baseline 0
5`` this lifts a linear probe on Whisper tiny.en's middle layers from 74.8 to 82.3 (RAVDESS) and
82.2 to 86.4 (EMO-DB) unweighted accuracy (docs/RESULTS.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")
HEARD_KEPT = 256  # utterances per speaker whose voice diarisation may still move to another


@dataclass
class HeardUtterances(Generic[T]):
    """What each speaker's last :data:`HEARD_KEPT` utterances counted in (a speaker's running
    statistic), so that diarisation can move one to another speaker. Not locked: its owner's
    lock guards it."""

    _heard: dict[str, dict[int, T]] = field(default_factory=dict, repr=False)

    def remember(self, speaker: str, utterance: int, value: T) -> None:
        heard = self._heard.setdefault(speaker, {})
        heard[utterance] = value
        if len(heard) > HEARD_KEPT:
            heard.pop(next(iter(heard)))

    def take(self, speaker: str, utterance: int) -> T | None:
        """What ``utterance`` counted in for ``speaker``, no longer remembered there (None when
        it is not remembered)."""
        return self._heard.get(speaker, {}).pop(utterance, None)

    def forget(self, speaker: str) -> None:
        self._heard.pop(speaker, None)


@dataclass
class SpeakerBaselines:
    """Running per-speaker mean voice (one per conversation, or keyed by session; thread-safe)."""

    prior: np.ndarray  # (d,) mean utterance-mean state of the training speech
    prior_weight: float  # how many utterances the prior is worth
    _sums: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _counts: dict[str, int] = field(default_factory=dict, repr=False)
    # the mean state each utterance counted in (for move)
    _heard: HeardUtterances[np.ndarray] = field(default_factory=HeardUtterances, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.prior = np.asarray(self.prior, dtype=np.float32)
        if self.prior.ndim != 1:
            raise ValueError("the baseline prior must be one vector")
        if self.prior_weight <= 0:
            raise ValueError("the baseline prior weight must be positive")

    def baseline(self, speaker: str, states: np.ndarray | None = None) -> np.ndarray:
        """The speaker's mean voice so far (with ``states``' mean counted in, if given)."""
        mean = states.mean(0) if states is not None and len(states) else None
        return self._baseline(speaker, mean)

    def _baseline(self, speaker: str, mean: np.ndarray | None) -> np.ndarray:
        total = self.prior * self.prior_weight + self._sums.get(speaker, 0.0)
        count = self.prior_weight + self._counts.get(speaker, 0)
        if mean is not None:
            total = total + mean
            count += 1
        return np.asarray(total / count, dtype=np.float32)

    def normalise(
        self, speaker: str, states: np.ndarray, *, update: bool = True, utterance: int | None = None
    ) -> np.ndarray:
        """``states`` (T, d) minus the speaker's baseline including this utterance; ``update``
        adds the utterance to the speaker's history (False for interim views of an utterance
        still going on), remembered as ``utterance`` (if given) so that :meth:`move` can
        re-label it."""
        states = np.asarray(states, dtype=np.float32)
        if states.ndim != 2 or states.shape[1] != len(self.prior):
            raise ValueError(
                f"states of shape {states.shape} do not fit a {len(self.prior)}-d baseline"
            )
        mean = states.mean(0) if len(states) else None
        with self._lock:
            shifted = states - self._baseline(speaker, mean)
            if update and mean is not None:
                self._add(speaker, mean, 1, utterance)
        return shifted

    def move(self, utterance: int, old: str, new: str) -> None:
        """Count ``utterance`` as ``new``'s instead of ``old``'s (diarisation re-labelled it);
        nothing when ``old`` no longer remembers it."""
        with self._lock:
            mean = self._heard.take(old, utterance)
            if mean is None:
                return
            self._add(old, -mean, -1)
            self._add(new, mean, 1, utterance)

    def _add(
        self, speaker: str, mean: np.ndarray, count: int, utterance: int | None = None
    ) -> None:
        self._sums[speaker] = self._sums.get(speaker, 0.0) + mean
        self._counts[speaker] = self._counts.get(speaker, 0) + count
        if not self._counts[speaker]:
            self.forget(speaker)
        elif utterance is not None:
            self._heard.remember(speaker, utterance, mean)

    @property
    def speakers(self) -> list[str]:
        """The speakers heard so far."""
        return list(self._counts)

    def forget(self, speaker: str) -> None:
        self._sums.pop(speaker, None)
        self._counts.pop(speaker, None)
        self._heard.forget(speaker)


def prior_of(utterances: Iterable[np.ndarray]) -> np.ndarray:
    """The prior: the mean over utterances of each utterance's mean state."""
    means = [np.asarray(u, dtype=np.float32).mean(0) for u in utterances if len(u)]
    if not means:
        raise ValueError("no utterances to compute a voice baseline prior from")
    return np.mean(means, axis=0).astype(np.float32)


def conversation_order(n: int, seed: int = 0) -> list[int]:
    """The order in which offline evaluation hears a corpus's ``n`` utterances (seeded random:
    each speaker's utterances as one conversation)."""
    return [int(i) for i in np.random.default_rng(seed).permutation(n)]


def normalise_corpus(
    features: Sequence[np.ndarray],
    speakers: Sequence[str],
    prior: np.ndarray,
    prior_weight: float,
    *,
    seed: int = 0,
) -> list[np.ndarray]:
    """Every utterance normalised as live use would see it: each speaker's utterances in a random
    (seeded) order, each by the baseline of those before it and itself."""
    if len(features) != len(speakers):
        raise ValueError("one speaker per utterance")
    baselines = SpeakerBaselines(prior, prior_weight)
    out: list[np.ndarray] = [np.empty(0)] * len(features)
    for index in conversation_order(len(features), seed):
        out[index] = baselines.normalise(speakers[index], features[index])
    return out
