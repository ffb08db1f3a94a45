"""Rich terminal dashboard: a live view of the conversation, redrawn by one task at a fixed rate.

:meth:`DashboardSink.publish` and :meth:`DashboardSink.update_stats` only record state; a single
refresh task draws a frame ``refresh_hz`` times per second, however fast results arrive. Every line
is cut to the terminal's width and the frame to its height, so it fits an 80x24 terminal or a tmux
pane. On close the last frame stays on screen (unless ``transient``) and a session summary table
is printed below it. A speaker revision (diarisation, :meth:`DashboardSink.revise`) re-labels the
utterance's transcript row and moves it from one speaker's trend and summary to the other's. An
interim result (``--partial``) is a live row at the bottom of the transcript (dim, "speaking…",
after the words so far with ``--partial-text``, their end when they do not fit) until the
utterance's final result replaces it. A speculative result (``--speculative``) is shown
at once with a dim "…" after its words until it is confirmed; a revision of it (the speaker went
on) replaces its row, in place, and what it added to its speaker's trend and summary; so does
a re-read (a later utterance of the speaker changed its label, :mod:`realtime.reread`), marked
with a dim "(re-read)".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from realtime.messages import (
    EmotionResult,
    PartialResult,
    SpeakerRevision,
    StatsSnapshot,
    UtteranceConfirmed,
)
from realtime.sinks.base import Sink, SinkError

logger = logging.getLogger(__name__)

EMOTION_STYLES: dict[str, str] = {
    "neutral": "grey70",
    "joy": "bold yellow",
    "surprise": "bold cyan",
    "anger": "bold red",
    "sadness": "bold blue",
    "disgust": "bold green",
    "fear": "bold magenta",
}
# One character per emotion for the trend line; letters still read without colour.
EMOTION_GLYPHS: dict[str, str] = {
    "neutral": "N",
    "joy": "J",
    "surprise": "!",
    "anger": "A",
    "sadness": "S",
    "disgust": "D",
    "fear": "F",
}
POLARITY_STYLES: dict[str, str] = {"negative": "red", "neutral": "grey70", "positive": "green"}
SPARK = "▁▂▃▄▅▆▇█"
INTENSITY_RANGE = 3.0
# Order in which known stages are shown; other stages follow alphabetically.
STAGE_ORDER = ("vad", "asr", "context", "inference", "total")

_STATUS_HEIGHT = 5  # panel with three lines
_HEADER_HEIGHT = 1


@dataclass
class _SpeakerState:
    utterances: int = 0
    emotions: collections.Counter[str] = field(default_factory=collections.Counter)
    intensity_sum: float = 0.0
    latency_totals: list[float] = field(default_factory=list)
    recent: collections.deque[tuple[str, float]] = field(default_factory=collections.deque)
    last_seq: int = -1


@dataclass(frozen=True)
class _Entry:
    """What one result added to its speaker's state."""

    seq: int
    speaker: str
    emotion: str
    intensity: float
    total: float | None  # end-to-end latency, when the result has one


class DashboardSink(Sink):
    """Live terminal view of the results.

    Args:
        console: where to draw (default: a new console on standard output). Tests pass
            ``Console(record=True, width=80, height=24, file=io.StringIO())``.
        refresh_hz: frames per second drawn by the refresh task.
        trend_length: how many recent utterances the per-speaker trend shows.
        max_speakers: speakers shown in the trend panel (the most recently active ones).
        history: results kept for the transcript (only those that fit are drawn).
        screen: draw on the terminal's alternate screen (the frame disappears on close).
        transient: erase the last frame on close (the summary is printed either way).
        title: shown in the header line.
        name: the sink's name in logs and counters.
    """

    def __init__(
        self,
        *,
        console: Console | None = None,
        refresh_hz: float = 4.0,
        trend_length: int = 12,
        max_speakers: int = 4,
        history: int = 200,
        screen: bool = False,
        transient: bool = False,
        title: str = "emotrack",
        name: str = "dashboard",
    ) -> None:
        if refresh_hz <= 0:
            raise ValueError(f"refresh_hz must be positive, got {refresh_hz}")
        if trend_length < 1 or max_speakers < 1 or history < 1:
            raise ValueError("trend_length, max_speakers and history must be at least 1")
        self.name = name
        self.console = console if console is not None else Console()
        self.refresh_hz = refresh_hz
        self.trend_length = trend_length
        self.max_speakers = max_speakers
        self.screen = screen
        self.transient = transient
        self.title = title
        self._results: collections.deque[EmotionResult] = collections.deque(maxlen=history)
        self._speakers: dict[str, _SpeakerState] = {}
        # Utterance seq -> what its result added to a speaker's state, to move it on a revision.
        self._entries: dict[int, _Entry] = {}
        self.revisions = 0
        self.replaced = 0  # rows replaced by a revision of a speculative result
        self.reread = 0  # rows replaced by a re-read (the speaker's voice became known)
        self._speaking: dict[int, PartialResult] = {}  # channel -> latest interim result
        self._stage_latencies: dict[str, list[float]] = collections.defaultdict(list)
        self._count = 0
        self._session: str | None = None
        self._model_version: str | None = None
        self._stats: StatsSnapshot | None = None
        self._live: Live | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._frames = 0

    # -- Sink API -----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._live is not None:
            raise SinkError(f"{self.name}: already open")
        self._stop.clear()
        self._live = Live(
            self.render(),
            console=self.console,
            auto_refresh=False,  # the refresh task below is the only thing that redraws
            screen=self.screen,
            transient=self.transient,
            vertical_overflow="crop",
        )
        self._live.start(refresh=True)
        self._task = asyncio.create_task(self._refresh_loop(), name=f"{self.name}:refresh")
        self._task.add_done_callback(self._on_task_done)

    async def publish(self, result: EmotionResult) -> None:
        self.record(result)

    async def partial(self, result: PartialResult) -> None:
        self._speaking[result.channel] = result

    async def revise(self, revision: SpeakerRevision) -> None:
        self.relabel(revision.utterance_seq, revision.new)

    async def confirm(self, confirmation: UtteranceConfirmed) -> None:
        self._rows(confirmation.utterance_seq, lambda r: replace(r, speculative=False))

    def update_stats(self, stats: StatsSnapshot) -> None:
        self._stats = stats

    async def close(self, stats: StatsSnapshot) -> None:
        self._stats = stats
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        live, self._live = self._live, None
        if live is not None:
            live.update(self.render(), refresh=True)
            live.stop()
            if not self.console.is_terminal and not self.transient:
                self.console.line()  # Live ends its last frame with a newline only on terminals
        self.console.print(self.summary())

    # -- state --------------------------------------------------------------------------------

    @property
    def frames_drawn(self) -> int:
        return self._frames

    def record(self, result: EmotionResult) -> None:
        """Add a result to the dashboard's state (no drawing); a revision replaces the row and
        the trend entry of the result it revises."""
        self._session = result.session
        self._model_version = result.model_version
        # The utterance is over: its live row goes (any channel's interim result it covers).
        self._speaking = {c: p for c, p in self._speaking.items() if p.start > result.end}
        entry = _Entry(
            result.seq,
            result.speaker,
            result.emotion,
            result.intensity,
            result.latency.get("total"),
        )
        earlier = self._entries.get(result.utterance_seq)
        if result.revision and earlier is not None:  # in the place of the one it revises
            self._entries[result.utterance_seq] = replace(entry, seq=earlier.seq)
            self.reread += result.reread
            self.replaced += not result.reread
            self._rows(result.utterance_seq, lambda _: result)
            self._rebuild({earlier.speaker, result.speaker})
        else:
            self._entries[result.utterance_seq] = entry
            self._count += 1
            self._results.append(result)
            self._add(entry)
        if result.reread:  # its latency is the first result's, already counted
            return
        for stage, seconds in result.latency.items():
            self._stage_latencies[stage].append(seconds)

    def _rows(self, utterance_seq: int, change: Callable[[EmotionResult], EmotionResult]) -> None:
        """Apply ``change`` to the transcript row of utterance ``utterance_seq``, in place."""
        self._results = collections.deque(
            (change(r) if r.utterance_seq == utterance_seq else r for r in self._results),
            maxlen=self._results.maxlen,
        )

    def _rebuild(self, names: Iterable[str]) -> None:
        """The trends and summaries of ``names``, again in result order from their entries."""
        for name in names:
            self._speakers.pop(name, None)
            for other in sorted(self._entries.values(), key=lambda e: e.seq):
                if other.speaker == name:
                    self._add(other)

    def _add(self, entry: _Entry) -> None:
        state = self._speakers.get(entry.speaker)
        if state is None:
            state = _SpeakerState(recent=collections.deque(maxlen=self.trend_length))
            self._speakers[entry.speaker] = state
        state.utterances += 1
        state.emotions[entry.emotion] += 1
        state.intensity_sum += entry.intensity
        state.recent.append((entry.emotion, entry.intensity))
        state.last_seq = max(state.last_seq, entry.seq)
        if entry.total is not None:
            state.latency_totals.append(entry.total)

    def relabel(self, utterance_seq: int, speaker: str) -> None:
        """Utterance ``utterance_seq`` is now ``speaker``'s: its row and both speakers' trends
        and summaries change (no drawing). An utterance never shown is ignored."""
        entry = self._entries.get(utterance_seq)
        if entry is None or entry.speaker == speaker:
            return
        self.revisions += 1
        old = entry.speaker
        self._entries[utterance_seq] = replace(entry, speaker=speaker)
        self._rows(utterance_seq, lambda r: replace(r, speaker=speaker))
        self._rebuild((old, speaker))

    async def _refresh_loop(self) -> None:
        period = 1.0 / self.refresh_hz
        while not self._stop.is_set():
            live = self._live
            if live is None:
                return
            live.update(self.render(), refresh=True)
            self._frames += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=period)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: refresh task failed", self.name, exc_info=task.exception())

    # -- rendering ----------------------------------------------------------------------------

    def render(self, width: int | None = None, height: int | None = None) -> RenderableType:
        """One frame sized to ``width`` x ``height`` (default: the console's size)."""
        size = self.console.size
        width = size.width if width is None else width
        if height is None:
            # Outside the alternate screen, a frame as tall as the terminal would scroll it.
            height = size.height if self.screen else size.height - 1
        width = max(width, 20)
        height = max(height, 1)
        # Priorities when space is short: header, transcript (4 lines at least), pipeline status,
        # then the mood panel, whose speaker rows go first.
        avail = height - _HEADER_HEIGHT
        min_transcript = 4
        status_height = _STATUS_HEIGHT if avail >= min_transcript + _STATUS_HEIGHT else 0
        avail -= status_height
        speakers = self._active_speakers()
        n_trend = len(speakers)
        while n_trend > 0 and avail - (3 + n_trend) < min_transcript:
            n_trend -= 1
        mood_height = 3 + n_trend if avail - (3 + n_trend) >= min_transcript else 0
        transcript_height = avail - mood_height

        parts: list[RenderableType] = [self._header(width)]
        if transcript_height >= 2:
            parts.append(self._transcript_panel(width, transcript_height))
        if mood_height:
            parts.append(self._mood_panel(width, speakers[len(speakers) - n_trend :]))
        if status_height:
            parts.append(self._status_panel(width))
        return Group(*parts)

    def _active_speakers(self) -> list[str]:
        ordered = sorted(self._speakers, key=lambda s: self._speakers[s].last_seq)
        return sorted(ordered[-self.max_speakers :])

    def _header(self, width: int) -> Text:
        stats = self._stats
        pieces = [self.title]
        if self._session:
            pieces.append(f"session {self._session}")
        if stats is not None:
            pieces.append(_clock(stats.elapsed))
            pieces.append(f"{stats.utterances} utt")
            pieces.append(f"{stats.results} results")
        else:
            pieces.append(f"{self._count} results")
        if self._model_version:
            pieces.append(f"model {self._model_version}")
        text = Text(" │ ".join(pieces), style="bold", no_wrap=True, overflow="ellipsis")
        text.truncate(width, overflow="ellipsis")
        return text

    def _transcript_panel(self, width: int, height: int) -> Panel:
        rows = max(0, height - 3)  # two borders and the column header
        table = Table(
            box=None,
            expand=True,
            show_edge=False,
            pad_edge=False,
            padding=(0, 1),
            header_style="bold dim",
        )
        table.add_column("time", width=5, no_wrap=True)
        table.add_column("speaker", max_width=10, no_wrap=True, overflow="ellipsis")
        table.add_column("emotion", width=13, no_wrap=True, overflow="ellipsis")
        table.add_column("text", ratio=1, no_wrap=True, overflow="ellipsis")
        live = sorted(self._speaking.values(), key=lambda p: p.start)[-rows:] if rows else []
        shown = rows - len(live)
        recent = list(self._results)[-shown:] if shown > 0 else []
        for r in recent:
            confidence = r.emotion_probs.get(r.emotion, 0.0)
            table.add_row(
                _clock(r.start),
                Text(_one_line(r.speaker)),
                Text(f"{r.emotion} {confidence:.2f}", style=EMOTION_STYLES.get(r.emotion, "")),
                Text(_one_line(r.text)).append(_marker(r), style="dim"),
            )
        for p in live:
            confidence = p.prediction.emotion_probs.get(p.prediction.emotion, 0.0)
            table.add_row(
                _clock(p.start),
                Text(_one_line(p.speaker), style="dim"),
                Text(f"{p.prediction.emotion} {confidence:.2f}", style="dim italic"),
                _speaking(p.text, width - TEXT_COLUMN_OFFSET),
            )
        if not recent and not live and rows:
            table.add_row("", "", "", Text("waiting for speech…", style="dim italic"))
        return Panel(
            table,
            title="Transcript",
            title_align="left",
            height=height,
            width=width,
            box=box.ROUNDED,
            padding=(0, 1),
        )

    def _mood_panel(self, width: int, speakers: list[str]) -> Panel:
        inner = width - 4
        lines: list[Text] = [self._polarity_line(inner)]
        if speakers:
            grid = Table.grid(padding=(0, 1))
            grid.add_column(max_width=10, no_wrap=True, overflow="ellipsis")
            grid.add_column(no_wrap=True)  # emotion glyphs
            grid.add_column(no_wrap=True)  # intensity sparkline
            grid.add_column(no_wrap=True, overflow="ellipsis")
            for name in speakers:
                state = self._speakers[name]
                glyphs = Text()
                spark = Text()
                for emotion, intensity in state.recent:
                    glyphs.append(EMOTION_GLYPHS.get(emotion, "?"), EMOTION_STYLES.get(emotion, ""))
                    spark.append(_spark(intensity), _intensity_style(intensity))
                glyphs.pad_right(self.trend_length - len(state.recent))
                spark.pad_right(self.trend_length - len(state.recent))
                dominant, share = _dominant(state.emotions)
                mean = state.intensity_sum / max(1, state.utterances)
                summary = Text()
                summary.append(f"{dominant} {share:.0%}", EMOTION_STYLES.get(dominant, ""))
                summary.append(f"  mean {mean:+.1f}")
                grid.add_row(Text(_one_line(name)), glyphs, spark, summary)
            body: RenderableType = Group(*lines, grid)
        else:
            body = Group(*lines)
        legend = "  ".join(f"{g} {e}" for e, g in EMOTION_GLYPHS.items())
        return Panel(
            body,
            title="Mood",
            title_align="left",
            subtitle=legend if len(legend) + 6 <= width else None,
            subtitle_align="left",
            width=width,
            box=box.ROUNDED,
            padding=(0, 1),
        )

    def _polarity_line(self, width: int) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        if not self._results:
            line.append("polarity  no results yet", style="dim")
            return line
        last = self._results[-1]
        p = last.polarity_probs.get(last.polarity, 0.0)
        label = f"{last.polarity[:3]} {p:.2f} "
        value = f" {last.intensity:+.1f}"
        recent = [r.intensity for r in list(self._results)[-10:]]
        avg = f"  avg10 {statistics.fmean(recent):+.1f}"
        bar_width = width - len("polarity ") - len(label) - len("-3 ") - len(" +3") - len(value)
        bar_width -= len(avg)
        if bar_width < 9:
            avg = ""
            bar_width += len(f"  avg10 {0:+.1f}")
        bar_width = max(5, min(41, bar_width))
        if bar_width % 2 == 0:
            bar_width -= 1
        line.append("polarity ", style="bold")
        line.append(label, style=POLARITY_STYLES.get(last.polarity, ""))
        line.append("-3 ", style="dim")
        line.append_text(_intensity_bar(last.intensity, bar_width))
        line.append(" +3", style="dim")
        line.append(value, style=_intensity_style(last.intensity))
        line.append(avg, style="dim")
        line.truncate(width, overflow="ellipsis")
        return line

    def _status_panel(self, width: int) -> Panel:
        inner = width - 4
        stats = self._stats
        latency = Text(no_wrap=True, overflow="ellipsis")
        latency.append("latency ", style="bold")
        if self._results and self._results[-1].latency:
            for i, (stage, seconds) in enumerate(_ordered(self._results[-1].latency)):
                latency.append(f"{'  ' if i else ''}{stage} ", style="dim")
                latency.append(f"{seconds:.2f}")
            latency.append(" s")
            p50 = self._latency_p50()
            if "total" in p50:
                latency.append(f"  p50 total {p50['total']:.2f}", style="dim")
        else:
            latency.append("-", style="dim")
        dropped = Text(no_wrap=True, overflow="ellipsis")
        dropped.append("dropped ", style="bold")
        drops = {} if stats is None else stats.dropped
        total_dropped = sum(drops.values())
        if drops:
            dropped.append(f"{total_dropped} ", style="bold red" if total_dropped else "green")
            dropped.append("(" + "  ".join(f"{k} {v}" for k, v in sorted(drops.items())) + ")")
        else:
            dropped.append("0", style="green")
        queues = Text(no_wrap=True, overflow="ellipsis")
        queues.append("queues  ", style="bold")
        depths = {} if stats is None else stats.queue_depths
        if depths:
            queues.append("  ".join(f"{k} {v}" for k, v in depths.items()))
        else:
            queues.append("-", style="dim")
        for text in (latency, dropped, queues):
            text.truncate(inner, overflow="ellipsis")
        return Panel(
            Group(latency, dropped, queues),
            title="Pipeline",
            title_align="left",
            height=_STATUS_HEIGHT,
            width=width,
            box=box.ROUNDED,
            padding=(0, 1),
        )

    def _latency_p50(self) -> dict[str, float]:
        if self._stats is not None and self._stats.latency_p50:
            return dict(self._stats.latency_p50)
        return {k: statistics.median(v) for k, v in self._stage_latencies.items() if v}

    def summary(self) -> RenderableType:
        """The end-of-session table: per speaker utterances, dominant emotion, mean intensity."""
        stats = self._stats
        title = "Session summary" + (f" · {self._session}" if self._session else "")
        table = Table(
            title=title,
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            title_style="bold",
            title_justify="left",
        )
        table.add_column("speaker", max_width=14, no_wrap=True, overflow="ellipsis")
        table.add_column("utterances", justify="right", no_wrap=True)
        table.add_column("dominant emotion", no_wrap=True)
        table.add_column("mean intensity", justify="right", no_wrap=True)
        table.add_column("p50 latency", justify="right", no_wrap=True)
        everyone = _SpeakerState()
        for name in sorted(self._speakers):
            state = self._speakers[name]
            everyone.utterances += state.utterances
            everyone.emotions.update(state.emotions)
            everyone.intensity_sum += state.intensity_sum
            everyone.latency_totals.extend(state.latency_totals)
            table.add_row(Text(_one_line(name)), *_summary_cells(state))
        if len(self._speakers) != 1:
            table.add_section()
            table.add_row(Text("all", style="bold"), *_summary_cells(everyone))
        lines: list[RenderableType] = [table]
        p50 = self._latency_p50()
        if p50:
            stages = ", ".join(f"{k} {v:.2f}" for k, v in _ordered(p50))
            lines.append(Text(f"latency p50 (s): {stages}", no_wrap=True, overflow="ellipsis"))
        if stats is not None:
            dropped = sum(stats.dropped.values())
            detail = ", ".join(f"{k} {v}" for k, v in sorted(stats.dropped.items()) if v)
            lines.append(
                Text(
                    f"utterances {stats.utterances} · results {stats.results} · "
                    + (f"revised on re-reading {self.reread} · " if self.reread else "")
                    + f"dropped {dropped}"
                    + (f" ({detail})" if detail else "")
                    + " · "
                    f"elapsed {_clock(stats.elapsed)}",
                    no_wrap=True,
                    overflow="ellipsis",
                )
            )
        return Group(*lines)


def _marker(result: EmotionResult) -> str:
    """What follows a row's words: "…" while it may change (speculative), "(re-read)" once a
    later utterance of the speaker changed its label."""
    if result.speculative:
        return " …"
    return " (re-read)" if result.reread else ""


def _summary_cells(state: _SpeakerState) -> tuple[str, Text, str, str]:
    dominant, share = _dominant(state.emotions)
    mean = f"{state.intensity_sum / state.utterances:+.2f}" if state.utterances else "-"
    p50 = f"{statistics.median(state.latency_totals):.2f} s" if state.latency_totals else "-"
    emotion = Text(f"{dominant} ({share:.0%})", style=EMOTION_STYLES.get(dominant, ""))
    return str(state.utterances), emotion, mean, p50


def _dominant(emotions: collections.Counter[str]) -> tuple[str, float]:
    if not emotions:
        return "-", 0.0
    emotion, count = emotions.most_common(1)[0]
    return emotion, count / sum(emotions.values())


def _ordered(values: Mapping[str, float]) -> Iterable[tuple[str, float]]:
    def key(item: tuple[str, float]) -> tuple[int, str]:
        stage = item[0]
        return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)

    return sorted(values.items(), key=key)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# Panel width minus the text column's (borders, padding and the time, speaker, emotion columns).
TEXT_COLUMN_OFFSET = 38
SPEAKING = "speaking…"


def _speaking(words: str, room: int) -> Text:
    """A live row's text: the words so far (``--partial-text``), their end when they do not fit,
    then "speaking…"."""
    words = _one_line(words)
    if not words:
        return Text(SPEAKING, style="dim italic")
    room = max(1, room - len(SPEAKING) - 1)
    if len(words) > room:
        words = "…" + words[len(words) - room + 1 :]
    return Text(words, style="italic").append(f" {SPEAKING}", style="dim italic")


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _spark(intensity: float) -> str:
    clipped = max(-INTENSITY_RANGE, min(INTENSITY_RANGE, intensity))
    index = round((clipped + INTENSITY_RANGE) / (2 * INTENSITY_RANGE) * (len(SPARK) - 1))
    return SPARK[index]


def _intensity_style(intensity: float) -> str:
    if intensity > 0.05:
        return "green"
    if intensity < -0.05:
        return "red"
    return "grey70"


def _intensity_bar(intensity: float, width: int) -> Text:
    """A bar centred on 0: filled from the centre towards the intensity, in [-3, 3]."""
    half = width // 2
    clipped = max(-INTENSITY_RANGE, min(INTENSITY_RANGE, intensity))
    filled = round(abs(clipped) / INTENSITY_RANGE * half)
    style = _intensity_style(intensity)
    bar = Text(no_wrap=True)
    if clipped < 0:
        bar.append("─" * (half - filled), style="dim")
        bar.append("█" * filled, style=style)
    else:
        bar.append("─" * half, style="dim")
    bar.append("┃", style="bold")
    if clipped > 0:
        bar.append("█" * filled, style=style)
        bar.append("─" * (half - filled), style="dim")
    else:
        bar.append("─" * half, style="dim")
    return bar
