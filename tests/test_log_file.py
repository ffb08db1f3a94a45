"""``emotrack --log-file FILE``: a file that cannot be opened is refused in one line, as
``--output`` refuses one (its folder is not made either)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from rt_support import emotrack_in_process


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("nodir/log.txt", "there is no folder {tmp}/nodir"),
        ("file/log.txt", "{tmp}/file is a file, not a folder"),
        (".", "it is a directory"),
    ],
    ids=["missing-folder", "file-as-folder", "folder"],
)
def test_a_log_file_that_cannot_be_opened_is_one_line(
    where: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("hi\n")
    path = tmp_path / where
    media = tmp_path / "missing.flac"
    argv = ["--log-file", str(path), "replay", str(media), "--output", str(tmp_path / "o.jsonl")]
    assert emotrack_in_process(*argv) == 2
    err = capsys.readouterr().err
    problem = reason.format(tmp=tmp_path)
    assert (
        err == f"emotrack: error: cannot write the log to {path}: {problem} (choose another path)\n"
    )
    assert not (tmp_path / "nodir").exists() and not (tmp_path / "o.jsonl").exists()


def test_a_refused_command_leaves_no_empty_log_and_a_run_writes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "run.log"
    media = tmp_path / "missing.flac"
    argv = ["--log-file", str(log), "replay", str(media), "--output", str(tmp_path / "o.jsonl")]
    assert emotrack_in_process(*argv) == 2
    assert "missing.flac" in capsys.readouterr().err
    assert not log.exists()  # it was created, empty, before the refusal
    logging.getLogger("emotrack.test").warning("kept")
    assert log.read_text(encoding="utf-8").rstrip().endswith("kept")
