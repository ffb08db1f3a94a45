"""Typed, immutable messages that flow between pipeline stages.

Every message carries the session id, a per-kind sequence number and a monotonic timestamp
(``time.monotonic()`` seconds, or the replay clock's equivalent). Stream times (``start``/``end``)
are seconds from the start of the session's audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from unimse.inputs import ModelInput
from unimse.prediction import Prediction

SAMPLE_RATE = 16_000  # every AudioChunk is 16 kHz mono float32 in [-1, 1]


@dataclass(frozen=True)
class Message:
    session: str
    seq: int
    monotonic: float


@dataclass(frozen=True)
class AudioChunk(Message):
    """PCM from one channel. ``start`` is the stream time of its first sample."""

    samples: np.ndarray = field(compare=False, repr=False)
    start: float = 0.0
    channel: int = 0

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True)
class VideoFrame(Message):
    """One BGR uint8 frame (OpenCV layout) at stream time ``time``."""

    image: np.ndarray = field(compare=False, repr=False)
    time: float = 0.0


@dataclass(frozen=True)
class Utterance(Message):
    """A span of speech cut by the VAD, with the frames seen while it was spoken."""

    audio: np.ndarray = field(compare=False, repr=False)
    start: float = 0.0
    end: float = 0.0
    speaker: str = "speaker"
    channel: int = 0
    frames: tuple[VideoFrame, ...] = field(default=(), compare=False, repr=False)
    # Monotonic time at which the VAD closed the utterance (end of hangover).
    segmented_at: float = 0.0
    # Monotonic time at which the audio holding the last voiced frame arrived (end of speech).
    speech_ended_at: float = 0.0
    # Speculative close (``vad.speculative``): closed after a short silence, so the speaker may
    # go on; then a later Utterance with the same ``seq`` and a higher ``revision`` replaces it.
    speculative: bool = False
    revision: int = 0  # 0: the first version of utterance ``seq``; n: its n-th replacement


@dataclass(frozen=True)
class Transcript(Message):
    utterance: Utterance
    text: str
    language: str = "en"
    transcribed_at: float = 0.0
    # The ASR encoder's states for the utterance's frames, (T, d) float32, and the Whisper model
    # that computed them: the emotion model reuses them when its checkpoint reads that model.
    encoder_states: np.ndarray | None = field(default=None, compare=False, repr=False)
    encoder_model: str = ""


@dataclass(frozen=True)
class PendingUtterance:
    """A transcribed utterance waiting for the model: its transcript and text/context input."""

    transcript: Transcript
    model_input: ModelInput = field(repr=False)


@dataclass(frozen=True)
class EmotionResult(Message):
    """What the sinks publish for one utterance: where it was, what was said, what the model saw."""

    utterance_seq: int
    speaker: str
    start: float
    end: float
    text: str
    prediction: Prediction
    latency: dict[str, float]  # seconds per stage: vad, asr, inference, total
    model_version: str
    # Wall-clock (UTC) time the result was made: every sink publishes this one timestamp.
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC), compare=False)
    # As its utterance's: speculative (an UtteranceConfirmed or a revision follows) and which
    # version of utterance ``utterance_seq`` this is (n > 0 replaces the earlier results).
    speculative: bool = False
    revision: int = 0
    language: str = ""  # the transcript's language ("": not known)
    # A revision made by reading the utterance again beside more of its speaker's voice
    # (:mod:`realtime.reread`), not by more speech: the words, times and latency are the first's.
    reread: bool = False

    @property
    def emotion(self) -> str:
        return self.prediction.emotion

    @property
    def emotion_probs(self) -> dict[str, float]:
        return self.prediction.emotion_probs

    @property
    def polarity(self) -> str:
        return self.prediction.polarity

    @property
    def polarity_probs(self) -> dict[str, float]:
        return self.prediction.polarity_probs

    @property
    def intensity(self) -> float:
        return self.prediction.intensity

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.prediction.modalities


@dataclass(frozen=True)
class OpenSpeech(Message):
    """The utterance still being spoken on ``channel``: its audio so far (VAD -> partial stage).
    ``start`` is its speech start; ``end`` the stream time of the audio heard so far."""

    audio: np.ndarray = field(compare=False, repr=False)
    start: float = 0.0
    end: float = 0.0
    speaker: str = "speaker"
    channel: int = 0


@dataclass(frozen=True)
class PartialResult(Message):
    """An interim result while someone is still speaking: the emotion of the audio so far, not
    final. The final :class:`EmotionResult` of the utterance follows (same ``channel``, same
    ``start``). ``latency``: seconds from the audio heard to this result. ``text``: the words so
    far with ``partial.text`` (``--partial-text``), else empty."""

    speaker: str
    channel: int
    start: float
    end: float
    prediction: Prediction
    model_version: str
    latency: float = 0.0
    text: str = ""
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC), compare=False)


@dataclass(frozen=True)
class SpeakerRevision(Message):
    """Utterance ``utterance_seq`` (an :class:`Utterance` ``seq``) is now spoken by ``new``, no
    longer by ``old``: online diarisation regrouped past utterances once it heard more (see
    :mod:`realtime.speakers`). ``seq`` numbers the revisions of the session. Sinks re-label what
    they already published (:meth:`realtime.sinks.base.Sink.revise`)."""

    utterance_seq: int
    old: str
    new: str
    channel: int = 0
    # Wall-clock (UTC) time the revision was made: every sink publishes this one timestamp.
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC), compare=False)


@dataclass(frozen=True)
class UtteranceConfirmed(Message):
    """The speculative result of utterance ``utterance_seq`` (its version ``revision``) is final:
    the whole hangover passed with no more speech (``vad.speculative``). ``seq`` numbers the
    confirmations of the session. Sinks mark the result final (:meth:`Sink.confirm`)."""

    utterance_seq: int
    revision: int = 0
    channel: int = 0
    # Wall-clock (UTC) time the confirmation was made: every sink publishes this one timestamp.
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC), compare=False)


@dataclass(frozen=True)
class EndOfStream(Message):
    reason: str = "eof"


@dataclass(frozen=True)
class StatsSnapshot:
    """Pipeline counters handed to sinks (the dashboard shows them; the summary prints them)."""

    elapsed: float  # seconds since the session started (stream clock)
    utterances: int
    results: int
    dropped: dict[str, int]  # per channel name: items dropped by its policy
    queue_depths: dict[str, int]
    latency_p50: dict[str, float]  # per stage, seconds, over the session so far
    ended: str | None = None  # once the input has ended: "eof", "stopped" or "error: ..."
