"""JSON lines sink: one valid message per line, flushed as it goes, appended, clear errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from factories import result_factory, stats_factory

from realtime.serialize import validate
from realtime.sinks import JsonlSink, SinkError


async def test_writes_one_valid_line_per_result_in_order(tmp_path: Path) -> None:
    out = tmp_path / "session.jsonl"
    sink = JsonlSink(path=out, validate=True)
    await sink.open()
    for seq in range(20):
        await sink.publish(result_factory(seq=seq, text=f"line {seq}\nwith a newline"))
    await sink.close(stats_factory(results=20))

    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 20
    messages = [json.loads(line) for line in lines]
    for message in messages:
        validate(message)
    assert [m["seq"] for m in messages] == list(range(20))
    assert messages[3]["text"] == "line 3\nwith a newline"  # escaped, still one line
    assert sink.lines_written == 20


async def test_each_line_is_on_disk_before_publish_returns(tmp_path: Path) -> None:
    out = tmp_path / "live.jsonl"
    sink = JsonlSink(path=out)
    await sink.open()
    for seq in range(3):
        await sink.publish(result_factory(seq=seq))
        # Read through a separate file handle while the sink is still open.
        lines = out.read_text(encoding="utf-8").splitlines()
        assert len(lines) == seq + 1
        assert json.loads(lines[-1])["seq"] == seq
    await sink.close(stats_factory())


async def test_appends_and_never_glues_to_a_partial_last_line(tmp_path: Path) -> None:
    out = tmp_path / "existing.jsonl"
    out.write_text('{"old": 1}\n{"truncated": ', encoding="utf-8")
    sink = JsonlSink(path=out)
    await sink.open()
    await sink.publish(result_factory(seq=7))
    await sink.close(stats_factory())
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ['{"old": 1}', '{"truncated": ']
    assert json.loads(lines[2])["seq"] == 7


async def test_writes_to_a_given_stream_without_closing_it() -> None:
    stream = io.StringIO()
    sink = JsonlSink(stream=stream)
    await sink.open()
    await sink.publish(result_factory(seq=0))
    await sink.publish(result_factory(seq=1))
    await sink.close(stats_factory())
    assert not stream.closed
    assert [json.loads(line)["seq"] for line in stream.getvalue().splitlines()] == [0, 1]


async def test_dash_means_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    sink = JsonlSink(path="-")
    assert sink.destination == "<stdout>"
    await sink.open()
    await sink.publish(result_factory(seq=5))
    await sink.close(stats_factory())
    out = capsys.readouterr().out
    validate(json.loads(out))


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("missing-dir/out.jsonl", "there is no folder"),
        ("a-directory", "it is a directory"),
        ("a-file/out.jsonl", "a-file is a file, not a folder"),
    ],
)
async def test_bad_path_is_a_one_line_error_at_open(tmp_path: Path, bad: str, why: str) -> None:
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "a-file").write_text("kept\n")
    sink = JsonlSink(path=tmp_path / bad)
    with pytest.raises(SinkError) as info:
        await sink.open()
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / bad) in message and why in message
    assert (tmp_path / "a-file").read_text() == "kept\n"
    with pytest.raises(SinkError, match="before open"):
        await sink.publish(result_factory())


async def test_publish_after_close_is_an_error(tmp_path: Path) -> None:
    sink = JsonlSink(path=tmp_path / "x.jsonl")
    await sink.open()
    await sink.close(stats_factory())
    await sink.close(stats_factory())  # closing twice is harmless
    with pytest.raises(SinkError, match="after close"):
        await sink.publish(result_factory())


def test_path_and_stream_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        JsonlSink(path=tmp_path / "x.jsonl", stream=io.StringIO())
