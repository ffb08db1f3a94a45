"""`emotrack train`, `eval`, `calibrate` and `fit-voice` (entry points ``emotrack.commands``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train.config import READOUT_LOSSES, ReadoutSettings, language_readout
from train.datadir import DEFAULT_DATA_DIR
from unimse.argtypes import AT_LEAST_ONE, COUNT, NON_NEGATIVE, POSITIVE, SHARE, UNIT_INTERVAL
from unimse.config import VOICE_SHARES

if TYPE_CHECKING:
    from rich.progress import Progress

logger = logging.getLogger(__name__)

TEXT_EVAL_DATASETS = ("meld", "iemocap", "mosi")
AUDIO_EVAL_DATASETS = ("emodb", "ravdess", "speech_av")
FACE_EVAL_DATASETS = ("ckplus",)
EVAL_DATASETS = TEXT_EVAL_DATASETS + AUDIO_EVAL_DATASETS + FACE_EVAL_DATASETS


GERMAN_LOSSES = "joint"  # fit-voice --german-losses' default


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors of these commands that mean bad input: the CLI prints them as one line."""
    from train.data import DataError
    from unimse.errors import user_errors as model_errors

    return (DataError, *model_errors())


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a UniMSE model from a TOML config",
        description="Train UniMSE on the benchmark data. Model selection uses the dev splits only; "
        "the best checkpoint is written to OUTPUT/best, the resumable state to OUTPUT/last.",
    )
    train.add_argument(
        "--config",
        required=True,
        type=Path,
        help="training config, e.g. configs/train_default.toml",
    )
    train.add_argument(
        "--output", type=Path, help="run folder (default: [train].output of the config)"
    )
    train.add_argument(
        "--data-dir",
        type=Path,
        help="folder laid out like ../shared/data (overrides [data].data_dir)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT/last (a run stopped before it saved a checkpoint starts afresh)",
    )
    train.set_defaults(handler=run_train, user_errors=user_errors)

    ev = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint on a dataset split",
        description="Evaluate a checkpoint. Prints a table; with --json the last stdout line "
        "is one JSON object with every metric. emodb: unweighted (uar) and weighted (wa) accuracy "
        "over the 7 EMO-DB classes, audio only and audio + transcript (fused; with a voice trust "
        "also settled: each speaker's clips read again beside all of the speaker's others, as "
        "live use's re-reads end); ravdess: the same "
        "over the project's 7 emotions (calm counts as neutral); speech_av: "
        "correlation of the predicted intensity with valence and of 1 - P(neutral) with arousal; "
        "ckplus: accuracy (acc) and unweighted accuracy (uar) over the 6 CK+ expressions the "
        "project shares (contempt left out), FER network alone (fer) and face + a neutral "
        "sentence through the model (fused: one frame; fused_held: the face held for 8 frames), "
        "see train/face_eval.py.",
    )
    ev.add_argument(
        "--dataset", required=True, choices=EVAL_DATASETS, help="benchmark to evaluate on"
    )
    ev.add_argument(
        "--split",
        choices=("train", "dev", "test", "all"),
        help="split (default: test for meld/iemocap/mosi; all files for emodb/ravdess/speech_av, "
        "where train/dev/test are the fixed speaker splits 03 08 09 10 11 / 12 / 13 of EMO-DB "
        "and actors 01-14 / 15-16 / 17-20 of RAVDESS, and the 35/12 clip split of speech_av; "
        "all images for ckplus, whose train/dev/test are fixed subject splits)",
    )
    ev.add_argument(
        "--checkpoint",
        default="default",
        help="checkpoint folder, or 'default' for the bundled one",
    )
    ev.add_argument(
        "--data-dir",
        type=Path,
        help="folder laid out like ../shared/data/<dataset> (default: ../shared/data); for "
        "emodb/speech_av also the folder of wav files itself (EMO-DB names: label = 6th "
        "character), for ravdess a folder of Actor_NN folders or of its .flac/.wav files "
        "(label from the name 03-01-EE-...)",
    )
    ev.add_argument(
        "--fer-weights",
        type=Path,
        help="ckplus: FER network weights (safetensors) instead of the shipped ones",
    )
    ev.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    ev.add_argument(
        "--batch-size", type=AT_LEAST_ONE, default=64, help="inference batch size (default: 64)"
    )
    ev.add_argument("--json", action="store_true", help="end with one JSON line of all metrics")
    ev.set_defaults(handler=run_eval, user_errors=user_errors)

    cal = subparsers.add_parser(
        "calibrate",
        help="calibrate a checkpoint on the dev splits (head priors, audio and video weights)",
        description="Write a copy of a checkpoint whose MELD and IEMOCAP emotion heads carry "
        "per-class logit offsets chosen on the dev splits (coordinate ascent on weighted F1), "
        "and, with --audio-scale / --video-scale, whose acoustic / visual branch is scaled by a "
        "factor (auto: chosen on dev, see train/modality_scale.py). Test splits are never read. "
        "What was done goes into calibration.json of the output.",
    )
    _source_and_output(cal)
    cal.add_argument(
        "--datasets",
        nargs="+",
        default=["meld", "iemocap"],
        choices=("meld", "iemocap"),
        help="heads to calibrate (default: meld iemocap)",
    )
    cal.add_argument("--no-heads", action="store_true", help="leave the emotion heads as they are")
    cal.add_argument(
        "--audio-scale",
        type=_branch_scale,
        metavar="auto|FACTOR",
        help="scale the acoustic branch by FACTOR in [0, 1], or choose it on dev (auto: the dev "
        "speakers' neutral voices and acted clips; refused for a fit-voice readout fitted on them)",
    )
    cal.add_argument(
        "--video-scale",
        type=_branch_scale,
        metavar="auto|FACTOR",
        help="scale the visual branch by FACTOR in [0, 1], or choose it on dev (auto: the best "
        "accuracy on real CK+ dev-subject faces beside a neutral sentence among the factors whose "
        "unrelated face costs MELD / IEMOCAP dev words that read as an emotion <= 2 WF1)",
    )
    cal.add_argument(
        "--voice-neutral-share",
        type=UNIT_INTERVAL,
        metavar="A",
        help="a hinged voice (voice_hinge): add back share A in [0, 1] of its unhinged logits "
        "on utterances with words (benchmarks/neutral_share.py measures candidates on dev)",
    )
    cal.add_argument(
        "--voice-margin",
        type=NON_NEGATIVE,
        metavar="M",
        help="a hinged voice: on utterances with words it counts only where a class's logit "
        "exceeds neutral by more than M (benchmarks/neutral_cv.py chooses it on 22 speakers)",
    )
    cal.add_argument(
        "--voice-hinge",
        choices=("relu", "softplus", "step"),
        help="a hinged voice: the hinge's shape beside words (step: a class gains its whole lead "
        "over neutral where the lead exceeds the margin; relu: the lead less the margin)",
    )
    cal.add_argument(
        "--voice-cap",
        type=NON_NEGATIVE,
        metavar="C",
        help="a hinged voice: on utterances with words no class gains more than C from it "
        "(0: no cap; benchmarks/neutral_cv.py chooses it on 22 speakers)",
    )
    cal.add_argument(
        "--wordless-audio-scale",
        type=POSITIVE,
        metavar="W",
        help="the voice's weight on utterances without words (where it is all there is), "
        "instead of the audio scale (benchmarks/neutral_cv.py chooses it on 22 speakers)",
    )
    cal.add_argument(
        "--voice-neutral-words",
        type=NON_NEGATIVE,
        metavar="K",
        help="a hinged voice: beside words that read as neutral it weighs up to its weight "
        "without words, by the words' neutral probability to the power K (0: off; "
        "benchmarks/neutral_cv.py neutral-words measures it on 22 speakers)",
    )
    cal.add_argument(
        "--voice-trust",
        type=POSITIVE,
        metavar="E",
        help="a hinged voice: beside words that read as neutral, move toward what the voice alone "
        "gives as far as the speaker's running mean voice lead over neutral passes E "
        "(benchmarks/neutral_cv.py trust chooses it on 22 speakers)",
    )
    cal.add_argument(
        "--voice-trust-width",
        type=POSITIVE,
        metavar="W",
        help="with --voice-trust: the lead above E over which the trust rises from 0 to 1",
    )
    cal.add_argument(
        "--voice-trust-prior",
        type=POSITIVE,
        metavar="P",
        help="with --voice-trust: how many utterances of the start lead (--voice-trust-start, "
        "0 unless given) a new speaker starts with",
    )
    cal.add_argument(
        "--voice-trust-start",
        type=NON_NEGATIVE,
        metavar="S",
        help="with --voice-trust: a new speaker's presumed mean lead, worth --voice-trust-prior "
        "utterances (0: presumed to lead none)",
    )
    cal.add_argument(
        "--voice-trust-words",
        type=SHARE,
        metavar="Q",
        help="with --voice-trust: the words' MELD neutral probability from which they count as "
        "saying nothing (below it the trust shrinks in proportion)",
    )
    cal.add_argument(
        "--face-gate-power",
        type=POSITIVE,
        metavar="P",
        help="a gated face (face_gate): its gate is the words' neutral probability to the power "
        "P (> 1: sharper); the video scale is chosen with it",
    )
    cal.add_argument(
        "--voice-share-by",
        choices=VOICE_SHARES,
        help="with --voice-neutral-share: the same share everywhere (flat, the default), or "
        "times 1 - the words' top MELD probability (unsure)",
    )
    cal.add_argument(
        "--data-dir", type=Path, help="folder laid out like ../shared/data (default: that)"
    )
    cal.add_argument("--json", action="store_true", help="end with one JSON line of the result")
    cal.set_defaults(handler=run_calibrate, user_errors=user_errors)

    fit = subparsers.add_parser(
        "fit-voice",
        help="fit a checkpoint's voice path as a convex readout of its Whisper states",
        description="Write a copy of a checkpoint whose voice path (pooled speaker-baselined "
        "Whisper states -> modality logits, linear when PMF's audio columns are off) is fitted by "
        "L-BFGS on RAVDESS's and EMO-DB's training and dev speakers and their neutral voices, "
        "instead of a voice stage's SGD (see train/voice_readout.py). Test speakers are never "
        "read. Like a voice stage the result has weight 1 with and without words: run "
        "`emotrack calibrate` on it to set the weights, hinge and margin.",
    )
    _source_and_output(fit)
    _readout_terms(fit)
    fit.add_argument(
        "--emodb-weight",
        type=POSITIVE,
        default=ReadoutSettings.emodb_weight,
        help="weight of EMO-DB's clips against RAVDESS's and the neutral voices",
    )
    fit.add_argument(
        "--neutral-weight",
        type=POSITIVE,
        default=ReadoutSettings.neutral_weight,
        help="weight of the neutral voices (each speaker's neutral clips as a conversation gives "
        "them) against the acted clips",
    )
    fit.add_argument(
        "--german-readout",
        action="store_true",
        help="also fit a readout of German voices (language de) on EMO-DB's clips alone; an "
        "utterance whose transcript is German reads its voice through it",
    )
    _readout_terms(fit, "german-", GERMAN_LOSSES, "with --german-readout, its ")
    fit.add_argument(
        "--german-heads",
        type=UNIT_INTERVAL,
        default=ReadoutSettings.emodb_heads,
        metavar="SHARE",
        help="with --german-readout and --german-losses all: EMO-DB's clips in the heads' "
        "cross-entropy at this share of their weight (0-1), beside the joint class loss",
    )
    fit.add_argument(
        "--synthetic-voices",
        type=COUNT,
        default=0,
        metavar="N",
        help="also hear N sentences of MELD's training dialogues spoken by espeak-ng as neutral "
        "voices (each espeak voice a speaker; 0: none), so a synthetic voice reads as no emotion",
    )
    fit.add_argument(
        "--synthetic-weight",
        type=POSITIVE,
        default=ReadoutSettings.synthetic_weight,
        help="with --synthetic-voices: the weight of their rows against the acted clips",
    )
    fit.add_argument(
        "--speaker-baseline",
        type=POSITIVE,
        metavar="W",
        help="the speaker baseline's prior weight, in utterances (default: the checkpoint's)",
    )
    fit.add_argument(
        "--held-out-speakers",
        nargs="*",
        default=[],
        metavar="CORPUS/SPEAKER",
        help="speakers to leave out of the fit (e.g. emodb/03 ravdess/09), for cross-validation",
    )
    fit.add_argument(
        "--data-dir", type=Path, help="folder laid out like ../shared/data (default: that)"
    )
    fit.add_argument("--json", action="store_true", help="end with one JSON line of the result")
    fit.set_defaults(handler=run_fit_voice, user_errors=user_errors)


def _readout_terms(
    parser: argparse.ArgumentParser,
    prefix: str = "",
    losses: str = ReadoutSettings.losses,
    scope: str = "",
) -> None:
    """``fit-voice``'s L2 penalty and losses of a readout (``prefix``: whose, e.g. "german-")."""
    parser.add_argument(
        f"--{prefix}l2",
        type=NON_NEGATIVE,
        default=ReadoutSettings.l2,
        help=f"{scope}L2 penalty per weight",
    )
    parser.add_argument(
        f"--{prefix}losses",
        choices=READOUT_LOSSES,
        default=losses,
        help=f"{scope}losses: all: the three heads on every clip and EMO-DB's joint class loss; "
        "joint: EMO-DB's clips through the joint class loss only",
    )


def _source_and_output(parser: argparse.ArgumentParser) -> None:
    """--checkpoint and --output of a command that writes a new checkpoint from another."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, or 'default'")
    parser.add_argument("--output", required=True, type=Path, help="folder for the new checkpoint")


def check_new_output(args: argparse.Namespace) -> None:
    """``--output default`` names a folder ./default, not the bundled checkpoint that
    ``--checkpoint default`` names: refused, as a likely mistake."""
    from unimse.checkpoint import DEFAULT

    if str(args.output) == DEFAULT:
        from train.data import DataError

        raise DataError(
            f"--output {DEFAULT} would be a folder ./{DEFAULT}, not the bundled checkpoint: name "
            f"another folder, e.g. ./{DEFAULT}-copy"
        )


def _branch_scale(value: str) -> str | float:
    """``auto`` or a number in [0, 1]."""
    if value == "auto":
        return value
    try:
        float(value)
    except ValueError:
        message = f"expected auto or a number in [0, 1], got {value!r}"
        raise argparse.ArgumentTypeError(message) from None
    return UNIT_INTERVAL(value)


def data_dir_of(args: argparse.Namespace, *, needed: bool = True) -> Path:
    """``--data-dir``, or the default ../shared/data: relative to the current directory, so
    where it is no folder (and the command reads data: ``needed``) a one-line DataError shows
    where it was looked for and asks for ``--data-dir``."""
    if args.data_dir is not None:
        return Path(args.data_dir)
    if needed and not DEFAULT_DATA_DIR.is_dir():
        from train.data import DataError

        raise DataError(
            f"data folder not found: {DEFAULT_DATA_DIR.resolve()} (the default --data-dir "
            f"{DEFAULT_DATA_DIR}, relative to the current directory); pass --data-dir"
        )
    return DEFAULT_DATA_DIR


def progress_bars() -> Progress:
    """The commands' progress bars, on stderr and cleared when done; none where stderr is no
    terminal, where rich would leave a blank line in their place (before an error, too)."""
    from rich.console import Console
    from rich.progress import Progress

    err = Console(stderr=True)
    return Progress(console=err, transient=True, disable=not err.is_terminal)


def print_metrics(title: str, metrics: dict[str, float]) -> None:
    """The human table of ``eval``: counts as integers, MAE and correlations to 4 places."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        digits = 0 if name in ("n", "n_fused") else 4 if name == "mae" or "corr" in name else 2
        table.add_row(name, f"{value:.{digits}f}")
    Console(file=sys.stdout).print(table)


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from train.config import TrainConfig
    from train.loop import Trainer

    if not getattr(args, "quiet", False):  # training is long: show its progress lines by default
        train_log = logging.getLogger("train")
        train_log.setLevel(min(train_log.getEffectiveLevel(), logging.INFO))
    config = TrainConfig.load(args.config)
    if args.data_dir:
        config = replace(config, data=replace(config.data, data_dir=str(args.data_dir)))
    state = Trainer(config, args.output).run(resume=args.resume)
    if config.train.stop_epoch:
        print(f"kept epoch {state['best_epoch']} (the fixed epoch count; no dev selection)")
    else:
        print(f"best dev score {state['best_score']:.2f} at epoch {state['best_epoch']}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    args.data_dir = data_dir_of(args)
    if args.fer_weights is not None and args.dataset not in FACE_EVAL_DATASETS:
        logger.warning("--fer-weights reads faces: ignored for --dataset %s", args.dataset)
    if args.dataset in AUDIO_EVAL_DATASETS:
        return run_audio_eval(args)
    if args.dataset in FACE_EVAL_DATASETS:
        return run_face_eval(args)
    if args.split is None:
        args.split = "test"
    if args.split not in ("dev", "test"):
        from train.data import DataError

        raise DataError(
            f"--split {args.split} is for the audio and face corpora; {args.dataset}: dev or test"
        )
    from train.data import load_dataset
    from train.evaluate import evaluate
    from unimse.inference import EmotionPredictor

    samples = load_dataset(args.dataset, args.split, args.data_dir)  # or a DataError
    predictor = EmotionPredictor.load(
        args.checkpoint, device=args.device, max_batch=args.batch_size
    )
    with progress_bars() as progress:
        task = progress.add_task(f"{args.dataset} {args.split}", total=len(samples))
        metrics = evaluate(
            predictor,
            args.dataset,
            samples,
            args.batch_size,
            progress=lambda n: progress.update(task, advance=n),
        )
    print_metrics(
        f"{args.dataset} {args.split} ({len(samples)} utterances) — {predictor.model_version}",
        metrics,
    )
    if args.json:
        payload = {
            "dataset": args.dataset,
            "split": args.split,
            "n": len(samples),
            "checkpoint": str(args.checkpoint),
            "model_version": predictor.model_version,
            **metrics,
        }
        sys.stdout.write(json.dumps(payload) + "\n")
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rich.console import Console
    from rich.progress import TaskID
    from rich.table import Table

    from train.calibrate import VoiceTrust, calibrate_checkpoint
    from train.data import DataError

    check_new_output(args)
    if args.voice_share_by and args.voice_neutral_share is None:
        raise DataError("--voice-share-by needs --voice-neutral-share")

    companions = (
        args.voice_trust_width,
        args.voice_trust_prior,
        args.voice_trust_words,
        args.voice_trust_start,
    )
    if args.voice_trust is None and any(v is not None for v in companions):
        raise DataError("--voice-trust-width/-prior/-words/-start need --voice-trust")
    trust = None
    if args.voice_trust is not None:
        trust = VoiceTrust(args.voice_trust, *companions)

    reads_data = bool(args.datasets and not args.no_heads) or "auto" in (
        args.audio_scale,
        args.video_scale,
    )
    data_dir = data_dir_of(args, needed=reads_data)
    tasks: dict[str, TaskID] = {}
    with progress_bars() as progress:

        def tick(dataset: str, done: int, total: int) -> None:
            if dataset not in tasks:
                tasks[dataset] = progress.add_task(f"{dataset} dev", total=total)
            progress.update(tasks[dataset], advance=done)

        results, scales = calibrate_checkpoint(
            args.checkpoint,
            args.output,
            data_dir,
            [] if args.no_heads else args.datasets,
            tick,
            audio_scale=args.audio_scale,
            video_scale=args.video_scale,
            voice_neutral_share=args.voice_neutral_share,
            voice_share_by=args.voice_share_by or "flat",
            voice_margin=args.voice_margin,
            voice_cap=args.voice_cap,
            wordless_audio_scale=args.wordless_audio_scale,
            face_gate_power=args.face_gate_power,
            voice_neutral_words=args.voice_neutral_words,
            voice_hinge=args.voice_hinge,
            voice_trust=trust,
        )
    table = Table(title=f"dev-set calibration -> {args.output}")
    for column in ("head", "dev wf1 before", "dev wf1 after", "offsets"):
        table.add_column(column)
    for r in results:
        offsets = " ".join(f"{c}{o:+.1f}" for c, o in r.offsets.items() if o)
        table.add_row(
            r.dataset, f"{r.dev_before['wf1']:.2f}", f"{r.dev_after['wf1']:.2f}", offsets or "-"
        )
    if results:
        Console(file=sys.stdout).print(table)
    for scale in scales:
        print(f"{scale.modality} scale {scale.scale}")
        for candidate, scores in scale.scores.items():
            print(f"  {candidate}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    if args.json:
        payload = {
            "output": str(args.output),
            "heads": [asdict(r) for r in results],
            **{f"{scale.modality}_scale": asdict(scale) for scale in scales},
        }
        sys.stdout.write(json.dumps(payload) + "\n")
    return 0


def run_fit_voice(args: argparse.Namespace) -> int:
    from rich.progress import TaskID

    from train.data import DataError
    from train.voice_readout import check_fit_voice_paths, fit_voice, synthetic_sentences

    check_new_output(args)
    german = (args.german_l2, args.german_losses, args.german_heads)
    if not args.german_readout and german != (
        ReadoutSettings.l2,
        GERMAN_LOSSES,
        ReadoutSettings.emodb_heads,
    ):
        raise DataError("--german-l2/-losses/-heads need --german-readout")
    if not args.synthetic_voices and args.synthetic_weight != ReadoutSettings.synthetic_weight:
        raise DataError("--synthetic-weight needs --synthetic-voices")
    check_fit_voice_paths(args.checkpoint, args.output)  # before MELD is read for the voices
    data_dir = data_dir_of(args)
    synthetic = synthetic_sentences(data_dir, args.synthetic_voices)
    tasks: dict[str, TaskID] = {}
    with progress_bars() as progress:

        def tick(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = progress.add_task(step, total=total or None)
            progress.update(tasks[step], completed=done)

        record = fit_voice(
            args.checkpoint,
            args.output,
            data_dir,
            ReadoutSettings(
                args.l2,
                args.emodb_weight,
                args.losses,
                args.neutral_weight,
                synthetic_weight=args.synthetic_weight,
            ),
            held_out=args.held_out_speakers,
            baseline=args.speaker_baseline,
            progress=tick,
            german=language_readout(*german) if args.german_readout else None,
            synthetic=synthetic,
        )
    print(
        f"voice readout -> {args.output} ({record['clips']} clips, {record['voices']} voices; "
        f"now run emotrack calibrate on it)"
    )
    if args.json:
        sys.stdout.write(json.dumps(record) + "\n")
    return 0


def run_audio_eval(args: argparse.Namespace) -> int:
    """``eval --dataset emodb|speech_av`` (see :mod:`train.audio_eval`)."""
    from train.audio_data import CORPUS_LANGUAGES
    from train.audio_eval import audio_metrics, load_eval_corpus, progress_total
    from unimse.inference import EmotionPredictor

    split = args.split or "all"
    samples = load_eval_corpus(args.dataset, args.data_dir, split)
    predictor = EmotionPredictor.load(
        args.checkpoint, device=args.device, max_batch=args.batch_size
    )
    with progress_bars() as progress:
        task = progress.add_task(
            f"{args.dataset} {split}", total=progress_total(args.dataset, samples)
        )
        metrics = audio_metrics(
            args.dataset,
            predictor,
            samples,
            args.batch_size,
            progress=lambda n: progress.update(task, advance=n),
        )
    print_metrics(
        f"{args.dataset} {split} ({len(samples)} files) — {predictor.model_version}", metrics
    )
    if args.json:
        counts = {k: int(v) for k, v in metrics.items() if k in ("n", "n_fused")}
        acoustic = predictor.config.acoustic
        write_eval_json(
            args,
            split,
            predictor,
            acoustic=None if acoustic is None else acoustic.name,
            language=CORPUS_LANGUAGES[args.dataset],  # what picks the voice map
            **(metrics | counts),
        )
    return 0


def write_eval_json(args: argparse.Namespace, split: str, predictor: Any, **fields: object) -> None:
    """The last stdout line of ``eval --json``: what was evaluated, then every metric."""
    payload = {
        "dataset": args.dataset,
        "split": split,
        "data_dir": str(args.data_dir),
        "checkpoint": str(args.checkpoint),
        "model_version": predictor.model_version,
        **fields,
    }
    sys.stdout.write(json.dumps(payload) + "\n")


def run_face_eval(args: argparse.Namespace) -> int:
    """``eval --dataset ckplus`` (see :mod:`train.face_eval`); ``--split`` train/dev/test are the
    fixed subject splits of :mod:`train.face_data`, default all."""
    from train.face_eval import NEUTRAL_TEXT, face_eval_metrics, load_face_eval
    from unimse.inference import EmotionPredictor

    split = args.split or "all"
    samples = load_face_eval(args.data_dir, split)
    if args.fer_weights is not None:  # missing, damaged or unfit: said before the model loads
        from unimse.features.fer_net import load_fer_model

        load_fer_model(args.fer_weights)
    predictor = EmotionPredictor.load(
        args.checkpoint, device=args.device, max_batch=args.batch_size
    )
    with progress_bars() as progress:
        task = progress.add_task(f"{args.dataset} {split}", total=3 * len(samples))
        metrics = face_eval_metrics(
            predictor,
            samples,
            fer_weights=args.fer_weights,
            batch_size=args.batch_size,
            progress=lambda n: progress.update(task, advance=n),
        )
    numbers = {k: v for k, v in metrics.items() if isinstance(v, float)}
    print_metrics(
        f"{args.dataset} {split} ({len(samples)} faces) — {predictor.model_version}", numbers
    )
    if args.json:
        weights = None if args.fer_weights is None else str(args.fer_weights)
        write_eval_json(
            args,
            split,
            predictor,
            fer_weights=weights,
            text=NEUTRAL_TEXT,
            **(metrics | {"n": len(samples)}),
        )
    return 0
