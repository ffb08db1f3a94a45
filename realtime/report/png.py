"""The timeline as a PNG for quick sharing (matplotlib, no browser needed).

The same lanes and intensity series as the page: stacked emotion bars per speaker, then intensity
with markers coloured by polarity. Uses matplotlib's object API (no pyplot, no global state).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MultipleLocator

from realtime.report.palette import EMOTION_COLORS, EMOTIONS, POLARITY_COLORS
from realtime.report.timeline import Timeline, bin_width
from realtime.sinks.dashboard import _clock

WIDTH_IN = 12.0
LANE_IN = 1.2
INTENSITY_IN = 2.2
DPI = 110
MARKERS_LIMIT = 2000  # points per speaker above which the intensity line has no markers


def write_png(timeline: Timeline, path: Path, *, title: str) -> None:
    """Draw ``timeline`` to ``path`` (PNG)."""
    n = len(timeline.lanes)
    fig = Figure(
        figsize=(WIDTH_IN, 0.6 + n * LANE_IN + INTENSITY_IN), dpi=DPI, layout="constrained"
    )
    axes = fig.subplots(n + 1, 1, sharex=True, height_ratios=[LANE_IN] * n + [INTENSITY_IN])
    colors = [EMOTION_COLORS[e] for e in EMOTIONS]
    for ax, lane in zip(axes[:n], timeline.lanes, strict=True):
        shares = [lane.shares[e] for e in EMOTIONS]
        if timeline.binned:  # one polygon per emotion, as on the page
            ax.stackplot(lane.center, *shares, colors=colors, step="mid", linewidth=0)
        else:
            bottom = np.zeros(len(lane.center))
            for share, color in zip(shares, colors, strict=True):
                ax.bar(lane.center, share, lane.width, bottom, color=color, linewidth=0)
                bottom = bottom + share
        ax.set_ylim(0, 1)
        ax.set_yticks([0, 0.5, 1], ["0", "50%", "100%"])
        ax.set_ylabel(lane.speaker, color=lane.color, rotation=0, ha="right", va="center")
    axes[0].legend(
        handles=[Patch(color=EMOTION_COLORS[e], label=e) for e in EMOTIONS],
        loc="lower left",
        bbox_to_anchor=(0, 1.02),
        ncols=len(EMOTIONS),
        frameon=False,
    )
    ax = axes[n]
    for series in timeline.intensity:
        ax.plot(
            series.time, series.intensity, color=series.color, linewidth=1, label=series.speaker
        )
        if len(series.time) <= MARKERS_LIMIT:
            ax.scatter(
                series.time,
                series.intensity,
                s=36,
                zorder=3,
                c=[POLARITY_COLORS[p] for p in series.polarity],
                edgecolors=series.color,
            )
    ax.axhline(0, color="#999", linewidth=0.8)
    ax.set_ylim(-3.2, 3.2)
    ax.set_ylabel("intensity")
    polarity = [
        Line2D([], [], linestyle="", marker="o", color=POLARITY_COLORS[p], label=p)
        for p in POLARITY_COLORS
    ]
    ax.legend(
        handles=[*ax.get_legend_handles_labels()[0], *polarity],
        loc="lower left",
        bbox_to_anchor=(0, 1.0),
        ncols=len(timeline.intensity) + len(polarity),
        fontsize="small",
        frameon=False,
    )
    ax.set_xlim(0, timeline.duration)
    ax.xaxis.set_major_locator(MultipleLocator(bin_width(timeline.duration, max_bins=12)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: _clock(x)))
    fig.suptitle(title, x=0.01, ha="left", fontsize="medium")
    fig.savefig(path, format="png")
