"""calibrate and fit-voice write their output checkpoint whole: nothing of an earlier one there
survives; ``--output default`` (a folder, not the bundled checkpoint) is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_write_derived_replaces_the_output_whole(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from unimse.checkpoint import read_stored, write_derived

    out = tmp_path / "out"
    out.mkdir()
    (out / "calibration.json").write_text("{}")  # an earlier, different run's records
    (out / "voice_readout.json").write_text("{}")
    tensors, metadata = read_stored(tiny_checkpoint)
    with write_derived(tiny_checkpoint, out, tensors, metadata) as staging:
        (staging / "note.json").write_text("[]")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.name for p in tiny_checkpoint.iterdir()] + ["note.json"]
    )
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_calibrate_into_a_reused_output_leaves_no_stale_file(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from realtime.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "voice_readout.json").write_text('{"stale": true}')
    args = ["calibrate", "--checkpoint", str(tiny_checkpoint), "--output", str(out), "--no-heads"]
    assert main([*args, "--data-dir", str(tmp_path)]) == 0
    assert not (out / "voice_readout.json").exists()
    assert json.loads((out / "calibration.json").read_text())["heads"] == []


@pytest.mark.parametrize("command", ["calibrate", "fit-voice"])
def test_output_default_is_refused(
    command: str,
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from realtime.cli import main

    monkeypatch.chdir(tmp_path)
    code = main([command, "--checkpoint", str(tiny_checkpoint), "--output", "default"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        "emotrack: error: --output default would be a folder ./default, not the bundled "
        "checkpoint: name another folder, e.g. ./default-copy"
    ]
    assert not (tmp_path / "default").exists()
