"""Which speech representation carries emotion? Linear probes on the same speaker-independent folds.

For every acoustic feature spec (Whisper ``tiny.en`` / ``base`` encoder states, the 64-d frame
features, and concatenations), each utterance is mean+std pooled over its frames and a standardised
logistic regression is trained per fold:

- RAVDESS: the 20 actors in 5 folds of 4 (actors 1-4, 5-8, ...), 7 classes (calm = neutral);
- EMO-DB: leave one speaker out over its 7 speakers, its 7 classes.

Prints unweighted accuracy (mean per-class recall) and accuracy per spec, percent. Features are
cached on disk (``~/.cache/emotrack/features``), keyed by extractor and audio.

    .venv/bin/python benchmarks/voice_probe.py [--data-dir ../shared/data] [--specs ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.progress import track
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from train.audio_data import AudioSample, load_emodb, load_ravdess
from train.audio_datasets import cached_features
from train.datadir import DEFAULT_DATA_DIR
from unimse.config import FeatureSpec
from unimse.features import WHISPER_SPECS, acoustic_extractor
from unimse.features.acoustic import ACOUSTIC_DIM, ACOUSTIC_V1
from unimse.voice_baseline import normalise_corpus
from unimse.whisper import WhisperModelError

SPECS: dict[str, FeatureSpec] = {
    "tiny.en": FeatureSpec("whisper-tiny.en-v1", WHISPER_SPECS["whisper-tiny.en-v1"].dim),
    "tiny.en-mid": FeatureSpec(
        "whisper-tiny.en-mid-v2", WHISPER_SPECS["whisper-tiny.en-mid-v2"].dim
    ),
    "base": FeatureSpec("whisper-base-v1", WHISPER_SPECS["whisper-base-v1"].dim),
    "frame64": FeatureSpec(ACOUSTIC_V1, ACOUSTIC_DIM),
}
RAVDESS_FOLDS = 5


def pooled(features: np.ndarray) -> np.ndarray:
    return np.concatenate([features.mean(0), features.std(0)])


def pooled_matrix(samples: Sequence[AudioSample], spec: FeatureSpec, label: str) -> np.ndarray:
    extract = acoustic_extractor(spec)
    rows = [
        pooled(cached_features(s.audio, spec, extract))
        for s in track(samples, description=f"{label} features", transient=True)
    ]
    return np.stack(rows)


def class_of(sample: AudioSample) -> str:
    emotion = sample.emotion or ""
    return "neutral" if emotion == "calm" else emotion


def folds_of(samples: Sequence[AudioSample], corpus: str) -> np.ndarray:
    if corpus == "ravdess":
        return np.array([(int(s.speaker) - 1) // (20 // RAVDESS_FOLDS) for s in samples])
    speakers = sorted({s.speaker for s in samples})
    return np.array([speakers.index(s.speaker) for s in samples])


def with_baseline(
    x: np.ndarray, means: np.ndarray, speakers: np.ndarray, train: np.ndarray, weight: float
) -> np.ndarray:
    """Pooled vectors whose mean columns (mask ``means``) are relative to the speaker's running
    mean voice (``unimse.voice_baseline``; prior from the training rows only): the same as
    shifting every frame before pooling."""
    prior = x[train][:, means].mean(0)
    rows = [row[None, means] for row in x]
    shifted = np.concatenate(normalise_corpus(rows, list(speakers), prior, weight))
    out = x.copy()
    out[:, means] = shifted
    return out


def probe(
    x: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    baseline: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> tuple[float, float]:
    """UA and accuracy over the folds; ``baseline``: (speakers, mean-column mask, prior weight)."""
    uas, accs = [], []
    for fold in np.unique(folds):
        test = folds == fold
        fold_x = (
            x
            if baseline is None
            else with_baseline(x, baseline[1], baseline[0], ~test, baseline[2])
        )
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        clf.fit(fold_x[~test], y[~test])
        pred = clf.predict(fold_x[test])
        uas.append(balanced_accuracy_score(y[test], pred))
        accs.append(float(np.mean(pred == y[test])))
    return 100 * float(np.mean(uas)), 100 * float(np.mean(accs))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--specs",
        default="tiny.en,tiny.en-mid,base,frame64,tiny.en+frame64,tiny.en+base",
        help="comma-separated specs; '+' concatenates pooled vectors",
    )
    parser.add_argument(
        "--baseline",
        type=float,
        nargs="*",
        default=[0.0],
        help="speaker-baseline prior weights to compare (0: none; e.g. --baseline 0 5)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    # A held-out EMO-DB speaker may lack a class the classifier predicts: expected, not news.
    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
    if not args.data_dir.is_dir():
        print(f"error: data folder not found: {args.data_dir}", file=sys.stderr)
        return 2
    wanted = [name.strip() for name in args.specs.split(",") if name.strip()]
    for part in {p for combo in wanted for p in combo.split("+")}:
        if part not in SPECS:
            parser.error(f"unknown spec {part!r}; choose from {', '.join(SPECS)}")
    try:
        corpora = {
            "ravdess": load_ravdess(args.data_dir / "ravdess"),
            "emodb": load_emodb(args.data_dir / "emodb"),
        }
        results = run_probes(corpora, wanted, args.json, args.baseline)
    except (WhisperModelError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def run_probes(
    corpora: dict[str, list[AudioSample]],
    wanted: Sequence[str],
    quiet: bool,
    baselines: Sequence[float] = (0.0,),
) -> dict[str, dict[str, float]]:
    """UA / accuracy per spec combination, speaker-baseline weight and corpus (printed as they
    come unless ``quiet``); a weight w > 0 names the row ``spec|baseline=w``."""
    results: dict[str, dict[str, float]] = {}
    for corpus, samples in corpora.items():
        y = np.array([class_of(s) for s in samples])
        folds = folds_of(samples, corpus)
        speakers = np.array([s.speaker for s in samples])
        cache: dict[str, np.ndarray] = {}
        for combo, weight in ((c, w) for c in wanted for w in baselines):
            parts = combo.split("+")
            for part in parts:
                if part not in cache:
                    cache[part] = pooled_matrix(samples, SPECS[part], f"{corpus} {part}")
            x = np.concatenate([cache[p] for p in parts], axis=1)
            means = np.concatenate([np.arange(2 * SPECS[p].dim) < SPECS[p].dim for p in parts])
            ua, acc = probe(x, y, folds, (speakers, means, weight) if weight else None)
            name = combo if not weight else f"{combo}|baseline={weight:g}"
            results.setdefault(name, {})[f"{corpus}_ua"] = round(ua, 1)
            results[name][f"{corpus}_acc"] = round(acc, 1)
            if not quiet:
                print(f"{corpus:8s} {name:28s} UA {ua:5.1f}  acc {acc:5.1f}", flush=True)
    return results


if __name__ == "__main__":
    raise SystemExit(main())
