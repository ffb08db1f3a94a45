"""Runtime configuration: validated frozen dataclasses, loaded from TOML, overridable by flags.

The dataclass defaults are the built-in defaults; ``configs/default.toml`` spells every one of them
out with a comment (a test keeps the two identical). A TOML file only needs the keys it changes.
Every option group validates itself on construction, so a bad value fails early with one line that
names the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realtime.mqtt_options import MqttOptions, check_topic_level
from unimse import typed_config
from unimse.speakers import DEFAULT_SPEAKER_LABELS, SPEAKER_LABELS

SINK_NAMES = ("dashboard", "jsonl", "mqtt")
OVERFLOW_POLICIES = ("auto", "drop", "block")


class ConfigError(typed_config.TypedConfigError):
    """A configuration file or flag holds an unknown key or an invalid value."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class VadOptions:
    """Speech segmentation with webrtcvad (all times in seconds)."""

    aggressiveness: int = 2  # 0 (keeps most audio as speech) .. 3 (most aggressive filtering)
    frame_ms: int = 30  # analysis frame: 10, 20 or 30 ms
    onset: float = 0.09  # consecutive voiced audio that opens an utterance
    pre_roll: float = 0.3  # audio kept before the onset (soft word starts)
    hangover: float = 0.6  # unvoiced audio that closes an utterance (end-of-speech wait)
    min_speech: float = 0.25  # shorter utterances (clicks, coughs) are discarded
    max_utterance: float = 12.0  # longer speech is split, at a short pause when there is one
    # Speculative close: after this much silence the utterance so far is handed on at once (its
    # result is published marked speculative), then confirmed once the hangover passes, or
    # replaced under the same utterance id (a revision) if the speaker goes on.
    speculative: bool = False
    speculative_silence: float = 0.21

    def __post_init__(self) -> None:
        _check(0 <= self.aggressiveness <= 3, "vad.aggressiveness must be 0, 1, 2 or 3")
        _check(isinstance(self.speculative, bool), "vad.speculative must be true or false")
        _check(self.speculative_silence > 0, "vad.speculative_silence must be > 0")
        _check(
            not self.speculative or self.speculative_silence < self.hangover,
            "vad.speculative_silence must be shorter than vad.hangover",
        )
        _check(self.frame_ms in (10, 20, 30), "vad.frame_ms must be 10, 20 or 30")
        for name in ("onset", "pre_roll", "min_speech"):
            _check(getattr(self, name) >= 0, f"vad.{name} must be >= 0")
        _check(self.hangover > 0, "vad.hangover must be > 0")
        _check(
            self.max_utterance >= max(1.0, 2 * self.hangover, self.min_speech),
            "vad.max_utterance must be >= 1 s, twice the hangover and the minimum speech",
        )


@dataclass(frozen=True)
class AsrOptions:
    """faster-whisper transcription. Models are resolved to local folders; nothing is downloaded."""

    model: str = "tiny.en"  # tiny.en, base (see realtime.asr) or a model folder
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N
    compute_type: str = "auto"  # auto: float16 on CUDA, int8 on CPU; or any CTranslate2 type
    language: str = "en"  # "auto" detects the language (multilingual models only)
    beam_size: int = 1  # 1 = greedy decoding, the fastest
    cpu_threads: int = 0  # 0 = min(4, CPU cores)
    window: str = "utterance"  # encoder window: "utterance" (fast) or "whisper" (fixed 30 s)

    def __post_init__(self) -> None:
        _check(bool(self.model), "asr.model must name a model or a path")
        _check(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            f"asr.device must be auto, cpu, cuda or cuda:N, got {self.device!r}",
        )
        _check(self.beam_size >= 1, "asr.beam_size must be >= 1")
        _check(self.cpu_threads >= 0, "asr.cpu_threads must be >= 0")
        _check(self.window in ("utterance", "whisper"), "asr.window must be utterance or whisper")


@dataclass(frozen=True)
class ContextOptions:
    """Dialogue context handed to the model with each utterance."""

    turns: int | None = None  # past turns; None = as many as the checkpoint was trained with
    speaker_labels: str = (
        DEFAULT_SPEAKER_LABELS  # each turn's speaker for the model: letters, heard
    )

    def __post_init__(self) -> None:
        _check(self.turns is None or self.turns >= 0, "context.turns must be >= 0")
        _check(
            self.speaker_labels in SPEAKER_LABELS,
            f"context.speaker_labels must be one of {', '.join(SPEAKER_LABELS)}",
        )


@dataclass(frozen=True)
class InferenceOptions:
    """The UniMSE model owner."""

    checkpoint: str = "default"  # "default" (shipped with the package) or a checkpoint folder
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    max_batch: int = 8  # utterances classified together when several are ready
    inbox_size: int = 16  # utterances waiting for the model
    overflow: str = "auto"  # full inbox: drop the oldest (live) or wait (replay); auto picks
    audio: bool = True  # acoustic features for checkpoints with an audio branch (False: words only)
    # With a checkpoint's voice trust: a speaker's earlier results are read again as later ones
    # show how expressive the voice is, and changed labels published as revisions (reread)
    reread: bool = True

    def __post_init__(self) -> None:
        _check(bool(self.checkpoint), "inference.checkpoint must not be empty")
        _check(isinstance(self.audio, bool), "inference.audio must be true or false")
        _check(isinstance(self.reread, bool), "inference.reread must be true or false")
        _check(self.max_batch >= 1, "inference.max_batch must be >= 1")
        _check(self.inbox_size >= 1, "inference.inbox_size must be >= 1")
        _check(
            self.overflow in OVERFLOW_POLICIES,
            f"inference.overflow must be one of {', '.join(OVERFLOW_POLICIES)}",
        )


ECHO_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class SourceOptions:
    """Capture devices and how channels map to speakers."""

    audio_device: str | None = None  # input device name (substring) or index; None = default
    remote_device: str | None = None  # live: the other side of a call (a monitor); channel 2
    camera: str | None = None  # camera index ("0") or video file path; None = no camera
    camera_fps: float = 5.0  # frames per second kept from the camera
    channels_as_speakers: bool = False  # stereo input: one speaker per channel
    speakers: tuple[str, ...] = ("you", "them")  # names per channel (mono uses the first)
    block_ms: int = 20  # microphone block size
    echo: str = "auto"  # drop microphone utterances that echo channel 2: auto (live calls), on, off

    def __post_init__(self) -> None:
        _check(0 < self.camera_fps <= 60, "sources.camera_fps must be in (0, 60]")
        _check(len(self.speakers) >= 1, "sources.speakers needs at least one name")
        _check(all(self.speakers), "sources.speakers names must not be empty")
        _check(
            len(set(self.speakers)) == len(self.speakers),
            "sources.speakers names must differ (two channels would be one speaker)",
        )
        _check(5 <= self.block_ms <= 200, "sources.block_ms must be in [5, 200]")
        _check(self.echo in ECHO_MODES, f"sources.echo must be one of {', '.join(ECHO_MODES)}")

    def speaker(self, channel: int) -> str:
        return self.speakers[channel] if channel < len(self.speakers) else f"channel {channel + 1}"


@dataclass(frozen=True)
class SpeakerOptions:
    """Online diarisation: who speaks each utterance, from its voice (``realtime.speakers``)."""

    diarize: bool = False  # label mono / mixed audio by voice (with channels_as_speakers: within
    # each channel)
    max_speakers: int | None = None  # None = as many as the voices found
    names: tuple[str, ...] = ()  # diarised speakers in order of first appearance; then "speaker N"
    enroll: tuple[str, ...] = ()  # "NAME=FILE" clips of known voices

    def __post_init__(self) -> None:
        _check(
            self.max_speakers is None or self.max_speakers >= 1,
            "speakers.max_speakers must be >= 1",
        )
        _check(all(self.names), "speakers.names must not be empty")
        _check(len(set(self.names)) == len(self.names), "speakers.names lists a name twice")
        for spec in self.enroll:
            name, sep, path = spec.partition("=")
            _check(
                bool(sep and name.strip() and path.strip()),
                f"speakers.enroll: NAME=FILE, not {spec!r}",
            )
        _check(
            self.max_speakers is None or len(self.enroll) <= self.max_speakers,
            "speakers.enroll names more voices than speakers.max_speakers allows",
        )


@dataclass(frozen=True)
class PartialOptions:
    """Interim results while someone speaks: the emotion of the audio so far, not final."""

    enabled: bool = False  # --partial
    interval: float = 0.9  # seconds of speech between interim results of one utterance (0.1 s
    # under the 1 s asked for: their compute time jitters the spacing a subscriber sees)
    after: float = 1.0  # seconds of speech before the first one
    # --partial-text: also the words so far (greedy, from the same encoder pass). Off: on 2 cores
    # they stretch the spacing past 1 s at p95 with the 0.9 s grid (docs/RESULTS.md)
    text: bool = False

    def __post_init__(self) -> None:
        _check(0.2 <= self.interval <= 10, "partial.interval must be in [0.2, 10] seconds")
        _check(self.after >= 0, "partial.after must be >= 0")


@dataclass(frozen=True)
class ReplayOptions:
    speed: str = "realtime"  # "realtime", "max" (as fast as possible) or a factor such as "2"

    def __post_init__(self) -> None:
        if self.speed not in ("realtime", "max"):
            try:
                factor = float(self.speed)
            except ValueError:
                raise ConfigError(
                    f"replay.speed must be realtime, max or a number, got {self.speed!r}"
                ) from None
            _check(factor > 0, "replay.speed must be > 0")

    @property
    def factor(self) -> float | None:
        """Stream seconds per wall-clock second, or None for as fast as possible."""
        if self.speed == "max":
            return None
        return 1.0 if self.speed == "realtime" else float(self.speed)


@dataclass(frozen=True)
class JsonlOptions:
    path: str | None = None  # None or "-" = standard output
    partials: bool = True  # with --partial: interim results as lines ("kind": "partial")


@dataclass(frozen=True)
class DashboardOptions:
    refresh_hz: float = 4.0

    def __post_init__(self) -> None:
        _check(0 < self.refresh_hz <= 30, "sinks.dashboard.refresh_hz must be in (0, 30]")


@dataclass(frozen=True)
class SinkOptions:
    """Where results go. MQTT options are the MQTT sink's own (:class:`MqttOptions`)."""

    enabled: tuple[str, ...] = ("dashboard",)
    queue_size: int = 256  # results waiting per sink; a full queue drops its oldest (counted)
    mqtt: MqttOptions = field(default_factory=MqttOptions)
    jsonl: JsonlOptions = field(default_factory=JsonlOptions)
    dashboard: DashboardOptions = field(default_factory=DashboardOptions)

    def __post_init__(self) -> None:
        unknown = [name for name in self.enabled if name not in SINK_NAMES]
        _check(not unknown, f"unknown sink {unknown}; choose from {', '.join(SINK_NAMES)}")
        _check(len(set(self.enabled)) == len(self.enabled), "sinks.enabled lists a sink twice")
        _check(self.queue_size >= 1, "sinks.queue_size must be >= 1")


@dataclass(frozen=True)
class RecordOptions:
    dir: str | None = None  # session folder to write (audio.wav, video.mp4, results, manifest)


@dataclass(frozen=True)
class Config:
    session: str | None = None  # session id; None = generated from the start time
    vad: VadOptions = field(default_factory=VadOptions)
    asr: AsrOptions = field(default_factory=AsrOptions)
    context: ContextOptions = field(default_factory=ContextOptions)
    inference: InferenceOptions = field(default_factory=InferenceOptions)
    sources: SourceOptions = field(default_factory=SourceOptions)
    speakers: SpeakerOptions = field(default_factory=SpeakerOptions)
    partial: PartialOptions = field(default_factory=PartialOptions)
    replay: ReplayOptions = field(default_factory=ReplayOptions)
    sinks: SinkOptions = field(default_factory=SinkOptions)
    record: RecordOptions = field(default_factory=RecordOptions)

    def __post_init__(self) -> None:
        if self.session is not None:
            try:
                check_topic_level("session id", self.session)  # it names MQTT topics
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """A copy with dotted keys replaced, e.g. ``{"vad.hangover": 0.4}``."""
        return typed_config.with_overrides(self, overrides, ConfigError)


def unused_settings(config: Config) -> list[str]:
    """One line per setting that cannot act beside the others (the CLI warns with each)."""
    notes = []
    if config.sinks.jsonl.path not in (None, "-") and "jsonl" not in config.sinks.enabled:
        notes.append(
            f"--output {config.sinks.jsonl.path} is not written: the jsonl sink is off "
            "(add --sink jsonl)"
        )
    speakers = config.speakers
    if not speakers.diarize and (speakers.enroll or speakers.max_speakers is not None):
        notes.append("--enroll and --max-speakers act with --diarize only: ignored")
    if config.partial.text and not config.partial.enabled:
        notes.append("--partial-text acts with --partial only: ignored")
    if config.partial.enabled and config.replay.speed == "max":
        notes.append(
            "--partial with --speed max: an utterance closes before its interim results are "
            "computed, so few or none arrive (replay at realtime or a factor)"
        )
    return notes


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Built-in defaults, then the TOML file (if any), then dotted-key overrides from flags."""
    return typed_config.load(Config(), path, overrides, ConfigError)
