"""The report page: one self-contained HTML document (Plotly's JavaScript and the audio inlined).

Parts a test or a script can find: ``.lane[data-speaker]`` (one per speaker, holding its chart;
``data-utterances`` its utterance count), ``#intensity``, ``#utterance-count``, the transcript's
rows in view ``#rows li`` (``id="u<index>"``, ``data-start`` in seconds; drawn by the script
from ``#transcript-data``), ``#selection`` (the selected utterance; ``data-index``), ``#audio``
(a recorded session's player), ``#speaker-summary``, ``#latency`` and ``#metadata``.
``<body data-ready="true">`` once every chart and the transcript are drawn.
"""

from __future__ import annotations

import collections
import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
import plotly.io as pio

from realtime.report.assets import SCRIPT, STYLE
from realtime.report.audio import AudioSource
from realtime.report.figures import TIME_ZERO_MS
from realtime.report.load import Session, Utterance
from realtime.report.palette import EMOTION_COLORS, EMOTIONS, POLARITIES, POLARITY_COLORS
from realtime.report.summary import ALL_SPEAKERS, SpeakerSummary, latency_percentiles
from realtime.sinks.dashboard import _clock

PLOTLY_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "toImage"],
}
LANE_CONFIG = {**PLOTLY_CONFIG, "displayModeBar": False}  # drag to zoom, double-click to reset
_ATTACH = "window.emotrackReport.attach('{plot_id}');"


@dataclass(frozen=True)
class PageFigures:
    lanes: tuple[tuple[str, int, go.Figure], ...]  # speaker, utterances, chart
    intensity: go.Figure
    note: str  # how the lanes are drawn (per utterance, or binned)


def render_page(
    session: Session,
    figures: PageFigures,
    summaries: Sequence[SpeakerSummary],
    speaker_colors: dict[str, str],
    *,
    audio: AudioSource | None,
    generated: str,
) -> str:
    """The whole HTML document."""
    e = html.escape
    charts = [
        f'<div class="lane" data-speaker="{e(name)}" data-utterances="{count}">'
        f"{_figure(fig, f'lane-{i}', first=i == 0, config=LANE_CONFIG)}</div>"
        for i, (name, count, fig) in enumerate(figures.lanes)
    ]
    player = (
        f'<audio id="audio" controls preload="auto" src="{e(audio.src)}"></audio>' if audio else ""
    )
    n = len(session.utterances)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>emotrack report · {e(session.session)}</title>
<link rel="icon" href="data:,">
<style>{STYLE}{_classes(speaker_colors)}</style>
<script>{SCRIPT}</script>
</head>
<body data-plots="{len(charts) + 1}" data-time-zero="{TIME_ZERO_MS:.0f}">
<header>
<h1>Conversation report · session {e(session.session)}</h1>
<p>{n} utterances · {len(session.speakers)} speakers ({e(", ".join(session.speakers))}) ·
{_clock(session.duration)} · generated {e(generated)} by emotrack report</p>
</header>
<main>
<section id="charts">
<h2>Emotion over time, per speaker</h2>
<p class="hint">{e(figures.note)} Click a chart to see what was said; drag to zoom (every
chart follows), double-click to zoom out.</p>
<div id="lanes">{"".join(charts)}</div>
<h2>Polarity and intensity</h2>
<p class="hint">A line per speaker; marker colour: {_polarity_legend()}.</p>
<div id="intensity">{_figure(figures.intensity, "intensity-chart", first=not charts)}</div>
<div id="selection" aria-live="polite"><span class="hint">No utterance selected.</span></div>
{player}
</section>
<aside id="transcript">
<h2>Transcript (<span id="utterance-count">{n}</span> utterances)</h2>
<div id="rows-view"><ol id="rows"></ol></div>
<script type="application/json" id="transcript-data">{_transcript_data(session)}</script>
</aside>
</main>
<div class="below">
<section id="summary"><h2>Speakers</h2>{_summary_table(summaries)}</section>
<section id="metadata"><h2>Session</h2>{_metadata(session, audio)}
<h2>Latency (seconds)</h2>{_latency_table(session.utterances)}</section>
</div>
</body>
</html>
"""


def _figure(
    fig: go.Figure, div_id: str, *, first: bool, config: dict[str, object] = PLOTLY_CONFIG
) -> str:
    """The chart's ``<div>`` and script; the first one also carries Plotly's JavaScript."""
    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=first,
        div_id=div_id,
        config=config,
        post_script=_ATTACH,
    )


def _polarity_legend() -> str:
    return ", ".join(f'<span class="p-{p}">\u25cf {p}</span>' for p in POLARITY_COLORS)


def _classes(speaker_colors: dict[str, str]) -> str:
    """CSS classes for the palette, so transcript rows carry short class names, not styles."""
    rules = [f".s{i}{{color:{c}}}" for i, c in enumerate(speaker_colors.values())]
    rules += [f".e-{k}{{background:{c}55}}" for k, c in EMOTION_COLORS.items()]
    rules += [f".p-{k}{{color:{c}}}" for k, c in POLARITY_COLORS.items()]
    return "\n" + "\n".join(rules) + "\n"


def _transcript_data(session: Session) -> str:
    """The transcript as columns of JSON (the page's script draws the rows in view)."""
    us = session.utterances
    speaker = {name: i for i, name in enumerate(session.speakers)}
    data = {
        "speakers": list(session.speakers),
        "emotions": list(EMOTIONS),
        "polarities": list(POLARITIES),
        "start": [round(u.start, 3) for u in us],
        "end": [round(u.end, 3) for u in us],
        "speaker": [speaker[u.speaker] for u in us],
        "emotion": [EMOTIONS.index(u.emotion) for u in us],
        "confidence": [round(u.confidence, 3) for u in us],
        "polarity": [POLARITIES.index(u.polarity) for u in us],
        "intensity": [round(u.intensity, 2) for u in us],
        "text": [u.text for u in us],
    }
    # "<" escaped, so no text can close the <script> element.
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def _summary_table(summaries: Iterable[SpeakerSummary]) -> str:
    e = html.escape
    rows = []
    for s in summaries:
        dominant = (
            f'<span class="emo e-{s.dominant}">{s.dominant}</span> ({s.dominant_share:.0%})'
            if s.dominant
            else "-"
        )
        mix = ", ".join(f"{emotion} {count}" for emotion, count in s.emotions.items())
        mean = "-" if s.mean_intensity is None else f"{s.mean_intensity:+.2f}"
        p50 = "-" if s.latency_p50 is None else f"{s.latency_p50:.2f} s"
        css = ' class="all"' if s.speaker == ALL_SPEAKERS else ""
        rows.append(
            f"<tr{css}><td>{e(s.speaker)}</td><td class=n>{s.utterances}</td><td>{dominant}</td>"
            f"<td class=n>{mean}</td><td class=n>{p50}</td><td>{mix}</td></tr>"
        )
    return (
        '<table id="speaker-summary"><thead><tr><th>speaker</th><th class=n>utterances</th>'
        "<th>dominant emotion</th><th class=n>mean intensity</th><th class=n>p50 latency</th>"
        f"<th>emotions</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _latency_table(utterances: Sequence[Utterance]) -> str:
    table = latency_percentiles(utterances)
    if not table:
        return '<p class="hint">No latencies recorded.</p>'
    columns = list(next(iter(table.values())))
    head = "".join(f"<th class=n>{c}</th>" for c in columns)
    body = "".join(
        f"<tr><td>{html.escape(stage)}</td>"
        + "".join(f"<td class=n>{row[c]:.3f}</td>" for c in columns)
        + "</tr>"
        for stage, row in table.items()
    )
    return (
        f'<table id="latency"><thead><tr><th>stage</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _metadata(session: Session, audio: AudioSource | None) -> str:
    us = session.utterances
    versions = collections.Counter(u.model_version for u in us)
    modalities = collections.Counter("+".join(u.modalities) for u in us)
    items: list[tuple[str, str]] = [
        ("session", session.session),
        ("input", str(session.input_path)),
    ]
    manifest = session.manifest
    if manifest is not None:
        state = "complete" if manifest.complete else "not closed cleanly"
        items.append(("recorded from", f"{manifest.folder} ({state})"))
        items.append(("video", "recorded" if manifest.video else "none"))
    items += [
        ("results", str(len(us))),
        ("speakers", ", ".join(session.speakers)),
        ("speech span", f"{_clock(min(u.start for u in us))} – {_clock(session.duration)}"),
        ("wall clock", f"{us[0].timestamp} – {us[-1].timestamp}"),
        ("model version", ", ".join(f"{v} ({n})" for v, n in versions.most_common())),
        ("modalities", ", ".join(f"{m} ({n})" for m, n in modalities.most_common())),
        ("audio", _audio_note(session, audio)),
    ]
    if session.other_sessions:
        items.append(("other sessions in the file", ", ".join(session.other_sessions)))
    body = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items)
    return f'<dl id="meta">{body}</dl>'


def _audio_note(session: Session, audio: AudioSource | None) -> str:
    if audio is not None:
        return audio.description
    return "none (unreadable recording)" if session.manifest else "none (JSON lines input)"
