"""Per-speaker summary and latency percentiles of a session.

Works on anything with ``speaker``, ``emotion``, ``intensity`` and ``latency`` attributes, so
:class:`realtime.messages.EmotionResult` (the dashboard's results) and the report's
:class:`~realtime.report.load.Utterance` are summarised by the same code.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from realtime.sinks.dashboard import STAGE_ORDER

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
ALL_SPEAKERS = "all"


class ResultLike(Protocol):
    @property
    def speaker(self) -> str: ...
    @property
    def emotion(self) -> str: ...
    @property
    def intensity(self) -> float: ...
    @property
    def latency(self) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class SpeakerSummary:
    """One row of the summary table (``speaker`` is :data:`ALL_SPEAKERS` for the total row)."""

    speaker: str
    utterances: int
    emotions: dict[str, int]  # count per emotion, most frequent first
    mean_intensity: float | None
    latency_p50: float | None  # median of the ``total`` latency, seconds

    @property
    def dominant(self) -> str | None:
        return next(iter(self.emotions), None)

    @property
    def dominant_share(self) -> float:
        return self.emotions[self.dominant] / self.utterances if self.dominant else 0.0


def speaker_summaries(results: Iterable[ResultLike]) -> list[SpeakerSummary]:
    """A row per speaker (by name), then an ``all`` row when there is not exactly one speaker."""
    by_speaker: dict[str, list[ResultLike]] = collections.defaultdict(list)
    for result in results:
        by_speaker[result.speaker].append(result)
    rows = [_summary(name, by_speaker[name]) for name in sorted(by_speaker)]
    if len(rows) != 1:
        rows.append(
            _summary(ALL_SPEAKERS, [r for name in sorted(by_speaker) for r in by_speaker[name]])
        )
    return rows


def _summary(name: str, results: Sequence[ResultLike]) -> SpeakerSummary:
    totals = [r.latency["total"] for r in results if "total" in r.latency]
    return SpeakerSummary(
        speaker=name,
        utterances=len(results),
        emotions=dict(collections.Counter(r.emotion for r in results).most_common()),
        mean_intensity=statistics.fmean(r.intensity for r in results) if results else None,
        latency_p50=statistics.median(totals) if totals else None,
    )


def latency_percentiles(
    results: Iterable[ResultLike], percentiles: Sequence[int] = PERCENTILES
) -> dict[str, dict[str, float]]:
    """Stage -> {"p50": s, ..., "max": s}; stages in pipeline order (vad, asr, ..., total)."""
    samples: dict[str, list[float]] = collections.defaultdict(list)
    for result in results:
        for stage, seconds in result.latency.items():
            samples[stage].append(seconds)
    table: dict[str, dict[str, float]] = {}
    for stage in ordered_stages(samples):
        values = np.asarray(samples[stage], dtype=float)
        levels = np.percentile(values, percentiles)
        row = {f"p{p}": float(v) for p, v in zip(percentiles, levels, strict=True)}
        row["max"] = float(values.max())
        table[stage] = row
    return table


def ordered_stages(stages: Iterable[str]) -> list[str]:
    """Known pipeline stages in :data:`~realtime.sinks.dashboard.STAGE_ORDER`, then the rest."""

    def key(stage: str) -> tuple[int, str]:
        return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)

    return sorted(stages, key=key)
