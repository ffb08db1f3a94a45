"""Configuration files and the one typed loader behind runtime and training configs."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest

from realtime.config import Config, ConfigError, load_config
from train.config import TrainConfig, TrainConfigError
from unimse.typed_config import TypedConfigError

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_CONFIG = ROOT / "configs" / "default.toml"
SHIPPED = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED)
def test_every_shipped_config_loads(path: str) -> None:
    if ROOT / path == RUNTIME_CONFIG:
        assert isinstance(load_config(ROOT / path), Config)
    else:
        assert isinstance(TrainConfig.load(ROOT / path), TrainConfig)


def _spelled_out(text: str) -> dict[str, dict[str, bool]]:
    """Per TOML table, the keys the file names: True when set, False when commented out."""
    tables: dict[str, dict[str, bool]] = {"": {}}
    current = ""
    for line in text.splitlines():
        header = re.match(r"\[([\w.]+)\]", line)
        if header:
            current = header.group(1)
            tables[current] = {}
            continue
        key = re.match(r"(#\s*)?(\w+)\s*=", line)
        if key:
            tables[current][key.group(2)] = key.group(1) is None
    return tables


def _expected(options: Any, table: str, out: dict[str, dict[str, bool]]) -> None:
    """Per table, every field that is not a nested table: set unless its default is None."""
    out[table] = {}
    for f in fields(options):
        value = getattr(options, f.name)
        if is_dataclass(value):
            _expected(value, f"{table}.{f.name}".lstrip("."), out)
        else:
            out[table][f.name] = value is not None


def test_default_toml_names_every_option() -> None:
    """Every field, sinks.mqtt included, is in default.toml (None defaults as comments); the
    values themselves are checked in test_cli."""
    expected: dict[str, dict[str, bool]] = {}
    _expected(Config(), "", expected)
    assert _spelled_out(RUNTIME_CONFIG.read_text(encoding="utf-8")) == expected


def test_reading_a_configuration_does_not_import_the_mqtt_client() -> None:
    code = "import sys, realtime.config; print('aiomqtt' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert proc.stdout.strip() == "False"


def test_both_error_types_share_the_loader_base() -> None:
    assert issubclass(ConfigError, TypedConfigError)
    assert issubclass(TrainConfigError, TypedConfigError)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"lr_new": "x"}}, "train.lr_new must be of type float, got 'x'"),
        ({"train": {"amp": 1}}, "train.amp must be of type bool, got 1"),
        ({"train": {"epochs": 2.5}}, "train.epochs must be of type int, got 2.5"),
        ({"train": {"freeze": "fusion"}}, "train.freeze must be a list"),
        ({"data": {"oversample": {"mosi": "2"}}}, "data.oversample.mosi must be of type int"),
        ({"data": {"bogus": 1}}, "unknown configuration key 'data.bogus'"),
        ({"optim": {}}, "unknown configuration key 'optim'"),
        ({"model": {"losses": {"supcon": "high"}}}, "model.losses.supcon must be of type float"),
        ({"model": {"acoustic": {"name": "a"}}}, "model.acoustic.dim is required"),
        ({"model": {"acoustic": {"name": "a", "dim": 8, "x": 1}}}, "'model.acoustic.x'"),
        ({"train": {"epochs": 0}}, "train.epochs must be positive"),
    ],
)
def test_training_config_errors_name_the_dotted_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(TrainConfigError, match=re.escape(message)):
        TrainConfig.from_dict(raw)


def test_training_config_values_are_coerced_like_runtime_ones(tmp_path: Path) -> None:
    file = tmp_path / "run.toml"
    file.write_text(
        '[model]\nacoustic = { name = "emotrack-acoustic-v1", dim = 64 }\n'
        '[data]\ndatasets = ["meld", "emodb"]\n'
        "[train]\nlr_new = 1\nfreeze = ['fusion.visual']\n"
    )
    config = TrainConfig.load(file)
    assert config.train.lr_new == 1.0 and isinstance(config.train.lr_new, float)
    assert config.train.freeze == ("fusion.visual",) and config.data.datasets == ("meld", "emodb")
    assert config.model.acoustic is not None and config.model.acoustic.dim == 64
    file.write_text("[train]\nlr_new = 'fast'\n")
    with pytest.raises(TrainConfigError, match=rf"^{re.escape(str(file))}: train\.lr_new"):
        TrainConfig.load(file)


@pytest.mark.parametrize(("value", "message"), [(-1.0, "> 0"), (0.0, "> 0")])
def test_the_hangover_is_refused_with_one_bound(value: float, message: str) -> None:
    """-1 and 0 are refused for the same reason (it once said >= 0 for -1, > 0 for 0)."""
    with pytest.raises(ConfigError, match=f"vad.hangover must be {message}"):
        Config().with_overrides({"vad.hangover": value})


def test_a_flag_replaces_a_bad_value_of_the_file_before_it_is_checked(tmp_path: Path) -> None:
    bad, good = tmp_path / "bad.toml", tmp_path / "good.toml"
    bad.write_text("[vad]\nhangover = -1\n")
    good.write_text("[vad]\nhangover = 0.5\n")
    assert load_config(bad, {"vad.hangover": 0.4}).vad.hangover == 0.4
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(bad))}: vad.hangover must be > 0"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"^vad.hangover must be > 0"):  # the flag's fault
        load_config(good, {"vad.hangover": 0.0})


def test_settings_that_cannot_act_are_named() -> None:
    from realtime.config import unused_settings

    assert unused_settings(Config()) == []
    config = Config().with_overrides(
        {
            "sinks.enabled": ["dashboard"],
            "sinks.jsonl.path": "out.jsonl",
            "speakers.enroll": ["Ana=ana.wav"],
            "partial.text": True,
        }
    )
    notes = unused_settings(config)
    assert len(notes) == 3 and "--output out.jsonl is not written" in notes[0]
    assert (
        "few or none arrive"
        in unused_settings(
            Config().with_overrides({"partial.enabled": True, "replay.speed": "max"})
        )[0]
    )
    acting = config.with_overrides(
        {"sinks.enabled": ["jsonl"], "speakers.diarize": True, "partial.enabled": True}
    )
    assert unused_settings(acting) == []


def test_two_channels_cannot_share_a_speaker_name() -> None:
    with pytest.raises(ConfigError, match=r"sources\.speakers names must differ"):
        Config().with_overrides({"sources.speakers": ["A", "A"]})


@pytest.mark.parametrize("session", ["a/b", "x+y", "#", "a b", "a\tb", ""])
def test_a_session_id_is_one_topic_level(session: str) -> None:
    """The session id names MQTT topics: checked as the server ids and groups are."""
    with pytest.raises(ConfigError, match="one MQTT topic level"):
        Config().with_overrides({"session": session})
    assert Config().with_overrides({"session": "call-42"}).session == "call-42"
