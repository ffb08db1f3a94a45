"""Dev-set calibration of a checkpoint (``emotrack calibrate``): emotion-head priors, audio and
video weights.

Joint training on three corpora with borrowed labels leaves each emotion head with the class
priors of the mixture, not of its own corpus. Calibration adds one offset per class to a head's
logits, chosen on the **dev** split only by coordinate ascent on weighted F1, and folds the offsets
into the head's bias: the calibrated checkpoint is an ordinary checkpoint (the same tensors with
two bias vectors changed), and `calibration.json` records what was done.

Modality scales are chosen by :mod:`train.modality_scale`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.data import Sample, load_dataset
from train.evaluate import predict_samples
from train.metrics import classification_metrics
from train.modality_scale import (
    BRANCHES,
    ScaleChoice,
    projection,
    readout_fitted_on_dev,
    scale_choice,
)
from unimse.checkpoint import (
    CONFIG,
    CheckpointError,
    check_output_folder,
    read_stored,
    resolve_checkpoint,
    write_derived,
)
from unimse.config import UniMSEConfig
from unimse.inference import EmotionPredictor, empty_logits
from unimse.labels import IEMOCAP_EMOTIONS, MELD_EMOTIONS

logger = logging.getLogger(__name__)

CALIBRATION = "calibration.json"
# dataset -> (head whose bias is shifted, its classes)
HEADS: dict[str, tuple[str, tuple[str, ...]]] = {
    "meld": ("heads.meld.bias", MELD_EMOTIONS),
    "iemocap": ("heads.iemocap.bias", IEMOCAP_EMOTIONS),
}


def head_slice(config: UniMSEConfig, dataset: str) -> slice:
    """Where ``dataset``'s head sits in the concatenated (polarity, MELD, IEMOCAP) logits."""
    polarity, meld, iemocap = config.head_sizes
    if dataset == "meld":
        return slice(polarity, polarity + meld)
    return slice(polarity + meld, polarity + meld + iemocap)


@dataclass(frozen=True)
class HeadCalibration:
    dataset: str
    offsets: dict[str, float]  # class -> logit offset
    dev_before: dict[str, float]  # acc, wf1 on dev without offsets
    dev_after: dict[str, float]


def fit_offsets(
    log_probs: np.ndarray,
    labels: np.ndarray,
    grid: Sequence[float] = tuple(np.round(np.linspace(-1.5, 1.5, 31), 2)),
    rounds: int = 3,
) -> np.ndarray:
    """Per-class logit offsets maximising weighted F1 of ``argmax(log_probs + offsets)``.

    Coordinate ascent from zero over ``grid``; an offset moves only on a strict improvement, so
    classes the objective does not care about stay at 0.
    """
    if log_probs.ndim != 2 or len(log_probs) != len(labels) or len(labels) == 0:
        raise ValueError("fit_offsets needs an (N, K) array and N labels, N > 0")
    offsets = np.zeros(log_probs.shape[1])

    def score(candidate: np.ndarray) -> float:
        pred = (log_probs + candidate).argmax(1)
        return classification_metrics(labels.tolist(), pred.tolist())["wf1"]

    best = score(offsets)
    for _ in range(rounds):
        improved = False
        for k in range(len(offsets)):
            for value in grid:
                candidate = offsets.copy()
                candidate[k] = value
                s = score(candidate)
                if s > best + 1e-9:
                    best, offsets, improved = s, candidate, True
        if not improved:
            break
    return offsets


def dev_log_probs(
    predictor: EmotionPredictor,
    dataset: str,
    samples: Sequence[Sample],
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Text-only predictions of ``samples`` (a dev split) as log-probabilities (N, K) and gold
    class indices (N,)."""
    _, classes = HEADS[dataset]
    preds = predict_samples(predictor, samples, progress=progress)
    probs = np.array(
        [
            [(p.emotion_probs if dataset == "meld" else p.iemocap_probs)[c] for c in classes]
            for p in preds
        ]
    )
    gold = [s.meld_emotion if dataset == "meld" else s.iemocap_emotion for s in samples]
    labels = np.array([classes.index(g or "") for g in gold])
    return np.log(np.clip(probs, 1e-12, None)), labels


@dataclass(frozen=True)
class VoiceTrust:
    """The voice trust's settings (``UniMSEConfig.voice_trust`` and its companions); None
    fields keep the checkpoint's."""

    threshold: float
    width: float | None = None
    prior: float | None = None
    words: float | None = None
    start: float | None = None

    def settings(self) -> dict[str, float]:
        named = {
            "voice_trust": self.threshold,
            "voice_trust_width": self.width,
            "voice_trust_prior": self.prior,
            "voice_trust_words": self.words,
            "voice_trust_start": self.start,
        }
        return {k: v for k, v in named.items() if v is not None}


def calibrate_checkpoint(
    source: str | Path,
    output: Path,
    data_dir: Path,
    datasets: Sequence[str] = ("meld", "iemocap"),
    progress: Callable[[str, int, int], None] | None = None,
    audio_scale: float | str | None = None,
    video_scale: float | str | None = None,
    voice_neutral_share: float | None = None,
    voice_share_by: str = "flat",
    voice_margin: float | None = None,
    voice_cap: float | None = None,
    wordless_audio_scale: float | None = None,
    face_gate_power: float | None = None,
    voice_neutral_words: float | None = None,
    voice_hinge: str | None = None,
    voice_trust: VoiceTrust | None = None,
) -> tuple[list[HeadCalibration], list[ScaleChoice]]:
    """Write ``output``: ``source`` with dev-calibrated emotion-head biases (``datasets``) and,
    with ``audio_scale`` / ``video_scale`` (a factor, or "auto" to choose it on dev), a scaled
    acoustic / visual branch. Each scale is chosen on ``source`` with the other modality absent,
    so the two choices do not depend on each other. ``voice_neutral_share`` (a hinged voice's
    share of its unhinged logits on utterances with words), ``voice_share_by`` and
    ``voice_margin`` / ``voice_cap`` (where its hinge starts above neutral, the most it adds) and
    ``voice_hinge`` (the hinge's shape, for a checkpoint trained with one) go into the output's
    config; ``wordless_audio_scale`` is the voice's weight on utterances without
    words (``voice_wordless`` = it / the audio scale) and ``voice_neutral_words`` the power by
    which words that read as neutral bring the voice up to that weight; ``face_gate_power``
    sharpens a gated face (``face_gate``); ``voice_trust`` lets an expressive speaker's voice be
    heard beside neutral words (its blank logits computed here, after the heads' offsets). The
    scales are chosen with these settings in place, the voice trust's included (each dev
    speaker's neutral voices heard as a conversation; the weight without words, set relative to
    the audio scale, excepted)."""
    folder = resolve_checkpoint(source)
    if output.resolve() == folder.resolve():
        raise CheckpointError("calibrate writes a new checkpoint: --output must differ")
    check_output_folder(output)
    unknown = [d for d in datasets if d not in HEADS]
    if unknown:
        raise ValueError(f"no emotion head to calibrate for {unknown}; choose from {list(HEADS)}")
    tensors, metadata = read_stored(folder)
    missing = [HEADS[d][0] for d in datasets if HEADS[d][0] not in tensors]
    if missing:
        raise CheckpointError(
            f"checkpoint {folder} has no {missing[0]}: calibration needs an encoder checkpoint "
            "with classification heads"
        )
    requested = {"audio": audio_scale, "video": video_scale}
    for modality, value in requested.items():
        if value is not None and any(name not in tensors for name in projection(modality)):
            raise CheckpointError(
                f"checkpoint {folder} has no {BRANCHES[modality]} branch to scale"
            )
    fitted = readout_fitted_on_dev(folder) if audio_scale == "auto" else []
    if fitted:
        raise CheckpointError(
            f"--audio-scale auto scores the voice on dev speakers its readout in {folder} was "
            f"fitted on ({', '.join(fitted)}): choose the scale on held-out speakers "
            "(benchmarks/neutral_cv.py readout) and pass it as a factor"
        )
    predictor = EmotionPredictor.load(folder, device="cpu")
    settings: dict[str, Any] = {}  # what goes into the output's config
    if voice_neutral_share is not None:
        settings |= {"voice_neutral_share": voice_neutral_share, "voice_share_by": voice_share_by}
    if voice_margin is not None:
        settings["voice_margin"] = voice_margin
    if voice_cap is not None:
        settings["voice_cap"] = voice_cap
    if voice_neutral_words is not None:
        settings["voice_neutral_words"] = voice_neutral_words
    if voice_hinge is not None:
        if voice_hinge == "off":
            raise ValueError("calibrate changes a voice hinge's shape; it cannot turn it off")
        settings["voice_hinge"] = voice_hinge
    if settings and predictor.config.voice_hinge == "off":
        raise CheckpointError(f"checkpoint {folder} has no voice hinge to share or set")
    if wordless_audio_scale is not None:
        if not predictor.config.modality_logits or predictor.config.acoustic is None:
            raise CheckpointError(f"checkpoint {folder} has no voice logits to weigh alone")
        if wordless_audio_scale <= 0:
            raise ValueError("the wordless audio scale must be > 0")
    if face_gate_power is not None and predictor.config.face_gate == "off":
        raise CheckpointError(f"checkpoint {folder} has no face gate to sharpen")
    if face_gate_power is not None:
        settings["face_gate_power"] = face_gate_power
    blank = None
    if voice_trust is not None:  # the heads' logits of "", what the voice alone is added to
        blank = empty_logits(predictor.model, predictor.processor)
        settings |= voice_trust.settings() | {"voice_trust_blank": tuple(blank.tolist())}
    settled = replace(predictor.config, **settings)  # validated before any dev data is read
    predictor.reconfigure(settled)  # the scales are chosen with the settings they ship with
    choices = [
        scale_choice(predictor, modality, value, data_dir, progress)
        for modality, value in requested.items()
        if value is not None
    ]
    for choice in choices:
        for name in projection(choice.modality):
            tensors[name] = (tensors[name].float() * choice.scale).to(tensors[name].dtype)
    if wordless_audio_scale is not None:
        scale = next((c.scale for c in choices if c.modality == "audio"), 1.0)
        settings["voice_wordless"] = wordless_audio_scale / scale
    results = []
    for dataset in datasets:
        bias_name, classes = HEADS[dataset]
        samples = load_dataset(dataset, "dev", data_dir)
        n = len(samples)
        tick = None if progress is None else (lambda k, d=dataset, n=n: progress(d, k, n))
        log_probs, labels = dev_log_probs(predictor, dataset, samples, tick)
        offsets = fit_offsets(log_probs, labels)
        before = classification_metrics(labels.tolist(), log_probs.argmax(1).tolist())
        after = classification_metrics(labels.tolist(), (log_probs + offsets).argmax(1).tolist())
        bias = tensors[bias_name]
        tensors[bias_name] = (bias.float() + torch.tensor(offsets, dtype=torch.float32)).to(
            bias.dtype
        )
        offs = {c: float(o) for c, o in zip(classes, offsets, strict=True)}
        results.append(HeadCalibration(dataset, offs, before, after))
        if blank is not None:  # the blank utterance's logits move with the head's bias
            blank[head_slice(predictor.config, dataset)] += offsets
        logger.info(
            "%s dev wf1 %.2f -> %.2f, offsets %s", dataset, before["wf1"], after["wf1"], offs
        )
    if blank is not None:
        settings["voice_trust_blank"] = tuple(blank.tolist())
    record: dict[str, object] = {
        "source": str(folder),
        "method": "per-class logit offsets, coordinate ascent on dev weighted F1",
        "heads": [asdict(r) for r in results],
    }
    for choice in choices:
        record[f"{choice.modality}_scale"] = asdict(choice)
    record |= settings
    previous = folder / CALIBRATION
    if previous.is_file():  # calibrating a calibrated checkpoint keeps the earlier record
        record["source_calibration"] = json.loads(previous.read_text(encoding="utf-8"))
    with write_derived(folder, output, tensors, metadata, skip=(CALIBRATION,)) as written:
        if settings:
            replace(predictor.config, **settings).save(written / CONFIG)
        (written / CALIBRATION).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return results, choices
