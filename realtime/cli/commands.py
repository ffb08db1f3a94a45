"""``emotrack live``, ``replay``, ``devices`` and ``bench``: the streaming commands.

Registered through the ``emotrack.commands`` entry-point group (see ``pyproject.toml``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realtime.cli.options import add_config_option, session_options
from realtime.cli.paths import check_paths, report_path
from realtime.cli.session import run_session
from realtime.config import Config, ConfigError, load_config, unused_settings
from unimse.argtypes import SECONDS

if TYPE_CHECKING:
    from realtime.sources.base import Source

logger = logging.getLogger(__name__)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SAMPLE_AUDIO = SAMPLES / "conversation.flac"
SAMPLE_SCRIPT = SAMPLES / "conversation.txt"

OUTPUT_RULES = (
    "An output (--output, --report, the files --record writes) that names an input or another "
    "output is refused before the session starts, and so is a --record folder that is not "
    "empty. --report makes missing folders; a session in which no utterance was heard writes "
    "no report (a warning says so) and exits as it would without --report."
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the streaming commands to the ``emotrack`` parser."""
    from realtime.bench import add_latency_arguments

    live = commands.add_parser(
        "live",
        help="track a live conversation from the microphone (and camera)",
        description="Track a live conversation. Without any audio input device, the bundled "
        "sample conversation is replayed instead (with a notice; --duration applies to it, "
        "--camera is refused). Ctrl-C stops capture; what was already said is still processed, "
        "then a summary is printed. " + OUTPUT_RULES,
    )
    capture = live.add_argument_group("capture")
    add_config_option(
        capture,
        "--audio-device",
        dest="sources.audio_device",
        metavar="NAME|INDEX",
        help="audio input by index or name substring (default: system default; see "
        "`emotrack devices`)",
    )
    add_config_option(
        capture,
        "--remote-device",
        dest="sources.remote_device",
        metavar="NAME|INDEX",
        help="the other side of a call as a second channel: the monitor of the output device "
        "(Linux), a loopback device (macOS, Windows); see `emotrack devices`",
    )
    add_config_option(
        capture,
        "--camera",
        dest="sources.camera",
        nargs="?",
        const="0",
        metavar="INDEX|FILE",
        help="also use a camera (index, default 0) or a video file standing in for one",
    )
    add_config_option(
        capture,
        "--camera-fps",
        dest="sources.camera_fps",
        type=float,
        metavar="FPS",
        help="camera frames kept per second (default {default})",
    )
    capture.add_argument(
        "--duration",
        type=SECONDS,
        metavar="S",
        help="stop the microphone (or the sample's replay) after S seconds of capture "
        "(default: at Ctrl-C)",
    )
    session_options(live)
    live.set_defaults(handler=cmd_live, user_errors=user_errors, report_in_recording=True)

    replay = commands.add_parser(
        "replay",
        help="replay an audio/video file or a recorded session folder",
        description="Replay a recording through the same stages as live capture: wav, flac, "
        "ogg, mp3, m4a, aac, opus, mp4, mkv, webm, mov, avi, or a folder written by --record "
        "(which is segmented with the options it was recorded with). " + OUTPUT_RULES,
    )
    replay.add_argument("path", metavar="PATH", help="media file or session folder")
    add_config_option(
        replay,
        "--speed",
        dest="replay.speed",
        metavar="SPEED",
        help="realtime, max (as fast as possible) or a factor such as 2 (default {default})",
    )
    replay.add_argument("--no-video", action="store_true", help="ignore the file's video track")
    add_config_option(
        replay,
        "--video-fps",
        dest="sources.camera_fps",
        type=float,
        metavar="FPS",
        help="video frames kept per second (default {default})",
    )
    session_options(replay)
    replay.set_defaults(handler=cmd_replay, user_errors=user_errors)

    devices = commands.add_parser(
        "devices",
        help="list audio inputs and cameras",
        description="List audio input devices and cameras.",
    )
    devices.set_defaults(handler=cmd_devices, user_errors=user_errors)

    bench = commands.add_parser(
        "bench", help="benchmarks", description="Benchmarks of the streaming pipeline."
    )
    bench_commands = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    latency = bench_commands.add_parser(
        "latency",
        help="end-to-end latency on a synthesised conversation, via a local MQTT broker",
        description="Replays a synthesised conversation with known speech end times at real-time "
        "pace and measures each stage and the end-to-end latency (true end of speech -> result "
        "received by an MQTT subscriber on a Mosquitto broker started on a free loopback port). "
        "Prints p50 / p95 / max, with the VAD hangover reported separately.",
    )
    add_latency_arguments(latency)
    session_options(latency, bench=True)
    latency.set_defaults(handler=cmd_bench_latency, user_errors=user_errors)
    from realtime.serve.bench import add_bench_serve

    serve_bench = add_bench_serve(bench_commands)
    session_options(serve_bench, bench=True)
    serve_bench.set_defaults(handler=cmd_bench_serve, user_errors=user_errors)


class _ModelErrorCheck(type):
    def __instancecheck__(cls, instance: object) -> bool:
        from unimse.errors import user_errors as model_errors

        return isinstance(instance, model_errors())


class ModelError(Exception, metaclass=_ModelErrorCheck):
    """Stands for unimse's user errors (missing model, broken checkpoint) in ``isinstance``:
    finding them imports torch (seconds), so they are looked up only for an error that is none
    of the streaming commands' own (``isinstance`` stops at the first type that matches)."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or setup: printed as one line, not a traceback."""
    from realtime.sinks.base import SinkError
    from realtime.sources.base import SourceError
    from realtime.speakers.embedding import SpeakerModelError

    return (ConfigError, SourceError, SinkError, SpeakerModelError, ModelError)


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
    names = getattr(args, "sources.speakers", None)
    if names is not None and config.speakers.diarize and not config.sources.channels_as_speakers:
        config = config.with_overrides({"speakers.names": names})  # --speakers: voices, in order
    sinks = config.sinks
    if (
        "dashboard" in sinks.enabled
        and "jsonl" in sinks.enabled
        and sinks.jsonl.path in (None, "-")
    ):
        raise ConfigError(
            "the dashboard and JSON lines cannot share standard output: give --output FILE"
        )
    check_paths(args, config)
    for note in unused_settings(config):
        logger.warning(note)
    return config


def cmd_live(args: argparse.Namespace) -> int:
    from realtime.sources.webcam import WebcamSource

    config = build_config(args)
    sources = config.sources
    if sources.remote_device is not None:  # both sides of a call: one speaker per channel
        from realtime.sources.call import CallSource

        config = dataclasses.replace(
            config, sources=dataclasses.replace(sources, channels_as_speakers=True)
        )
        source: Source = CallSource(
            sources.audio_device,
            sources.remote_device,
            block_ms=sources.block_ms,
            duration=args.duration,
        )
    else:
        found = _microphone(args, config)
        if found is None:
            return _replay_sample(args, config)
        source = found
    camera = WebcamSource(sources.camera, fps=sources.camera_fps) if sources.camera else None
    return run_session(config, source, camera, report=report_path(args, config))


def _microphone(args: argparse.Namespace, config: Config) -> Source | None:
    """The microphone (or a sound-server source named by --audio-device); None when the machine
    has no audio input at all and none was asked for."""
    import itertools

    from realtime.sources.audio_input import open_input
    from realtime.sources.base import NoInputDevice

    sources = config.sources
    try:
        return open_input(
            sources.audio_device,
            first_channel=0,
            seq=itertools.count(),
            block_ms=sources.block_ms,
            duration=args.duration,
            channels_as_speakers=sources.channels_as_speakers,
            on_session_clock=False,
        )
    except NoInputDevice:
        if sources.audio_device is None:
            return None
        raise


def _replay_sample(args: argparse.Namespace, config: Config) -> int:
    """``live`` on a machine without any audio input: the bundled sample, at real time, for at
    most ``--duration`` seconds (then it ends as capture does, exit 0). A camera is refused: the
    sample's voices are not the camera's faces, so its frames would tell a false story."""
    from realtime.sources.files import FileSource
    from unimse.synth import parse_script

    if config.sources.camera is not None:
        raise ConfigError(
            f"--camera {config.sources.camera}: no audio input device was found, and the bundled "
            "sample replayed instead has no video to go with a camera (leave out --camera, or "
            "name a microphone with --audio-device)"
        )

    speakers = tuple(
        dict.fromkeys(
            line.speaker for line in parse_script(SAMPLE_SCRIPT.read_text(encoding="utf-8"))
        )
    )
    length = f" for {args.duration:g} s" if args.duration else ""
    print(
        f"emotrack: no audio input device found; replaying the bundled sample conversation "
        f"({SAMPLE_AUDIO.name}: {', '.join(speakers)}, one per channel) at real time{length} "
        "instead.",
        file=sys.stderr,
    )
    config = config.with_overrides(
        {
            "sources.speakers": list(speakers),
            "sources.channels_as_speakers": True,
            "replay.speed": "realtime",
        }
    )
    sample = FileSource(SAMPLE_AUDIO, channels_as_speakers=True, video=False)
    sample.duration = args.duration  # stopped then, as the microphone would be
    return run_session(config, sample, report=report_path(args, config))


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
            why = (
                f"ended by an input error ({manifest.end.removeprefix('error: ')})"
                if manifest.end and manifest.end.startswith("error:")
                else "was not closed cleanly"
            )
            logger.warning("session %s %s; replaying what it holds", manifest.folder, why)
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
    return run_session(config, source, report=report_path(args, config))


def cmd_devices(args: argparse.Namespace) -> int:
    from realtime.devices import describe_devices

    print(describe_devices())
    return 0


def cmd_bench_latency(args: argparse.Namespace) -> int:
    from realtime.bench import run_latency_command

    return run_latency_command(args, build_config(args))


def cmd_bench_serve(args: argparse.Namespace) -> int:
    from realtime.serve.bench import run_bench_serve

    return run_bench_serve(args, build_config(args))
