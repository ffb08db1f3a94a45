"""Subject-independent cross-validation of the FER fine-tuning recipe on CK+.

    python benchmarks/ckplus_cv.py [--folds 5] [--json-out runs/ckplus_cv.json]

Folds: :func:`train.face_data.subject_folds` over all subjects of the folder (contempt-only
subjects included): the subject of sorted rank ``r`` is tested in fold ``r % k``; of the other
subjects every 6th is dev, which alone picks the epoch (:func:`train.fer_finetune.finetune`), the
rest train (their contempt faces are distilled, see that module). The held-out subjects are
scored once, at the end, by the original FER network and by the fold's fine-tuned one.

Scores, over the 6 CK+ expressions the project shares, percent: ``acc`` and ``uar`` (mean
per-class recall), both from the argmax of all 7 outputs (a neutral answer is wrong), per fold,
their mean over folds, and ``pooled`` (all folds' test predictions together: every subject
scored exactly once). ``contempt_neutral``: how often held-out contempt faces (no label; the
original network reads most of them as neutral) are read as neutral, a check that fine-tuning
did not teach the network to never answer neutral. Prints a Markdown table; ``--json-out``
writes everything, ``--weights-dir`` each fold's weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.datadir import DEFAULT_DATA_DIR
from train.face_data import FaceSample, load_ckplus, subject_folds, subjects_of
from train.face_eval import face_metrics, probs_to_emotions
from train.fer_finetune import (
    FineTuneConfig,
    add_recipe_arguments,
    config_from_args,
    network_inputs,
    predict_probs,
    save_fer_weights,
)
from train.fer_finetune import finetune as run_finetune
from unimse.features.fer_net import FerMiniXception, load_fer_model

logger = logging.getLogger("ckplus_cv")


def _scores(
    model: FerMiniXception, test: list[FaceSample], contempt: list[FaceSample]
) -> tuple[dict[str, float], list[str]]:
    predicted = probs_to_emotions(predict_probs(model, network_inputs(test)))
    scores = face_metrics([s.meld_emotion or "" for s in test], predicted)
    if contempt:
        read = probs_to_emotions(predict_probs(model, network_inputs(contempt)))
        scores["contempt_neutral"] = 100.0 * float(np.mean([e == "neutral" for e in read]))
    return scores, predicted


def run_cv(
    data_dir: Path, folds: int, config: FineTuneConfig, weights_dir: Path | None = None
) -> dict[str, Any]:
    every = load_ckplus(data_dir, include_contempt=True)
    original = load_fer_model()
    rows: list[dict[str, object]] = []
    per_fold: list[dict[str, dict[str, float]]] = []
    truth: list[str] = []
    pooled: dict[str, list[str]] = {"original": [], "finetuned": []}
    for fold in subject_folds(subjects_of(every), folds):
        started = time.perf_counter()
        train = fold.samples(every, "train")
        dev = [s for s in fold.samples(every, "dev") if s.meld_emotion is not None]
        held_out = fold.samples(every, "test")
        test = [s for s in held_out if s.meld_emotion is not None]
        contempt = [s for s in held_out if s.meld_emotion is None]
        result = run_finetune(train, dev, config, init=original)
        row: dict[str, object] = {
            "fold": fold.index,
            "subjects": {"train": len(fold.train), "dev": len(fold.dev), "test": len(fold.test)},
            "n_train": len(train),
            "n_dev": len(dev),
            "n_test": len(test),
            "n_contempt_test": len(contempt),
            "best_epoch": result.best_epoch,
            "dev": {"original": result.history[0], "finetuned": result.best},
        }
        scores: dict[str, dict[str, float]] = {}
        for name, model in (("original", original), ("finetuned", result.model)):
            scores[name], predicted = _scores(model, test, contempt)
            pooled[name] += predicted
        truth += [s.meld_emotion or "" for s in test]
        seconds = time.perf_counter() - started
        rows.append({**row, **scores, "seconds": seconds})
        per_fold.append(scores)
        logger.info(
            "fold %d: original acc %.1f uar %.1f, fine-tuned acc %.1f uar %.1f (epoch %d, %.0f s)",
            fold.index,
            scores["original"]["acc"],
            scores["original"]["uar"],
            scores["finetuned"]["acc"],
            scores["finetuned"]["uar"],
            result.best_epoch,
            seconds,
        )
        if weights_dir is not None:
            save_fer_weights(result.model, weights_dir / f"fold{fold.index}.safetensors")
    summary = {
        name: {
            "mean": {
                key: float(np.mean([fold_scores[name][key] for fold_scores in per_fold]))
                for key in ("acc", "uar")
            },
            "pooled": face_metrics(truth, pooled[name]),
        }
        for name in ("original", "finetuned")
    }
    return {"folds": rows, "summary": summary}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| fold | test subjects | test faces | best epoch | original acc | original uar "
        "| fine-tuned acc | fine-tuned uar | contempt→neutral orig / ft |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["folds"]:
        o, f = r["original"], r["finetuned"]
        contempt = (
            f"{o['contempt_neutral']:.0f} / {f['contempt_neutral']:.0f}"
            if "contempt_neutral" in o
            else "-"
        )
        lines.append(
            f"| {r['fold']} | {r['subjects']['test']} | {r['n_test']} | {r['best_epoch']} "
            f"| {o['acc']:.1f} | {o['uar']:.1f} | {f['acc']:.1f} | {f['uar']:.1f} | {contempt} |"
        )
    s = report["summary"]
    for kind in ("mean", "pooled"):
        o, f = s["original"][kind], s["finetuned"][kind]
        lines.append(
            f"| **{kind}** | | | | {o['acc']:.1f} | {o['uar']:.1f} | {f['acc']:.1f} "
            f"| {f['uar']:.1f} | |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json-out", type=Path, help="write the full report here")
    parser.add_argument("--weights-dir", type=Path, help="write each fold's FER weights here")
    add_recipe_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("train.fer_finetune").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    config = config_from_args(args)
    started = time.perf_counter()
    report = run_cv(args.data_dir, args.folds, config, args.weights_dir)
    report["config"] = vars(args) | {"data_dir": str(args.data_dir)}
    report["seconds"] = time.perf_counter() - started
    print(markdown(report))
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(report, indent=2, default=str) + "\n"
        args.json_out.write_text(payload, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
