"""Speech segmentation: a frame analyser that answers "is this frame speech", and a state machine.

As in pipecat, the analyser knows nothing of utterances (:class:`WebRtcVadAnalyzer` wraps
webrtcvad) while :class:`VadSegmenter` owns the quiet/speaking state: an onset of consecutive voiced
frames opens an utterance (with pre-roll audio before it), a hangover of unvoiced frames closes it,
too-short ones are discarded and long monologues are split, at the latest short pause when there is
one. Segments carry true speech start and end stream times (pre-roll and trailing padding are in
the audio, not in the times). :class:`SegmentationStage` runs one segmenter per audio channel in the
pipeline.

Speculative close (``vad.speculative``): after ``speculative_silence`` of silence (shorter than the
hangover) the segmenter already hands on the utterance so far, marked speculative, so its result
is computed while the hangover runs. If the hangover then passes with no more speech, it hands on
a :class:`SpeechConfirmation` instead of the same utterance again; if the speaker goes on, the
utterance stays open and, when it closes, is handed on whole as a revision (``revision`` n > 0:
the same utterance, the n-th replacement). The stage gives a revision the ``seq`` of the
utterance it replaces and turns a confirmation into an :class:`UtteranceConfirmed`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from realtime.config import VadOptions
from realtime.messages import (
    SAMPLE_RATE,
    AudioChunk,
    EndOfStream,
    OpenSpeech,
    Utterance,
    UtteranceConfirmed,
)
from realtime.stage import Inbox, Stage

logger = logging.getLogger(__name__)

# How far back from the maximum length a split looks for a pause.
SPLIT_LOOKBACK_S = 2.0
# About the most audio of a stream with digital silence that one webrtcvad instance is fed (see
# WebRtcVadAnalyzer); on the bundled sample its models drift far enough to merge turns after 6
# (20 ms frames) to 20 minutes (30 ms frames).
RENEW_AFTER_S = 120.0
# Digital silence (all-zero frames) this long is a quiet point: webrtcvad's own hangover is over.
QUIET_S = 0.3


class SpeechAnalyzer(Protocol):
    """Classifies one fixed-size frame of 16 kHz int16 PCM."""

    frame_samples: int

    def is_speech(self, frame: np.ndarray) -> bool: ...


class WebRtcVadAnalyzer:
    """webrtcvad, with its adaptive models renewed at digital silence so they cannot drift.

    webrtcvad adapts Gaussian noise and speech models to everything it is fed. On exact digital
    silence (all-zero PCM, as in synthesised or edited recordings) its fixed-point filters do not
    settle to zero: after most words they ring in a limit cycle of one or two LSB, and those frames
    reach the models. With no real noise floor to anchor them, the speech model drifts towards the
    silence (means down, deviations up) until, after about 20 minutes of the bundled sample, the
    silence between two turns is all "speech" and the turns merge. With a noise floor (-90 dBFS of
    noise is enough) the same audio did not drift in an hour.

    So no instance is fed more than about ``renew_after`` seconds of a stream with digital silence:
    once the one in use has seen half of that, a standby instance is started at the next quiet
    point (``QUIET_S`` of digital silence, when webrtcvad's own hangover is over) and fed the same
    frames; once the standby has seen half of ``renew_after`` too, it takes over at the next quiet
    point, already adapted to the stream, and the next standby starts. The decisions of the first
    ``renew_after`` seconds are those of a single instance, exactly as before, and streams without
    digital silence keep their one instance.
    """

    def __init__(
        self, aggressiveness: int = 2, frame_ms: int = 30, renew_after: float = RENEW_AFTER_S
    ) -> None:
        import webrtcvad

        if frame_ms not in (10, 20, 30):
            raise ValueError("webrtcvad frames must be 10, 20 or 30 ms")
        if renew_after <= 0:
            raise ValueError("renew_after must be > 0")
        self._new = lambda: webrtcvad.Vad(aggressiveness)
        self._vad = self._new()
        self._standby: webrtcvad.Vad | None = None
        self.frame_samples = SAMPLE_RATE * frame_ms // 1000
        self._half_span = max(1, round(renew_after * 1000 / frame_ms / 2))  # frames
        self._quiet = max(1, round(QUIET_S * 1000 / frame_ms))  # frames
        self._age = 0  # frames fed to the instance in use
        self._standby_age = 0
        self._zero_run = 0  # consecutive all-zero frames
        self.renewals = 0  # times a standby took over

    def is_speech(self, frame: np.ndarray) -> bool:
        if frame.any():
            self._zero_run = 0
        else:
            self._zero_run += 1
            if self._zero_run >= self._quiet:
                self._quiet_point()
        data = frame.tobytes()
        if self._standby is not None:
            self._standby.is_speech(data, SAMPLE_RATE)
            self._standby_age += 1
        self._age += 1
        return bool(self._vad.is_speech(data, SAMPLE_RATE))

    def _quiet_point(self) -> None:
        if self._standby is None:
            if self._age >= self._half_span:
                self._standby, self._standby_age = self._new(), 0
        elif self._standby_age >= self._half_span:
            self._vad, self._age = self._standby, self._standby_age
            self._standby = None
            self.renewals += 1
            logger.debug("webrtcvad renewed (%d)", self.renewals)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to int16 PCM, as webrtcvad wants them."""
    return np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class SpeechSegment:
    start: float  # stream time where the first voiced frame begins
    end: float  # stream time where the last voiced frame ends
    audio: np.ndarray = field(repr=False)  # float32 16 kHz, with pre-roll and trailing padding
    speech_ended_at: float  # monotonic arrival time of the audio holding the last voiced frame
    split: bool = False  # cut at the maximum length: the speech goes on in the next segment
    speculative: bool = False  # closed after a short silence: confirmed or revised later
    revision: int = 0  # n > 0: replaces the n speculative segments of the same utterance before

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class SpeechConfirmation:
    """The hangover passed with no speech since the last speculative segment: it stands."""

    start: float  # the utterance's speech start, as in that segment
    revision: int  # the confirmed segment's revision


SegmentEvent = SpeechSegment | SpeechConfirmation


class VadSegmenter:
    """Quiet/speaking state machine over analyser decisions, for one audio channel."""

    def __init__(self, options: VadOptions, analyzer: SpeechAnalyzer | None = None) -> None:
        self.options = options
        self.analyzer = analyzer or WebRtcVadAnalyzer(options.aggressiveness, options.frame_ms)
        self.frame_samples = self.analyzer.frame_samples
        self.frame_s = self.frame_samples / SAMPLE_RATE

        def frames(seconds: float) -> int:
            return round(seconds / self.frame_s)

        self._onset = max(1, frames(options.onset))
        self._pre_roll = frames(options.pre_roll)
        self._hangover = max(1, frames(options.hangover))
        self._tail = min(self._pre_roll, self._hangover)
        self._max = max(self._onset + 1, frames(options.max_utterance))
        self._lookback = min(frames(SPLIT_LOOKBACK_S), self._max // 4)
        # Silence (frames) after which the open utterance is handed on speculatively, or None.
        self._speculative: int | None = None
        if options.speculative:
            self._speculative = min(max(1, frames(options.speculative_silence)), self._hangover - 1)

        self._origin: float | None = None  # stream time of frame 0
        self._index = 0  # index of the next frame
        self._pending = np.zeros(0, dtype=np.float32)
        self._history: deque[np.ndarray] = deque(maxlen=self._pre_roll + self._onset)
        self._voiced_run = 0
        # Open utterance: frames (from its first audio frame), voiced flags, arrival times.
        self._speaking = False
        self._frames: list[np.ndarray] = []
        self._voiced: list[bool] = []
        self._arrived: list[float] = []
        self._first = 0  # frame index of self._frames[0]
        self._speech_start = 0  # frame index of the first voiced frame
        self._silence = 0  # unvoiced frames since the last voiced one
        self._speculated = 0  # speculative segments handed on for the open utterance
        self._unconfirmed = False  # the last of them still holds all the speech (none since)
        self.discarded = 0  # utterances shorter than min_speech

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def awaiting_confirmation(self) -> bool:
        """Whether the open utterance was handed on speculatively with no speech since."""
        return self._unconfirmed

    def _time(self, index: int) -> float:
        assert self._origin is not None
        return self._origin + index * self.frame_s

    def push(self, samples: np.ndarray, start: float, arrived: float) -> list[SegmentEvent]:
        """Feed audio that begins at stream time ``start``; returns the segments it closed (and,
        with a speculative close, the confirmations)."""
        if self._origin is None:
            self._origin = start
        elif abs(start - self._time(self._index) - len(self._pending) / SAMPLE_RATE) > self.frame_s:
            logger.debug("audio discontinuity at %.3f s; frame times keep counting samples", start)
        audio = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        count = len(audio) // self.frame_samples
        self._pending = audio[count * self.frame_samples :]
        closed: list[SegmentEvent] = []
        for i in range(count):
            frame = audio[i * self.frame_samples : (i + 1) * self.frame_samples]
            voiced = self.analyzer.is_speech(to_pcm16(frame))
            segment = self._step(frame, voiced, arrived)
            if segment is not None:
                closed.append(segment)
        return closed

    def flush(self) -> list[SegmentEvent]:
        """End of stream: close the open utterance, if any."""
        segment = self._close(len(self._frames)) if self._speaking else None
        self._pending = np.zeros(0, dtype=np.float32)
        return [segment] if segment is not None else []

    def _step(self, frame: np.ndarray, voiced: bool, arrived: float) -> SegmentEvent | None:
        index = self._index
        self._index += 1
        self._history.append(frame)
        if not self._speaking:
            self._voiced_run = self._voiced_run + 1 if voiced else 0
            if self._voiced_run >= self._onset:
                self._open(index, arrived)
            return None
        self._frames.append(frame)
        self._voiced.append(voiced)
        self._arrived.append(arrived)
        self._silence = 0 if voiced else self._silence + 1
        if voiced:
            self._unconfirmed = False
        if self._silence >= self._hangover:
            return self._close(len(self._frames))
        if self._silence == self._speculative:
            return self._speculate()
        if index + 1 - self._speech_start >= self._max:
            return self._split()
        return None

    def _speculate(self) -> SpeechSegment | None:
        """A short silence: the utterance so far, handed on now (None if too short)."""
        segment = self._segment(len(self._frames), split=False, speculative=True)
        if segment is not None:
            self._speculated += 1
            self._unconfirmed = True
        return segment

    def open_segment(self) -> SpeechSegment | None:
        """The utterance being spoken, so far (its audio up to now), or None when quiet."""
        if not self._speaking:
            return None
        voiced_at = [i for i, voiced in enumerate(self._voiced) if voiced]
        if not voiced_at:
            return None
        return SpeechSegment(
            start=round(self._time(self._speech_start), 4),
            end=round(self._time(self._first + len(self._frames)), 4),
            audio=np.concatenate(self._frames),
            speech_ended_at=self._arrived[voiced_at[-1]],
        )

    def _open(self, index: int, arrived: float) -> None:
        """Onset reached at frame ``index``: the utterance starts with pre-roll from history."""
        self._speaking = True
        self._frames = list(self._history)
        count = len(self._frames)
        self._first = index + 1 - count
        self._speech_start = index + 1 - self._onset
        self._voiced = [i >= count - self._onset for i in range(count)]
        self._arrived = [arrived] * count
        self._silence = 0
        self._voiced_run = 0
        self._speculated, self._unconfirmed = 0, False

    def _segment(self, stop: int, split: bool, speculative: bool = False) -> SpeechSegment | None:
        """The open utterance up to list position ``stop`` as a segment (None if too short)."""
        voiced_at = [i for i in range(stop) if self._voiced[i]]
        if not voiced_at:
            return None
        last = voiced_at[-1]
        start = round(self._time(self._speech_start), 4)
        end = round(self._time(self._first + last + 1), 4)
        if end - start < self.options.min_speech:
            if speculative:  # counted when it closes, if it is still too short then
                return None
            self.discarded += 1
            logger.debug(
                "discarded %.2f s of speech at %.2f s (min %.2f s)",
                end - start,
                start,
                self.options.min_speech,
            )
            return None
        keep = stop if split else min(stop, last + 1 + self._tail)
        return SpeechSegment(
            start=start,
            end=end,
            audio=np.concatenate(self._frames[:keep]),
            speech_ended_at=self._arrived[last],
            split=split,
            speculative=speculative,
            revision=self._speculated,
        )

    def _close(self, stop: int) -> SegmentEvent | None:
        event: SegmentEvent | None
        if self._unconfirmed:  # nothing was said since the speculative segment: it stands
            start = round(self._time(self._speech_start), 4)
            event = SpeechConfirmation(start=start, revision=self._speculated - 1)
        else:
            event = self._segment(stop, split=False)
        self._speaking = False
        self._frames, self._voiced, self._arrived = [], [], []
        self._speculated, self._unconfirmed = 0, False
        return event

    def _split(self) -> SegmentEvent | None:
        """Maximum length reached: cut after the latest pause of the look-back, or right here."""
        count = len(self._frames)
        lowest = max(count - self._lookback, 0)
        pause = next((p for p in range(count - 1, lowest - 1, -1) if not self._voiced[p]), None)
        if pause == count - 1:  # in a pause right now: an ordinary end of utterance
            return self._close(count)
        stop = count if pause is None else pause + 1  # frames before ``stop`` are cut off
        segment = self._segment(stop, split=True)
        self._speculated, self._unconfirmed = 0, False  # the continuation is a new utterance
        # What follows the pause is all voiced: it opens the continuation at once.
        self._frames, self._voiced = self._frames[stop:], self._voiced[stop:]
        self._arrived = self._arrived[stop:]
        self._first += stop
        self._speech_start = self._first if self._frames else self._index
        return segment


class SegmentationStage(Stage):
    """Pipeline stage: audio chunks -> utterances, one :class:`VadSegmenter` per audio channel.

    Other messages (video frames) are passed on in stream order, so a later stage sees the frames
    of an utterance before the utterance itself.
    """

    inbox_spec = Inbox("vad", 64)

    def __init__(
        self,
        options: VadOptions,
        *,
        session: str,
        speaker_of: Callable[[int], str],
        analyzer_factory: Callable[[], SpeechAnalyzer] | None = None,
        partial_interval: float | None = None,
        partial_after: float = 1.0,
    ) -> None:
        super().__init__()
        self.options = options
        # Interim audio: an OpenSpeech every ``partial_interval`` s of stream time once an
        # utterance has gone on for ``partial_after`` s (None: never).
        self.partial_interval = partial_interval
        self.partial_after = partial_after
        self._partial_at: dict[int, tuple[float, float]] = {}  # channel -> (start, next due)
        self._partial_seq = itertools.count()
        self.session = session
        self.speaker_of = speaker_of
        self.analyzer_factory = analyzer_factory
        self.segmenters: dict[int, VadSegmenter] = {}
        self.utterances = 0
        self.speculative = 0  # utterances handed on speculatively (vad.speculative)
        self.revised = 0  # of those, replaced by a revision: the speaker went on
        self.position = 0.0  # stream time up to which audio has been segmented
        self._seq = itertools.count()
        self._confirmation_seq = itertools.count()
        self._speculating: dict[int, int] = {}  # channel -> seq of its speculative utterance

    @property
    def discarded(self) -> int:
        """Utterances dropped for being shorter than the minimum speech length."""
        return sum(s.discarded for s in self.segmenters.values())

    def _segmenter(self, channel: int) -> VadSegmenter:
        if channel not in self.segmenters:
            analyzer = self.analyzer_factory() if self.analyzer_factory else None
            self.segmenters[channel] = VadSegmenter(self.options, analyzer)
        return self.segmenters[channel]

    def _message(self, event: SegmentEvent, channel: int) -> Utterance | UtteranceConfirmed:
        """What the pipeline hears of a segmenter's event on ``channel``."""
        if isinstance(event, SpeechSegment):
            return self._utterance(event, channel)
        seq = self._speculating.pop(channel)
        logger.debug("utterance %d confirmed (revision %d)", seq, event.revision)
        return UtteranceConfirmed(
            session=self.session,
            seq=next(self._confirmation_seq),
            monotonic=time.monotonic(),
            utterance_seq=seq,
            revision=event.revision,
            channel=channel,
        )

    def _utterance(self, segment: SpeechSegment, channel: int) -> Utterance:
        if segment.revision and channel in self._speculating:  # the same utterance, again
            seq = self._speculating[channel]
            if segment.revision == 1:
                self.revised += 1
        else:
            seq = next(self._seq)
            self.utterances += 1
            self.speculative += segment.speculative
        if segment.speculative:
            self._speculating[channel] = seq
        else:
            self._speculating.pop(channel, None)
        now = time.monotonic()
        utterance = Utterance(
            session=self.session,
            seq=seq,
            monotonic=now,
            audio=segment.audio,
            start=segment.start,
            end=segment.end,
            speaker=self.speaker_of(channel),
            channel=channel,
            segmented_at=now,
            speech_ended_at=segment.speech_ended_at,
            speculative=segment.speculative,
            revision=segment.revision,
        )
        logger.debug(
            "utterance %d (%s): %.2f-%.2f s%s%s%s",
            utterance.seq,
            utterance.speaker,
            segment.start,
            segment.end,
            " (split)" if segment.split else "",
            " (speculative)" if segment.speculative else "",
            f" (revision {segment.revision})" if segment.revision else "",
        )
        return utterance

    async def process(self, item: object) -> None:
        if not isinstance(item, AudioChunk):
            await self.push(item)
            return
        self.position = max(self.position, item.start + item.duration)
        segmenter = self._segmenter(item.channel)
        for event in segmenter.push(item.samples, item.start, item.monotonic):
            await self.push(self._message(event, item.channel))
        if (
            self.partial_interval is not None
            and segmenter.speaking
            and not segmenter.awaiting_confirmation  # its result is out: no interim after it
        ):
            await self._partial(segmenter, item.channel)

    async def _partial(self, segmenter: VadSegmenter, channel: int) -> None:
        """Hand on the open utterance of ``channel`` when an interim result is due."""
        segment = segmenter.open_segment()
        if segment is None:
            return
        # Due on a grid (start + after, then every interval), a frame early rather than late.
        start, due = self._partial_at.get(channel, (None, 0.0))
        if start != segment.start:
            due = segment.start + self.partial_after
        if segment.end < due - segmenter.frame_s:
            self._partial_at[channel] = (segment.start, due)
            return
        assert self.partial_interval is not None
        self._partial_at[channel] = (segment.start, due + self.partial_interval)
        await self.push(
            OpenSpeech(
                session=self.session,
                seq=next(self._partial_seq),
                monotonic=time.monotonic(),
                audio=segment.audio,
                start=segment.start,
                end=segment.end,
                speaker=self.speaker_of(channel),
                channel=channel,
            )
        )

    async def finish(self, end: EndOfStream) -> None:
        for channel, segmenter in sorted(self.segmenters.items()):
            for event in segmenter.flush():
                await self.push(self._message(event, channel))
