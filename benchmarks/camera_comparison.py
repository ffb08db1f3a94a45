"""What turning the camera on changes: replay one video with a real face, camera on and off.

    python benchmarks/camera_comparison.py [--checkpoint default] [--json-out FILE]

The video is the only real face photo installed here (scikit-image's ``astronaut``: Eileen Collins,
smiling; FER-2013 reads it as happy) shown while espeak-ng speaks four sentences of different
emotional content, written to an mp4 (H.264 + AAC). ``emotrack replay --speed max`` runs on it
twice, with the camera and with ``--no-video``, plus once on a control video with no face (a
photo of coffee), where the camera is on but has nothing to show. Prints a Markdown table per
utterance: the label and P(label) without and with the camera, and the change in P(joy).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realtime.serialize import final_results  # noqa: E402
from unimse.synth import SynthesisError, speak, speech_bounds, write_video  # noqa: E402

SENTENCES = (
    "The meeting starts at ten tomorrow morning.",
    "I lost my keys again and I am really upset about it.",
    "That is wonderful news, thank you so much.",
    "I miss her every single day.",
)
VOICE = "en-us+m3"
PAUSE = np.zeros(24_000, np.float32)  # 1.5 s between sentences


def conversation_audio() -> np.ndarray:
    parts = [PAUSE]
    for sentence in SENTENCES:
        speech = speak(sentence, VOICE)
        first, last = speech_bounds(speech)
        parts += [speech[first:last], PAUSE]
    return np.concatenate([*parts, PAUSE])


def replay(media: Path, out: Path, checkpoint: str, *extra: str) -> list[dict[str, Any]]:
    command = [sys.executable, "-m", "realtime.cli", "-q", "replay", str(media), "--speed", "max"]
    command += ["--sink", "jsonl", "--output", str(out), "--checkpoint", checkpoint, *extra]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"replay of {media.name} failed: {done.stderr.strip().splitlines()[-1:]}")
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return final_results(lines)  # one per utterance: its last version


def table(runs: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        "| utterance (ASR) | camera off | camera on | ΔP(joy) | no-face control "
        "| modalities (on) |",
        "|---|---|---|---:|---|---|",
    ]

    def label(r: dict[str, Any]) -> str:
        return f"{r['emotion']} {r['emotion_probs'][r['emotion']]:.2f}"

    rows = zip(runs["camera_off"], runs["camera_on"], runs["no_face"], strict=False)
    for off, on, control in rows:
        delta = on["emotion_probs"]["joy"] - off["emotion_probs"]["joy"]
        modalities = "+".join(on["modalities"])
        lines.append(
            f"| {off['text']} | {label(off)} | {label(on)} | {delta:+.2f} | {label(control)} "
            f"| {modalities} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    try:
        from skimage import data
    except ImportError:
        raise SystemExit(
            "needs scikit-image (pip install -e '.[dev]') for the real face photo"
        ) from None
    try:
        audio = conversation_audio()
    except SynthesisError as exc:
        raise SystemExit(f"espeak-ng: {exc}") from exc
    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    no_face = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        movie = write_video(folder / "face.mp4", face, audio)
        control = write_video(folder / "coffee.mp4", no_face, audio)
        runs = {
            "camera_on": replay(movie, folder / "on.jsonl", args.checkpoint),
            "camera_off": replay(movie, folder / "off.jsonl", args.checkpoint, "--no-video"),
            "no_face": replay(control, folder / "control.jsonl", args.checkpoint),
        }
    counts = {name: len(results) for name, results in runs.items()}
    if len(set(counts.values())) != 1:
        print(f"warning: different utterance counts {counts}", file=sys.stderr)
    print(table(runs))
    if args.json_out:
        args.json_out.write_text(json.dumps(runs, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
