"""A hinged voice's neutral share, measured on dev: the words with a neutral voice, acted speech
with and without its sentence.

    python benchmarks/neutral_share.py --checkpoint runs/voice19_cal [--shares 0 0.25 0.5 1]
                                      [--share-by flat|unsure]

For a checkpoint with ``voice_hinge``, each candidate share A (``UniMSEConfig.voice_neutral_share``:
on utterances with words, A of the unhinged voice is added back) is scored as ``emotrack
calibrate --audio-scale auto`` scores an audio weight (MELD / IEMOCAP dev WF1 with the dev speakers'
neutral voices, RAVDESS / EMO-DB dev audio-only UA; ``train.modality_scale.AudioScaleDevData``) plus
RAVDESS dev with its sentence (fused UA and neutral recall), since the share acts on utterances
with words only. Dev speakers only; the chosen share goes into a checkpoint with ``emotrack
calibrate --voice-neutral-share A``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.audio_eval import audio_metrics, load_eval_corpus  # noqa: E402
from train.datadir import DEFAULT_DATA_DIR  # noqa: E402
from train.evaluate import evaluate  # noqa: E402
from train.modality_scale import AudioScaleDevData  # noqa: E402
from unimse.config import VOICE_SHARES  # noqa: E402
from unimse.inference import EmotionPredictor  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--shares", nargs="+", type=float, default=[0.0, 0.25, 0.5, 1.0])
    parser.add_argument(
        "--share-by",
        choices=VOICE_SHARES,
        default="flat",
        help="UniMSEConfig.voice_share_by: flat, or times 1 - the words' top MELD probability",
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT / DEFAULT_DATA_DIR)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    predictor = EmotionPredictor.load(args.checkpoint, device="cpu")
    logits = getattr(predictor.model, "modality_logits", None)
    if logits is None or predictor.config.voice_hinge == "off":
        raise SystemExit(f"{args.checkpoint} has no hinged voice: no neutral share to measure")
    dev = AudioScaleDevData.load(predictor, args.data_dir)
    ravdess = load_eval_corpus("ravdess", args.data_dir, "dev")
    text_only = {  # the same dev words without their neutral voice
        d: evaluate(predictor, d, [replace(x, acoustic=None) for x in samples])["wf1"]
        for d, samples in dev.with_neutral_speech.items()
    }
    rows: dict[str, dict[str, float]] = {}
    logits.share_by = args.share_by
    for share in args.shares:
        logits.neutral_share = share
        acted = audio_metrics("ravdess", predictor, ravdess)
        rows[f"{share:g}"] = {
            **dev.scores(predictor),
            "ravdess_fused_uar": acted["fused_uar"],
            "ravdess_fused_recall_neutral": acted["fused_recall_neutral"],
        }
    print(f"text only: MELD dev WF1 {text_only['meld']:.2f}, IEMOCAP {text_only['iemocap']:.2f}")
    print(
        "| share | MELD + neutral voice | IEMOCAP + neutral voice | RAVDESS audio UA | "
        "EMO-DB audio UA | RAVDESS + sentence UA | its neutral recall |"
    )
    print("|---|---|---|---|---|---|---|")
    for share, r in rows.items():
        words = f"{r['meld_neutral_speech_wf1']:.2f} | {r['iemocap_neutral_speech_wf1']:.2f}"
        print(
            f"| {share} | {words} | {r['ravdess_audio_uar']:.2f} | {r['emodb_audio_uar']:.2f}"
            f" | {r['ravdess_fused_uar']:.2f} | {r['ravdess_fused_recall_neutral']:.2f} |"
        )
    if args.json_out:
        payload = {
            "checkpoint": args.checkpoint,
            "share_by": args.share_by,
            "text_only": text_only,
            "shares": rows,
        }
        args.json_out.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
