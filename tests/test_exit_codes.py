"""Exit codes that tell the truth, from the real command (see `emotrack --help`):

0 finished, 2 usage or input error (before any processing), 3 finished with undelivered
results, 4 input failed mid-stream (results of the good part delivered), 130 interrupted by
SIGINT or SIGTERM after flushing.

Each run is the real ``emotrack`` with the real Whisper tiny.en and the tiny random-weight
checkpoint, on the bundled sample conversation or a copy of it cut or damaged.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from rt_support import REPO, emotrack_command, emotrack_env, emotrack_in_process, run_emotrack

from realtime.cli import build_parser
from realtime.cli.exits import EPILOG
from realtime.mosquitto import free_port

SAMPLE = REPO / "realtime" / "samples" / "conversation.flac"


def replay(
    media: Path, checkpoint: Path, *extra: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return run_emotrack(
        "replay",
        str(media),
        "--speed",
        "max",
        "--checkpoint",
        str(checkpoint),
        *extra,
        timeout=180,
        **env,
    )


def read_jsonl(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr


def test_the_exit_codes_are_in_the_help() -> None:
    help_text = build_parser().format_help()
    assert EPILOG.strip() in help_text
    for code in ("0", "2", "3", "4", "130"):
        assert f"\n  {code} " in help_text
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for code in ("| 0 |", "| 2 |", "| 3 |", "| 4 |", "| 130 |"):
        assert code in readme


@pytest.fixture(scope="module")
def clean_run(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("clean") / "out.jsonl"
    done = replay(SAMPLE, tiny_checkpoint, "--sink", "jsonl", "--output", str(out))
    return done, read_jsonl(out)


@pytest.fixture(scope="module")
def first_turns(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 12 s of the sample: two turns."""
    cut = tmp_path_factory.mktemp("cut") / "first-turns.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(SAMPLE), "-t", "12", str(cut)], check=True)
    return cut


@pytest.mark.slow
def test_0_finished(clean_run) -> None:  # type: ignore[no-untyped-def]
    done, results = clean_run
    assert done.returncode == 0, done.stderr
    assert len(results) == 8
    assert "8 utterances, 8 results" in done.stderr and "error" not in done.stderr


def test_2_damaged_media_fail_before_the_models_load(tmp_path: Path) -> None:
    junk = tmp_path / "junk.flac"
    junk.write_bytes(b"this is no flac file" * 100)
    out = tmp_path / "out.jsonl"
    started = time.perf_counter()
    done = run_emotrack("replay", str(junk), "--sink", "jsonl", "--output", str(out))
    elapsed = time.perf_counter() - started
    assert done.returncode == 2
    assert done.stderr.startswith("emotrack: error: cannot read audio file")
    assert done.stderr.count("\n") == 1, done.stderr
    assert not out.exists()  # no sink was opened
    assert elapsed < 15  # loading the models alone takes longer on this machine


def test_2_a_folder_that_is_no_session(tmp_path: Path) -> None:
    done = run_emotrack("-q", "replay", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith(f"emotrack: error: not a file: {tmp_path}")
    assert "manifest.json" in done.stderr and done.stderr.count("\n") == 1


def test_eval_refuses_a_batch_of_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert emotrack_in_process("eval", "--dataset", "ravdess", "--batch-size", "0") == 2
    assert "--batch-size: must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["banana", "cuda", "mps", "meta"])
def test_2_a_device_this_machine_lacks(
    device: str, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    code = emotrack_in_process(
        "eval", "--dataset", "meld", "--checkpoint", str(tiny_checkpoint), "--device", device
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"emotrack: error: device {device!r}")
    assert err.count("\n") == 1, err


@pytest.mark.slow
def test_quiet_means_quiet(first_turns: Path, tmp_path: Path) -> None:
    """-q with the shipped checkpoint (whose backbone transformers loads with a progress bar):
    nothing on stderr for a clean run, neither the bar nor the summary line."""
    out = tmp_path / "out.jsonl"
    done = run_emotrack(
        "-q", "replay", str(first_turns), "--speed", "max", "--sink", "jsonl", "--output",
        str(out), timeout=180,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert len(read_jsonl(out)) == 2


@pytest.mark.slow
def test_3_a_sink_that_fails(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """JSON lines to a full disk: every write fails; the run finishes, exit 3."""
    done = replay(SAMPLE, tiny_checkpoint, "--sink", "jsonl", "--output", "/dev/full")
    no_traceback(done.stderr)
    assert done.returncode == 3, done.stderr
    assert "sink jsonl failed" in done.stderr and "failed sinks: jsonl" in done.stderr


@pytest.mark.slow
def test_3_mqtt_delivered_nothing(tiny_checkpoint: Path, first_turns: Path, tmp_path: Path) -> None:
    """No broker and ``fail_fast = false``: the run goes on (JSON lines get every result) but
    MQTT delivers nothing, exit 3 instead of 0."""
    config = tmp_path / "mqtt.toml"
    config.write_text(
        f"[sinks.mqtt]\nport = {free_port()}\nfail_fast = false\nclose_timeout = 0.5\n"
    )
    out = tmp_path / "out.jsonl"
    cut = tmp_path / "first-turns.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(SAMPLE), "-t", "12", str(cut)], check=True)
    done = replay(
        cut,
        tiny_checkpoint,
        "--config",
        str(config),
        "--sink",
        "jsonl",
        "--sink",
        "mqtt",
        "--output",
        str(out),
        XDG_STATE_HOME=str(tmp_path / "state"),  # the MQTT spool, if any, stays here
    )
    no_traceback(done.stderr)
    assert done.returncode == 3, done.stderr
    assert len(read_jsonl(out)) == 2
    assert "undelivered {'mqtt': 2}" in done.stderr


@pytest.mark.slow
def test_4_corrupt_flac_keeps_the_good_part(  # the corrupt FLAC of issue 11
    clean_run,  # type: ignore[no-untyped-def]
    tiny_checkpoint: Path,
    tmp_path: Path,
) -> None:
    data = bytearray(SAMPLE.read_bytes())
    middle = len(data) // 2  # about 20 s into the 43 s conversation
    data[middle : middle + 4000] = bytes((i * 37 + 11) % 256 for i in range(4000))
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(bytes(data))
    out, record = tmp_path / "out.jsonl", tmp_path / "session"
    done = replay(
        corrupt, tiny_checkpoint, "--sink", "jsonl", "--output", str(out), "--record", str(record)
    )
    no_traceback(done.stderr)
    assert done.returncode == 4, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"emotrack: error: cannot decode {corrupt} after ")
    failed_at = float(last.split(" after ")[1].split(" s:")[0])
    assert 15 < failed_at < 25
    assert f"input failed after {failed_at:.1f} s" in done.stderr  # the summary line
    results = read_jsonl(out)
    _, clean = clean_run

    def key(r: dict) -> tuple:  # type: ignore[type-arg]
        return r["start"], r["end"], r["text"]

    before = [key(r) for r in clean if r["end"] + 0.7 < failed_at]
    assert len(before) >= 3 and [key(r) for r in results[: len(before)]] == before
    manifest = json.loads((record / "manifest.json").read_text())
    assert manifest["complete"] is False
    assert manifest["end"].startswith("error: cannot decode")
    assert len(read_jsonl(record / "results.jsonl")) == len(results)
    # Replaying the recording says how it ended, and replays the good part.
    again = run_emotrack(
        "replay",
        str(record),
        "--speed",
        "max",
        "--checkpoint",
        str(tiny_checkpoint),
        "--sink",
        "jsonl",
        "--output",
        str(tmp_path / "again.jsonl"),
        timeout=180,
    )
    assert again.returncode == 0, again.stderr
    assert "ended by an input error (cannot decode" in again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_130_interrupted_after_flushing(tiny_checkpoint: Path, sig: signal.Signals) -> None:
    """A real-time replay, signalled once the first result is out: what was captured is still
    delivered, the summary says so, and the exit code is 130 (a finished replay gives 0)."""
    process = subprocess.Popen(
        emotrack_command(
            "replay",
            str(SAMPLE),
            "--speed",
            "realtime",
            "--checkpoint",
            str(tiny_checkpoint),
            "--sink",
            "jsonl",
        ),
        cwd=REPO,
        env=emotrack_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        first = process.stdout.readline()
        assert first, process.stderr.read() if process.stderr else ""
        process.send_signal(sig)
        rest, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    no_traceback(stderr)
    assert process.returncode == 130, stderr
    results = [json.loads(line) for line in [first, *rest.splitlines()]]
    assert results[0]["seq"] == 0 and len(results) < 8
    assert "; interrupted" in stderr
