"""Running one session from the command line: sinks, recorder, signals, the summary line."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

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
