"""How far a convex readout of the shipped voice features gets on EMO-DB, leave one speaker out.

    python benchmarks/voice_readout.py [--losses all joint] [--l2 0.01] [--emodb-weight 2]

The voice stage reaches EMO-DB's held-out speakers at 78.8 mean unweighted accuracy; linear
probes on the same pooled states (``benchmarks/voice_probe.py``) at 86-88. Between the two sit
the model's output structure and the stage's training. This benchmark fits what the model can
hold exactly: the voice path beside no words is linear (pooled, speaker-baseline-normalised
Whisper states -> batch norm -> projection -> modality logits, added to the heads' logits of the
empty transcript), so a linear map from the standardised pooled states to the polarity, MELD and
IEMOCAP logits is one the model can carry. It is fitted by L-BFGS with an L2 penalty (``--l2``,
per weight, on the mean loss), convex, for each held-out EMO-DB speaker on the other six and
RAVDESS's non-test actors (01-16), each speaker's neutral clips also as a neutral conversation
gives them (label neutral), as the voice stage trains. ``--losses all``: cross-entropy of the
three heads on every row plus EMO-DB's joint class loss (the stage's losses, less its text
replay and consistency terms); ``joint``: EMO-DB rows through the joint class loss only. Scored
as ``emotrack eval --dataset emodb`` reads a clip (the joint polarity + emotion decision) at the
voice's weight without words (``--weight``). Nothing here is shipped.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neutral_cv import text_logits
from speech_cv import load_corpus
from voice_probe import pooled

from train.audio_data import EMODB, RAVDESS, AudioSample, emodb_class_of
from train.audio_datasets import corpus_features, neutral_voices, select_split
from train.metrics import unweighted_accuracy
from unimse.config import FeatureSpec, UniMSEConfig
from unimse.labels import EMODB_JOINT_CLASSES, UniversalLabel, emodb_joint_indices
from unimse.losses import joint_class_cross_entropy, joint_class_scores
from unimse.voice_baseline import prior_of

NEUTRAL = UniversalLabel("neutral", 0.0, "neutral", "neutral")


def pooled_rows(items: list[AudioSample], spec: FeatureSpec, prior: np.ndarray) -> np.ndarray:
    return np.stack([pooled(f) for f in corpus_features(items, spec, prior=prior)])


def head_sizes(config: UniMSEConfig) -> list[int]:
    return [len(config.polarities), len(config.meld_emotions), len(config.iemocap_emotions)]


def fit_readout(
    x: torch.Tensor,
    labels: list[UniversalLabel],
    emodb: torch.Tensor,
    empty: torch.Tensor,
    config: UniMSEConfig,
    losses: str,
    l2: float,
    emodb_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b): the heads' logits of row i are ``empty + W x_i + b``; ``losses`` "all" or
    "joint" (EMO-DB rows through the joint class loss only)."""
    sizes = head_sizes(config)
    targets = [
        torch.tensor([config.polarities.index(lab.polarity) for lab in labels]),
        torch.tensor([config.meld_emotions.index(lab.meld_emotion) for lab in labels]),
        torch.tensor([config.iemocap_emotions.index(lab.iemocap_emotion) for lab in labels]),
    ]
    classes = list(EMODB_JOINT_CLASSES)
    joint = torch.tensor(
        [
            classes.index(emodb_class_of(lab)) if e else -1
            for lab, e in zip(labels, emodb.tolist(), strict=True)
        ]
    )
    weight = torch.where(emodb, emodb_weight, 1.0)
    emodb_mass = emodb_weight * float(emodb.sum())  # the joint loss is a mean over EMO-DB rows
    w = torch.zeros(sum(sizes), x.shape[1], requires_grad=True)
    b = torch.zeros(sum(sizes), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, history_size=20, line_search_fn="strong_wolfe")
    heads_on = ~emodb if losses == "joint" else torch.ones_like(emodb)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        heads = torch.split(empty + x @ w.T + b, sizes, dim=-1)
        loss = sum(
            (F.cross_entropy(h[heads_on], t[heads_on], reduction="none") * weight[heads_on]).sum()
            for h, t in zip(heads[: 2 if losses == "joint" else 3], targets, strict=False)
        )
        joint_loss = joint_class_cross_entropy(heads[0], heads[1], joint, emodb_joint_indices())
        loss = (loss + emodb_mass * joint_loss) / weight.sum() + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--checkpoint", default="default", help="text model and voice features")
    parser.add_argument("--losses", nargs="*", choices=("all", "joint"), default=["all", "joint"])
    parser.add_argument("--l2", type=float, default=0.01)
    parser.add_argument("--emodb-weight", type=float, default=2.0)
    parser.add_argument("--weight", type=float, default=2.0, help="the voice's weight, no words")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
    torch.set_num_threads(args.threads)
    from unimse.inference import EmotionPredictor

    if not args.data_dir.is_dir():
        print(f"error: data folder not found: {args.data_dir}", file=sys.stderr)
        return 2
    predictor = EmotionPredictor.load(args.checkpoint, device="cpu")
    config, spec = predictor.config, predictor.config.acoustic
    if spec is None or not spec.baseline:
        print(f"error: {args.checkpoint} has no speaker-baselined voice", file=sys.stderr)
        return 2
    empty = torch.from_numpy(text_logits(predictor.model, predictor.processor, [""])[0])
    corpus = load_corpus(RAVDESS, args.data_dir)
    ravdess = [*select_split(corpus, RAVDESS, "train"), *select_split(corpus, RAVDESS, "dev")]
    emodb = load_corpus(EMODB, args.data_dir)
    classes = list(EMODB_JOINT_CLASSES)
    sizes = head_sizes(config)
    speakers = sorted({s.speaker for s in emodb})
    table: dict[str, list[float]] = {name: [] for name in args.losses}
    for speaker in track(speakers, description="EMO-DB speakers", transient=True):
        held = [s for s in emodb if s.speaker == speaker]
        train = [*ravdess, *(s for s in emodb if s.speaker != speaker)]
        prior = prior_of(corpus_features(train, replace(spec, baseline=0.0)))
        calm = [
            *neutral_voices([s for s in train if s.dataset == RAVDESS], spec, prior),
            *neutral_voices([s for s in train if s.dataset == EMODB], spec, prior),
        ]
        x = np.concatenate([pooled_rows(train, spec, prior), np.stack([pooled(f) for f in calm])])
        mean, std = x.mean(0), x.std(0) + 1e-6
        rows = torch.from_numpy(((x - mean) / std).astype(np.float32))
        labels = [s.label for s in train] + [NEUTRAL] * len(calm)
        is_emodb = torch.tensor([s.dataset == EMODB for s in train] + [False] * len(calm))
        test = torch.from_numpy(((pooled_rows(held, spec, prior) - mean) / std).astype(np.float32))
        truth = [emodb_class_of(s.label) for s in held]
        for losses in args.losses:
            w, b = fit_readout(
                rows, labels, is_emodb, empty, config, losses, args.l2, args.emodb_weight
            )
            heads = torch.split(empty + args.weight * (test @ w.T + b), sizes, dim=-1)
            picks = joint_class_scores(heads[0], heads[1], emodb_joint_indices()).argmax(-1)
            got = unweighted_accuracy(truth, [classes[k] for k in picks.tolist()], tuple(classes))
            table[losses].append(got["uar"])
    print(f"| losses | {' | '.join(speakers)} | mean UA |")
    print(f"|---|{'---|' * len(speakers)}---|")
    for losses, scores in table.items():
        cells = " | ".join(f"{u:.1f}" for u in scores)
        print(f"| {losses} | {cells} | **{np.mean(scores):.1f}** |")
    print(f"l2 {args.l2}, EMO-DB weight {args.emodb_weight}, voice weight {args.weight}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
