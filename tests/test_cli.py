"""The command line: configuration layering, one-line errors, documented options."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from realtime.cli import build_parser, main
from realtime.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "realtime" / "samples" / "conversation.flac"


def test_default_toml_spells_out_the_built_in_defaults() -> None:
    assert load_config(REPO / "configs" / "default.toml") == Config()


def test_flags_override_the_file(tmp_path: Path) -> None:
    file = tmp_path / "my.toml"
    file.write_text('[vad]\nhangover = 0.8\n[sinks]\nenabled = ["jsonl"]\n')
    config = load_config(file, {"vad.hangover": 0.4})
    assert config.vad.hangover == 0.4 and config.sinks.enabled == ("jsonl",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[vad]\nhangover = -1\n", "vad.hangover"),
        ("[vad]\nbogus = 1\n", "unknown configuration key 'vad.bogus'"),
        ("[sinks]\nenabled = ['printer']\n", "unknown sink"),
        ("[sinks.mqtt]\nport = 99999\n", "port"),
        ("[replay]\nspeed = 'fast'\n", "replay.speed"),
        ("[asr\n", "invalid TOML"),
    ],
)
def test_bad_configuration_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(file)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "missing.wav"], "no such file: missing.wav"),
        (["replay", "pyproject.toml"], "unsupported file type .toml"),
        (["replay", "x.wav", "--config", "nope.toml"], "configuration file not found"),
        (["replay", "x.wav", "--speed", "warp"], "replay.speed"),
        (["live", "--audio-device", "Nonexistent Mic 3000"], "audio input"),
        (["replay", "x.wav", "--sink", "dashboard", "--sink", "jsonl"], "standard output"),
        (
            ["replay", str(SAMPLE), "--sink", "mqtt", "--mqtt-port", "1"],
            "cannot connect to MQTT broker at localhost:1",
        ),
    ],
)
def test_bad_input_is_one_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("emotrack: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_every_option_is_explained() -> None:
    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            elif not isinstance(action, argparse._HelpAction):
                assert action.help, f"{parser.prog}: {action.option_strings or action.dest}"

    walk(build_parser())


def test_help_covers_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("live", "replay", "devices", "bench", "train", "eval"):
        assert command in out


def test_devices_lists_inputs_and_cameras(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "Audio inputs" in out and "Cameras" in out


def test_help_defaults_come_from_the_configuration() -> None:
    """Every "(default X)" of a configuration flag is the dataclass default, written once."""
    from realtime.cli.options import describe_default

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    checked = 0
    for name in ("live", "replay"):
        for action in commands.choices[name]._actions:
            if "." not in action.dest or "(default " not in (action.help or ""):
                continue
            assert f"(default {describe_default(action.dest)}" in action.help, action.dest
            assert "{default}" not in action.help
            checked += 1
    assert checked >= 20


def test_live_with_a_recording_writes_its_report_there(tmp_path: Path) -> None:
    """``live --record DIR`` reports to DIR/report.html unless ``--report`` says where."""
    from realtime.cli.commands import build_config
    from realtime.cli.paths import report_path

    parser = build_parser()
    args = parser.parse_args(["live", "--record", str(tmp_path / "call")])
    assert report_path(args, build_config(args)) == str(tmp_path / "call" / "report.html")
    args = parser.parse_args(["live", "--record", str(tmp_path), "--report", "x.html"])
    assert report_path(args, build_config(args)) == "x.html"
    args = parser.parse_args(["live"])
    assert report_path(args, build_config(args)) is None


def test_options_that_cannot_act_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from realtime.cli.commands import build_config

    args = build_parser().parse_args(["replay", "x.wav", "--sink", "dashboard", "--output", "o"])
    with caplog.at_level(logging.WARNING, logger="realtime.cli.commands"):
        build_config(args)
    assert "--output o is not written: the jsonl sink is off" in caplog.text


def test_logging_options_come_before_or_after_the_command() -> None:
    parser = build_parser()
    plain = parser.parse_args(["replay", "x.wav"])
    assert (plain.verbose, plain.quiet, plain.log_file) == (0, False, None)
    before = parser.parse_args(["-v", "--log-file", "l.txt", "replay", "x.wav"])
    assert (before.verbose, before.quiet, before.log_file) == (1, False, "l.txt")
    after = parser.parse_args(["replay", "x.wav", "-q", "--log-file", "l.txt"])
    assert (after.verbose, after.quiet, after.log_file) == (0, True, "l.txt")
    nested = parser.parse_args(["bench", "latency", "-vv"])
    assert nested.verbose == 2
