"""Echo on a live call: how often the microphone's echo of the remote side is caught, and how often
the local speaker's own speech is lost with it.

Builds two-channel calls (channel 0 = microphone, channel 1 = remote) from espeak-ng speech: the
remote voice says its lines; the local voice answers in the gaps, and once per call starts
talking while the remote one still speaks (double talk). The microphone hears the local voice plus
the remote speech through a simulated room (direct path + exponentially decaying noise tail of
reverberation time RT60, after a speaker-to-microphone delay, scaled by the echo gain) and a
little noise. Both channels go through the real VAD (``SegmentationStage``) and the echo stages
(``ReferenceTapStage`` before, ``EchoFilterStage`` after). Each microphone utterance is labelled
by what it holds (echo only, local only, local + echo) from the clean signals.

    python benchmarks/echo.py [--threshold 0.72] [--set dev|test] [--reference-lag S --max-lag S]

``--reference-lag``: the remote channel is captured that much later than the microphone (sound
servers buffer a monitor source and a microphone differently); ``--max-lag``: how much lag the
filter searches for beyond its 0.15 s slack (``EchoOptions.max_lag``).

``dev`` (the conditions the threshold was chosen on) and ``test`` use different sentences, voices
and seeds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import fftconvolve

from realtime.channels import Channel, Policy
from realtime.config import VadOptions
from realtime.echo import EchoFilterStage, EchoOptions, ReferenceAudio, ReferenceTapStage
from realtime.messages import SAMPLE_RATE, AudioChunk, EndOfStream, Utterance
from realtime.stage import Stage
from realtime.vad import SegmentationStage
from unimse.synth import speak

SETS = {
    "dev": {
        "voices": ("en-us+m3", "en-us+f3"),
        "seed": 1,
        "remote": (
            "I was hoping we could move the meeting to Thursday afternoon instead.",
            "Great, and please bring the quarterly numbers with you.",
            "The client called again this morning about the delivery dates.",
        ),
        "local": (
            "Sure, that works for me, let me check my calendar first.",
            "No problem at all, I will have them ready by then.",
            "Okay, I will write to them before lunch today.",
        ),
    },
    "test": {
        "voices": ("en-gb+m1", "en-us+f2"),
        "seed": 2,
        "remote": (
            "Did you manage to read the report I sent you yesterday evening?",
            "We should probably ask the whole team what they think about it.",
            "I am worried that the budget will not be approved this quarter.",
        ),
        "local": (
            "Yes, I read most of it on the train this morning.",
            "That sounds like a good idea, let us do that on Monday.",
            "I understand, we can look for savings somewhere else.",
        ),
    },
}
GAINS = (0.1, 0.3, 0.6)
RT60S = (0.2, 0.5)
DELAYS = (0.02, 0.12)


@dataclass
class Call:
    mic: np.ndarray
    remote: np.ndarray
    local_clean: np.ndarray
    echo_clean: np.ndarray


def room(rt60: float, delay: float, rng: np.random.Generator) -> np.ndarray:
    n = int(0.5 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * 0.25
    tail[: int(0.003 * SAMPLE_RATE)] = 0.0
    tail[0] = 1.0
    return np.concatenate([np.zeros(int(delay * SAMPLE_RATE)), tail])


def build_call(lines: dict[str, Any], gain: float, rt60: float, delay: float) -> Call:
    rng = np.random.default_rng(lines["seed"])
    remote_voice, local_voice = lines["voices"]
    remote_parts = [speak(text, remote_voice) for text in lines["remote"]]
    local_parts = [speak(text, local_voice) for text in lines["local"]]
    total = int((sum(map(len, remote_parts + local_parts)) / SAMPLE_RATE + 12) * SAMPLE_RATE)
    remote = np.zeros(total, np.float32)
    local = np.zeros(total, np.float32)
    at = 0.5
    for index, (said, answer) in enumerate(zip(remote_parts, local_parts, strict=True)):
        start = int(at * SAMPLE_RATE)
        remote[start : start + len(said)] += said
        at += len(said) / SAMPLE_RATE + 1.0
        if index == len(remote_parts) - 1:  # the last answer starts while the remote talks
            at -= 1.0 + 0.6 * len(said) / SAMPLE_RATE
        start = int(at * SAMPLE_RATE)
        local[start : start + len(answer)] += answer
        at = max(at + len(answer) / SAMPLE_RATE, start / SAMPLE_RATE) + 1.0
    echo = (fftconvolve(remote, room(rt60, delay, rng))[:total] * gain).astype(np.float32)
    noise = (rng.standard_normal(total) * 0.002).astype(np.float32)
    return Call(local + echo + noise, remote, local, echo)


def chunks(call: Call, reference_lag: float = 0.0) -> list[AudioChunk]:
    """Both channels in 20 ms chunks; the remote one captured ``reference_lag`` s late."""
    block = SAMPLE_RATE // 50
    out = []
    seq = itertools.count()
    late = np.zeros(round(reference_lag * SAMPLE_RATE), np.float32)
    remote = np.concatenate([late, call.remote])[: len(call.remote)]
    for start in range(0, len(call.mic), block):
        for channel, audio in enumerate((call.mic, remote)):
            out.append(
                AudioChunk(
                    "echo",
                    next(seq),
                    0.0,
                    samples=audio[start : start + block],
                    start=start / SAMPLE_RATE,
                    channel=channel,
                )
            )
    return out


async def run_stages(stages: list[Stage], items: list[object]) -> list[object]:
    inboxes: list[Channel[Any]] = [
        Channel(f"in{i}", 1_000_000, Policy.BLOCK) for i in range(len(stages) + 1)
    ]
    for stage, into, out in zip(stages, inboxes, inboxes[1:], strict=False):
        stage.link(into, out)
    for item in items:
        inboxes[0].put_nowait(item)
    await asyncio.gather(*(stage.run() for stage in stages))
    last = inboxes[-1]
    return [last.get_nowait() for _ in range(last.qsize())]


class CapturedSoFar(ReferenceAudio):
    """The reference as a live filter sees it: nothing after ``now`` (a live filter checks an
    utterance when the VAD closes it, the hangover after its last voiced frame)."""

    now = math.inf

    def span(self, start: float, end: float) -> np.ndarray:
        out = super().span(start, end)
        if end > self.now:
            out[max(0, round((self.now - start) * SAMPLE_RATE)) :] = 0.0
        return out


async def filter_as_live(
    echo: EchoFilterStage, reference: CapturedSoFar, utterances: list[Utterance]
) -> list[Utterance]:
    """The utterances the echo filter keeps, each checked against the reference captured by
    the time the VAD closed it."""
    kept: Channel[Any] = Channel("kept", 1_000_000, Policy.BLOCK)
    echo.link(Channel("in", 1, Policy.BLOCK), kept)
    for utterance in utterances:
        reference.now = utterance.end + VadOptions().hangover
        await echo.process(utterance)
    return [kept.get_nowait() for _ in range(kept.qsize())]


def kind(call: Call, utterance: Utterance) -> str:
    lo = int(utterance.start * SAMPLE_RATE)
    hi = lo + len(utterance.audio)
    local = float(np.sqrt(np.mean(call.local_clean[lo:hi] ** 2)))
    echo = float(np.sqrt(np.mean(call.echo_clean[lo:hi] ** 2)))
    if local < 0.003:
        return "echo only"
    return "local + echo" if echo > 0.1 * local else "local only"


def measure(call: Call, options: EchoOptions, reference_lag: float) -> Counter[tuple[str, str]]:
    """Segment both channels, then pass the utterances through the echo filter."""
    reference = CapturedSoFar(keep=len(call.mic) / SAMPLE_RATE + 1)
    segmentation = SegmentationStage(
        VadOptions(), session="echo", speaker_of=lambda channel: ("you", "them")[channel]
    )
    end = EndOfStream("echo", 0, 0.0)
    segmented = asyncio.run(
        run_stages(
            [ReferenceTapStage(reference), segmentation], [*chunks(call, reference_lag), end]
        )
    )
    utterances = [u for u in segmented if isinstance(u, Utterance) and u.channel == 0]
    echo = EchoFilterStage(reference, VadOptions().pre_roll, options=options)
    kept = asyncio.run(filter_as_live(echo, reference, utterances))
    kept_seqs = {u.seq for u in kept}
    counts: Counter[tuple[str, str]] = Counter()
    for utterance in utterances:
        verdict = "kept" if utterance.seq in kept_seqs else "dropped"
        counts[(kind(call, utterance), verdict)] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=EchoOptions().threshold)
    parser.add_argument("--set", choices=sorted(SETS), default="dev")
    parser.add_argument(
        "--max-lag", type=float, default=EchoOptions().max_lag, help="EchoOptions.max_lag"
    )
    parser.add_argument(
        "--reference-lag",
        type=float,
        default=0.0,
        help="the remote channel is captured this many seconds after the microphone",
    )
    args = parser.parse_args()
    options = EchoOptions(threshold=args.threshold, max_lag=args.max_lag)
    total: Counter[tuple[str, str]] = Counter()
    print(f"{'gain':>5} {'RT60':>5} {'delay':>6}  microphone utterances (kind: kept/dropped)")
    for gain, rt60, delay in itertools.product(GAINS, RT60S, DELAYS):
        counts = measure(build_call(SETS[args.set], gain, rt60, delay), options, args.reference_lag)
        total += counts
        kinds = sorted({k for k, _ in counts})
        shown = ", ".join(f"{k}: {counts[(k, 'kept')]}/{counts[(k, 'dropped')]}" for k in kinds)
        print(f"{gain:>5} {rt60:>5} {delay:>6}  {shown}")
    print(
        f"all ({args.set}, threshold {args.threshold}, max lag {args.max_lag}, reference "
        f"{args.reference_lag} s late):"
    )
    for name in ("echo only", "local only", "local + echo"):
        kept, dropped = total[(name, "kept")], total[(name, "dropped")]
        share = dropped / max(1, kept + dropped)
        print(f"  {name:<13} {kept + dropped:>3} utterances, dropped {dropped} ({share:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
