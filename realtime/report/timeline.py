"""The numbers behind the timeline charts, shared by the HTML page and the PNG.

Each speaker has a lane: stacked bars of the emotion distribution. Up to ``detail_limit``
utterances in the session, there is one bar per utterance (as wide as the utterance); beyond, the
session is cut into time bins (at most :data:`MAX_BINS`) and each bar is the mean distribution of
the speaker's utterances in that bin (drawn as a stacked area: a few paths per lane, not
thousands of bars). The intensity line keeps one point per utterance either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from realtime.report.load import Session, Utterance
from realtime.report.palette import EMOTIONS

DETAIL_LIMIT = 300  # utterances: up to this, one bar per utterance
MAX_BINS = 600  # per lane, when binned
_BIN_STEPS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600)


@dataclass(frozen=True)
class Lane:
    """One speaker's bars. Times are seconds; ``utterance`` is the utterance a bar stands for
    (in a bin, the bin's first utterance of this speaker; -1 for a bin where the speaker is
    silent)."""

    speaker: str
    color: str
    center: np.ndarray
    width: np.ndarray
    shares: dict[str, np.ndarray]  # emotion -> share of the bar, 0..1
    utterance: np.ndarray


@dataclass(frozen=True)
class IntensitySeries:
    """One speaker's intensity, a point per utterance."""

    speaker: str
    color: str
    time: np.ndarray  # utterance midpoints, seconds
    intensity: np.ndarray
    polarity: tuple[str, ...]
    utterance: np.ndarray


@dataclass(frozen=True)
class Timeline:
    lanes: tuple[Lane, ...]
    intensity: tuple[IntensitySeries, ...]
    duration: float  # seconds shown: 0 .. duration
    bin_seconds: float | None  # None: one bar per utterance

    @property
    def binned(self) -> bool:
        return self.bin_seconds is not None


def build_timeline(
    session: Session, speaker_colors: dict[str, str], *, detail_limit: int = DETAIL_LIMIT
) -> Timeline:
    """Lanes and intensity series of ``session``, speakers in ``speaker_colors``' order."""
    duration = max(session.duration, 1.0)
    by_speaker: dict[str, list[Utterance]] = {name: [] for name in speaker_colors}
    for u in session.utterances:
        by_speaker[u.speaker].append(u)
    bin_seconds = None if len(session.utterances) <= detail_limit else bin_width(duration)
    lanes = tuple(
        _lane(name, color, by_speaker[name], bin_seconds, duration)
        for name, color in speaker_colors.items()
    )
    intensity = tuple(
        _intensity(name, color, by_speaker[name]) for name, color in speaker_colors.items()
    )
    return Timeline(lanes=lanes, intensity=intensity, duration=duration, bin_seconds=bin_seconds)


def bin_width(duration: float, max_bins: int = MAX_BINS) -> float:
    """The smallest round bin width (1 s, 2 s, 5 s, ... 1 h, then whole hours) giving at most
    ``max_bins`` bins."""
    for step in _BIN_STEPS:
        if duration / step <= max_bins:
            return float(step)
    return 3600.0 * math.ceil(duration / 3600.0 / max_bins)


def _probabilities(utterances: list[Utterance]) -> np.ndarray:
    """(n, 7) emotion probabilities in :data:`EMOTIONS` order."""
    return np.array([[u.emotion_probs[e] for e in EMOTIONS] for u in utterances], dtype=float)


def _lane(
    name: str, color: str, utterances: list[Utterance], bin_seconds: float | None, duration: float
) -> Lane:
    starts = np.array([u.start for u in utterances], dtype=float)
    ends = np.array([u.end for u in utterances], dtype=float)
    probs = _probabilities(utterances).reshape(len(utterances), len(EMOTIONS))
    index = np.array([u.index for u in utterances], dtype=np.int64)
    if bin_seconds is None:
        return Lane(
            speaker=name,
            color=color,
            center=(starts + ends) / 2,
            width=ends - starts,
            shares={e: probs[:, k] for k, e in enumerate(EMOTIONS)},
            utterance=index,
        )
    n_bins = max(1, math.ceil(duration / bin_seconds))
    which = np.minimum(((starts + ends) / 2 // bin_seconds).astype(np.int64), n_bins - 1)
    counts = np.bincount(which, minlength=n_bins).astype(float)
    sums = np.stack(
        [np.bincount(which, probs[:, k], minlength=n_bins) for k in range(len(EMOTIONS))], axis=1
    )
    means = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    first = np.full(n_bins, -1, dtype=np.int64)
    # Utterances are in session order: the first one seen per bin is written last when reversed.
    first[which[::-1]] = index[::-1]
    return Lane(
        speaker=name,
        color=color,
        center=(np.arange(n_bins) + 0.5) * bin_seconds,
        width=np.full(n_bins, bin_seconds),
        shares={e: means[:, k] for k, e in enumerate(EMOTIONS)},
        utterance=first,
    )


def _intensity(name: str, color: str, utterances: list[Utterance]) -> IntensitySeries:
    return IntensitySeries(
        speaker=name,
        color=color,
        time=np.array([(u.start + u.end) / 2 for u in utterances], dtype=float),
        intensity=np.array([u.intensity for u in utterances], dtype=float),
        polarity=tuple(u.polarity for u in utterances),
        utterance=np.array([u.index for u in utterances], dtype=np.int64),
    )
