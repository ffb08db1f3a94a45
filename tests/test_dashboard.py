"""Rich dashboard: what a frame shows, that it fits 80x24 (and a tmux pane), and the summary."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from factories import result_factory, stats_factory
from rich.cells import cell_len
from rich.console import Console

from realtime.sinks import DashboardSink

REPO = Path(__file__).resolve().parents[1]
LONG_TEXT = "so I told them we would ship the whole thing by friday and of course " * 3
STATS = stats_factory(
    elapsed=83.0,
    utterances=9,
    results=9,
    dropped={"video": 3, "inference": 1},
    queue_depths={"asr": 0, "inference": 2, "mqtt": 5},
    latency_p50={"vad": 0.31, "asr": 0.22, "inference": 0.05, "total": 0.64},
)


def recorded_console(width: int = 80, height: int = 24) -> Console:
    return Console(record=True, width=width, height=height, file=io.StringIO())


def fill(sink: DashboardSink, n: int = 9) -> None:
    speakers = ["alice", "bob", "Dr. Bartholomew Longname"]
    for seq in range(n):
        text = LONG_TEXT if seq == n - 1 else f"utterance {seq} [bold]not markup[/bold]"
        sink.record(result_factory(seq=seq, speaker=speakers[seq % 3], text=text))


def check_fits(text: str, width: int, height: int | None = None) -> list[str]:
    lines = text.splitlines()
    too_wide = [line for line in lines if cell_len(line) > width]
    assert not too_wide, f"{len(too_wide)} lines wider than {width}: {too_wide[0]!r}"
    if height is not None:
        assert len(lines) <= height, f"{len(lines)} lines for a {height}-line terminal"
    return lines


def test_frame_shows_transcript_mood_latency_and_drops_within_80x24() -> None:
    console = recorded_console()
    sink = DashboardSink(console=console)
    fill(sink)
    sink.update_stats(STATS)
    console.print(sink.render())
    text = console.export_text()
    lines = check_fits(text, 80, 24)

    assert "session test-session" in lines[0] and "01:23" in lines[0]
    # Rolling transcript: speaker, emotion with confidence, text (cut, not wrapped).
    assert "alice" in text and "bob" in text and "Dr. Barth" in text
    assert "utterance 7 [bold]not markup[/bold]" in text  # shown literally, not as markup
    assert "so I told them we would ship" in text and "…" in text
    assert "fear 0.70" in text  # seq 6: emotion fear, confidence 0.70
    assert "utterance 0" not in text or len(lines) >= 24  # old lines scroll away when full
    # Polarity / intensity bar and per-speaker trend with a legend.
    assert "polarity" in text and "┃" in text and "+3" in text
    assert "J joy" in text and "F fear" in text
    assert "mean" in text
    # Latency per stage, drops and queue depths.
    assert "vad 0.30" in text and "asr 0.20" in text and "total 0.60" in text
    assert "p50 total 0.64" in text
    assert "dropped 4 (inference 1  video 3)" in text
    assert "inference 2" in text and "mqtt 5" in text


def test_empty_dashboard_renders() -> None:
    console = recorded_console()
    sink = DashboardSink(console=console)
    console.print(sink.render())
    text = console.export_text()
    check_fits(text, 80, 24)
    assert "waiting for speech" in text
    assert "no results yet" in text


@pytest.mark.parametrize(
    ("width", "height"), [(80, 24), (60, 15), (120, 40), (40, 10), (30, 6), (20, 2)]
)
def test_frame_never_overflows_the_terminal(width: int, height: int) -> None:
    console = recorded_console(width, height)
    sink = DashboardSink(console=console, max_speakers=4)
    for seq in range(40):
        sink.record(result_factory(seq=seq, speaker=f"speaker-{seq % 6}", text=LONG_TEXT))
    sink.update_stats(STATS)
    console.print(sink.render())
    # Outside the alternate screen the frame keeps one line free so the terminal never scrolls.
    check_fits(console.export_text(), width, height - 1)


async def test_live_session_redraws_at_a_fixed_rate_and_prints_a_summary() -> None:
    console = recorded_console()
    sink = DashboardSink(console=console, refresh_hz=20)
    await sink.open()
    for seq in range(300):  # a burst: the frame rate must not follow the message rate
        await sink.publish(result_factory(seq=seq, speaker=("alice", "bob")[seq % 2]))
    burst_frames = sink.frames_drawn
    sink.update_stats(STATS)
    await asyncio.sleep(0.3)
    await sink.close(STATS)
    assert burst_frames <= 2
    assert 2 <= sink.frames_drawn <= 12

    text = console.export_text()
    check_fits(text, 80)
    assert text.count("╭─ Transcript") == 1  # a non-terminal gets the final frame only
    summary = text[text.index("Session summary") :]
    assert "alice" in summary and "bob" in summary and "all" in summary
    assert "150" in summary and "300" in summary  # utterances per speaker and in total
    assert "dominant emotion" in summary and "mean intensity" in summary
    assert "p50 latency" in summary and "0.60 s" in summary
    assert "latency p50 (s): vad 0.31, asr 0.22, inference 0.05, total 0.64" in summary
    assert "dropped 4 (inference 1, video 3)" in summary


async def test_summary_per_speaker_dominant_emotion_and_mean_intensity() -> None:
    console = recorded_console()
    sink = DashboardSink(console=console)
    await sink.open()
    for seq, (speaker, emotion, polarity) in enumerate(
        [
            ("alice", "joy", "positive"),
            ("alice", "joy", "positive"),
            ("alice", "anger", "negative"),
            ("bob", "sadness", "negative"),
        ]
    ):
        await sink.publish(
            result_factory(seq=seq, speaker=speaker, emotion=emotion, polarity=polarity)
        )
    await sink.close(stats_factory(results=4, utterances=4))
    summary = console.export_text().split("Session summary", 1)[1]
    alice = next(line for line in summary.splitlines() if line.strip().startswith("alice"))
    bob = next(line for line in summary.splitlines() if line.strip().startswith("bob"))
    assert "joy (67%)" in alice and "+0.50" in alice  # (1.5 + 1.5 - 1.5) / 3
    assert "sadness (100%)" in bob and "-1.50" in bob


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="refresh_hz"):
        DashboardSink(console=recorded_console(), refresh_hz=0)


TMUX_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from realtime.sinks import DashboardSink
    from factories import result_factory, stats_factory

    async def main():
        sink = DashboardSink(refresh_hz=30)
        await sink.open()
        for seq in range(40):
            text = "so I told them we would ship the whole thing by friday " * (1 + seq % 3)
            speaker = ("alice", "bob")[seq % 2]
            await sink.publish(result_factory(seq=seq, speaker=speaker, text=text))
            sink.update_stats(stats_factory(results=seq + 1, dropped={"video": seq // 10}))
            await asyncio.sleep(0.01)
        await sink.close(stats_factory(results=40, utterances=40))

    asyncio.run(main())
    """
)


def test_renders_cleanly_in_a_real_tmux_pane(tmp_path: Path) -> None:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux not installed")
    script = tmp_path / "dash.py"
    script.write_text(TMUX_SCRIPT, encoding="utf-8")
    server = f"emotrack-test-{uuid.uuid4().hex[:8]}"
    done = f"done-{server}"
    pythonpath = os.pathsep.join([str(REPO), str(REPO / "tests")])
    env = {**os.environ, "PYTHONPATH": pythonpath, "TERM": "xterm-256color"}
    base = [tmux, "-L", server, "-f", os.devnull]
    command = (
        f"cd {REPO} && {sys.executable} {script} 2>{tmp_path}/err.txt; "
        f"{tmux} -L {server} wait-for -S {done}; sleep 60"
    )
    subprocess.run(
        [*base, "new-session", "-d", "-x", "80", "-y", "24", command],
        check=True,
        env=env,
        timeout=10,
    )
    try:
        subprocess.run([*base, "wait-for", done], check=True, timeout=60)
        pane = subprocess.run(
            [*base, "capture-pane", "-p", "-S", "-200"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    finally:
        subprocess.run([*base, "kill-server"], check=False, timeout=10)
    errors = (tmp_path / "err.txt").read_text(encoding="utf-8")
    assert not errors.strip(), errors
    lines = check_fits(pane, 80)
    # Redrawing in place leaves exactly one frame in the scrollback, above the summary.
    assert pane.count("╭─ Transcript") == 1, pane
    assert pane.count("╭─ Pipeline") == 1, pane
    assert "Session summary" in pane
    # The frame lies whole above the summary, boxes closed, nothing interleaved.
    top = next(i for i, line in enumerate(lines) if line.startswith("╭─ Transcript"))
    summary = next(i for i, line in enumerate(lines) if line.startswith("Session summary"))
    frame = lines[top:summary]
    assert frame[-1].startswith("╰─")
    assert all(line[0] in "╭│╰" and line[-1] in "╮│╯" for line in frame), "\n".join(frame)
