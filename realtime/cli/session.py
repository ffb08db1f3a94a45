"""Running one session from the command line: sinks, recorder, signals, the summary line and the
exit code (see :mod:`realtime.cli.exits`)."""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from realtime.cli.exits import EXIT_INPUT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNDELIVERED
from realtime.cli.logs import print_error, quiet
from realtime.cli.signals import run_until_signalled
from realtime.config import Config, ConfigError

logger = logging.getLogger(__name__)


def make_sinks(config: Config, session: str, title: str) -> list[Any]:
    sinks: list[Any] = []
    for name in config.sinks.enabled:
        if name == "dashboard":
            from realtime.sinks.dashboard import DashboardSink

            sinks.append(DashboardSink(refresh_hz=config.sinks.dashboard.refresh_hz, title=title))
        elif name == "jsonl":
            from realtime.sinks.jsonl import JsonlSink

            jsonl = config.sinks.jsonl
            sinks.append(JsonlSink(path=jsonl.path, partials=jsonl.partials))
        elif name == "mqtt":
            from realtime.sinks.mqtt import MqttSink

            sinks.append(MqttSink(session=session, options=config.sinks.mqtt))
    return sinks


def run_session(
    config: Config, source: Any, camera: Any = None, *, report: str | None = None
) -> int:
    """Run one session to its end; ``report`` names an HTML session report written after it."""
    with tempfile.TemporaryDirectory(prefix="emotrack-report-") as scratch:
        code = _run_session(config, source, camera, report, Path(scratch))
    return code


def _run_session(
    config: Config, source: Any, camera: Any, report: str | None, scratch: Path
) -> int:
    from realtime.pipeline import Pipeline, new_session_id
    from realtime.recorder import SessionRecorder
    from realtime.sinks.jsonl import JsonlSink
    from realtime.sources.base import MediaReadError
    from unimse.output_paths import output_problem

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
    report_input: Path | None = None
    if report is not None:  # a folder that cannot be made or written fails now, not at the end
        problem = output_problem(Path(report).expanduser(), make_parents=True)
        if problem is not None:
            raise ConfigError(
                f"cannot write the report to {report}: {problem} (choose another path)"
            )
    sinks = make_sinks(config, session, f"emotrack · {source.description}")
    if report is not None:  # a recording holds its results; otherwise keep a copy for the report
        report_input = Path(config.record.dir) if config.record.dir else scratch / "results.jsonl"
        if not config.record.dir:
            sinks.append(JsonlSink(path=report_input, name="report"))
    pipeline = Pipeline(
        config,
        source=source,
        camera=camera,
        sinks=sinks,
        session=session,
        recorder=recorder,
    )
    signals: list[int] = []
    failure: MediaReadError | None = None
    try:
        asyncio.run(run_until_signalled(pipeline.run(), pipeline.stop, signals))
    except MediaReadError as exc:  # raised once what was read before it was delivered
        failure = exc
    stats = pipeline.stats
    assert stats is not None  # set once the pipeline ran, also when the input failed
    undelivered = pipeline.fanout.undelivered()
    failed = pipeline.fanout.failures()
    if "dashboard" not in config.sinks.enabled and not quiet():
        dropped = {k: v for k, v in stats.dropped.items() if v}
        total = stats.latency_p50.get("total")
        rereads = pipeline.delivery.rereads
        print(
            f"emotrack: session {session}: {stats.utterances} utterances, {stats.results} results"
            f" in {stats.elapsed:.1f} s of audio"
            + (f", median latency {total:.2f} s" if total is not None else "")
            + (f", {rereads} revised on re-reading" if rereads else "")
            + (f", dropped {dropped}" if dropped else "")
            + (f", undelivered {undelivered}" if undelivered else "")
            + (f", failed sinks: {', '.join(failed)}" if failed else "")
            + (f"; input failed after {failure.at:.1f} s" if failure is not None else "")
            + ("; interrupted" if signals else ""),
            file=sys.stderr,
        )
    if failure is not None:
        print_error(failure)
    report_failed = False
    if report is not None and report_input is not None:
        if stats.results:
            report_failed = not _write_report(report_input, report, session)
        else:  # nothing to report on; the exit code stays the session's
            logger.warning(
                "session %s has no results%s: no report written to %s",
                session,
                "" if stats.utterances else " (no utterance was heard)",
                report,
            )
    if signals:
        return EXIT_INTERRUPTED
    if failure is not None:
        return EXIT_INPUT_FAILED
    if undelivered or failed or report_failed:
        return EXIT_UNDELIVERED
    return EXIT_OK


def _write_report(results: Path, html: str, session: str) -> bool:
    """Write the session report; says where it is, or why it could not be written."""
    from realtime.report import ReportError, write_report

    try:
        path = write_report(results, html, session=session)
    except ReportError as exc:
        print_error(exc)
        return False
    if not quiet():
        print(f"emotrack: report: {path}", file=sys.stderr)
    return True
