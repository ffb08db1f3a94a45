"""Where a session writes: outputs that would destroy an input or each other are refused before
any work starts, a ``--record`` folder must be new or empty, ``--report`` checks its folder first
and writes nothing for a session without results, and ``live`` without a microphone replays the
sample for ``--duration`` seconds and refuses a camera it cannot use.

The refusals are checked in process (they come before any model loads); the sessions that run
use the real Whisper tiny.en and the tiny random-weight checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from realtime.cli import main
from unimse.output_paths import output_problem, same_file

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "realtime" / "samples" / "conversation.flac"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def one_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("emotrack: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture
def media(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the sample in the current folder (``tmp_path``), as ``ok.flac``."""
    monkeypatch.chdir(tmp_path)
    return Path(shutil.copy(SAMPLE, tmp_path / "ok.flac"))


# -- outputs that name an input or another output ---------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragments", "untouched"),
    [
        (
            ["--output", "s.jsonl", "--report", "./s.jsonl"],
            ["--report ./s.jsonl and --output s.jsonl name the same file"],
            [],
        ),
        (
            ["--output", "out.jsonl", "--record", "rec", "--report", "rec/results.jsonl"],
            ["--report rec/results.jsonl and the recording's rec/results.jsonl"],
            [],
        ),
        (
            ["--output", "out.jsonl", "--record", "rec", "--report", "rec/audio.wav"],
            ["the recording's rec/audio.wav"],
            [],
        ),
        (["--output", "ok.flac"], ["--output ok.flac and the input ok.flac"], ["ok.flac"]),
        (["--output", "./ok.flac"], ["the input ok.flac", "would overwrite it"], ["ok.flac"]),
        (["--output", "o.jsonl", "--report", "ok.flac"], ["--report ok.flac and the input"], []),
        (["--output", "linked.flac"], ["--output linked.flac and the input ok.flac"], []),
        (["--output", "my.toml", "--config", "my.toml"], ["and --config my.toml"], ["my.toml"]),
    ],
)
def test_an_output_that_names_an_input_or_another_output_is_refused(
    capsys: pytest.CaptureFixture[str],
    media: Path,
    argv: list[str],
    fragments: list[str],
    untouched: list[str],
) -> None:
    os.link(media, "linked.flac")  # a hard link is the same file under another name
    Path("my.toml").write_text("[vad]\nhangover = 0.6\n")
    before = {name: Path(name).read_bytes() for name in untouched}
    code, err = run(capsys, "replay", "ok.flac", "--speed", "max", *argv)
    one_error(code, err, *fragments)
    assert {name: Path(name).read_bytes() for name in untouched} == before
    assert not Path("s.jsonl").exists() and not Path("out.jsonl").exists()
    assert not Path("rec").exists() and not Path("o.jsonl").exists()


def test_the_log_file_is_an_output_too(capsys: pytest.CaptureFixture[str], media: Path) -> None:
    code, err = run(capsys, "--log-file", "log.txt", "replay", "ok.flac", "--output", "./log.txt")
    one_error(code, err, "--log-file log.txt and --output ./log.txt name the same file")


def test_replaying_a_recording_into_its_own_results_is_refused(
    capsys: pytest.CaptureFixture[str], media: Path
) -> None:
    from realtime.recorder import AUDIO, FORMAT, MANIFEST, RESULTS

    folder = Path("session")
    folder.mkdir()
    shutil.copy(media, folder / AUDIO)
    manifest = {
        "format": FORMAT,
        "version": 1,
        "session": "s",
        "complete": True,
        "audio": {"file": AUDIO, "sample_rate": 16_000, "channels": 2, "seconds": 43.0},
        "video": None,
        "results": RESULTS,
        "channels_as_speakers": True,
        "speakers": ["Maya", "Tom"],
        "vad": {},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest))
    (folder / RESULTS).write_text("kept\n")
    code, err = run(capsys, "replay", "session", "--output", "session/results.jsonl")
    one_error(code, err, "the input session/results.jsonl")
    assert (folder / "results.jsonl").read_text() == "kept\n"


def test_live_checks_its_outputs_too(capsys: pytest.CaptureFixture[str], media: Path) -> None:
    """``live --record DIR`` reports to DIR/report.html: an --output there is refused."""
    code, err = run(capsys, "live", "--record", "rec", "--output", "rec/report.html")
    one_error(code, err, "the report rec/report.html and --output rec/report.html")


def test_same_file_compares_resolved_paths_and_the_files_themselves(tmp_path: Path) -> None:
    a = tmp_path / "a.txt"
    a.write_text("x")
    os.link(a, tmp_path / "b.txt")
    (tmp_path / "c.txt").symlink_to(a)
    assert same_file(a, tmp_path / "sub" / ".." / "a.txt")
    assert same_file(a, tmp_path / "b.txt") and same_file(tmp_path / "c.txt", a)
    assert not same_file(a, tmp_path / "new.txt")
    assert not same_file(tmp_path / "x", tmp_path / "y")


# -- --record into a folder that holds something ------------------------------------------------


def test_recording_into_a_folder_that_is_not_empty_is_refused(
    capsys: pytest.CaptureFixture[str], media: Path
) -> None:
    own = Path("ud")
    own.mkdir()
    shutil.copy(media, own / "audio.wav")
    (own / "results.jsonl").write_text("notes\n")
    code, err = run(
        capsys, "replay", "ok.flac", "--speed", "max", "--record", "ud", "--output", "x.jsonl"
    )
    one_error(code, err, "ud is not empty", "choose a new or empty folder")
    assert (own / "audio.wav").read_bytes() == media.read_bytes()
    assert (own / "results.jsonl").read_text() == "notes\n"
    assert not Path("x.jsonl").exists()


def test_the_recorder_takes_a_new_or_empty_folder_only(tmp_path: Path) -> None:
    from realtime.config import Config
    from realtime.recorder import SessionRecorder
    from realtime.sinks.base import SinkError

    def recorder(folder: Path) -> SessionRecorder:
        return SessionRecorder(
            folder, session="s", config=Config(), source="t", channels_as_speakers=False
        )

    recorder(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    recorder(tmp_path / "empty")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / ".hidden").write_text("")
    with pytest.raises(SinkError, match="is not empty"):
        recorder(tmp_path / "used")
    (tmp_path / "file").write_text("")
    with pytest.raises(SinkError, match="is a file, not a folder"):
        recorder(tmp_path / "file")


# -- --report's folder, checked before the session ---------------------------------------------


def test_a_report_under_a_file_is_refused_before_the_session(
    capsys: pytest.CaptureFixture[str], media: Path
) -> None:
    Path("help.txt").write_text("help\n")
    code, err = run(
        capsys, "replay", "ok.flac", "--output", "x.jsonl", "--report", "help.txt/r.html"
    )
    one_error(code, err, "cannot write the report to help.txt/r.html", "help.txt is a file")
    assert "File exists" not in err
    assert not Path("x.jsonl").exists()


def test_an_unwritable_report_folder_is_refused_before_the_session(
    capsys: pytest.CaptureFixture[str], media: Path
) -> None:
    if output_problem(Path("/sys/r.html")) is None:
        pytest.skip("/sys is writable here")
    code, err = run(capsys, "replay", "ok.flac", "--output", "x.jsonl", "--report", "/sys/r.html")
    one_error(code, err, "cannot write the report to /sys/r.html")
    assert not Path("x.jsonl").exists()


def test_output_problem_says_why(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert output_problem(tmp_path) == "it is a directory"
    assert (
        output_problem(tmp_path / "file" / "deep" / "r.html")
        == f"{tmp_path / 'file'} is a file, not a folder"
    )
    assert output_problem(tmp_path / "new" / "r.html") == f"there is no folder {tmp_path / 'new'}"
    assert output_problem(tmp_path / "new" / "r.html", make_parents=True) is None
    assert (tmp_path / "new").is_dir() and list((tmp_path / "new").iterdir()) == []


# -- live without a microphone: the sample stands in ------------------------------------------


@pytest.fixture
def no_microphone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("realtime.cli.commands._microphone", lambda args, config: None)


@pytest.mark.usefixtures("no_microphone")
@pytest.mark.parametrize("camera", [["--camera"], ["--camera", "nonexist.mp4"]])
def test_live_without_a_microphone_refuses_a_camera(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, camera: list[str]
) -> None:
    code, err = run(capsys, "live", *camera, "--output", str(tmp_path / "l.jsonl"))
    one_error(code, err, "--camera", "no audio input device was found", "leave out --camera")
    assert not (tmp_path / "l.jsonl").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("no_microphone", "one_torch_thread")
def test_live_without_a_microphone_stops_the_sample_after_duration(
    capsys: pytest.CaptureFixture[str], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    record = tmp_path / "rec"
    code, err = run(
        capsys, "live", "--duration", "2", "--checkpoint", str(tiny_checkpoint),
        "--output", str(tmp_path / "l.jsonl"), "--record", str(record),
    )  # fmt: skip
    assert code == 0, err
    assert "at real time for 2 s instead" in err
    seconds = json.loads((record / "manifest.json").read_text())["audio"]["seconds"]
    assert 1.5 <= seconds <= 3.0  # not the sample's 43 s


# -- a session with no results and a report ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_silent_session_writes_no_report_and_succeeds(
    capsys: pytest.CaptureFixture[str], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    import soundfile as sf

    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(3 * 16_000, dtype=np.float32), 16_000)
    page = tmp_path / "n.html"
    code, err = run(
        capsys, "replay", str(silent), "--speed", "max", "--checkpoint", str(tiny_checkpoint),
        "--output", str(tmp_path / "n.jsonl"), "--report", str(page),
    )  # fmt: skip
    assert code == 0, err
    assert "emotrack: error" not in err and "emotrack-report-" not in err
    warning = [line for line in err.splitlines() if "no report written" in line]
    assert len(warning) == 1 and "no utterance was heard" in warning[0] and str(page) in warning[0]
    assert not page.exists()


def test_a_manifest_missing_a_key_says_which(tmp_path: Path, media: Path) -> None:
    from realtime.recorder import AUDIO, FORMAT, MANIFEST
    from realtime.sources.base import SourceError
    from realtime.sources.session import read_manifest

    shutil.copy(media, tmp_path / AUDIO)
    manifest = {"format": FORMAT, "session": "s", "audio": {"file": AUDIO}, "video": None}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(SourceError, match="lacks the key 'channels_as_speakers'"):
        read_manifest(tmp_path)
