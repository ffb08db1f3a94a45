"""Plotly figures of the page: one emotion lane per speaker, and intensity/polarity over time.

Times go on a Plotly date axis, so ticks read as clock times (``01:02:03``): stream second ``t`` is
drawn at :data:`TIME_ZERO_MS` + ``t * 1000`` milliseconds, midnight UTC on 2000-01-01 (Plotly reads
small numbers on a date axis as years, so time cannot start at 0).
Every bar and point carries its utterance's index as ``customdata``; the page's glue script turns
a click into a selection of that utterance.
"""

from __future__ import annotations

import html
from typing import TypeVar

import numpy as np
import plotly.graph_objects as go

from realtime.report.palette import EMOTION_COLORS, EMOTIONS, POLARITY_COLORS
from realtime.report.timeline import IntensitySeries, Lane, Timeline

TIME_ZERO_MS = 946_684_800_000.0  # 2000-01-01T00:00:00Z
_Seconds = TypeVar("_Seconds", float, np.ndarray)
LANE_HEIGHT = 150  # px
INTENSITY_HEIGHT = 260  # px
MARKERS_LIMIT = 2000  # points per speaker above which the intensity line has no markers
_MARGIN = {"l": 70, "r": 20, "t": 8, "b": 8}
_FONT = {"family": "system-ui, sans-serif", "size": 12}


def _ms(seconds: _Seconds) -> _Seconds:
    """Stream seconds as a date axis' milliseconds."""
    return TIME_ZERO_MS + seconds * 1000.0


def _time_axis(timeline: Timeline, *, ticks: bool) -> dict[str, object]:
    return {
        "type": "date",
        "range": [_ms(0.0), _ms(timeline.duration)],
        "tickformat": "%H:%M:%S",
        "showticklabels": ticks,
        "showgrid": True,
        "gridcolor": "#eee",
    }


def lane_figure(lane: Lane, timeline: Timeline, *, legend: bool = False) -> go.Figure:
    """``lane``'s emotion distribution, stacked: a bar per utterance, or a step per time bin.

    Binned lanes are stacked areas (seven paths per lane, however long the session) rather than
    bars (seven per bin), which keeps an 8-hour session quick to draw.
    """
    what = f"{timeline.bin_seconds:g} s bin" if timeline.binned else "utterance"
    fig = go.Figure([_lane_trace(lane, emotion, timeline.binned, legend) for emotion in EMOTIONS])
    fig.update_layout(
        barmode="stack",
        bargap=0,
        height=LANE_HEIGHT + (30 if legend else 0),
        margin={**_MARGIN, "t": 30 if legend else _MARGIN["t"]},
        font=_FONT,
        plot_bgcolor="white",
        hovermode="x unified",
        hoverlabel={"namelength": -1},
        legend={
            "orientation": "h",
            "x": 0,
            "y": 1.02,
            "yanchor": "bottom",
            "itemclick": False,
            "itemdoubleclick": False,
        },
        xaxis={**_time_axis(timeline, ticks=False), "hoverformat": f"%H:%M:%S ({what})"},
        yaxis={
            "range": [0, 1],
            "tickformat": ".0%",
            "tickvals": [0, 0.5, 1],
            "fixedrange": True,
            "title": {"text": html.escape(lane.speaker), "font": {"color": lane.color}},
        },
    )
    return fig


def _lane_trace(lane: Lane, emotion: str, binned: bool, legend: bool) -> go.Bar | go.Scatter:
    common = {
        "x": _ms(lane.center),
        "y": lane.shares[emotion],
        "customdata": lane.utterance,
        "name": emotion,
        "legendgroup": emotion,
        "showlegend": legend,
        "hovertemplate": f"{emotion} %{{y:.0%}}<extra></extra>",
    }
    color = EMOTION_COLORS[emotion]
    if binned:
        return go.Scatter(
            **common,
            mode="lines",
            stackgroup="emotions",
            line={"shape": "hvh", "width": 0, "color": color},
            fillcolor=color,
        )
    return go.Bar(**common, width=lane.width * 1000, marker={"color": color, "line": {"width": 0}})


def intensity_figure(timeline: Timeline) -> go.Figure:
    """Intensity (-3..+3) of every utterance, a line per speaker, markers coloured by polarity."""
    fig = go.Figure([_intensity_trace(series) for series in timeline.intensity])
    fig.update_layout(
        height=INTENSITY_HEIGHT,
        margin={**_MARGIN, "t": 30, "b": 30},
        font=_FONT,
        plot_bgcolor="white",
        hovermode="closest",
        legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        xaxis=_time_axis(timeline, ticks=True),
        yaxis={
            "range": [-3.2, 3.2],
            "tickvals": [-3, -1.5, 0, 1.5, 3],
            "zeroline": True,
            "zerolinecolor": "#999",
            "fixedrange": True,
            "title": {"text": "intensity"},
        },
    )
    return fig


def _intensity_trace(series: IntensitySeries) -> go.Scatter:
    many = len(series.time) > MARKERS_LIMIT
    name = html.escape(series.speaker)
    return go.Scatter(
        x=_ms(series.time),
        y=series.intensity,
        customdata=series.utterance,
        name=name,
        mode="lines" if many else "lines+markers",
        line={"color": series.color, "width": 1 if many else 1.5},
        marker={
            "size": 8,
            "color": [POLARITY_COLORS[p] for p in series.polarity],
            "line": {"color": series.color, "width": 1.5},
        },
        hovertemplate=f"%{{x|%H:%M:%S}} {name}: intensity %{{y:+.2f}}<extra></extra>",
    )
