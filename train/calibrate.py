"""Dev-set class-prior calibration of the emotion heads (``emotrack calibrate``).

Joint training on three corpora with borrowed labels leaves each emotion head with the class
priors of the mixture, not of its own corpus. Calibration adds one offset per class to a head's
logits, chosen on the **dev** split only by coordinate ascent on weighted F1, and folds the offsets
into the head's bias: the calibrated checkpoint is an ordinary checkpoint (the same tensors with
two bias vectors changed), and `calibration.json` records what was done.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from train.data import load_dataset
from train.evaluate import predict_samples
from train.metrics import classification_metrics
from unimse.checkpoint import WEIGHTS, CheckpointError, resolve_checkpoint
from unimse.inference import EmotionPredictor
from unimse.labels import IEMOCAP_EMOTIONS, MELD_EMOTIONS

logger = logging.getLogger(__name__)

CALIBRATION = "calibration.json"
# dataset -> (head whose bias is shifted, its classes)
HEADS: dict[str, tuple[str, tuple[str, ...]]] = {
    "meld": ("heads.meld.bias", MELD_EMOTIONS),
    "iemocap": ("heads.iemocap.bias", IEMOCAP_EMOTIONS),
}


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
    data_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Text-only dev predictions as log-probabilities (N, K) and gold class indices (N,)."""
    _, classes = HEADS[dataset]
    samples = load_dataset(dataset, "dev", data_dir)
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


def calibrate_checkpoint(
    source: str | Path,
    output: Path,
    data_dir: Path,
    datasets: Sequence[str] = ("meld", "iemocap"),
    progress: Callable[[str, int, int], None] | None = None,
) -> list[HeadCalibration]:
    """Write ``output``: ``source`` with dev-calibrated emotion-head biases."""
    folder = resolve_checkpoint(source)
    if output.resolve() == folder.resolve():
        raise CheckpointError("calibrate writes a new checkpoint: --output must differ")
    unknown = [d for d in datasets if d not in HEADS]
    if unknown:
        raise ValueError(f"no emotion head to calibrate for {unknown}; choose from {list(HEADS)}")
    with safe_open(str(folder / WEIGHTS), framework="pt") as f:
        metadata = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    missing = [HEADS[d][0] for d in datasets if HEADS[d][0] not in tensors]
    if missing:
        raise CheckpointError(
            f"checkpoint {folder} has no {missing[0]}: calibration needs an encoder checkpoint "
            "with classification heads"
        )
    predictor = EmotionPredictor.load(folder, device="cpu")
    results = []
    for dataset in datasets:
        bias_name, classes = HEADS[dataset]
        n = len(load_dataset(dataset, "dev", data_dir))
        tick = None if progress is None else (lambda k, d=dataset, n=n: progress(d, k, n))
        log_probs, labels = dev_log_probs(predictor, dataset, data_dir, tick)
        offsets = fit_offsets(log_probs, labels)
        before = classification_metrics(labels.tolist(), log_probs.argmax(1).tolist())
        after = classification_metrics(labels.tolist(), (log_probs + offsets).argmax(1).tolist())
        bias = tensors[bias_name]
        tensors[bias_name] = (bias.float() + torch.tensor(offsets, dtype=torch.float32)).to(
            bias.dtype
        )
        offs = {c: float(o) for c, o in zip(classes, offsets, strict=True)}
        results.append(HeadCalibration(dataset, offs, before, after))
        logger.info(
            "%s dev wf1 %.2f -> %.2f, offsets %s", dataset, before["wf1"], after["wf1"], offs
        )
    output.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        if item.is_file() and item.name not in (WEIGHTS, CALIBRATION):
            shutil.copy2(item, output / item.name)
    save_file(tensors, str(output / WEIGHTS), metadata=metadata)
    record = {
        "source": str(folder),
        "method": "per-class logit offsets, coordinate ascent on dev weighted F1",
        "heads": [asdict(r) for r in results],
    }
    (output / CALIBRATION).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return results
