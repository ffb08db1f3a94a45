"""Test doubles and data helpers for the realtime tests (imported as ``rt_support``)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from realtime.channels import Channel, Policy
from realtime.stage import Stage
from unimse.config import FeatureSpec, UniMSEConfig
from unimse.inputs import ModelInput
from unimse.labels import MELD_EMOTIONS, POLARITIES
from unimse.prediction import Prediction

if TYPE_CHECKING:
    from unimse.synth import Conversation


async def run_stages(
    stages: Sequence[Stage],
    inbox: Channel,
    *,
    timeout: float = 10,
) -> list[Any]:
    """Link ``stages`` in order after ``inbox``, run them to the end of the stream, return the
    messages that came out of the last one."""
    inboxes = [inbox, *(Channel(f"in{i}", 100_000, Policy.BLOCK) for i in range(len(stages)))]
    for stage, into, out in zip(stages, inboxes, inboxes[1:], strict=False):
        stage.link(into, out)
    await asyncio.wait_for(asyncio.gather(*(stage.run() for stage in stages)), timeout)
    return [inboxes[-1].get_nowait() for _ in range(inboxes[-1].qsize())]


KEYWORDS = {"angry": "anger", "wonderful": "joy", "great": "joy", "sorry": "sadness"}


class FakePredictor:
    """Stands in for ``unimse.inference.EmotionPredictor``: keyword emotions, records its inputs."""

    model_version = "fake-1"

    def __init__(
        self,
        *,
        acoustic_dim: int | None = None,
        visual_dim: int | None = None,
        context_turns: int = 2,
        gate: threading.Event | None = None,
    ) -> None:
        self.config = replace(
            UniMSEConfig(context_turns=context_turns),
            acoustic=FeatureSpec("fake-audio", acoustic_dim) if acoustic_dim else None,
            visual=FeatureSpec("fake-video", visual_dim) if visual_dim else None,
        )
        self.batches: list[list[ModelInput]] = []
        self.gate = gate  # when set, predict() waits for it (to build up a backlog)

    def voice_expressiveness(self) -> None:
        return None

    def voice_leads(self, inputs: Sequence[ModelInput]) -> list[float]:
        return [0.0] * len(inputs)

    def voice_baselines(self) -> None:
        return None

    def predict(self, inputs: Sequence[ModelInput]) -> list[Prediction]:
        if self.gate is not None:
            self.gate.wait(timeout=30)
        self.batches.append(list(inputs))
        return [self._one(item) for item in inputs]

    def _one(self, item: ModelInput) -> Prediction:
        words = re.findall(r"[a-z]+", item.text.lower())
        emotion = next((KEYWORDS[w] for w in words if w in KEYWORDS), "neutral")
        emotion_probs = {e: (0.7 if e == emotion else 0.3 / 6) for e in MELD_EMOTIONS}
        polarity = {"joy": "positive", "neutral": "neutral"}.get(emotion, "negative")
        polarity_probs = {p: (0.8 if p == polarity else 0.1) for p in POLARITIES}
        used = ["text"] if item.text else []
        if item.acoustic is not None:
            used.append("audio")
        if item.visual is not None:
            used.append("video")
        return Prediction(
            emotion=emotion,
            emotion_probs=emotion_probs,
            iemocap_emotion="neutral",
            iemocap_probs={
                "happy": 0.1,
                "sad": 0.1,
                "neutral": 0.5,
                "angry": 0.1,
                "excited": 0.1,
                "frustrated": 0.1,
            },
            polarity=polarity,
            polarity_probs=polarity_probs,
            intensity={"positive": 1.5, "negative": -1.5}.get(polarity, 0.0),
            modalities=tuple(used),
        )


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / reference length, on lower-cased words (no punctuation)."""
    ref = normalise(reference).split()
    hyp = normalise(hypothesis).split()
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1] / max(1, len(ref))


NUMBERS = {"3": "three", "2": "two", "1": "one", "4": "four", "5": "five"}


def normalise(text: str) -> str:
    words = re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))
    return " ".join(NUMBERS.get(w, w) for w in words)


# --- synthetic conversations and the command line ---------------------------------------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Five turns, two speakers, known pauses (all longer than the default 0.6 s hangover).
SCRIPT = """\
Ana: Good morning, did you sleep well?
[pause 1.2]
Ben: Not really, the neighbours were loud all night.
[pause 1.4]
Ana: Oh no, I am sorry to hear that.
[pause 1.0]
Ben: It is fine. I will have a strong coffee.
[pause 1.3]
Ana: That sounds like a wonderful plan.
"""


def make_conversation(path: Path, *, stereo: bool = False) -> Conversation:
    """Synthesise :data:`SCRIPT` with espeak-ng into ``path``; returns the Conversation."""
    from unimse.synth import parse_script, synthesize, write_audio

    conversation = synthesize(parse_script(SCRIPT), stereo=stereo)
    write_audio(path, conversation.audio)
    return conversation


def emotrack_command(*args: str) -> list[str]:
    """The ``emotrack`` console script's command line (``python -m realtime`` is the same)."""
    return [sys.executable, "-m", "realtime", *args]


def emotrack_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_emotrack(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        emotrack_command(*args),
        cwd=REPO,
        env=emotrack_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def emotrack_in_process(*args: str) -> int:
    """``emotrack ARGS`` run in this process (``realtime.cli.main``): its exit code, whether the
    command returned it or argparse exited with it."""
    from realtime.cli import main

    try:
        return main(list(args))
    except SystemExit as exit_:
        return int(exit_.code or 0)


def replay_to_jsonl(
    media: Path, checkpoint: Path, out: Path, *extra: str, timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """``emotrack replay MEDIA --speed max --sink jsonl --output OUT --checkpoint CKPT *extra``;
    asserts it succeeded and returns the process and the JSON lines it wrote."""
    import json

    done = run_emotrack(
        "replay",
        str(media),
        "--speed",
        "max",
        "--sink",
        "jsonl",
        "--output",
        str(out),
        "--checkpoint",
        str(checkpoint),
        *extra,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done, [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
