"""Who spoke when, on mono mixes of real voices: speaker embedding + online assignment.

Builds mono "conversations" from RAVDESS actors (4 speakers: 2 male, 2 female; odd actor numbers
are male), 25 clips each (a seeded random choice of the actor's 60), turns in random order with
0.8-1.5 s of silence between them; each clip is cut to its speech (energy) and keeps 0.3 s on each
side, like the VAD's pre-roll and padding. EMO-DB conversations (speakers 03 10 11 12 male, 08 09
13 female; 2.0 s clips) are built the same way. Every utterance (known boundaries, no VAD) goes
through the speaker model and :class:`~realtime.speakers.assign.OnlineSpeakerAssigner`.

Reported per conversation set: attribution accuracy (best one-to-one mapping of labels to
speakers, ``scipy.optimize.linear_sum_assignment``) of the speakers as emitted and as held after
all revisions, the number of speakers found, revisions, and the cost per utterance (median
embedding ms, median assignment ms, on one torch thread). Also the bundled sample
(``realtime/samples/conversation.flac``, one voice per channel) mixed to mono, its utterance
boundaries from each channel's energy.

    .venv/bin/python benchmarks/speaker_assign.py --sets dev            # RAVDESS 01-16 + EMO-DB
    .venv/bin/python benchmarks/speaker_assign.py --sets dev --sweep    # thresholds on dev only
    .venv/bin/python benchmarks/speaker_assign.py --sets sample
    .venv/bin/python benchmarks/speaker_assign.py --sets test           # actors 17-20: once
    .venv/bin/python benchmarks/speaker_assign.py --model resemblyzer   # the other candidate

``--model resemblyzer`` needs ``pip install --no-deps resemblyzer==0.1.4`` (its own dependencies,
librosa and webrtcvad, are there already; the ``typing`` and ``webrtcvad`` pins it asks for would
shadow the standard library and replace ``webrtcvad-wheels``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from realtime.speakers.assign import (  # noqa: E402
    OnlineSpeakerAssigner,
    SpeakerOptions,
    VoicePrint,
)
from realtime.speakers.embedding import CamPlusPlusEmbedder, SpeakerEmbedder  # noqa: E402
from realtime.speakers.enrol import read_clip  # noqa: E402
from train.datadir import DEFAULT_DATA_DIR  # noqa: E402

RATE = 16_000
PAD_S = 0.3  # kept on each side of the speech (the VAD's pre-roll and trailing padding)
PAUSES_S = (0.8, 1.5)
CLIPS_PER_SPEAKER = 25
SAMPLE = REPO / "realtime" / "samples" / "conversation.flac"

# Four speakers each, two male and two female. RAVDESS 17-20 are the test actors: --sets test.
RAVDESS_DEV = [("13", "14", "15", "16"), ("01", "02", "03", "04"), ("05", "06", "07", "08"),
               ("09", "10", "11", "12")]  # fmt: skip
RAVDESS_TEST = [("17", "18", "19", "20")]
EMODB_DEV = [("03", "10", "08", "09"), ("11", "12", "13", "08")]
EMODB_MALE = ("03", "10", "11", "12")


# --- models -----------------------------------------------------------------------------------


class ResemblyzerEmbedder:
    """The other candidate: resemblyzer's GE2E encoder (256-d), on its own preprocessing."""

    name = "resemblyzer"
    dim = 256

    def __init__(self) -> None:
        self._encoder = None

    def load(self) -> None:
        try:
            from resemblyzer import VoiceEncoder
        except ImportError as error:
            raise SystemExit(f"{error}: pip install --no-deps resemblyzer==0.1.4") from error
        self._encoder = VoiceEncoder("cpu", verbose=False)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        from resemblyzer import preprocess_wav

        if self._encoder is None:
            self.load()
        assert self._encoder is not None
        wav = preprocess_wav(np.asarray(audio, dtype=np.float32), RATE)
        if len(wav) < RATE // 4:  # its VAD removed nearly everything: use the audio as it is
            wav = np.asarray(audio, dtype=np.float32)
        return np.asarray(self._encoder.embed_utterance(wav), dtype=np.float32)


def make_model(name: str) -> SpeakerEmbedder:
    return ResemblyzerEmbedder() if name == "resemblyzer" else CamPlusPlusEmbedder()


# --- conversations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    speaker: str
    key: str  # the clip it came from (voice prints are cached by clip)
    start: int  # sample offsets of the utterance (speech plus padding) in the mix
    end: int


@dataclass
class Conversation:
    name: str
    audio: np.ndarray = field(repr=False)
    turns: list[Turn]


def speech_span(audio: np.ndarray) -> tuple[int, int]:
    """First and last sample of the 10 ms windows within 20 dB of the loud ones (95th pct)."""
    size = RATE // 100
    count = len(audio) // size
    rms = np.sqrt(np.mean(audio[: count * size].reshape(count, size) ** 2, axis=1))
    loud = np.flatnonzero(rms > 0.1 * np.percentile(rms, 95))
    if len(loud) == 0:
        return 0, len(audio)
    return int(loud[0] * size), int((loud[-1] + 1) * size)


def padded_speech(audio: np.ndarray) -> np.ndarray:
    first, last = speech_span(audio)
    pad = int(PAD_S * RATE)
    return audio[max(0, first - pad) : min(len(audio), last + pad)]


def clips_of(data: Path, corpus: str, speaker: str) -> list[Path]:
    if corpus == "ravdess":
        return sorted((data / "ravdess" / f"Actor_{speaker}").glob("*.flac"))
    return sorted(p for p in (data / "emodb").glob("*.wav") if p.name[:2] == speaker)


def build(
    data: Path, corpus: str, speakers: Sequence[str], seed: int, clips: int = CLIPS_PER_SPEAKER
) -> Conversation:
    """A mono mix: ``clips`` clips of each speaker, shuffled, seeded pauses."""
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, Path]] = []
    for speaker in speakers:
        files = clips_of(data, corpus, speaker)
        picks = rng.choice(len(files), min(clips, len(files)), replace=False)
        chosen += [(speaker, files[i]) for i in picks]
    order = rng.permutation(len(chosen))
    pieces: list[np.ndarray] = []
    turns: list[Turn] = []
    cursor = 0
    for index in order:
        speaker, path = chosen[index]
        clip = padded_speech(read_clip(path))
        pause = int(rng.uniform(*PAUSES_S) * RATE) - int(2 * PAD_S * RATE)  # speech to speech
        if turns:
            pieces.append(np.zeros(pause, np.float32))
            cursor += pause
        pieces.append(clip)
        turns.append(Turn(speaker, str(path), cursor, cursor + len(clip)))
        cursor += len(clip)
    name = f"{corpus} {'-'.join(speakers)} seed {seed}"
    return Conversation(name, np.concatenate(pieces), turns)


def sample_conversation() -> Conversation:
    """The bundled sample mixed to mono; turns from each channel's energy (gaps < 0.5 s kept)."""
    import soundfile as sf

    stereo, rate = sf.read(str(SAMPLE), dtype="float32", always_2d=True)
    assert rate == RATE
    size = RATE // 100
    pad = int(PAD_S * RATE)
    spans: list[tuple[int, int, int]] = []
    for channel in range(stereo.shape[1]):
        x = stereo[:, channel]
        count = len(x) // size
        loud = np.flatnonzero(
            np.sqrt(np.mean(x[: count * size].reshape(count, size) ** 2, axis=1)) > 0.01
        )
        runs = np.split(loud, np.flatnonzero(np.diff(loud) > 50) + 1)
        spans += [(int(r[0]) * size, (int(r[-1]) + 1) * size, channel) for r in runs if len(r)]
    mono = stereo.mean(axis=1)
    turns = [
        Turn(f"channel {c}", f"sample {s}", max(0, s - pad), min(len(mono), e + pad))
        for s, e, c in sorted(spans)
    ]
    return Conversation("bundled sample (mono mix)", mono, turns)


# --- running ----------------------------------------------------------------------------------


def accuracy(truth: Sequence[str], labels: Sequence[str]) -> float:
    """Share of utterances whose label maps to their speaker, best one-to-one mapping."""
    from scipy.optimize import linear_sum_assignment

    speakers, names = sorted(set(truth)), sorted(set(labels))
    counts = np.zeros((len(speakers), len(names)))
    for t, label in zip(truth, labels, strict=True):
        counts[speakers.index(t), names.index(label)] += 1
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(truth))


@dataclass
class Outcome:
    emitted: float
    final: float
    found: int
    revisions: int
    assign_ms: list[float]


def embed_turns(
    model: SpeakerEmbedder, conversation: Conversation, cache: dict[str, np.ndarray],
    embed_ms: list[float],
) -> list[np.ndarray]:  # fmt: skip
    """Voice print per turn, cut from the mix; the same clip is embedded once per run."""
    out = []
    for turn in conversation.turns:
        if turn.key not in cache:
            audio = conversation.audio[turn.start : turn.end]
            started = time.perf_counter()
            cache[turn.key] = model.embed(audio)
            embed_ms.append(1000 * (time.perf_counter() - started))
        out.append(cache[turn.key])
    return out


def assign(
    conversation: Conversation, prints: list[np.ndarray], options: SpeakerOptions
) -> Outcome:
    assigner = OnlineSpeakerAssigner(options)
    emitted, revisions, assign_ms = [], 0, []
    for index, (turn, vector) in enumerate(zip(conversation.turns, prints, strict=True)):
        started = time.perf_counter()
        result = assigner.assign(VoicePrint(index, vector, (turn.end - turn.start) / RATE))
        assign_ms.append(1000 * (time.perf_counter() - started))
        emitted.append(result.speaker)
        revisions += len(result.revisions)
    truth = [t.speaker for t in conversation.turns]
    labels = assigner.labels
    final = [labels[i] for i in range(len(truth))]
    return Outcome(
        accuracy(truth, emitted), accuracy(truth, final), len(assigner.speakers), revisions,
        assign_ms,
    )  # fmt: skip


def conversations(data: Path, which: str, seeds: int) -> dict[str, list[Conversation]]:
    """Conversation groups by name: dev (RAVDESS 01-16 by actor set, EMO-DB), test, sample."""
    groups: dict[str, list[Conversation]] = {}
    if which == "dev":
        for actors in RAVDESS_DEV:
            groups[f"RAVDESS {'-'.join(actors)}"] = [
                build(data, "ravdess", actors, seed) for seed in range(seeds)
            ]
        for speakers in EMODB_DEV:
            groups[f"EMO-DB {'-'.join(speakers)}"] = [
                build(data, "emodb", speakers, seed) for seed in range(seeds)
            ]
    elif which == "test":
        for actors in RAVDESS_TEST:
            groups[f"RAVDESS {'-'.join(actors)} (test)"] = [
                build(data, "ravdess", actors, seed) for seed in range(seeds)
            ]
    elif which == "sample":
        groups["bundled sample, mono"] = [sample_conversation()]
    return groups


def sweep_conversations(data: Path, seeds: int) -> dict[str, list[Conversation]]:
    """Dev conversations with 1, 2, 3 and 4 speakers (so that the count has to be found)."""
    rng = np.random.default_rng(12)
    ravdess = [f"{a:02d}" for a in range(1, 17)]
    emodb = ["03", "08", "09", "10", "11", "12", "13"]
    groups: dict[str, list[Conversation]] = {}
    for count in (1, 2, 3):
        for corpus, pool in (("ravdess", ravdess), ("emodb", emodb)):
            groups[f"{corpus} {count} speakers"] = [
                build(data, corpus, list(rng.choice(pool, count, replace=False)), seed)
                for seed in range(seeds)
            ]
    for name, group in conversations(data, "dev", seeds).items():
        corpus = {"RAVDESS": "ravdess", "EMO-DB": "emodb"}[name.split()[0]]
        groups.setdefault(f"{corpus} 4 speakers", []).extend(group)
    return groups


def summarise(name: str, outcomes: Iterable[Outcome]) -> dict[str, float | str]:
    items = list(outcomes)
    return {
        "set": name,
        "conversations": len(items),
        "emitted": float(np.mean([o.emitted for o in items])),
        "emitted_min": float(np.min([o.emitted for o in items])),
        "final": float(np.mean([o.final for o in items])),
        "final_min": float(np.min([o.final for o in items])),
        "speakers": float(np.mean([o.found for o in items])),
        "speakers_range": f"{min(o.found for o in items)}-{max(o.found for o in items)}",
        "revisions": float(np.mean([o.revisions for o in items])),
        "assign_ms": float(np.median([m for o in items for m in o.assign_ms])),
        "assign_ms_p95": float(np.percentile([m for o in items for m in o.assign_ms], 95)),
    }


def print_row(row: dict[str, float | str], extra: str = "") -> None:
    print(
        f"{row['set']:<34} {extra}emitted {100 * float(row['emitted']):5.1f} % "
        f"(min {100 * float(row['emitted_min']):5.1f})  final {100 * float(row['final']):5.1f} % "
        f"(min {100 * float(row['final_min']):5.1f})  speakers {float(row['speakers']):.2f} "
        f"[{row['speakers_range']}]  revisions {float(row['revisions']):5.1f}  "
        f"assign {float(row['assign_ms']):.2f} ms (p95 {float(row['assign_ms_p95']):.1f})",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / DEFAULT_DATA_DIR)
    parser.add_argument("--sets", choices=["dev", "test", "sample"], default="dev")
    parser.add_argument("--model", choices=["campplus", "resemblyzer"], default="campplus")
    parser.add_argument("--seeds", type=int, default=3, help="conversations per speaker set")
    parser.add_argument("--threshold", type=float, default=SpeakerOptions().threshold)
    parser.add_argument("--merge-threshold", type=float, default=SpeakerOptions().merge_threshold)
    parser.add_argument("--no-recluster", action="store_true", help="nearest speaker only")
    parser.add_argument("--sweep", action="store_true", help="thresholds x cap on dev sets")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    model = make_model(args.model)
    started = time.perf_counter()
    model.load()
    print(f"{args.model}: loaded in {time.perf_counter() - started:.1f} s", flush=True)
    noise = np.random.default_rng(0).normal(0, 0.05, RATE).astype(np.float32)
    model.embed(noise)  # warm-up (lazy imports, first-call allocations): not timed
    base = SpeakerOptions(
        threshold=args.threshold,
        merge_threshold=args.merge_threshold,
        recluster=not args.no_recluster,
    )
    if args.sweep:
        groups = sweep_conversations(args.data_dir, args.seeds)
    else:
        groups = conversations(args.data_dir, args.sets, args.seeds)
    cache: dict[str, np.ndarray] = {}
    embed_ms: list[float] = []
    prints = {
        name: [embed_turns(model, c, cache, embed_ms) for c in group]
        for name, group in groups.items()
    }
    print(
        f"{len(embed_ms)} voice prints: median {np.median(embed_ms):.0f} ms, "
        f"p95 {np.percentile(embed_ms, 95):.0f} ms per utterance "
        f"({args.threads} torch thread{'s' if args.threads > 1 else ''})",
        flush=True,
    )
    rows: list[dict[str, float | str]] = []
    if args.sweep:
        grid = [
            *itertools.product((0.4, 0.5, 0.6, 0.7), (0.75, 0.8, 0.85, 1.0), [False]),
            *itertools.product((0.4, 0.5, 0.6, 0.7), [base.merge_threshold], [True]),  # no merge
        ]
        for threshold, merge, capped in grid:
            results = []
            for name, group in groups.items():
                count = int(name.split()[1])
                options = replace(
                    base,
                    threshold=threshold,
                    merge_threshold=merge,
                    max_speakers=count if capped else None,
                )
                outcomes = [assign(c, p, options) for c, p in zip(group, prints[name], strict=True)]
                results.append(summarise(name, outcomes))
            cap = "n" if capped else "-"
            label = f"threshold {threshold:.2f} merge {merge:.2f} cap {cap}"
            mean = {k: float(np.mean([float(r[k]) for r in results])) for k in ("emitted", "final")}
            print(f"{label}: mean emitted {100 * mean['emitted']:.1f} %, final "
                  f"{100 * mean['final']:.1f} %", flush=True)  # fmt: skip
            for row in results:
                print_row(row, "  ")
                rows.append({**row, "threshold": threshold, "merge": merge, "capped": cap})
    else:
        for capped in (False, True):
            for name, group in groups.items():
                count = len({t.speaker for t in group[0].turns})
                options = replace(base, max_speakers=count if capped else None)
                outcomes = [assign(c, p, options) for c, p in zip(group, prints[name], strict=True)]
                row = summarise(name, outcomes)
                print_row(row, f"max {count} " if capped else "no cap ")
                rows.append({**row, "max_speakers": count if capped else 0})
    if args.json:
        args.json.write_text(json.dumps({"embed_ms": embed_ms, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
