"""``emotrack report``: input checks, the page's parts, the PNG, and the page in headless Chromium.

Inputs are made here from :func:`factories.result_factory` (valid results) serialised by
:mod:`realtime.serialize`, and a recorded session folder with a few seconds of audio. The browser
tests skip, saying why, where Chromium, ChromeDriver or Selenium is missing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from factories import result_factory

from realtime.cli import build_parser, main
from realtime.recorder import AUDIO, FORMAT, MANIFEST, RESULTS
from realtime.report import ReportError, write_report
from realtime.report.browser import chromium_missing, console_errors, headless_chromium, open_report
from realtime.report.load import load_session
from realtime.report.timeline import build_timeline
from realtime.serialize import result_to_json

SPEAKERS = ("Ana", 'Ben "B" <&>')
MOMENT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def results_lines(n: int, speakers: tuple[str, ...] = SPEAKERS, **overrides: Any) -> str:
    return "".join(
        result_to_json(
            result_factory(
                seq=i, speaker=speakers[i % len(speakers)], text=f"line {i} <said>", **overrides
            ),
            timestamp=MOMENT,
        )
        + "\n"
        for i in range(n)
    )


@pytest.fixture
def results_file(tmp_path: Path) -> Path:
    path = tmp_path / "session.jsonl"
    path.write_text(results_lines(12), encoding="utf-8")
    return path


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    """A folder as ``--record`` writes it: 30 s of stereo audio, 12 results, a manifest."""
    import soundfile as sf

    folder = tmp_path / "recorded"
    folder.mkdir()
    t = np.arange(30 * 16_000) / 16_000
    sf.write(
        folder / AUDIO,
        np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], 1) * 0.1,
        16_000,
        subtype="FLOAT",
    )
    (folder / RESULTS).write_text(results_lines(12), encoding="utf-8")
    manifest = {
        "format": FORMAT,
        "version": 1,
        "session": "test-session",
        "complete": True,
        "audio": {"file": AUDIO, "sample_rate": 16_000, "channels": 2, "seconds": 30.0},
        "video": None,
        "results": RESULTS,
        "channels_as_speakers": True,
        "speakers": list(SPEAKERS),
        "vad": {},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return folder


# -- input ---------------------------------------------------------------------------------------


def test_reads_a_json_lines_session(results_file: Path) -> None:
    session = load_session(results_file)
    assert session.session == "test-session"
    assert session.speakers == SPEAKERS
    assert [u.index for u in session.utterances] == list(range(12))
    assert session.utterances[3].confidence == pytest.approx(0.7)


def test_picks_one_of_several_sessions(tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    path.write_text(results_lines(2, session="first") + results_lines(3, session="second"))
    assert len(load_session(path).utterances) == 3  # the last one by default
    first = load_session(path, session="first")
    assert len(first.utterances) == 2 and first.other_sessions == ("second",)
    with pytest.raises(ReportError, match="no session 'third'"):
        load_session(path, session="third")


def first_line_as(results_file: Path, **changes: Any) -> None:
    lines = results_file.read_text().splitlines()
    obj = json.loads(lines[0])
    obj.update(changes)
    results_file.write_text("\n".join([json.dumps(obj), *lines[1:]]) + "\n")


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda p: p.write_text("hello\n"), r"line 1 is not JSON"),
        (lambda p: p.write_bytes(b"fLaC\x00\xff\xfe"), r"not a JSON lines file \(not UTF-8"),
        (lambda p: p.write_text("[1, 2]\n"), r"line 1 is not a JSON object"),
        (lambda p: p.write_text('{"a": 1}\n'), r"line 1 has no schema_version"),
        (
            lambda p: first_line_as(p, schema_version="2.0"),
            r"schema version '2.0'; this emotrack reads 1.0 to 1.4",
        ),
        (lambda p: first_line_as(p, intensity=7), r"line 1: invalid emotion result: \$.intensity"),
        (lambda p: first_line_as(p, end=-1), r"line 1: invalid emotion result: \$.end"),
        (lambda p: p.write_text("\n \n"), r"holds no results: the session is empty"),
        (lambda p: p.unlink(), r"no such file or folder"),
    ],
)
def test_bad_input_is_one_clear_line(
    results_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], spoil: Any, message: str
) -> None:
    spoil(results_file)
    code = main(["report", str(results_file), "--output", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("emotrack: error: "), err
    assert re.search(message, err), err
    assert not (tmp_path / "r.html").exists()


def test_a_line_cut_short_by_a_crash_is_left_out_with_a_warning(
    results_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = results_file.read_text().splitlines()
    results_file.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])  # killed mid-line
    with caplog.at_level("WARNING"):
        session = load_session(results_file)
    assert len(session.utterances) == len(lines) - 1
    assert f"line {len(lines)} is cut short" in caplog.text
    # A later session appended after it (the JSON lines sink ends a cut line first): the cut
    # line is in the middle now, and still left out.
    later = json.dumps({**json.loads(lines[0]), "session": "later"})
    results_file.write_text(results_file.read_text() + "\n" + later + "\n")
    assert len(load_session(results_file, session="test-session").utterances) == len(lines) - 1
    assert len(load_session(results_file, session="later").utterances) == 1
    # A line that is not the head of an emotrack line is damage: refused.
    results_file.write_text("{broken\n" + "\n".join(lines) + "\n")
    with pytest.raises(ReportError, match="line 1 is not JSON"):
        load_session(results_file)


def test_a_folder_that_is_not_a_recording(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a recorded session"):
        write_report(tmp_path, tmp_path / "r.html")


# -- output paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (["-o", "session.jsonl"], "the report session.jsonl would overwrite its input"),
        (["-o", "./session.jsonl"], "would overwrite its input"),
        (["-o", "r.html", "--png", "session.jsonl"], "the PNG session.jsonl would overwrite"),
        (["-o", "r.html", "--png", "./r.html"], "the report and the PNG are the same file"),
        (["-o", "help.txt/r.html"], "cannot write the report to help.txt/r.html: help.txt is a"),
        (["-o", "r.html", "--png", "help.txt/r.png"], "cannot write the PNG to help.txt/r.png"),
    ],
)
def test_an_output_that_would_destroy_a_file_is_one_clear_line(
    results_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    outputs: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "help.txt").write_text("help\n")
    before = results_file.read_bytes()
    code = main(["report", "session.jsonl", *outputs])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("emotrack: error: "), err
    assert message in err, err
    assert results_file.read_bytes() == before
    assert (tmp_path / "help.txt").read_text() == "help\n"
    assert not (tmp_path / "r.html").exists()  # nothing written before the refusal


def test_an_output_into_a_recording_is_refused(recorded: Path, tmp_path: Path) -> None:
    before = (recorded / RESULTS).read_bytes()
    with pytest.raises(ReportError, match="would overwrite its input"):
        write_report(recorded, recorded / RESULTS)
    with pytest.raises(ReportError, match="would overwrite its input"):
        write_report(recorded, tmp_path / "r.html", recorded / AUDIO)
    assert (recorded / RESULTS).read_bytes() == before


def test_missing_output_folders_are_made(results_file: Path, tmp_path: Path) -> None:
    """As ``replay --report`` does: the page's and the PNG's folders are made."""
    page, png = tmp_path / "new" / "r.html", tmp_path / "other" / "deep" / "r.png"
    assert main(["report", str(results_file), "-o", str(page), "--png", str(png)]) == 0
    assert page.is_file() and png.is_file()


# -- the page ------------------------------------------------------------------------------------


def test_command_is_registered_and_writes_page_and_png(
    results_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "report" in build_parser().format_help()
    page, png = tmp_path / "out.html", tmp_path / "out.png"
    assert main(["report", str(results_file), "-o", str(page), "--png", str(png)]) == 0
    assert f"report written to {page}" in capsys.readouterr().out
    text = page.read_text(encoding="utf-8")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Self-contained: nothing fetched from elsewhere.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(?!data:)", text)
    assert 'data-speaker="Ben &quot;B&quot; &lt;&amp;&gt;"' in text
    assert '<span id="utterance-count">12</span>' in text
    assert '"line 3 \\u003csaid>"' in text and "<said>" not in text  # cannot close <script>
    assert 'id="speaker-summary"' in text and 'id="latency"' in text
    assert "test-model-1 (12)" in text and "text+audio (12)" in text


def test_long_sessions_are_binned_in_time(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    path.write_text(results_lines(40))
    session = load_session(path)
    colors = dict.fromkeys(session.speakers, "#000")
    timeline = build_timeline(session, colors, detail_limit=10)
    assert timeline.bin_seconds == 1.0
    lane = timeline.lanes[0]
    spoken = lane.utterance >= 0
    # Each bin holds the mean distribution of its utterances (sums to 1) or nothing (silence).
    totals = sum(lane.shares.values())
    assert np.allclose(totals[spoken], 1.0) and np.allclose(totals[~spoken], 0.0)
    assert set(lane.utterance[spoken]) == {
        u.index for u in session.utterances if u.speaker == "Ana"
    }
    detailed = build_timeline(session, colors)
    assert detailed.bin_seconds is None and len(detailed.lanes[0].center) == 20


def test_a_recorded_session_embeds_its_audio(recorded: Path, tmp_path: Path) -> None:
    text = write_report(recorded, tmp_path / "r.html").read_text(encoding="utf-8")
    assert (
        '<audio id="audio" controls preload="auto" src="data:audio/ogg;codecs=opus;base64,' in text
    )
    linked = write_report(recorded, tmp_path / "l.html", embed_audio_max_seconds=10)
    assert f'src="recorded/{AUDIO}"' in linked.read_text(encoding="utf-8")


# -- in a real browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = chromium_missing()
    if reason:
        pytest.skip(f"headless Chromium unavailable: {reason}")
    with headless_chromium(1300, 1000) as driver:
        yield driver


def test_page_in_headless_chromium(browser: Any, results_file: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    page = write_report(results_file, tmp_path / "report.html")
    open_report(browser, page)
    assert console_errors(browser) == []

    lanes = browser.find_elements(By.CSS_SELECTOR, "#lanes .lane[data-speaker]")
    assert [lane.get_attribute("data-speaker") for lane in lanes] == list(SPEAKERS)
    for lane in lanes:  # each lane is a drawn chart of that speaker's 6 utterances
        assert lane.get_attribute("data-utterances") == "6"
        assert len(lane.find_elements(By.CSS_SELECTOR, ".main-svg")) >= 1
        first_emotion = lane.find_elements(By.CSS_SELECTOR, "g.trace.bars")[0]
        assert len(first_emotion.find_elements(By.CSS_SELECTOR, "g.point")) == 6
    assert browser.find_element(By.ID, "utterance-count").text == "12"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rows li")) == 12  # all in view

    # A real mouse click on one of Ben's bars shows that utterance's text.
    bar = lanes[1].find_elements(By.CSS_SELECTOR, "g.trace.bars g.point path")[2]
    ActionChains(browser).move_to_element(bar).pause(0.3).click().perform()
    selection = browser.find_element(By.ID, "selection")
    deadline = time.monotonic() + 5
    while selection.get_attribute("data-index") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert selection.get_attribute("data-index") == "5"  # Ben's third utterance
    assert "line 5 <said>" in selection.text
    assert "picked" in browser.find_element(By.ID, "u5").get_attribute("class")
    assert console_errors(browser) == []


def test_recorded_session_plays_from_the_selected_utterance(
    browser: Any, recorded: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    page = write_report(recorded, tmp_path / "report.html")
    open_report(browser, page)
    duration = browser.execute_async_script(
        "var a = document.getElementById('audio'), done = arguments[arguments.length - 1];"
        "if (a.readyState >= 1) { done(a.duration); }"
        "else { a.addEventListener('loadedmetadata', function () { done(a.duration); }); }"
    )
    assert duration == pytest.approx(30.0, abs=0.1)
    browser.find_element(By.ID, "u4").click()  # the transcript selects too
    browser.find_element(By.ID, "play").click()
    position = browser.execute_script("return document.getElementById('audio').currentTime;")
    assert position == pytest.approx(8.0, abs=0.5)  # utterance 4 starts at 8 s
    assert console_errors(browser) == []


@pytest.mark.slow
def test_replay_writes_the_report_at_the_end(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """``replay --report`` writes the page after the session and says where it is; with
    ``--record`` the page reads the recording (and plays its audio)."""
    from rt_support import make_conversation, replay_to_jsonl

    media = tmp_path / "talk.wav"
    make_conversation(media, stereo=True)
    page = tmp_path / "pages" / "talk.html"  # the folder is made
    done, lines = replay_to_jsonl(
        media, tiny_checkpoint, tmp_path / "out.jsonl", "--channels-as-speakers",
        "--speakers", "Ana,Ben", "--report", str(page), "--record", str(tmp_path / "rec"),
    )  # fmt: skip
    assert f"emotrack: report: {page}" in done.stderr
    html = page.read_text(encoding="utf-8")
    assert f'<span id="utterance-count">{len(lines)}</span>' in html
    assert 'data-speaker="Ana"' in html and 'data-speaker="Ben"' in html
    assert "data:audio/ogg;codecs=opus;base64," in html  # the recording's audio is embedded
