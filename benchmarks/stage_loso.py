"""EMO-DB leave-one-speaker-out of a voice stage recipe, the shipped one by default.

    python benchmarks/stage_loso.py [--out runs/stage_loso] config --speaker 03 [--base CONFIG]
    emotrack train --config runs/stage_loso/emodb_03.toml
    emotrack calibrate --checkpoint runs/stage_loso/emodb_03/best \\
        --output runs/stage_loso/emodb_03_cal --no-heads SETTINGS
    python benchmarks/stage_loso.py score --speaker 03 --checkpoint runs/stage_loso/emodb_03_cal
    python benchmarks/stage_loso.py score --speaker 13 --checkpoint runs/voice21c_cal
    python benchmarks/stage_loso.py table

``benchmarks/neutral_cv.py`` holds out one or two EMO-DB speakers beside four RAVDESS actors per
fold; the issue's measure is EMO-DB leave one speaker out. Here each fold is the stage's own
config (``--base``: every non-test speaker of RAVDESS, EMO-DB and speech_av) with one EMO-DB
speaker in ``[data] held_out_speakers``, so it trains on the other five EMO-DB training and dev
speakers and everything else exactly as the shipped candidate does; SETTINGS are the base's
calibration (its config's header names them). EMO-DB's test speaker (13) is never trained on by
the base, so its fold is the base's own calibrated model (the shipped one: what ``emotrack eval
--dataset emodb --split test`` reads). ``score`` is ``emotrack eval --dataset emodb``'s audio-only
unweighted accuracy over the speaker's clips (EMO-DB's 7 classes, read back from the universal
label), with each clip's class, written to ``--out/emodb_SPEAKER.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neutral_cv import write_held_out_config

from train.audio_data import EMODB
from train.audio_eval import categorical_predictions, class_names, load_eval_corpus, true_class
from train.datadir import DEFAULT_DATA_DIR
from train.metrics import unweighted_accuracy
from unimse.inference import EmotionPredictor

SPEAKERS = ("03", "08", "09", "10", "11", "12")  # EMO-DB's training and dev speakers
TEST_SPEAKER = "13"  # its fold is the base's own model (``score --speaker 13 --checkpoint ...``)


def config(args: argparse.Namespace) -> None:
    print(write_held_out_config(args.base, [f"{EMODB}/{args.speaker}"], fold_dir(args)))


def fold_dir(args: argparse.Namespace) -> Path:
    return args.out / f"{EMODB}_{args.speaker}"


def score(args: argparse.Namespace) -> None:
    samples = [
        s for s in load_eval_corpus(EMODB, args.data_dir, "all") if s.speaker == args.speaker
    ]
    if not samples:
        raise SystemExit(f"no EMO-DB clips of speaker {args.speaker} in {args.data_dir}")
    predictor = EmotionPredictor.load(args.checkpoint, device="cpu")
    truth = [true_class(s) for s in samples]
    heard = categorical_predictions(predictor, samples)
    metrics = unweighted_accuracy(truth, heard, class_names(EMODB))
    result = {
        "speaker": args.speaker,
        "checkpoint": str(args.checkpoint),
        "model_version": predictor.model_version,
        "audio_uar": metrics["uar"],
        "audio_wa": metrics["wa"],
        "clips": [[s.id, t, h] for s, t, h in zip(samples, truth, heard, strict=True)],
    }
    target = fold_dir(args).with_suffix(".json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"{target}: audio UA {metrics['uar']:.2f}, {len(samples)} clips")


def table(args: argparse.Namespace) -> None:
    """Each fold's audio-only UA, their mean (the issue's measure), and the UA of all folds'
    clips pooled (steadier: a speaker with one clip of a class moves its own UA by 1/7)."""
    paths = sorted(args.out.glob(f"{EMODB}_*.json"))
    folds = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    if not folds:
        raise SystemExit(f"no scored folds in {args.out}: run `score` first")
    print("| EMO-DB speaker held out | clips | audio UA | audio WA | model |")
    print("|---|---:|---:|---:|---|")
    for fold in folds:
        print(
            f"| {fold['speaker']} | {len(fold['clips'])} | {fold['audio_uar']:.2f} | "
            f"{fold['audio_wa']:.2f} | {fold['model_version']} |"
        )
    mean = sum(f["audio_uar"] for f in folds) / len(folds)
    clips = [clip for fold in folds for clip in fold["clips"]]
    pooled = unweighted_accuracy([c[1] for c in clips], [c[2] for c in clips], class_names(EMODB))
    print(f"| **mean of {len(folds)}** | {len(clips)} | **{mean:.2f}** | | |")
    print(f"| pooled | {len(clips)} | {pooled['uar']:.2f} | {pooled['wa']:.2f} | |")
    recalls = {k.removeprefix("recall_"): v for k, v in pooled.items() if k.startswith("recall_")}
    print("pooled recall: " + ", ".join(f"{k} {v:.1f}" for k, v in recalls.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/stage_loso"))
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("config", help="the fold's voice stage config")
    make.add_argument("--base", type=Path, default=Path("configs/train_voice_v9_refit.toml"))
    scoring = commands.add_parser("score", help="the held-out speaker's audio-only UA")
    scoring.add_argument("--checkpoint", required=True, help="the fold's calibrated checkpoint")
    make.add_argument("--speaker", required=True, choices=SPEAKERS)
    scoring.add_argument("--speaker", required=True, choices=(*SPEAKERS, TEST_SPEAKER))
    commands.add_parser("table", help="every scored fold, their mean and the pooled UA")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    {"config": config, "score": score, "table": table}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
