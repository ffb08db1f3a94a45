"""How EMO-DB's classes are learnt through the universal label: a fast check on pooled features.

The acoustic branch reaches the heads mostly through linear maps of the pooled voice, so this
script trains just that, a linear read-out of the mean+std pooled Whisper tiny.en middle-layer
states (speaker baseline, prior weight 5, as shipped): batch norm -> dropout 0.3 -> 32-d -> logits,
AdamW (lr 1e-3, weight decay 0.01), 25 epochs, the epoch picked on the next speaker, EMO-DB
leave-one-speaker-out. Three ways to learn and read EMO-DB's 7 classes:

- ``universal``: polarity, MELD-emotion and IEMOCAP cross-entropy on the class's universal label
  (boredom: negative + neutral, its emotion at the borrowed weight), read back from the argmaxes
  (``train.audio_data.emodb_class_of``): what the model did before ``emodb_joint``;
- ``joint``: cross-entropy over the 7 classes scored by log p(polarity) + log p(emotion) (the
  ``emodb_joint`` loss) plus the IEMOCAP term, read back jointly (``emodb_class_of_prediction``);
- ``classes``: a 7-way head of its own (what a probe does; the model has no such head).

    .venv/bin/python benchmarks/emodb_label_space.py [--exclude 13] [--seeds 1 2 3]

Prints the mean unweighted accuracy over the held-out speakers per mode and seed. ``--exclude 13``
leaves out EMO-DB's test speaker of the fixed split (the choice of loss was checked that way).
``--fixed-epochs E``: no dev speaker; each fold trains on all its other speakers for E epochs.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from voice_probe import SPECS, pooled_matrix, with_baseline

from train.audio_data import EMODB_CLASSES, emodb_class_of, load_emodb
from train.audio_datasets import EMODB_DERIVED
from train.datadir import DEFAULT_DATA_DIR
from unimse.config import LossWeights
from unimse.labels import (
    EMODB_LABELS,
    IEMOCAP_EMOTIONS,
    MELD_EMOTIONS,
    POLARITIES,
    UniversalLabel,
    emodb_joint_indices,
)
from unimse.losses import joint_class_cross_entropy, joint_class_scores

MODES = ("universal", "joint", "classes")
BORROWED = LossWeights().borrowed  # the weight of a field that comes from the mapping
P, E = len(POLARITIES), len(MELD_EMOTIONS)


def targets(y: np.ndarray) -> dict[str, torch.Tensor]:
    labels = [EMODB_LABELS[EMODB_CLASSES[i]] for i in y]
    return {
        "class": torch.tensor(y),
        "polarity": torch.tensor([POLARITIES.index(x.polarity) for x in labels]),
        "emotion": torch.tensor([MELD_EMOTIONS.index(x.meld_emotion) for x in labels]),
        "emotion_w": torch.tensor(
            [BORROWED if "meld_emotion" in EMODB_DERIVED[EMODB_CLASSES[i]] else 1.0 for i in y],
            dtype=torch.float32,
        ),
        "iemocap": torch.tensor([IEMOCAP_EMOTIONS.index(x.iemocap_emotion) for x in labels]),
    }


def loss_of(mode: str, out: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    if mode == "classes":
        return F.cross_entropy(out, t["class"])
    polarity, emotion, iemocap = out[:, :P], out[:, P : P + E], out[:, P + E :]
    if mode == "joint":
        joint = joint_class_cross_entropy(polarity, emotion, t["class"], emodb_joint_indices())
        return joint + F.cross_entropy(iemocap, t["iemocap"])
    per_row = F.cross_entropy(emotion, t["emotion"], reduction="none") * t["emotion_w"]
    return (
        F.cross_entropy(polarity, t["polarity"])
        + per_row.mean()
        + F.cross_entropy(iemocap, t["iemocap"])
    )


def classes_of(mode: str, out: torch.Tensor) -> np.ndarray:
    if mode == "classes":
        return out.argmax(1).numpy()
    polarity, emotion = out[:, :P], out[:, P : P + E]
    if mode == "joint":
        return joint_class_scores(polarity, emotion, emodb_joint_indices()).argmax(1).numpy()
    labels = [
        UniversalLabel(POLARITIES[p], 0.0, MELD_EMOTIONS[e], "neutral")
        for p, e in zip(polarity.argmax(1).tolist(), emotion.argmax(1).tolist(), strict=True)
    ]
    return np.array([EMODB_CLASSES.index(emodb_class_of(label)) for label in labels])


def fold_run(
    mode: str,
    x: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    dev: np.ndarray | None,
    seed: int,
    epochs: int = 25,
) -> np.ndarray:
    """Train on ``train``; the classes of every row of ``x`` at the epoch with the best dev UA
    (``dev`` None: after the last of ``epochs``)."""
    torch.manual_seed(seed)
    width = 7 if mode == "classes" else P + E + len(IEMOCAP_EMOTIONS)
    net = nn.Sequential(
        nn.BatchNorm1d(x.shape[1]), nn.Dropout(0.3), nn.Linear(x.shape[1], 32), nn.Linear(32, width)
    )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    xt = torch.tensor(x, dtype=torch.float32)
    t = targets(y[train])
    rows = torch.tensor(np.flatnonzero(train))
    best_dev, predicted = -1.0, np.empty(0, dtype=int)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(rows))
        for start in range(0, len(rows), 32):
            batch = perm[start : start + 32]
            if len(batch) < 2:
                continue
            loss = loss_of(mode, net(xt[rows[batch]]), {k: v[batch] for k, v in t.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            if dev is None:
                predicted = classes_of(mode, net(xt))
                continue
            dev_ua = balanced_accuracy_score(y[dev], classes_of(mode, net(xt[dev])))
            if dev_ua >= best_dev:
                best_dev, predicted = dev_ua, classes_of(mode, net(xt))
    return predicted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--exclude", nargs="*", default=[], help="EMO-DB speakers to leave out")
    parser.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    parser.add_argument("--modes", nargs="*", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--fixed-epochs",
        type=int,
        default=0,
        metavar="E",
        help="no dev speaker: train on all other speakers for E epochs (0: pick on the next one)",
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
    torch.set_num_threads(1)
    samples = [s for s in load_emodb(args.data_dir / "emodb") if s.speaker not in args.exclude]
    spec = SPECS["tiny.en-mid"]
    pooled = pooled_matrix(samples, spec, "emodb")
    means = np.arange(2 * spec.dim) < spec.dim
    speakers = np.array([s.speaker for s in samples])
    order = sorted(set(speakers))
    y = np.array([EMODB_CLASSES.index(s.emotion or "") for s in samples])
    print(f"EMO-DB speakers {' '.join(order)}; UA of each held-out speaker, percent")
    for mode in args.modes:
        for seed in args.seeds:
            uas = []
            for k, held_out in enumerate(order):
                test = speakers == held_out
                dev = None if args.fixed_epochs else speakers == order[(k + 1) % len(order)]
                train = ~test if dev is None else ~test & ~dev
                x = with_baseline(pooled, means, speakers, train, 5.0)
                epochs = args.fixed_epochs or 25
                predicted = fold_run(mode, x, y, train, dev, seed, epochs)
                uas.append(100 * balanced_accuracy_score(y[test], predicted[test]))
            folds = " ".join(f"{u:.0f}" for u in uas)
            print(f"{mode:9s} seed {seed}: mean {np.mean(uas):.1f}   ({folds})", flush=True)


if __name__ == "__main__":
    main()
