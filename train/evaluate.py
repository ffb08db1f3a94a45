"""Evaluation of a model on one dataset split, shared by training (dev) and `emotrack eval`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from train.data import Sample
from train.metrics import classification_metrics, regression_metrics, unweighted_accuracy
from unimse.inference import EmotionPredictor
from unimse.labels import IEMOCAP_EMOTIONS, MELD_EMOTIONS
from unimse.prediction import Prediction

PRIMARY_METRIC = {
    "meld": "wf1",
    "iemocap": "wf1",
    "mosi": "acc2_non0",
    "emodb": "uar",
    "ravdess": "uar",
    "ckplus": "acc",  # over the six expressions CK+ shares with MELD (face + neutral sentence)
}


def predict_samples(
    predictor: EmotionPredictor,
    samples: Sequence[Sample],
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> list[Prediction]:
    """Predictions in the samples' order; batches are formed from similar lengths for speed."""
    order = sorted(
        range(len(samples)),
        key=lambda i: len(samples[i].text) + sum(len(t.text) for t in samples[i].context[-2:]),
    )
    inputs = [samples[i].to_input() for i in order]
    ordered = predictor.predict(inputs, batch_size=batch_size, progress=progress)
    preds: list[Prediction | None] = [None] * len(samples)
    for i, p in zip(order, ordered, strict=True):
        preds[i] = p
    return [p for p in preds if p is not None]


def dataset_metrics(
    dataset: str, samples: Sequence[Sample], preds: Sequence[Prediction]
) -> dict[str, float]:
    if dataset == "meld":
        return classification_metrics(
            [MELD_EMOTIONS.index(s.meld_emotion or "") for s in samples],
            [MELD_EMOTIONS.index(p.emotion) for p in preds],
        )
    if dataset == "iemocap":
        return classification_metrics(
            [IEMOCAP_EMOTIONS.index(s.iemocap_emotion or "") for s in samples],
            [IEMOCAP_EMOTIONS.index(p.iemocap_emotion) for p in preds],
        )
    if dataset == "mosi":
        return regression_metrics([s.score or 0.0 for s in samples], [p.intensity for p in preds])
    if dataset == "emodb":
        from train.audio_data import EMODB_CLASSES, emodb_class_of_prediction
        from train.audio_datasets import emodb_class_of_sample

        return unweighted_accuracy(
            [emodb_class_of_sample(s) for s in samples],
            [emodb_class_of_prediction(p) for p in preds],
            EMODB_CLASSES,
        )
    if dataset == "ravdess":
        return unweighted_accuracy(
            [s.meld_emotion or "" for s in samples], [p.emotion for p in preds], MELD_EMOTIONS
        )
    if dataset == "ckplus":
        from train.face_eval import face_metrics

        return face_metrics([s.meld_emotion or "" for s in samples], [p.emotion for p in preds])
    raise ValueError(f"no metrics for dataset {dataset!r}")


def evaluate(
    predictor: EmotionPredictor,
    dataset: str,
    samples: Sequence[Sample],
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    return dataset_metrics(
        dataset, samples, predict_samples(predictor, samples, batch_size, progress)
    )
