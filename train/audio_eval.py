"""Evaluation on the emotional-speech corpora (``emotrack eval --dataset emodb|ravdess|speech_av``).

RAVDESS: the predicted MELD emotion against the file's emotion (calm counts as neutral), over the
project's 7 emotions; ``uar`` / ``wa`` for audio only and for audio + the statement the actor
speaks (the words are neutral), as for EMO-DB below.

EMO-DB: the prediction is mapped back to one of the 7 EMO-DB classes with
:func:`train.audio_data.emodb_class_of_prediction` (the class whose polarity and MELD emotion are
most probable together); reported are the unweighted accuracy (``uar``, mean
per-class recall) and the weighted accuracy (``wa``, plain accuracy), each for two inputs:

- ``audio``: audio only (text ``""``), what a live session sees when the ASR hears no words it
  knows (German speech for the English tiny.en model);
- ``fused``: audio + the file's transcript (:func:`train.audio_datasets.transcript_of`; files
  whose sentence code is unknown are left out of this row).

speech_av: continuous valence and arousal in [-1, 1] against the model's predictions from audio
only: ``valence_corr`` = Pearson r of the predicted intensity with valence; ``arousal_corr`` =
Pearson r of the arousal proxy 1 - P(neutral) (MELD emotion distribution) with arousal, and
``arousal_corr_intensity`` = Pearson r of |intensity| with arousal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from train.audio_data import (
    CORPUS_LANGUAGES,
    EMODB,
    EMODB_CLASSES,
    RAVDESS,
    SPEECH_AV,
    AudioSample,
    emodb_class_of_prediction,
)
from train.audio_datasets import (
    corpus_features,
    corpus_folder,
    load_audio_corpus,
    select_split,
    speaker_key,
    transcript_of,
)
from train.metrics import pearson, unweighted_accuracy
from train.unification import DEFAULT_CACHE
from unimse.inference import EmotionPredictor
from unimse.inputs import ModelInput
from unimse.labels import MELD_EMOTIONS
from unimse.prediction import Prediction
from unimse.speakers import FIRST_SPEAKER
from unimse.voice_trust import corpus_histories, settled_histories

logger = logging.getLogger(__name__)


def load_eval_corpus(dataset: str, data_dir: Path, split: str) -> list[AudioSample]:
    """The files of ``split`` (``all``: every file) of the corpus at ``data_dir`` (the corpus
    folder itself, or a ../shared/data-like root holding it)."""
    folder = corpus_folder(dataset, data_dir)
    return select_split(load_audio_corpus(dataset, folder), dataset, split)


def audio_inputs(
    predictor: EmotionPredictor,
    samples: Sequence[AudioSample],
    texts: Sequence[str] | None = None,
    cache_dir: Path | None = DEFAULT_CACHE,
) -> list[ModelInput]:
    """Model inputs with the checkpoint's acoustic features (none for a text-only checkpoint)."""
    spec = predictor.config.acoustic
    if spec is None:
        logger.warning(
            "checkpoint %s has no acoustic feature spec: it never hears the audio",
            predictor.model_version,
        )
    features: list[np.ndarray | None] = [None] * len(samples)
    if spec is not None:
        features = list(corpus_features(samples, spec, cache_dir, predictor.voice_prior))
    inputs = [
        ModelInput(
            text=texts[i] if texts is not None else "",
            speaker=FIRST_SPEAKER,
            acoustic=feats,
            language=CORPUS_LANGUAGES[sample.dataset],
        )
        for i, (sample, feats) in enumerate(zip(samples, features, strict=True))
    ]
    return with_voice_histories(predictor, inputs, [speaker_key(s) for s in samples])


def with_voice_histories(
    predictor: EmotionPredictor,
    inputs: Sequence[ModelInput],
    speakers: Sequence[str],
    *,
    settled: bool = False,
) -> list[ModelInput]:
    """``inputs`` (one corpus's utterances, in the order their features were normalised) with
    each speaker's voice history as a conversation in :func:`corpus_histories`' order gives it
    (``settled``: all of the speaker's other utterances, as live use's re-reads end with it),
    when the checkpoint trusts an expressive voice (``voice_trust``); else as they are."""
    if not predictor.config.voice_trust:
        return list(inputs)
    leads = predictor.voice_leads(inputs)
    read = settled_histories if settled else corpus_histories
    histories = read(leads, speakers)
    return [replace(x, voice_history=h) for x, h in zip(inputs, histories, strict=True)]


def true_class(sample: AudioSample) -> str:
    """The class a categorical corpus file is scored against (RAVDESS: its MELD emotion)."""
    if sample.dataset == RAVDESS:
        return sample.label.meld_emotion
    return sample.emotion or ""


def predicted_class(dataset: str, prediction: Prediction) -> str:
    if dataset == RAVDESS:
        return prediction.emotion
    return emodb_class_of_prediction(prediction)


def class_names(dataset: str) -> tuple[str, ...]:
    """The classes a categorical corpus is scored over."""
    return MELD_EMOTIONS if dataset == RAVDESS else EMODB_CLASSES


def categorical_predictions(
    predictor: EmotionPredictor,
    samples: Sequence[AudioSample],
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    cache_dir: Path | None = DEFAULT_CACHE,
) -> list[str]:
    """The class the model hears in each clip, audio only (the corpus's own classes)."""
    dataset = samples[0].dataset if samples else EMODB
    preds = predictor.predict(
        audio_inputs(predictor, samples, None, cache_dir), batch_size=batch_size, progress=progress
    )
    return [predicted_class(dataset, p) for p in preds]


def categorical_metrics(
    predictor: EmotionPredictor,
    samples: Sequence[AudioSample],
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    cache_dir: Path | None = DEFAULT_CACHE,
) -> dict[str, float]:
    """EMO-DB or RAVDESS: ``audio_uar``, ``audio_wa``, ``fused_uar``, ``fused_wa`` and per-class
    recalls, percent; with a voice trust also ``settled_*``: the fused read once each speaker's
    earlier clips are read again beside all of the speaker's others (live use's revisions)."""
    dataset = samples[0].dataset if samples else EMODB
    classes = class_names(dataset)
    truth = [true_class(s) for s in samples]
    heard = categorical_predictions(predictor, samples, batch_size, progress, cache_dir)
    result: dict[str, float] = {"n": float(len(samples))}
    for key, value in unweighted_accuracy(truth, heard, classes).items():
        result[f"audio_{key}"] = value
    known = [i for i, s in enumerate(samples) if transcript_of(s)]
    if len(known) < len(samples):
        logger.warning(
            "%d files have an unknown sentence code: left out of the fused row",
            len(samples) - len(known),
        )
    if known:
        fused_samples = [samples[i] for i in known]
        texts = [transcript_of(s) or "" for s in fused_samples]
        fused = predictor.predict(
            audio_inputs(predictor, fused_samples, texts, cache_dir),
            batch_size=batch_size,
            progress=progress,
        )
        result["n_fused"] = float(len(known))
        reads = {"fused": fused}
        if fused and all(p.trust is not None for p in fused):  # the checkpoint has a voice trust
            reads["settled"] = settled_reads(
                predictor, fused, [speaker_key(s) for s in fused_samples]
            )
        for name, read in reads.items():
            for key, value in unweighted_accuracy(
                [truth[i] for i in known], [predicted_class(dataset, p) for p in read], classes
            ).items():
                result[f"{name}_{key}"] = value
    return result


def settled_reads(
    predictor: EmotionPredictor, predictions: Sequence[Prediction], speakers: Sequence[str]
) -> list[Prediction]:
    """``predictions`` (read by the voice trust) as live use ends with them: each speaker's
    results read again beside all of the speaker's other utterances
    (:func:`unimse.voice_trust.settled_histories`, :mod:`realtime.reread`)."""
    leads = [p.trust.lead if p.trust is not None else 0.0 for p in predictions]
    return predictor.reread(predictions, settled_histories(leads, speakers))


def speech_av_metrics(
    predictor: EmotionPredictor,
    samples: Sequence[AudioSample],
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    cache_dir: Path | None = DEFAULT_CACHE,
) -> dict[str, float]:
    """Correlations of predictions (audio only) with annotated valence and arousal."""
    if len(samples) < 2:
        raise ValueError("speech_av evaluation needs at least 2 clips")
    preds = predictor.predict(
        audio_inputs(predictor, samples, None, cache_dir), batch_size=batch_size, progress=progress
    )
    valence = [s.valence or 0.0 for s in samples]
    arousal = [s.arousal or 0.0 for s in samples]
    intensity = [p.intensity for p in preds]
    aroused = [1.0 - p.emotion_probs["neutral"] for p in preds]
    polarity_true = [s.label.polarity for s in samples]
    return {
        "n": float(len(samples)),
        "valence_corr": pearson(intensity, valence),
        "arousal_corr": pearson(aroused, arousal),
        "arousal_corr_intensity": pearson([abs(x) for x in intensity], arousal),
        "polarity_acc": 100.0
        * sum(p.polarity == t for p, t in zip(preds, polarity_true, strict=True))
        / len(samples),
    }


def audio_metrics(
    dataset: str,
    predictor: EmotionPredictor,
    samples: Sequence[AudioSample],
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    if predictor.config.acoustic is None:  # every clip would read as its transcript alone
        from train.data import DataError

        raise DataError(f"checkpoint {predictor.model_version} has no voice branch to evaluate")
    if dataset in (EMODB, RAVDESS):
        return categorical_metrics(predictor, samples, batch_size, progress)
    if dataset == SPEECH_AV:
        return speech_av_metrics(predictor, samples, batch_size, progress)
    raise ValueError(f"{dataset} is not an audio corpus")


def progress_total(dataset: str, samples: Sequence[AudioSample]) -> int:
    """How many predictions :func:`audio_metrics` makes (for a progress bar)."""
    if dataset in (EMODB, RAVDESS):
        return len(samples) + sum(1 for s in samples if transcript_of(s))
    return len(samples)
