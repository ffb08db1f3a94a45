"""What batching Whisper across sessions costs and saves: ``Transcriber.transcribe_batch``.

The 10 turns of ``emotrack bench latency``'s script, each spoken in two espeak-ng voices (20
utterances of 0.7-6.2 s, all in the 10 s encoder window), are transcribed in batches of 1, 2, 4,
8 and 20 on one loaded tiny.en; for each batch size: seconds per utterance (median of
``--repeats`` rounds) and whether every transcript and encoder state equals the utterance's alone.

    OMP_NUM_THREADS=1 python benchmarks/asr_batch.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from realtime.asr import Transcriber, TranscriptionResult
from realtime.bench import BENCH_TURNS
from realtime.config import AsrOptions
from unimse.synth import speak

VOICES = ("en-us+m3", "en-gb+f2")


def same(a: TranscriptionResult, b: TranscriptionResult) -> bool:
    states = (a.states is None and b.states is None) or (
        a.states is not None and b.states is not None and np.array_equal(a.states, b.states)
    )
    return (a.text, a.language, a.window) == (b.text, b.language, b.window) and states


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="Whisper CPU threads")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="1,2,4,8,20")
    args = parser.parse_args()
    audios = [speak(line.text, voice) for line in BENCH_TURNS for voice in VOICES]
    transcriber = Transcriber.load(AsrOptions(model=args.model, cpu_threads=args.threads))
    alone = [transcriber.transcribe(audio) for audio in audios]
    print(
        f"{len(audios)} utterances, {args.model}, {args.threads} thread(s), {args.repeats} rounds"
    )
    print(f"{'batch':>5} {'s/utt':>7} {'vs 1':>6} {'same as alone':>13}")
    base = None
    for size in (int(s) for s in args.sizes.split(",")):
        rounds, identical = [], True
        for _ in range(args.repeats):
            started = time.perf_counter()
            results: list[TranscriptionResult] = []
            for i in range(0, len(audios), size):
                results += transcriber.transcribe_batch(audios[i : i + size])
            rounds.append((time.perf_counter() - started) / len(audios))
            identical &= all(same(r, a) for r, a in zip(results, alone, strict=True))
        per = statistics.median(rounds)
        base = base or per
        print(f"{size:>5} {per:>7.4f} {per / base:>6.2f} {'yes' if identical else 'NO':>13}")


if __name__ == "__main__":
    main()
