"""EMO-DB speaker-independent cross-validation: audio only vs fused (audio + transcript).

    python benchmarks/emodb_cv.py --init runs/default/best [--speakers 03 08 ...] [--epochs N]

For each of the 7 speakers of ``../shared/data/emodb``: train on the other 6, test on that one,
for two inputs -- ``audio`` (text "", what a live session sees when the ASR hears no words it
knows) and ``fused`` (the file's German transcript + audio). Each run starts from the text
checkpoint ``--init`` (its backbone, PMF and heads; the acoustic LSTM is new) and trains only the
small modules ``fusion`` (LSTM), the PMF layers and the heads, with the backbone frozen. The frozen
lower backbone layers' output is computed once per distinct text (there are 11: the 10 sentences
and the empty one) and cached, so a run costs the fused top layers only. Metric: unweighted
accuracy (mean per-class recall, ``uar``) over the 7 EMO-DB classes, via
:func:`train.audio_data.emodb_class_of`; weighted accuracy (``wa``) beside it.

Prints a Markdown table (one row per held-out speaker, then the mean) and writes the numbers as
JSON with ``--json-out``. This is a benchmark for docs/RESULTS.md, not a unit test: the default
settings take a few minutes per fold pair on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from train.audio_data import EMODB, EMODB_CLASSES, AudioSample, emodb_class_of
from train.audio_datasets import (
    cached_features,
    corpus_folder,
    emodb_transcript,
    load_audio_corpus,
    to_sample,
    unified_audio,
)
from train.loop import seed_everything, targets_for
from train.metrics import unweighted_accuracy
from train.staged import apply_train_only, init_from_checkpoint, preserve_text_path
from unimse.backbones import load_tokenizer
from unimse.checkpoint import resolve_checkpoint
from unimse.config import UniMSEConfig
from unimse.features import ACOUSTIC_SPEC, acoustic_extractor
from unimse.inference import outputs_to_predictions
from unimse.modeling import FusedLayer, UniMSEEncoderModel
from unimse.processor import UniMSEProcessor

logger = logging.getLogger("emodb_cv")

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = ("audio", "fused")
TRAIN_ONLY = ("fusion", "backbone.encoder.layer.*.pmf", "heads")


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
    init: Path, seed: int, mode: str
) -> tuple[nn.Module, UniMSEConfig, list[torch.Tensor]]:
    """The model of one run; also the parameters that must get no weight decay."""
    from unimse.modeling import build_model

    base = UniMSEConfig.load(init / "config.json")
    # No InfoNCE: the 10 sentences are spoken in every emotion, so text-audio contrast would teach
    # the acoustic branch to recognise sentences, not emotions.
    losses = replace(base.losses, infonce_acoustic=0.0, infonce_visual=0.0)
    config = replace(base, acoustic=ACOUSTIC_SPEC, visual=None, losses=losses)
    seed_everything(seed)
    model = build_model(config)
    init_from_checkpoint(model, init)
    if mode == "preserve_text":
        return model, config, preserve_text_path(model)
    apply_train_only(model, TRAIN_ONLY)
    return model, config, []


def run_fold(
    init: Path,
    train: Sequence[AudioSample],
    test: Sequence[AudioSample],
    features: dict[str, np.ndarray],
    condition: str,
    args: argparse.Namespace,
) -> dict[str, float]:
    model, config, no_decay = build_run_model(init, args.seed, args.mode)
    processor = UniMSEProcessor(config, load_tokenizer(config))
    fused = condition == "fused"

    def samples(items: Sequence[AudioSample], split: str) -> list[Any]:
        return [to_sample(s, split, features[s.id], transcript=fused) for s in items]

    train_rows, test_rows = samples(train, "train"), samples(test, "test")
    texts = sorted({r.text for r in train_rows + test_rows})
    probe = processor.encode([r.to_input() for r in test_rows[:8]])
    model.eval()
    with torch.inference_mode():
        reference = model(probe).meld_logits
    cache_text_prefix(model, processor, texts, train_rows[0].speaker)
    with torch.inference_mode():
        cached = model(probe).meld_logits
    if not torch.allclose(reference, cached, atol=1e-4):
        raise RuntimeError("the cached text prefix changes the model's output")
    unified = [unified_audio(r) for r in train_rows]
    targets = [targets_for(u, config.losses.borrowed) for u in unified]
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if all(p is not q for q in no_decay)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
    )
    rng = np.random.default_rng(args.seed)
    steps = 0
    for _epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(train_rows))
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size].tolist()
            batch = processor.encode(
                [train_rows[i].to_input() for i in idx], [targets[i] for i in idx]
            )
            out = model(batch)
            assert out.loss is not None
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            steps += 1
    model.eval()
    preds = []
    with torch.inference_mode():
        for start in range(0, len(test_rows), 64):
            chunk = test_rows[start : start + 64]
            out = model(processor.encode([r.to_input() for r in chunk]))
            preds += outputs_to_predictions(out, config, [("audio",)] * len(chunk))
    metrics = unweighted_accuracy(
        [s.emotion or "" for s in test], [emodb_class_of(p.label) for p in preds], EMODB_CLASSES
    )
    return {**metrics, "steps": float(steps)}


def table(results: dict[str, dict[str, dict[str, float]]], counts: dict[str, int]) -> str:
    lines = [
        "| held-out speaker | test files | audio only UAR | fused UAR | audio only WA | fused WA |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def cell(speaker: str, condition: str, key: str) -> str:
        value = results[speaker].get(condition, {}).get(key)
        return "–" if value is None else f"{value:.1f}"

    for speaker in results:
        lines.append(
            f"| {speaker} | {counts[speaker]} | {cell(speaker, 'audio', 'uar')} | "
            f"{cell(speaker, 'fused', 'uar')} | {cell(speaker, 'audio', 'wa')} | "
            f"{cell(speaker, 'fused', 'wa')} |"
        )
    means = []
    for key in ("uar", "wa"):
        for condition in CONDITIONS:
            values = [r[condition][key] for r in results.values() if condition in r]
            means.append(f"{np.mean(values):.1f}" if values else "–")
    lines.append(
        f"| **mean** | {sum(counts.values())} | {means[0]} | {means[1]} | {means[2]} | {means[3]} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--init",
        default=str(ROOT / "runs" / "default" / "best"),
        help="text checkpoint to start every run from (default: runs/default/best)",
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--speakers", nargs="*", help="held-out speakers (default: all 7)")
    parser.add_argument("--conditions", nargs="*", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument(
        "--mode",
        choices=("preserve_text", "pmf_heads"),
        default="preserve_text",
        help="what trains: the LSTM + the a/v columns of PMF's down-projection (text-only "
        "outputs unchanged; the stage-2 default) or the LSTM + all of PMF + the heads",
    )
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    init = resolve_checkpoint(args.init)
    corpus = load_audio_corpus(EMODB, corpus_folder(EMODB, args.data_dir))
    missing = [s.id for s in corpus if not emodb_transcript(s.id)]
    if missing and "fused" in args.conditions:
        parser.error(f"unknown sentence codes (no transcript) for {missing[:3]}")
    extract = acoustic_extractor(ACOUSTIC_SPEC)
    features = {s.id: cached_features(s.audio, ACOUSTIC_SPEC, extract) for s in corpus}
    speakers = args.speakers or sorted({s.speaker for s in corpus})
    results: dict[str, dict[str, dict[str, float]]] = {}
    counts: dict[str, int] = {}
    started = time.perf_counter()
    for speaker in speakers:
        train = [s for s in corpus if s.speaker != speaker]
        test = [s for s in corpus if s.speaker == speaker]
        if not test:
            parser.error(f"no files of speaker {speaker}")
        counts[speaker] = len(test)
        results[speaker] = {}
        for condition in args.conditions:
            t0 = time.perf_counter()
            metrics = run_fold(init, train, test, features, condition, args)
            metrics["seconds"] = time.perf_counter() - t0
            results[speaker][condition] = metrics
            logger.info(
                "speaker %s %s: UAR %.1f WA %.1f (%d steps, %.0f s)",
                speaker,
                condition,
                metrics["uar"],
                metrics["wa"],
                metrics["steps"],
                metrics["seconds"],
            )
    elapsed = time.perf_counter() - started
    print(
        f"EMO-DB speaker-independent CV from {init} ({args.epochs} epochs, lr {args.lr}, "
        f"mode {args.mode}; {elapsed:.0f} s, {torch.get_num_threads()} threads)"
    )
    print(table(results, counts))
    if args.json_out:
        payload = {"init": str(init), "settings": vars(args) | {"data_dir": str(args.data_dir)}}
        payload["results"] = results
        args.json_out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
