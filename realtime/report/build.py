"""``write_report``: a session's results in, an HTML page (and optionally a PNG) out."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from realtime.recorder import AUDIO, MANIFEST, RESULTS, VIDEO
from realtime.report.audio import EMBED_MAX_SECONDS, audio_source
from realtime.report.errors import ReportError
from realtime.report.figures import intensity_figure, lane_figure
from realtime.report.load import load_session
from realtime.report.page import PageFigures, render_page
from realtime.report.palette import speaker_color
from realtime.report.summary import speaker_summaries
from realtime.report.timeline import DETAIL_LIMIT, build_timeline
from realtime.serialize import utc_timestamp
from unimse.output_paths import output_problem, same_file

logger = logging.getLogger(__name__)


def write_report(
    input_path: str | os.PathLike[str],
    output_html: str | os.PathLike[str],
    png: str | os.PathLike[str] | None = None,
    *,
    session: str | None = None,
    detail_limit: int = DETAIL_LIMIT,
    embed_audio_max_seconds: float = EMBED_MAX_SECONDS,
) -> Path:
    """Write the report of ``input_path`` (a JSON lines file or a ``--record`` folder).

    Returns the HTML file's path. ``png`` also writes the timeline as a PNG. ``session`` picks
    one session of a JSON lines file holding several (default: the last). Sessions with more
    than ``detail_limit`` utterances get time-binned emotion lanes. A recording's audio is
    embedded up to ``embed_audio_max_seconds``, linked beyond. Missing folders of the outputs
    are made. Raises :class:`~realtime.report.errors.ReportError` on unusable input, or, before
    anything is read or written, on an output that cannot be written or that is the input (or
    one of a recording's files) or the other output.
    """
    began = time.perf_counter()
    output = Path(output_html).expanduser()
    png_path = None if png is None else Path(png).expanduser()
    check_outputs(input_path, output, png_path)
    data = load_session(input_path, session=session)
    colors = {name: speaker_color(i) for i, name in enumerate(data.speakers)}
    timeline = build_timeline(data, colors, detail_limit=detail_limit)
    lanes = tuple(
        (lane.speaker, len(series.time), lane_figure(lane, timeline, legend=i == 0))
        for i, (lane, series) in enumerate(zip(timeline.lanes, timeline.intensity, strict=True))
    )
    note = (
        f"Bars: mean emotion distribution per {timeline.bin_seconds:g} s "
        f"({len(data.utterances)} utterances: more than {detail_limit} are binned)."
        if timeline.binned
        else "Bars: one per utterance, its emotion distribution."
    )
    figures = PageFigures(lanes=lanes, intensity=intensity_figure(timeline), note=note)
    audio = None
    if data.manifest is not None:
        audio = audio_source(
            data.manifest.audio, output.parent, embed_max_seconds=embed_audio_max_seconds
        )
    page = render_page(
        data,
        figures,
        speaker_summaries(data.utterances),
        colors,
        audio=audio,
        generated=utc_timestamp(),
    )
    _write_text(output, page)
    logger.info(
        "report of session %s (%d utterances) written to %s (%.1f MB) in %.2f s",
        data.session,
        len(data.utterances),
        output,
        output.stat().st_size / 1e6,
        time.perf_counter() - began,
    )
    if png_path is not None:
        from realtime.report.png import write_png

        try:
            write_png(timeline, png_path, title=f"session {data.session}")
        except OSError as exc:
            raise ReportError(f"cannot write {png_path}: {exc.strerror or exc}") from None
        logger.info("timeline written to %s", png_path)
    return output


def check_outputs(
    input_path: str | os.PathLike[str], output: Path, png: Path | None = None
) -> None:
    """Refuse (:class:`ReportError`) an output that would overwrite the input (a recording's
    files included) or the other output, or that cannot be written (its folders are made)."""
    source = Path(input_path).expanduser()
    recording = (RESULTS, MANIFEST, AUDIO, VIDEO) if source.is_dir() else ()
    inputs = [source, *(source / name for name in recording)]
    named = [("the report", output), *([("the PNG", png)] if png is not None else [])]
    for what, path in named:
        clash = next((i for i in inputs if same_file(path, i)), None)
        if clash is not None:
            raise ReportError(
                f"{what} {path} would overwrite its input {clash} (write it to another file)"
            )
    if png is not None and same_file(output, png):
        raise ReportError(f"the report and the PNG are the same file {png} (give each its own)")
    for what, path in named:
        problem = output_problem(path, make_parents=True)
        if problem is not None:
            raise ReportError(f"cannot write {what} to {path}: {problem} (choose another path)")


def _write_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (through a temporary file beside it)."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # the error below says what went wrong
            partial.unlink(missing_ok=True)
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from None
