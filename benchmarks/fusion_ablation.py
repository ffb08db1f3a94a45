"""Does adding audio hurt the text benchmarks? MELD / IEMOCAP / CMU-MOSI test, per input condition.

    python benchmarks/fusion_ablation.py [--checkpoint default] [--datasets meld iemocap mosi]
                                         [--split test|dev]

These corpora have no live-computable audio here, so the checkpoint is scored on each split
(test by default; dev, with the dev speaker's clips, is what stage-2 variants are chosen on) with:

- ``text``: words only (the audio is masked, as with a muted microphone);
- ``text+neutral speech``: the words plus a real neutral clip of speakers never trained on, cycled
  (speech that carries no emotion should not move the label): ``--neutral-corpus ravdess`` (the
  default: the neutral and calm clips of the split's actors, test 17-20, dev 15-16) or ``emodb``
  (test: speaker 13; dev: speaker 12);
- ``text+synthetic speech``: the words plus those same words spoken by espeak-ng (neutral
  synthetic prosody, the voice/rate chosen by :func:`train.tts_audio.voice_and_rate`);
- ``synthetic speech only``: that espeak-ng audio with no words and no dialogue context (what the
  audio branch alone makes of these utterances; their real audio is not here, so this is the only
  audio-only score these corpora allow, and synthetic prosody carries no emotion).

EMO-DB is the real audio-only test (``emotrack eval --dataset emodb``). Prints a Markdown table of
the primary metrics; ``--conditions`` runs a subset.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.audio_datasets import (  # noqa: E402
    neutral_voice_items,
    neutral_voices,
    speaker_key,
)
from train.audio_eval import with_voice_histories  # noqa: E402
from train.data import Sample, load_dataset  # noqa: E402
from train.datadir import DEFAULT_DATA_DIR  # noqa: E402
from train.evaluate import evaluate  # noqa: E402
from train.tts_audio import voice_and_rate  # noqa: E402
from train.voice_readout import synthetic_voices  # noqa: E402
from unimse.inference import EmotionPredictor  # noqa: E402
from unimse.inputs import ModelInput  # noqa: E402
from unimse.speakers import FIRST_SPEAKER  # noqa: E402

CONDITIONS = ("text", "text+neutral speech", "text+synthetic speech", "synthetic speech only")
COLUMNS = {"meld": ("wf1", "acc"), "iemocap": ("wf1", "acc"), "mosi": ("acc2_non0", "mae")}


def neutral_clips(
    predictor: EmotionPredictor,
    data: Path,
    split: str,
    corpus: str = "ravdess",
    *,
    settled: bool = False,
) -> list[ModelInput]:
    """The neutral clips of ``corpus``'s held-out speakers of ``split`` (their acoustic features
    and, with ``voice_trust``, voice histories), as a conversation in a neutral voice gives them
    (``settled``: as live use's re-reads end with them; EMO-DB boredom is negative, not neutral:
    left out)."""
    assert predictor.config.acoustic is not None
    items = neutral_voice_items(corpus, split, data)  # the corpus read once
    clips = neutral_voices(items, predictor.config.acoustic, predictor.voice_prior)
    voices = [ModelInput(text="", speaker=FIRST_SPEAKER, acoustic=c) for c in clips]
    speakers = [speaker_key(i) for i in items]
    return with_voice_histories(predictor, voices, speakers, settled=settled)


def heard(sample: Sample, voice: ModelInput, **changes: Any) -> Sample:
    """``sample`` with ``voice``'s acoustic input and voice history (and ``changes``)."""
    return replace(sample, acoustic=voice.acoustic, voice_history=voice.voice_history, **changes)


def with_audio(
    samples: list[Sample],
    condition: str,
    predictor: EmotionPredictor,
    clips: list[ModelInput],
    *,
    settled: bool = False,
) -> list[Sample]:
    spec = predictor.config.acoustic
    if condition == "text" or spec is None:
        return samples
    if condition == "text+neutral speech":
        return [heard(s, clips[i % len(clips)]) for i, s in enumerate(samples)]
    spoken = synthetic_speech(samples, predictor, settled=settled)
    if condition == "synthetic speech only":
        return [heard(s, v, text="", context=()) for s, v in zip(samples, spoken, strict=True)]
    return [heard(s, v) for s, v in zip(samples, spoken, strict=True)]


def synthetic_speech(
    samples: list[Sample], predictor: EmotionPredictor, *, settled: bool = False
) -> list[ModelInput]:
    """Each sample's words spoken by espeak-ng (no acoustic input where nothing is audible), as
    live use hears them: each espeak voice a speaker, relative to its running mean voice, with
    its voice history (``settled``: as live use's re-reads end with it)."""
    assert predictor.config.acoustic is not None
    texts = [s.text for s in samples]
    spoken = synthetic_voices(texts, predictor.config.acoustic, predictor.voice_prior)
    audible = [i for i, f in enumerate(spoken) if f is not None]
    voices = [ModelInput(text="", speaker=FIRST_SPEAKER, acoustic=spoken[i]) for i in audible]
    speakers = [voice_and_rate(texts[i])[0] for i in audible]
    out = [ModelInput(text="", speaker=FIRST_SPEAKER)] * len(samples)
    voiced = with_voice_histories(predictor, voices, speakers, settled=settled)
    for i, voice in zip(audible, voiced, strict=True):
        out[i] = voice
    return out


def hinge_report(predictor: EmotionPredictor, clips: list[ModelInput]) -> str:
    """Which neutral clips the voice's hinge lets through beside words: per head, the clips
    whose lead of some class over neutral passes the margin (so they can move the words' label),
    with that lead. With no hinge every clip moves the logits: nothing to report."""
    import torch

    model: Any = predictor.model
    heads: Any = model.modality_logits
    if heads is None or heads.hinge == "off":
        return "the voice is not hinged beside words: every clip moves the logits"
    voice = predictor.voice_logits(clips)  # the shared map: these are English voices
    assert voice is not None
    with torch.inference_mode():
        passed = heads.hinged(voice, torch.ones_like(voice[:, :1]))
    lines = [f"neutral clips {len(clips)}, step margin {heads.margin:g} (hinge {heads.hinge})"]
    names = ("polarity", "MELD", "IEMOCAP")
    for name, part in zip(names, torch.split(passed, list(heads.sizes), -1), strict=True):
        through = [
            f"clip {i} (lead {float(part[i].max()):.2f})"
            for i in range(len(clips))
            if float(part[i].max()) > 0
        ]
        lines.append(
            f"{name}: {len(through)} pass" + (": " + ", ".join(through) if through else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--datasets", nargs="+", default=list(COLUMNS), choices=list(COLUMNS))
    parser.add_argument("--data-dir", type=Path, default=ROOT / DEFAULT_DATA_DIR)
    parser.add_argument("--split", choices=("test", "dev"), default="test")
    parser.add_argument(
        "--neutral-corpus",
        choices=("ravdess", "emodb"),
        default="ravdess",
        help="whose neutral voices (the split's held-out speakers) join the words",
    )
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument(
        "--settled",
        action="store_true",
        help="with a voice trust: each voice's history as live use ends with it (its speaker's "
        "other utterances: a speaker's earlier results read again, realtime/reread.py)",
    )
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--hinge-report",
        action="store_true",
        help="also say which neutral clips pass the voice's hinge beside words, per head",
    )
    args = parser.parse_args(argv)
    predictor = EmotionPredictor.load(args.checkpoint, device="cpu")
    if predictor.config.acoustic is None:
        raise SystemExit(f"{args.checkpoint} has no acoustic branch: nothing to compare")
    clips = neutral_clips(
        predictor, args.data_dir, args.split, args.neutral_corpus, settled=args.settled
    )
    if args.hinge_report:
        print(hinge_report(predictor, clips))
    results: dict[str, dict[str, dict[str, float]]] = {}
    for dataset in args.datasets:
        samples = load_dataset(dataset, args.split, args.data_dir)
        results[dataset] = {
            condition: evaluate(
                predictor,
                dataset,
                with_audio(samples, condition, predictor, clips, settled=args.settled),
            )
            for condition in args.conditions
        }
        print(dataset, json.dumps(results[dataset]), file=sys.stderr)
    head = [f"dataset ({args.split})", "metric", *args.conditions]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for dataset, by_condition in results.items():
        for metric in COLUMNS[dataset]:
            digits = 3 if metric == "mae" else 2
            cells = [f"{by_condition[c][metric]:.{digits}f}" for c in args.conditions]
            lines.append(f"| {dataset} | {metric} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
