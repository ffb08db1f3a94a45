"""The choice rules of benchmarks/neutral_cv.py (its folds need hours of training: not run here)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import neutral_cv


def _row(scale: float, keeps: bool, audio: float, fused: float, emodb: float) -> dict[str, object]:
    return {
        "scale": scale,
        "keeps_words": keeps,
        "ravdess_audio_uar": audio,
        "ravdess_fused_uar": fused,
        "emodb_audio_uar": emodb,
    }


def test_the_audio_rank_wants_the_sentence_no_worse_and_the_fused_rank_the_best_sentence() -> None:
    rows = [
        _row(1.0, False, 90.0, 95.0, 90.0),  # spoils the words: never chosen
        _row(0.75, True, 80.0, 70.0, 80.0),  # best voice alone, the sentence worse than it
        _row(0.5, True, 70.0, 72.0, 70.0),
        _row(0.35, True, 60.0, 74.0, 60.0),
    ]
    assert neutral_cv.chosen(rows, "audio")["scale"] == 0.5
    assert neutral_cv.chosen(rows, "fused")["scale"] == 0.35
    assert neutral_cv.chosen(rows[:2], "audio") == "none keeps the words on every fold"
    assert neutral_cv.chosen(rows[:1], "fused") == "none keeps the words"
