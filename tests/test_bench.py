"""`emotrack bench latency` machinery on a two-turn conversation (real time, real broker)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from rt_support import FakePredictor

from realtime.bench import measure_latency, prepare_conversation
from realtime.config import Config
from realtime.inference import EmotionModel
from unimse.synth import parse_script

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing"),
    pytest.mark.skipif(
        shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
        reason="mosquitto missing",
    ),
]


def test_latency_report(tmp_path: Path) -> None:
    script = parse_script("Ana: Good morning, how are you?\n[pause 1.0]\nBen: Very well, thanks.\n")
    conversation, audio = prepare_conversation(script, tmp_path)
    config = Config().with_overrides({"vad.hangover": 0.5})
    report = asyncio.run(
        measure_latency(config, conversation, audio, tmp_path, model=EmotionModel(FakePredictor()))
    )
    assert report.utterances_detected == report.utterances_expected == 2
    assert report.status_received
    summary = report.summary()
    assert set(summary) == {
        "vad",
        "asr",
        "inference",
        "delivery",
        "end_to_end",
        "end_to_end_minus_hangover",
    }
    # The VAD waits the hangover; end to end includes it and ASR.
    assert 0.5 <= summary["vad"]["p50"] < 0.6
    assert summary["end_to_end"]["p50"] > summary["vad"]["p50"] + summary["asr"]["p50"] - 0.05
    assert summary["end_to_end_minus_hangover"]["max"] == pytest.approx(
        summary["end_to_end"]["max"] - 0.5
    )
    assert "p95" in report.render() and "hangover" in report.render()


def test_latency_refuses_a_script_played_no_times(capsys: pytest.CaptureFixture[str]) -> None:
    from rt_support import emotrack_in_process

    assert emotrack_in_process("bench", "latency", "--repeat", "0") == 2
    assert "--repeat: must be >= 1, got 0" in capsys.readouterr().err


def test_a_bad_pause_in_a_script_is_named_with_its_line() -> None:
    for pause in ("-5", "1.2.3", "soon"):
        with pytest.raises(ValueError, match=rf"line 2: a pause takes seconds >= 0, got '{pause}'"):
            parse_script(f"Ana: Hello.\n[pause {pause}]\nBen: Hi.\n")


def test_latency_interrupted_exits_130_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rt_support import emotrack_in_process

    import realtime.bench

    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(realtime.bench, "_measure_modes", interrupted)
    assert emotrack_in_process("bench", "latency") == 130
    err = capsys.readouterr().err.strip()
    assert err == "emotrack bench latency: interrupted; nothing measured"
