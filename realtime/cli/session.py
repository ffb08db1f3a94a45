"""Running one session from the command line: sinks, recorder, signals, the summary line and the
exit code (see :mod:`realtime.cli.exits`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

from realtime.cli.exits import EXIT_INPUT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNDELIVERED
from realtime.cli.logs import print_error, quiet
from realtime.config import Config


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
    from realtime.sources.base import MediaReadError

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
    signals: list[int] = []
    failure: MediaReadError | None = None
    try:
        asyncio.run(_run_until_signalled(pipeline, signals))
    except MediaReadError as exc:  # raised once what was read before it was delivered
        failure = exc
    stats = pipeline.stats
    assert stats is not None  # set once the pipeline ran, also when the input failed
    undelivered = pipeline.fanout.undelivered()
    failed = pipeline.fanout.failures()
    if "dashboard" not in config.sinks.enabled and not quiet():
        dropped = {k: v for k, v in stats.dropped.items() if v}
        total = stats.latency_p50.get("total")
        print(
            f"emotrack: session {session}: {stats.utterances} utterances, {stats.results} results"
            f" in {stats.elapsed:.1f} s of audio"
            + (f", median latency {total:.2f} s" if total is not None else "")
            + (f", dropped {dropped}" if dropped else "")
            + (f", undelivered {undelivered}" if undelivered else "")
            + (f", failed sinks: {', '.join(failed)}" if failed else "")
            + (f"; input failed after {failure.at:.1f} s" if failure is not None else "")
            + ("; interrupted" if signals else ""),
            file=sys.stderr,
        )
    if failure is not None:
        print_error(failure)
    if signals:
        return EXIT_INTERRUPTED
    if failure is not None:
        return EXIT_INPUT_FAILED
    if undelivered or failed:
        return EXIT_UNDELIVERED
    return EXIT_OK


async def _run_until_signalled(pipeline: Any, signals: list[int]) -> Any:
    """Run the pipeline; the first Ctrl-C (or SIGTERM) stops capture, the second aborts. Every
    signal received is appended to ``signals``."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal(sig: int) -> None:
        signals.append(sig)
        if len(signals) == 1:
            pipeline.stop()
        elif task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows event loops
            loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await pipeline.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
