"""Speaker-independent cross-validation of the acoustic training recipe on RAVDESS and EMO-DB.

    python benchmarks/speech_cv.py --corpus ravdess [--extra emodb speech_av] [--folds 0 1 ...]
    python benchmarks/speech_cv.py --corpus emodb --extra ravdess speech_av

Folds: RAVDESS's 20 actors in 5 folds of 4 (01-04, 05-08, ...); EMO-DB leave one of its 7
speakers out. In each fold, the training speakers lose a few to a dev set (RAVDESS: the last two
actors of the next fold's block, EMO-DB: one speaker), which alone picks the epoch; the held-out
speakers are scored once, at the end. ``--extra`` corpora are added whole to every fold's training
data (they never share a speaker with the test corpus); ``--extra`` alone with ``--cross`` trains
on the extra corpora only and tests on all of ``--corpus`` (cross-corpus).

Options that change the selection or the final model (all off by default):

- ``--refit``: once the dev speakers have picked the epoch count E, a fresh run (same init, same
  seed, the speaker-baseline prior from the training + dev speakers) trains on the training + dev
  speakers for exactly E epochs and is the model scored on the test speakers. The dev UAR
  reported is the selection run's; the test speakers still steer nothing.
- ``--average K``: each epoch's candidate is the mean of the trainable parameters after the last
  K epochs (fewer at the start); dev picks among those candidates and the picked one is scored
  (with ``--refit``: the mean over the refit's last K epochs up to E).
- ``--schedule cosine|linear``: the learning rate decays per epoch from ``--lr`` to about zero at
  ``--epochs`` (the refit follows the same curve for its E epochs); default constant.
- ``--fixed-epochs E``: no selection run at all; each fold trains on its training + dev
  speakers for E epochs (as ``--refit`` does for the epoch count its dev picked).
- ``--no-sentence-rows``: train on the audio-only rows only (the sentence rows are scored still).
- ``--oversample K``: the test corpus's own training clips K times per epoch (balancing them
  against ``--extra`` corpora, as the voice stage's ``[data.oversample]`` does).
- ``--seeds N``: N models per fold (training seeds ``--seed`` ... ``--seed + N - 1``; each picks
  its own epoch on dev, and refits with ``--refit``), scored by their averaged predictions (an
  ensemble; :func:`unimse.prediction.mean_prediction`); each model alone is reported too. The
  speaker baselines' random clip order stays that of ``--seed``.
- ``--soup`` (with ``--seeds N`` and ``--fixed-epochs``): the N runs share one initialisation
  (``--seed``'s) and differ in data order and dropout; the mean of their parameters is scored as
  one model (a uniform "model soup"), their averaged predictions and each alone beside it.
- ``--pmf-audio off``: PMF's audio columns stay zero and frozen; the voice reaches the heads
  through the modality logits only (a linear read-out of the pooled voice).
- ``--voice-hinge relu|softplus``: those logits count only above each head's neutral class
  (``UniMSEConfig.voice_hinge``); ``--voice-neutral-share A``: the held-out speakers are predicted
  with share A of the unhinged voice added back on rows with words (training stays hinged).
- ``--voice-gate W``: the acoustic encoder's voice gate (``FeatureSpec.gate``) trained with weight
  W (``[model.losses] voice_gate``).
- ``--loss NAME=W``: any other ``[model.losses]`` weight (e.g. ``--loss supcon=0``).
- ``--emodb-joint W``: EMO-DB rows learn their class through the polarity and emotion heads
  jointly (``[model.losses] emodb_joint``, weight W; default 1, as the shipped voice stage);
  ``--emodb-joint 0``: as two separate targets (the voice stage before 2026-12-03, third session).

Each run starts from a text checkpoint (``--init``, default: the shipped one), replaces its
acoustic encoder by a new one for ``--spec``, and trains like stage 2 of the default
(``preserve_text``: the acoustic encoder and the audio columns of PMF; every text-only output stays
bit for bit). Training samples are audio only (text ``""``) and audio + the file's sentence. The
frozen lower backbone layers' output is computed once per distinct text and cached.

Scores: unweighted accuracy (``uar``, mean per-class recall) and accuracy (``wa``), RAVDESS over
the project's 7 emotions (calm = neutral), EMO-DB over its own 7 classes, for ``audio`` (text "")
and ``fused`` (audio + the sentence); an EMO-DB class is read back jointly
(``train.audio_data.emodb_class_of_prediction``). Prints a Markdown table; ``--json-out`` writes
the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import track
from torch import nn

from train.audio_data import EMODB, RAVDESS, AudioSample
from train.audio_datasets import (
    cached_features,
    corpus_folder,
    load_audio_corpus,
    speaker_key,
    to_sample,
    transcript_of,
    unified_audio,
)
from train.audio_eval import class_names, predicted_class, true_class
from train.datadir import DEFAULT_DATA_DIR
from train.loop import seed_everything, targets_for
from train.metrics import unweighted_accuracy
from train.staged import init_from_checkpoint, preserve_text_path, reset_pmf_inputs
from unimse.backbones import load_tokenizer
from unimse.checkpoint import resolve_checkpoint
from unimse.config import VOICE_HINGES, FeatureSpec, UniMSEConfig
from unimse.features import WHISPER_SPECS, acoustic_extractor
from unimse.features.acoustic import ACOUSTIC_DIM, ACOUSTIC_V1
from unimse.inference import outputs_to_predictions
from unimse.modeling import FusedLayer, UniMSEEncoderModel
from unimse.prediction import Prediction, mean_prediction
from unimse.processor import UniMSEProcessor
from unimse.speakers import FIRST_SPEAKER
from unimse.voice_baseline import normalise_corpus, prior_of

logger = logging.getLogger("speech_cv")

CORPORA = ("ravdess", "emodb", "speech_av")
SPECS = {
    "tiny.en": FeatureSpec("whisper-tiny.en-v1", WHISPER_SPECS["whisper-tiny.en-v1"].dim, "stats"),
    "tiny.en-mid": FeatureSpec(
        "whisper-tiny.en-mid-v2", WHISPER_SPECS["whisper-tiny.en-mid-v2"].dim, "stats"
    ),
    "base": FeatureSpec("whisper-base-v1", WHISPER_SPECS["whisper-base-v1"].dim, "stats"),
    "frame64": FeatureSpec(ACOUSTIC_V1, ACOUSTIC_DIM),
}
RAVDESS_FOLD_SIZE = 4
# Settings of the voice's modality logits a run never takes from its init checkpoint (every
# ``voice_*`` field but the hinge, which the run sets itself).
VOICE_FIELDS = tuple(
    f.name for f in fields(UniMSEConfig) if f.name.startswith("voice_") and f.name != "voice_hinge"
)


class _Stop(Exception):
    pass


class CachedEmbeddings(nn.Module):
    """Stands in for the backbone's embeddings + frozen lower layers: returns, for each row of
    ``input_ids``, the hidden states the frozen prefix computed for that exact token sequence."""

    def __init__(self, table: dict[tuple[int, ...], torch.Tensor], pad_id: int) -> None:
        super().__init__()
        self.table = table
        self.pad_id = pad_id

    def forward(self, input_ids: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        assert input_ids is not None
        hidden = next(iter(self.table.values())).shape[-1]
        out = torch.zeros(input_ids.shape[0], input_ids.shape[1], hidden)
        for i, row in enumerate(input_ids.tolist()):
            while row and row[-1] == self.pad_id:
                row.pop()
            cached = self.table[tuple(row)]
            out[i, : len(cached)] = cached
        return out


class PassThrough(nn.Module):
    def __init__(self, as_tuple: bool) -> None:
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states: torch.Tensor, *_: Any, **__: Any) -> Any:
        return (hidden_states,) if self.as_tuple else hidden_states


def cache_text_prefix(
    model: nn.Module, processor: UniMSEProcessor, texts: Sequence[str], speaker: str
) -> None:
    """Replace the frozen embeddings and lower layers by a lookup of their output per text."""
    from unimse.inputs import ModelInput

    if not isinstance(model, UniMSEEncoderModel):
        raise ValueError("text caching needs the encoder backbone")
    layers = model._layers()
    first_fused = next(i for i, layer in enumerate(layers) if isinstance(layer, FusedLayer))
    if any(p.requires_grad for layer in list(layers)[:first_fused] for p in layer.parameters()):
        raise ValueError("the layers below the first PMF must be frozen to cache their output")
    captured: dict[str, Any] = {}

    def grab(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]
        raise _Stop

    batch = processor.encode([ModelInput(text=t, speaker=speaker) for t in texts])
    handle = layers[first_fused].register_forward_pre_hook(grab, with_kwargs=True)
    model.eval()
    try:
        with torch.no_grad():
            model.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    except _Stop:
        pass
    finally:
        handle.remove()
    hidden = captured["hidden"]
    table = {}
    for i in range(len(texts)):
        n = int(batch.attention_mask[i].sum())
        table[tuple(batch.input_ids[i, :n].tolist())] = hidden[i, :n].detach().clone()
    with torch.no_grad():  # what a lower layer returns (a tensor, or a tuple in older versions)
        probe = layers[0](hidden[:1])
    model.backbone.embeddings = CachedEmbeddings(table, processor.pad_id)
    for i in range(first_fused):
        layers[i] = PassThrough(isinstance(probe, tuple))


def build_run_model(
    init: Path, spec: FeatureSpec, args: argparse.Namespace
) -> tuple[nn.Module, UniMSEConfig, list[torch.Tensor]]:
    """The model of one run and the parameters that must get no weight decay."""
    from unimse.factory import build_model

    base = UniMSEConfig.load(init / "config.json")
    # No InfoNCE: the corpora speak a few sentences in every emotion, so text-audio contrast
    # would teach the acoustic branch to recognise sentences, not emotions.
    losses = replace(
        base.losses,
        infonce_acoustic=0.0,
        infonce_visual=0.0,
        emodb_joint=args.emodb_joint,
        voice_gate=args.voice_gate,
        **dict(args.loss),
    )
    # The voice's own settings start from UniMSEConfig's defaults, not the init's (the shipped
    # default's hinge, share and margin would otherwise change the recipe with every release).
    fresh = UniMSEConfig()
    config = replace(
        base,
        acoustic=spec,
        visual=None,
        losses=losses,
        modality_logits=args.modality_logits,
        voice_hinge=args.voice_hinge,
        **{k: getattr(fresh, k) for k in VOICE_FIELDS},
    )
    init_seed = getattr(args, "init_seed", None)
    seed_everything(args.seed if init_seed is None else init_seed)
    model = build_model(config)
    if init_seed is not None:  # --soup: a shared initialisation, the run's own dropout
        torch.manual_seed(args.seed)
    # The init's acoustic modality logits belong to its own voice branch (trained on these
    # corpora): they restart at zero with the new encoder, as the voice stage's init_exclude does.
    init_from_checkpoint(model, init, exclude=("fusion", "modality_logits.acoustic"))
    if args.pmf_audio != "loaded":
        reset_pmf_inputs(model, ("audio",))
    no_decay = preserve_text_path(model)
    if args.pmf_audio == "off":  # the voice reaches the heads through the modality logits only
        for weight in no_decay:
            weight.requires_grad_(False)
        no_decay = []
    return model, config, no_decay


def folds_of(corpus: str, samples: Sequence[AudioSample]) -> list[tuple[str, ...]]:
    """Held-out speaker groups, in order."""
    speakers = sorted({s.speaker for s in samples})
    if corpus == RAVDESS:
        return [
            tuple(speakers[i : i + RAVDESS_FOLD_SIZE])
            for i in range(0, len(speakers), RAVDESS_FOLD_SIZE)
        ]
    return [(speaker,) for speaker in speakers]


def dev_speakers(corpus: str, folds: list[tuple[str, ...]], fold: int) -> tuple[str, ...]:
    """Training speakers set aside to pick the epoch: from the next fold's group."""
    following = folds[(fold + 1) % len(folds)]
    return following[-2:] if corpus == RAVDESS else following[:1]


class FoldRun:
    """One training run: model, cached text prefix, optimiser; scores any sample list."""

    def __init__(
        self, init: Path, spec: FeatureSpec, texts: Sequence[str], args: argparse.Namespace
    ) -> None:
        self.model, self.config, no_decay = build_run_model(init, spec, args)
        self.neutral_share = float(getattr(args, "voice_neutral_share", 0.0))
        self.processor = UniMSEProcessor(self.config, load_tokenizer(self.config))
        cache_text_prefix(self.model, self.processor, sorted(set(texts)), FIRST_SPEAKER)
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if all(p is not q for q in no_decay)]
        self.params = params
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
            lr=args.lr,
        )

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    @contextmanager
    def holding(self, state: Sequence[torch.Tensor]) -> Iterator[None]:
        """The trainable parameters set to ``state`` inside the block, restored after it."""
        saved = self.snapshot()
        self.load(state)
        try:
            yield
        finally:
            self.load(saved)

    def load(self, state: Sequence[torch.Tensor]) -> None:
        """Set the trainable parameters to ``state``."""
        with torch.no_grad():
            for param, value in zip(self.params, state, strict=True):
                param.copy_(value)

    def train_epoch(self, rows: Sequence[Any], targets: Sequence[Any], rng: Any, bs: int) -> None:
        self.model.train()
        order = rng.permutation(len(rows))
        for start in range(0, len(order), bs):
            idx = order[start : start + bs].tolist()
            batch = self.processor.encode(
                [rows[i].to_input() for i in idx], [targets[i] for i in idx]
            )
            out = self.model(batch)
            assert out.loss is not None
            self.opt.zero_grad(set_to_none=True)
            out.loss.backward()
            nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()

    def predict(self, rows: Sequence[Any]) -> list[Prediction]:
        self.model.eval()
        preds: list[Prediction] = []
        logits = getattr(self.model, "modality_logits", None)
        trained_share = logits.neutral_share if logits is not None else 0.0
        if logits is not None:  # --voice-neutral-share: for predictions only
            logits.neutral_share = self.neutral_share
        try:
            with torch.inference_mode():
                for start in range(0, len(rows), 64):
                    chunk = rows[start : start + 64]
                    out = self.model(self.processor.encode([r.to_input() for r in chunk]))
                    preds += outputs_to_predictions(out, self.config, [("audio",)] * len(chunk))
        finally:
            if logits is not None:
                logits.neutral_share = trained_share
        return preds

    def score(self, rows: Sequence[Any], items: Sequence[AudioSample]) -> dict[str, float]:
        return score_predictions(items, self.predict(rows))


def score_predictions(
    items: Sequence[AudioSample], preds: Sequence[Prediction]
) -> dict[str, float]:
    corpus = items[0].dataset
    return unweighted_accuracy(
        [true_class(s) for s in items],
        [predicted_class(corpus, p) for p in preds],
        class_names(corpus),
    )


def rows_of(
    items: Sequence[AudioSample], features: dict[str, np.ndarray], fused: bool
) -> list[Any]:
    return [to_sample(s, "train", features[s.dataset + s.id], transcript=fused) for s in items]


def training_rows(
    train: Sequence[AudioSample], features: dict[str, np.ndarray], sentences: bool = True
) -> tuple[list[Any], list[Any]]:
    """Training samples (audio only, and audio + sentence where the file has one unless not
    ``sentences``) and targets."""
    with_text = [s for s in train if transcript_of(s)] if sentences else []
    rows = rows_of(train, features, False) + rows_of(with_text, features, True)
    return rows, [targets_for(unified_audio(r), 0.5) for r in rows]


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """The learning rate of 1-based ``epoch`` relative to ``--lr``; the decaying schedules reach
    about zero after ``epochs`` (the same curve in the selection run and the refit)."""
    progress = (epoch - 1) / epochs
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    return 1.0


@dataclass
class Fit:
    """What a training run ends with: the parameters to score and, with a dev set, the dev UAR
    and epoch that picked them."""

    state: list[torch.Tensor]
    epoch: int
    dev_uar: float | None = None


def fit(
    run: FoldRun,
    rows: Sequence[Any],
    targets: Sequence[Any],
    args: argparse.Namespace,
    dev: tuple[Sequence[Any], Sequence[AudioSample]] | None = None,
    epochs: int | None = None,
) -> Fit:
    """Train ``run``. With ``dev``: up to ``--epochs`` epochs, stopping after ``--patience``
    without a better dev UAR, and return the best candidate. Without: exactly ``epochs`` epochs,
    and return the last candidate. A candidate is the mean of the parameters after the last
    ``--average`` epochs (the parameters themselves with ``--average 1``)."""
    rng = np.random.default_rng(args.seed)
    window: deque[list[torch.Tensor]] = deque(maxlen=args.average)
    best: Fit | None = None
    best_uar, waited = -1.0, 0
    for epoch in range(1, (epochs or args.epochs) + 1):
        run.set_lr(args.lr * lr_factor(args.schedule, epoch, args.epochs))
        run.train_epoch(rows, targets, rng, args.batch_size)
        window.append(run.snapshot())
        if dev is None:
            continue
        candidate = mean_state(window)
        with run.holding(candidate):
            dev_uar = run.score(*dev)["uar"]
        logger.info("epoch %d: dev UAR %.1f", epoch, dev_uar)
        if dev_uar > best_uar:
            best, best_uar, waited = Fit(candidate, epoch, dev_uar), dev_uar, 0
        else:
            waited += 1
            if waited >= args.patience:
                break
    if dev is None:
        return Fit(mean_state(window), epoch)
    assert best is not None
    return best


def mean_state(window: Sequence[list[torch.Tensor]]) -> list[torch.Tensor]:
    if len(window) == 1:
        return window[0]
    return [torch.stack(values).mean(0) for values in zip(*window, strict=True)]


def test_sets(test: Sequence[AudioSample]) -> dict[str, list[AudioSample]]:
    """The held-out files per condition: ``audio`` (all) and ``fused`` (those with a sentence)."""
    with_text = [s for s in test if transcript_of(s)]
    return {"audio": list(test), **({"fused": with_text} if with_text else {})}


def predict_test(
    run: FoldRun, test: Sequence[AudioSample], features: dict[str, np.ndarray]
) -> dict[str, list[Prediction]]:
    """Predictions for each condition of :func:`test_sets`."""
    return {
        condition: run.predict(rows_of(items, features, condition == "fused"))
        for condition, items in test_sets(test).items()
    }


def score_test(
    test: Sequence[AudioSample], runs: Sequence[dict[str, list[Prediction]]]
) -> dict[str, Any]:
    """Scores per condition of the predictions averaged over ``runs`` (one run: its own)."""
    return {
        condition: score_predictions(
            items, [mean_prediction(ps) for ps in zip(*(r[condition] for r in runs), strict=True)]
        )
        for condition, items in test_sets(test).items()
    }


def cache_texts(rows: Sequence[Any], test: Sequence[AudioSample]) -> list[str]:
    """Every text the run will see: the training rows', "" and the test files' sentences."""
    return [r.text for r in rows] + ["", *(transcript_of(s) or "" for s in test)]


def run_fold(
    init: Path,
    spec: FeatureSpec,
    train: Sequence[AudioSample],
    dev: Sequence[AudioSample],
    test: Sequence[AudioSample],
    features: dict[str, np.ndarray],
    args: argparse.Namespace,
    refit_features: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Score ``test`` with the fold's model, or with the ensemble of ``--seeds`` models (their
    predictions averaged); with several, also each model alone (``single``)."""
    if args.soup:
        assert refit_features is not None

        def train_run(run_args: argparse.Namespace) -> FoldRun:
            return trained_run(
                init, spec, [*train, *dev], test, refit_features, run_args, args.fixed_epochs
            )

        return soup_fold(train_run, test, refit_features, args)
    runs = [
        fold_model(init, spec, train, dev, test, features, args, seed, refit_features)
        for seed in range(args.seed, args.seed + args.seeds)
    ]
    result: dict[str, Any] = {
        "dev_uar": float(np.mean([r[0]["dev_uar"] for r in runs])),
        "epoch": round(float(np.median([r[0]["epoch"] for r in runs]))),
    }
    result |= score_test(test, [r[1] for r in runs])
    if args.seeds > 1:
        result["single"] = [r[0] | score_test(test, [r[1]]) for r in runs]
    return result


def soup_fold(
    train_run: Callable[[argparse.Namespace], FoldRun],
    test: Sequence[AudioSample],
    features: dict[str, np.ndarray],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """``--soup``: ``--seeds`` runs of ``train_run`` from one initialisation (``--seed``'s), each
    with its own data order and dropout; the mean of their parameters is scored as one model (the
    table), their averaged predictions (``ensemble``) and each run alone (``single``) beside it."""
    states: list[list[torch.Tensor]] = []
    singles: list[dict[str, list[Prediction]]] = []
    for seed in range(args.seed, args.seed + args.seeds):
        run = train_run(argparse.Namespace(**(vars(args) | {"seed": seed, "init_seed": args.seed})))
        singles.append(predict_test(run, test, features))
        states.append(run.snapshot())
    with run.holding(mean_state(states)):
        soup = predict_test(run, test, features)
    result: dict[str, Any] = {"dev_uar": math.nan, "epoch": args.fixed_epochs}
    result |= score_test(test, [soup])
    result["ensemble"] = score_test(test, singles)
    result["single"] = [score_test(test, [one]) for one in singles]
    return result


def fold_model(
    init: Path,
    spec: FeatureSpec,
    train: Sequence[AudioSample],
    dev: Sequence[AudioSample],
    test: Sequence[AudioSample],
    features: dict[str, np.ndarray],
    args: argparse.Namespace,
    seed: int,
    refit_features: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, Any], dict[str, list[Prediction]]]:
    """One model of the fold (training ``seed``): pick the epoch on ``dev``; predict ``test``
    with that candidate or, given ``refit_features`` (the baselines' prior from train + dev),
    with a fresh run trained on train + dev for the picked number of epochs. Returns the
    selection (dev UAR, epoch) and the test predictions."""
    args = argparse.Namespace(**(vars(args) | {"seed": seed}))
    if args.fixed_epochs:  # no selection: train + dev speakers for the given count
        assert refit_features is not None
        unselected = {"dev_uar": math.nan, "epoch": args.fixed_epochs}
        run = trained_run(init, spec, [*train, *dev], test, refit_features, args, args.fixed_epochs)
        return unselected, predict_test(run, test, refit_features)
    rows, targets = training_rows(train, features, args.sentences)
    run = FoldRun(init, spec, cache_texts(rows, test), args)
    picked = fit(run, rows, targets, args, dev=(rows_of(dev, features, False), dev))
    assert picked.dev_uar is not None
    selection = {"dev_uar": picked.dev_uar, "epoch": picked.epoch}
    if refit_features is None:
        with run.holding(picked.state):
            return selection, predict_test(run, test, features)
    del run
    refit = trained_run(init, spec, [*train, *dev], test, refit_features, args, picked.epoch)
    return selection, predict_test(refit, test, refit_features)


def trained_run(
    init: Path,
    spec: FeatureSpec,
    train: Sequence[AudioSample],
    test: Sequence[AudioSample],
    features: dict[str, np.ndarray],
    args: argparse.Namespace,
    epochs: int,
) -> FoldRun:
    """A fresh run (texts cached for ``train`` and ``test``) trained on ``train`` for exactly
    ``epochs`` epochs, holding its final candidate (see :func:`fit`)."""
    rows, targets = training_rows(train, features, args.sentences)
    run = FoldRun(init, spec, cache_texts(rows, test), args)
    run.load(fit(run, rows, targets, args, epochs=epochs).state)
    return run


def table(results: dict[str, dict[str, Any]], corpus: str) -> str:
    lines = [
        f"| held-out {corpus} speakers | files | dev UAR (epoch) | audio UAR | fused UAR "
        "| audio WA | fused WA |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(r: dict[str, Any], condition: str, key: str) -> str:
        return f"{r[condition][key]:.1f}" if condition in r else "–"

    for name, r in results.items():
        lines.append(
            f"| {name} | {r['n']} | {r['dev_uar']:.1f} ({r['epoch']}) | {cell(r, 'audio', 'uar')} "
            f"| {cell(r, 'fused', 'uar')} | {cell(r, 'audio', 'wa')} | {cell(r, 'fused', 'wa')} |"
        )
    means = [
        f"{np.mean([r[c][k] for r in results.values() if c in r]):.1f}"
        if any(c in r for r in results.values())
        else "–"
        for k in ("uar", "wa")
        for c in ("audio", "fused")
    ]
    n = sum(r["n"] for r in results.values())
    lines.append(f"| **mean** | {n} | | {means[0]} | {means[1]} | {means[2]} | {means[3]} |")
    return "\n".join(lines)


def with_baselines(
    features: dict[str, np.ndarray],
    train: Sequence[AudioSample],
    everyone: Sequence[AudioSample],
    spec: FeatureSpec,
    seed: int,
) -> dict[str, np.ndarray]:
    """``features`` with each speaker's running baseline subtracted (``spec.baseline`` > 0), the
    prior from this fold's training speakers only; unchanged otherwise."""
    if not spec.baseline:
        return features
    prior = prior_of(features[k] for k in dict.fromkeys(s.dataset + s.id for s in train))
    keys = [s.dataset + s.id for s in everyone]
    shifted = normalise_corpus(
        [features[k] for k in keys],
        [speaker_key(s) for s in everyone],
        prior,
        spec.baseline,
        seed=seed,
    )
    return dict(zip(keys, shifted, strict=True))


def fold_baselines(
    features: dict[str, np.ndarray],
    train: Sequence[AudioSample],
    dev: Sequence[AudioSample],
    everyone: Sequence[AudioSample],
    spec: FeatureSpec,
    args: argparse.Namespace,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """A fold's features for the selection run (baseline prior from ``train``) and, with
    ``--refit``, for the refit (prior from ``train`` + ``dev``)."""
    selection = with_baselines(features, train, everyone, spec, args.seed)
    if not (args.refit or args.fixed_epochs):
        return selection, None
    return selection, with_baselines(features, [*train, *dev], everyone, spec, args.seed)


def load_corpus(name: str, data_dir: Path) -> list[AudioSample]:
    return load_audio_corpus(name, corpus_folder(name, data_dir))


def loss_weight(text: str) -> tuple[str, float]:
    """``NAME=W`` -> (name, weight) for one field of :class:`unimse.config.LossWeights`."""
    from unimse.config import LossWeights

    name, _, value = text.partition("=")
    if name not in LossWeights.__dataclass_fields__ or name in ("emodb_joint", "voice_gate"):
        raise argparse.ArgumentTypeError(f"no loss weight {name!r} here")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the weight must be a number") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=(RAVDESS, EMODB), default=RAVDESS)
    parser.add_argument("--extra", nargs="*", default=[], choices=CORPORA)
    parser.add_argument("--cross", action="store_true", help="train on --extra only")
    parser.add_argument(
        "--oversample",
        type=int,
        default=1,
        metavar="K",
        help="the test corpus's training speakers' clips K times per epoch (against --extra)",
    )
    parser.add_argument("--spec", choices=tuple(SPECS), default="tiny.en")
    parser.add_argument(
        "--baseline",
        type=float,
        default=0.0,
        help="speaker baseline: subtract each speaker's running mean voice, starting from the "
        "training mean worth this many utterances (0: off; stats specs only)",
    )
    parser.add_argument("--init", default="default", help="text checkpoint (default: shipped)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--folds", nargs="*", type=int, help="fold numbers (default: all)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--schedule",
        choices=("constant", "cosine", "linear"),
        default="constant",
        help="learning rate per epoch: constant, or decaying from --lr to about 0 at --epochs",
    )
    parser.add_argument(
        "--average",
        type=int,
        default=1,
        metavar="K",
        help="score (dev and test) the mean of the trainable parameters over the last K epochs "
        "(1: the epoch's own parameters)",
    )
    parser.add_argument(
        "--refit",
        action="store_true",
        help="after dev picks the epoch count E, train a fresh run (same init and seed) on the "
        "training + dev speakers for E epochs and score the test speakers with it",
    )
    parser.add_argument(
        "--fixed-epochs",
        type=int,
        default=0,
        metavar="E",
        help="no selection run: train on the training + dev speakers for E epochs and score "
        "that (0: off; the dev UAR column is then empty)",
    )
    parser.add_argument(
        "--no-sentence-rows",
        dest="sentences",
        action="store_false",
        help="train on audio-only rows only (default: also audio + the file's sentence)",
    )
    parser.add_argument(
        "--pmf-audio",
        choices=("reset", "loaded", "off"),
        default="reset",
        help="PMF's audio columns: start at zero (reset), keep the init checkpoint's (loaded), "
        "or zero and frozen (off: the voice acts through the modality logits only)",
    )
    parser.add_argument(
        "--no-modality-logits",
        dest="modality_logits",
        action="store_false",
        help="no direct acoustic -> logits path (PMF only)",
    )
    parser.add_argument(
        "--voice-hinge",
        choices=VOICE_HINGES,
        default="off",
        help="the voice's modality logits count only above each head's neutral class "
        "(UniMSEConfig.voice_hinge: the voice never argues for neutrality)",
    )
    parser.add_argument(
        "--voice-neutral-share",
        type=float,
        default=0.0,
        metavar="A",
        help="with --voice-hinge: predict with share A of the unhinged voice added back on rows "
        "with words (UniMSEConfig.voice_neutral_share; training stays hinged)",
    )
    parser.add_argument(
        "--emodb-joint",
        type=float,
        default=1.0,
        help="weight of the joint EMO-DB class loss ([model.losses] emodb_joint; default 1.0 as "
        "the shipped voice stage, configs/train_voice_v5.toml; 0: separate polarity and emotion)",
    )
    parser.add_argument(
        "--voice-gate",
        type=float,
        default=0.0,
        metavar="W",
        help="a voice gate in the acoustic encoder (FeatureSpec.gate), trained with weight W "
        "([model.losses] voice_gate; 0: no gate)",
    )
    parser.add_argument(
        "--loss",
        type=loss_weight,
        action="append",
        default=[],
        metavar="NAME=W",
        help="another [model.losses] weight, e.g. --loss supcon=0 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="train N models per fold (training seeds --seed, --seed + 1, ...; each picks its "
        "own epoch) and score their averaged predictions (an ensemble); each model alone is "
        "reported too",
    )
    parser.add_argument(
        "--soup",
        action="store_true",
        help="with --seeds N and --fixed-epochs: the N runs share one initialisation and the "
        "mean of their parameters is scored as one model (their ensemble is reported too)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cross and not args.extra:
        parser.error("--cross needs --extra corpora to train on")
    if args.corpus in args.extra:
        parser.error("--extra must not include --corpus")
    if args.average < 1:
        parser.error("--average must be >= 1")
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.voice_neutral_share and args.voice_hinge == "off":
        parser.error("--voice-neutral-share needs --voice-hinge")
    if not 0.0 <= args.voice_neutral_share <= 1.0:
        parser.error("--voice-neutral-share takes a share in [0, 1]")
    if args.soup and not (args.fixed_epochs and args.seeds > 1):
        parser.error("--soup needs --fixed-epochs and --seeds N > 1")
    if args.fixed_epochs < 0 or (args.fixed_epochs and args.refit):
        parser.error("--fixed-epochs takes a count >= 1 and replaces --refit's selection run")
    init = resolve_checkpoint(args.init)
    spec = replace(SPECS[args.spec], baseline=args.baseline, gate=args.voice_gate > 0)
    corpus = load_corpus(args.corpus, args.data_dir)
    extra = [s for name in args.extra for s in load_corpus(name, args.data_dir)]
    extract = acoustic_extractor(spec)
    features = {
        s.dataset + s.id: cached_features(s.audio, spec, extract)
        for s in track([*corpus, *extra], description="features", transient=True)
    }
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    if args.cross:
        dev_pick = [s for s in extra if s.dataset != "speech_av"]
        dev_spk = sorted({(s.dataset, s.speaker) for s in dev_pick})[-2:]
        dev = [s for s in extra if (s.dataset, s.speaker) in dev_spk]
        train = [s for s in extra if (s.dataset, s.speaker) not in dev_spk]
        fold_features, refit_features = fold_baselines(
            features, train, dev, [*corpus, *extra], spec, args
        )
        r = run_fold(init, spec, train, dev, corpus, fold_features, args, refit_features)
        results[f"all (trained on {'+'.join(args.extra)})"] = {**r, "n": len(corpus)}
    else:
        folds = folds_of(args.corpus, corpus)
        for fold in args.folds if args.folds is not None else range(len(folds)):
            held = folds[fold]
            devs = dev_speakers(args.corpus, folds, fold)
            test = [s for s in corpus if s.speaker in held]
            dev = [s for s in corpus if s.speaker in devs]
            own = [s for s in corpus if s.speaker not in held + devs]
            train = own * args.oversample + extra
            t0 = time.perf_counter()
            fold_features, refit_features = fold_baselines(
                features, train, dev, [*corpus, *extra], spec, args
            )
            r = run_fold(init, spec, train, dev, test, fold_features, args, refit_features)
            r["seconds"] = time.perf_counter() - t0
            results[" ".join(held)] = {**r, "n": len(test)}
            logger.info(
                "fold %s: audio UAR %.1f, fused UAR %s (%.0f s)",
                " ".join(held),
                r["audio"]["uar"],
                f"{r['fused']['uar']:.1f}" if "fused" in r else "-",
                r["seconds"],
            )
    elapsed = time.perf_counter() - started
    extra_note = f", + {' '.join(args.extra)}" if args.extra else ""
    print(
        f"{args.corpus} speaker-independent CV, spec {spec.name} ({spec.encoder}){extra_note}, "
        f"from {init}: {elapsed:.0f} s, {torch.get_num_threads()} threads"
    )
    print(table(results, args.corpus))
    if args.seeds > 1:
        singles = [
            np.mean([r["single"][i]["audio"]["uar"] for r in results.values()])
            for i in range(args.seeds)
        ]
        print(
            f"each of the {args.seeds} models alone, mean audio UAR: "
            + " / ".join(f"{u:.1f}" for u in singles)
            + f" (mean {np.mean(singles):.1f}); the table: "
            + ("the mean of their parameters" if args.soup else "their averaged predictions")
        )
    if args.soup:
        ensemble = np.mean([r["ensemble"]["audio"]["uar"] for r in results.values()])
        print(f"their averaged predictions (ensemble), mean audio UAR: {ensemble:.1f}")
    if args.json_out:
        payload = {"init": str(init), "settings": vars(args) | {"data_dir": str(args.data_dir)}}
        payload["results"] = results
        args.json_out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
