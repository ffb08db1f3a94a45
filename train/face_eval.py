"""Evaluation on CK+ face crops (``emotrack eval --dataset ckplus``).

Scored over the six CK+ expressions the project's MELD label space shares (:data:`FACE_CLASSES`;
contempt is left out), in percent: ``acc`` (accuracy) and ``uar`` (unweighted accuracy = mean
per-class recall over the classes present), plus each class's recall and ``neutral_rate`` (how
often neutral was predicted: CK+ has no neutral faces, so every neutral answer is wrong). Two
rows:

- ``fer``: the visual feature alone, i.e. the checkpoint's FER network (shipped weights, or
  ``fer_weights``): the argmax of its 7 probabilities, neutral included.
- ``fused``: the UniMSE checkpoint given the face's feature (a one-step sequence, shape (1, 7))
  beside the neutral sentence :data:`NEUTRAL_TEXT`; its predicted MELD emotion. The sentence
  alone is read as neutral by the shipped checkpoint (0.70), so every correct answer comes from
  the face. ``text_alone_emotion`` records what the sentence alone gives with the evaluated
  checkpoint.
- ``fused_held``: the same with the face held still for :data:`HELD_FRAMES` steps (the feature
  row repeated), what the live pipeline sees of a still face over a 1.6 s utterance at 5 frames/s.
  The visual branch was trained on (simulated) sequences of 3-12 frames; the shipped checkpoint
  ignores a one-step sequence beside these words (``fused`` all neutral) but not a held face.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from train.data import DataError
from train.face_data import (
    FACE_CLASSES,
    NEUTRAL_TEXT,
    FaceSample,
    ckplus_folder,
    face_features,
    load_ckplus,
    select_face_split,
    split_of_subject,
    subjects_of,
)
from train.metrics import unweighted_accuracy
from unimse.features.visual import VisualExtractor
from unimse.inference import EmotionPredictor
from unimse.inputs import ModelInput
from unimse.labels import MELD_EMOTIONS
from unimse.speakers import FIRST_SPEAKER

logger = logging.getLogger(__name__)

HELD_FRAMES = 8
FER_BATCH = 256


def face_metrics(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """``acc``, ``uar``, ``recall_<class>`` and ``neutral_rate`` (percent) of predicted MELD
    emotions against CK+ labels (both MELD names)."""
    scores = unweighted_accuracy(list(truth), list(predicted), FACE_CLASSES)
    recalls = {k: v for k, v in scores.items() if k.startswith("recall_")}
    neutral = 100.0 * sum(p == "neutral" for p in predicted) / len(predicted)
    return {"acc": scores["wa"], "uar": scores["uar"], **recalls, "neutral_rate": neutral}


def probs_to_emotions(probs: np.ndarray) -> list[str]:
    """Argmax of (N, 7) probabilities in MELD order, as emotion names."""
    return [MELD_EMOTIONS[int(i)] for i in np.asarray(probs).argmax(axis=1)]


def scored(samples: Sequence[FaceSample]) -> list[FaceSample]:
    """The samples with a label in the project's space (contempt left out)."""
    return [s for s in samples if s.meld_emotion is not None]


def fer_probabilities(
    extractor: VisualExtractor,
    samples: Sequence[FaceSample],
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(N, 7) FER probabilities in MELD order of the samples' crops, in batches."""
    rows = []
    for start in range(0, len(samples), FER_BATCH):
        chunk = samples[start : start + FER_BATCH]
        rows.append(face_features(extractor, [s.image for s in chunk]))
        if progress is not None:
            progress(len(chunk))
    return np.concatenate(rows) if rows else np.zeros((0, len(MELD_EMOTIONS)), np.float32)


def face_eval_metrics(
    predictor: EmotionPredictor,
    samples: Sequence[FaceSample],
    *,
    fer_weights: str | Path | None = None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float | str]:
    """``fer_*`` and ``fused_*`` metrics (see the module docstring) of labelled CK+ samples."""
    from unimse.features import visual_extractor

    samples = scored(samples)
    if not samples:
        raise DataError("no scored CK+ samples (contempt has no label) to evaluate")
    spec = predictor.config.visual
    if spec is None:
        raise DataError(f"checkpoint {predictor.model_version} has no visual branch to evaluate")
    try:
        extractor = visual_extractor(spec, weights=fer_weights)
    except (FileNotFoundError, ValueError) as exc:  # missing or foreign FER weights
        raise DataError(str(exc)) from exc
    probs = fer_probabilities(extractor, samples, progress)
    truth = [s.meld_emotion or "" for s in samples]
    result: dict[str, float | str] = {"n": float(len(samples))}
    result.update({f"fer_{k}": v for k, v in face_metrics(truth, probs_to_emotions(probs)).items()})
    for name, steps in (("fused", 1), ("fused_held", HELD_FRAMES)):
        inputs = [
            ModelInput(
                text=NEUTRAL_TEXT,
                speaker=FIRST_SPEAKER,
                visual=np.repeat(probs[i : i + 1], steps, 0),
            )
            for i in range(len(samples))
        ]
        predictions = predictor.predict(inputs, batch_size=batch_size, progress=progress)
        predicted = [p.emotion for p in predictions]
        result.update({f"{name}_{k}": v for k, v in face_metrics(truth, predicted).items()})
    text_alone = predictor.predict([ModelInput(text=NEUTRAL_TEXT, speaker=FIRST_SPEAKER)])[0]
    result["text_alone_emotion"] = text_alone.emotion
    return result


def load_face_eval(data_dir: Path, split: str = "all") -> list[FaceSample]:
    """The scored CK+ samples of ``split`` (train/dev/test: fixed subject splits; all); a
    one-line :class:`DataError` when no subject of the folder falls in ``split``."""
    every = load_ckplus(data_dir)
    chosen = select_face_split(every, split)
    if not chosen:
        subjects = subjects_of(every)
        splits = sorted({split_of_subject(s) for s in subjects})
        raise DataError(
            f"no ckplus images of a {split}-split subject in {ckplus_folder(data_dir)} (its "
            f"{len(subjects)} subject(s) fall in the {' and '.join(splits)} "
            f"split{'s' if len(splits) > 1 else ''}); use --split all"
        )
    return chosen
