"""``emotrack serve`` and ``emotrack stream`` (registered through the ``emotrack.commands`` group).

``serve`` takes sessions over MQTT (see docs/PROTOCOL.md) with one Whisper and one UniMSE for all
of them; ``stream`` is the reference client, which plays a file (or the microphone) in real time
into the protocol and prints the results it gets back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np

from realtime.cli.exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNDELIVERED, EXIT_USAGE
from realtime.cli.options import add_config_option, mqtt_options, session_options
from realtime.cli.signals import run_until_signalled
from realtime.config import Config
from unimse.argtypes import SECONDS

if TYPE_CHECKING:
    from realtime.serve.server import ServeOptions, Server

logger = logging.getLogger(__name__)


def add_commands(commands: argparse._SubParsersAction) -> None:
    from realtime.cli.commands import user_errors
    from realtime.serve.server import ServeOptions

    defaults = ServeOptions(server_id="-")
    serve = commands.add_parser(
        "serve",
        help="take many sessions' audio over MQTT (stream protocol 1), one model owner for all",
        description="Serve emotion tracking over MQTT: sessions start on PREFIX/sessions/start "
        "(an MQTT 5 shared subscription, so that each session goes to one server of --group), "
        "audio on PREFIX/SESSION/audio, results on PREFIX/SESSION/utterance (docs/PROTOCOL.md). "
        "One Whisper and one UniMSE per process serve every session. SIGTERM or Ctrl-C: no new "
        "sessions, the running ones finish what they received, exit 0; a second one aborts at "
        "once (the sessions end failed), exit 130.",
    )
    group = serve.add_argument_group("server")
    group.add_argument(
        "--group",
        default=defaults.group,
        metavar="NAME",
        help=f"shared-subscription group of the servers that share sessions "
        f"(default {defaults.group})",
    )
    group.add_argument(
        "--max-sessions",
        type=int,
        default=defaults.max_sessions,
        metavar="N",
        help=f"refuse sessions beyond N at once (default {defaults.max_sessions})",
    )
    group.add_argument(
        "--max-behind",
        type=float,
        default=defaults.max_behind,
        metavar="S",
        help="refuse new sessions while a session's audio waits longer than S seconds "
        f"(default {defaults.max_behind:g})",
    )
    group.add_argument(
        "--max-backlog",
        type=float,
        default=defaults.limits.max_backlog,
        metavar="S",
        help="audio of a session that may wait for speech detection; newer audio is dropped, "
        f"counted and reported (default {defaults.limits.max_backlog:g} s)",
    )
    group.add_argument(
        "--idle-timeout",
        type=float,
        default=defaults.limits.idle_timeout,
        metavar="S",
        help="end a session that sent no audio for S seconds "
        f"(default {defaults.limits.idle_timeout:g})",
    )
    group.add_argument(
        "--no-cross-batching",
        dest="batching",
        action="store_false",
        help="transcribe and classify each session's utterances on their own (default: one "
        "Whisper pass and one UniMSE forward pass for the utterances of all sessions waiting)",
    )
    group.add_argument(
        "--cross-batch",
        type=int,
        default=defaults.max_batch,
        metavar="N",
        help=f"utterances per cross-session forward pass (default {defaults.max_batch})",
    )
    group.add_argument(
        "--asr-batch",
        type=int,
        default=defaults.asr.max_batch,
        metavar="N",
        help="utterances of different sessions per Whisper encoder pass and decoding "
        f"(default {defaults.asr.max_batch}; 1: one at a time)",
    )
    group.add_argument(
        "--asr-batch-wait",
        type=float,
        default=defaults.asr.max_wait,
        metavar="S",
        help="how long an utterance may wait for others to join its Whisper batch "
        f"(default {defaults.asr.max_wait:g} s)",
    )
    group.add_argument(
        "--asr-queue",
        type=int,
        default=defaults.limits.asr_queue,
        metavar="N",
        help="utterances of a session waiting for Whisper; beyond, the oldest are dropped and "
        f"counted (default {defaults.limits.asr_queue})",
    )
    group.add_argument(
        "--max-delay",
        type=float,
        default=defaults.limits.max_delay,
        metavar="S",
        help="drop (and count) an utterance whose speech ended more than S seconds before "
        f"Whisper could take it (default {defaults.limits.max_delay:g})",
    )
    add_config_option(
        group,
        "--asr-threads",
        dest="asr.cpu_threads",
        type=int,
        metavar="N",
        help="CPU threads of the one Whisper (default: min(4, CPU cores); give CORES/SERVERS "
        "when several servers share a machine)",
    )
    group.add_argument("--server-id", metavar="ID", help="this server's name (default HOST-PID)")
    mqtt_options(serve.add_argument_group("MQTT"))
    session_options(serve, bench=True)
    serve.set_defaults(handler=cmd_serve, user_errors=user_errors)

    stream = commands.add_parser(
        "stream",
        help="play a file or the microphone into `emotrack serve` and print the results",
        description="The reference client of the stream protocol (docs/PROTOCOL.md): sends the "
        "audio in real time, in 16-bit PCM chunks, to whichever server takes the session, and "
        "prints the results as they come back. Exit 0 when the server ended the session, 3 when "
        "the server was lost or did not finish, 2 when no server took it. SIGTERM or Ctrl-C: "
        "no more audio, the session ends (reason stopped) once the results of what was sent "
        "came back (at once before a server took it), exit 130; a second one aborts at once.",
    )
    stream.add_argument("path", nargs="?", metavar="PATH", help="audio file to play")
    stream.add_argument("--mic", action="store_true", help="stream the microphone instead")
    stream.add_argument(
        "--duration", type=SECONDS, metavar="S", help="with --mic: stop after S seconds"
    )
    stream.add_argument("--audio-device", metavar="NAME|INDEX", help="with --mic: the device")
    add_config_option(
        stream, "--session", dest="session", metavar="ID", required=True, help="session id"
    )
    stream.add_argument(
        "--speakers",
        type=lambda s: tuple(s.split(",")),
        metavar="A,B",
        help="speaker name per channel",
    )
    stream.add_argument(
        "--mix", action="store_true", help="mix stereo to mono (default: one speaker per channel)"
    )
    stream.add_argument(
        "--hangover", type=float, metavar="S", help="silence that ends an utterance, this session"
    )
    stream.add_argument(
        "--chunk-ms", type=int, default=20, metavar="MS", help="audio per message (default 20)"
    )
    stream.add_argument(
        "--results",
        choices=("text", "json", "none"),
        default="text",
        help="print each result as a line of text, as JSON, or not (default text)",
    )
    stream.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="start again after a busy server's refusal, N times (default 3)",
    )
    stream.add_argument(
        "--takeover",
        type=int,
        default=0,
        metavar="N",
        help="when the server is lost, start the session again on another, N times; the audio "
        "since the last result is sent again (default 0: report the loss, exit 3)",
    )
    stream.add_argument(
        "--accept-timeout",
        type=SECONDS,
        default=30.0,
        metavar="S",
        help="wait S seconds for a server to take the session (default 30)",
    )
    stream.add_argument("--config", metavar="FILE", help="TOML configuration (its sinks.mqtt)")
    mqtt_options(stream.add_argument_group("MQTT"))
    stream.set_defaults(handler=cmd_stream, user_errors=user_errors)


# -- serve ---------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from realtime.cli.commands import build_config
    from realtime.serve.models import AsrBatching
    from realtime.serve.server import ServeOptions, default_server_id
    from realtime.serve.session import SessionLimits

    config = build_config(args)
    options = ServeOptions(
        group=args.group,
        max_sessions=args.max_sessions,
        max_behind=args.max_behind,
        batching=args.batching,
        max_batch=args.cross_batch,
        asr=AsrBatching(args.batching, args.asr_batch, args.asr_batch_wait),
        server_id=default_server_id() if args.server_id is None else args.server_id,
        limits=SessionLimits(
            idle_timeout=args.idle_timeout,
            max_backlog=args.max_backlog,
            asr_queue=args.asr_queue,
            max_delay=args.max_delay,
        ),
    )
    return asyncio.run(_serve(config, options))


async def _serve(config: Config, options: Any) -> int:
    from realtime.serve.models import load_shared_models
    from realtime.serve.server import Server, probe_broker

    # a wrong address or a server id in use fails now, not after the models load
    await probe_broker(config.sinks.mqtt, options.server_id)
    models = await asyncio.to_thread(
        load_shared_models,
        config,
        batching=options.batching,
        max_batch=options.max_batch,
        asr_batching=options.asr,
    )
    server = Server(config, options, models)
    announcing = asyncio.create_task(_announce_ready(server, options))
    try:
        # the first signal finishes the running sessions; a second cancels them and the server
        # (CancelledError: exit 130, once they are gone and the models closed)
        await run_until_signalled(server.run(), server.stop, [])
    finally:
        announcing.cancel()
        await asyncio.to_thread(models.close)
    batches = models.batcher.stats.to_dict()
    asr = models.transcriber.stats.to_dict()
    print(
        f"emotrack serve: {server.accepted} sessions served, {server.refused} refused; "
        f"Whisper: {asr['forward_passes']} batches for {asr['utterances']} utterances "
        f"(mean batch {asr['mean_batch']:.2f}, {asr['expired']} too late); "
        f"UniMSE: {batches['forward_passes']} forward passes for {batches['utterances']} "
        f"utterances (mean batch {batches['mean_batch']:.2f})",
        file=sys.stderr,
    )
    return EXIT_OK


async def _announce_ready(server: Server, options: ServeOptions) -> None:
    """One line once the server is online (the models loaded, the broker reached)."""
    await server.ready.wait()
    print(
        f"emotrack serve: ready as {options.server_id}, sessions on {server.topics.start} "
        f"(at most {options.max_sessions} at once); Ctrl-C or SIGTERM stops it (again: aborts)",
        file=sys.stderr,
        flush=True,
    )


# -- stream --------------------------------------------------------------------------------------


def cmd_stream(args: argparse.Namespace) -> int:
    from realtime.cli.commands import build_config
    from realtime.config import ConfigError
    from realtime.serve.audio_input import microphone_chunks, read_pcm
    from realtime.serve.client import StreamClient, StreamSettings, paced_chunks
    from realtime.serve.protocol import StartRequest

    if bool(args.path) == bool(args.mic):
        raise ConfigError("give an audio file PATH or --mic (one of them)")
    if not 20 <= args.chunk_ms <= 100:
        raise ConfigError("--chunk-ms must be in 20..100 (the protocol's chunk sizes)")
    if args.duration is not None and not args.mic:
        raise ConfigError("--duration is for --mic (a file plays to its end)")
    if args.retries < 0 or args.takeover < 0:
        raise ConfigError("--retries and --takeover must be >= 0")
    config = build_config(args)
    if args.mic:
        rate, channels = 16_000, 1
        pcm = None
    else:
        pcm, rate = read_pcm(args.path)
        channels = pcm.shape[1]
    start = StartRequest(
        session=str(config.session),
        sample_rate=rate,
        channels=channels,
        channels_as_speakers=channels == 2 and not args.mix,
        speakers=args.speakers or (),
        options={} if args.hangover is None else {"hangover": args.hangover},
        client="emotrack stream",
    )
    settings = StreamSettings(
        accept_timeout=args.accept_timeout, retries=args.retries, takeovers=args.takeover
    )
    client = StreamClient(
        config.sinks.mqtt, start, settings, on_result=_printer(args.results), on_error=_warn
    )

    signals: list[int] = []

    async def play() -> Any:
        chunks: AsyncIterator[np.ndarray]
        if pcm is None:
            chunks = microphone_chunks(
                device=args.audio_device, chunk_ms=args.chunk_ms, duration=args.duration
            )
        else:
            chunks = paced_chunks(pcm, rate, chunk_ms=args.chunk_ms)
        return await run_until_signalled(client.run(chunks), lambda: _stop_stream(client), signals)

    outcome = asyncio.run(play())
    rereads = sum(bool(r.get("reread")) for r in outcome.results)
    print(
        f"emotrack stream: session {outcome.session} {outcome.state}"
        f"{f' ({outcome.reason})' if outcome.reason else ''}: "
        f"{len(outcome.results) - rereads} results"
        f"{f' ({rereads} revised on re-reading)' if rereads else ''}, "
        f"{len(outcome.errors)} errors, {outcome.chunks_sent} chunks sent"
        f"{f' to {outcome.server}' if outcome.server else ''}"
        f"{_takeover_note(outcome)}",
        file=sys.stderr,
    )
    if signals:
        return EXIT_INTERRUPTED
    if outcome.ok:
        return EXIT_OK
    return EXIT_USAGE if outcome.state in ("refused", "no answer") else EXIT_UNDELIVERED


def _stop_stream(client: Any) -> None:
    """The first Ctrl-C / SIGTERM of ``stream``: end the session, wait for its results; before a
    server took it, stop at once (the summary line says so)."""
    if client.accepted:
        logger.warning("interrupted: ending the session; waiting for its results (again: abort)")
    client.stop()


def _takeover_note(outcome: Any) -> str:
    if not outcome.takeovers:
        return ""
    note = f" (taken over {outcome.takeovers} times; {outcome.resent:.1f} s of audio sent again"
    return note + (f", {outcome.lost_audio:.1f} s lost)" if outcome.lost_audio else ")")


def _printer(style: str) -> Any:
    def text(result: dict[str, Any]) -> None:
        probability = result["emotion_probs"].get(result["emotion"], 0.0)
        print(
            f"{result['start']:7.2f}-{result['end']:7.2f}  {result['speaker']}: "
            f"{result['emotion']} ({probability:.2f})  {result['text']}"
            f"{'  (re-read)' if result.get('reread') else ''}",
            flush=True,
        )

    def as_json(result: dict[str, Any]) -> None:
        print(json.dumps(result, ensure_ascii=False), flush=True)

    return {"text": text, "json": as_json}.get(style)


def _warn(status: dict[str, Any]) -> None:
    logger.warning("server: %s (%s)", status.get("reason"), status.get("code"))
