"""Colours shared by the HTML page and the PNG: one per emotion, polarity and speaker."""

from __future__ import annotations

from plotly.colors import qualitative, unlabel_rgb

EMOTIONS: tuple[str, ...] = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
POLARITIES: tuple[str, ...] = ("negative", "neutral", "positive")

EMOTION_COLORS: dict[str, str] = {
    "neutral": "#b0b0b0",
    "joy": "#f2c12e",
    "surprise": "#17becf",
    "anger": "#d62728",
    "sadness": "#1f77b4",
    "disgust": "#2ca02c",
    "fear": "#9467bd",
}
POLARITY_COLORS: dict[str, str] = {
    "negative": "#d62728",
    "neutral": "#8c8c8c",
    "positive": "#2ca02c",
}
# Plotly's "Dark2" set, as hex so that matplotlib reads it too.
_SPEAKER_COLORS: tuple[str, ...] = tuple(
    "#{:02x}{:02x}{:02x}".format(*(int(c) for c in unlabel_rgb(rgb))) for rgb in qualitative.Dark2
)


def speaker_color(index: int) -> str:
    """The colour of the ``index``-th speaker (the palette repeats after eight)."""
    return _SPEAKER_COLORS[index % len(_SPEAKER_COLORS)]
