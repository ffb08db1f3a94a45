"""How the speaker label in front of each turn moves the text model's reading.

The model reads every turn as ``"{speaker}: {text}"``. It was trained on the corpora's own
names (MELD's characters, IEMOCAP's speakers); live, the labels are emotrack's: ``speaker`` on a
mono channel, ``speaker 1``, ``speaker 2``, ... when diarised, or the names given. This scores
MELD / IEMOCAP (dev by default) text only with each labelling of the same dialogues:

- ``corpus``: the corpus's names (what `emotrack eval` scores);
- ``none``: no label (``"{text}"``);
- ``speaker``: every turn ``speaker`` (a mono recording without ``--diarize``);
- ``numbered``: ``speaker 1``, ``speaker 2``, ... by first appearance in the dialogue
  (``--diarize``);
- ``letters``: ``A``, ``B``, ... by first appearance; ``names``: ``Alex``, ``Sam``, ... likewise.

    python benchmarks/speaker_labels.py [--split dev] [--checkpoint default] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train.data import Sample, load_dataset
from train.datadir import DEFAULT_DATA_DIR
from train.evaluate import evaluate
from unimse.inference import EmotionPredictor
from unimse.inputs import DialogueTurn
from unimse.speakers import ModelSpeakerNames

LABELLINGS = ("corpus", "none", "speaker", "numbered", "letters", "names")
NAMES = ("Alex", "Sam", "Jordan", "Taylor", "Casey", "Riley", "Morgan", "Jamie")


def relabel(samples: list[Sample], labelling: str) -> list[Sample]:
    """The samples with every turn's speaker relabelled as ``labelling`` says."""
    if labelling == "corpus":
        return samples
    order: dict[str, dict[str, str]] = {}
    letters: dict[str, ModelSpeakerNames] = {}  # live use's own map, one per dialogue

    def name(dialogue: str, speaker: str) -> str:
        if labelling == "none":
            return ""
        if labelling == "speaker":
            return "speaker"
        if labelling == "letters":
            return letters.setdefault(dialogue, ModelSpeakerNames("letters"))(speaker)
        seen = order.setdefault(dialogue, {})
        if speaker not in seen:
            n = len(seen)
            seen[speaker] = f"speaker {n + 1}" if labelling == "numbered" else NAMES[n % len(NAMES)]
        return seen[speaker]

    out = []
    for sample in samples:
        context = tuple(
            DialogueTurn(name(sample.dialogue, t.speaker), t.text) for t in sample.context
        )
        out.append(replace(sample, speaker=name(sample.dialogue, sample.speaker), context=context))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--split", default="dev", choices=("dev", "test"))
    parser.add_argument("--datasets", nargs="*", default=["meld", "iemocap"])
    parser.add_argument("--labellings", nargs="*", default=list(LABELLINGS), choices=LABELLINGS)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    predictor = EmotionPredictor.load(args.checkpoint)
    results: dict[str, dict[str, dict[str, float]]] = {}
    print("| dataset | labels | WF1 | accuracy |")
    print("|---|---|---|---|")
    for dataset in args.datasets:
        samples = load_dataset(dataset, args.split, args.data_dir)
        for labelling in args.labellings:
            metrics = evaluate(predictor, dataset, relabel(samples, labelling))
            results.setdefault(dataset, {})[labelling] = metrics
            wf1, acc = metrics["wf1"], metrics["acc"]
            print(f"| {dataset} {args.split} | {labelling} | {wf1:.2f} | {acc:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
