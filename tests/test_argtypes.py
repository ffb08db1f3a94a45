"""The bounded-number argparse types every command shares."""

from __future__ import annotations

import argparse

import pytest

from unimse.argtypes import (
    AT_LEAST_ONE,
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    SECONDS,
    SHARE,
    UNIT_INTERVAL,
    Bounded,
)


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        (SECONDS, "2.5", 2.5),
        (POSITIVE, "1e-3", 1e-3),
        (NON_NEGATIVE, "0", 0.0),
        (UNIT_INTERVAL, "1", 1.0),
        (SHARE, "0.5", 0.5),
        (COUNT, "0", 0),
        (AT_LEAST_ONE, "3", 3),
    ],
)
def test_a_number_within_bounds_passes_as_its_kind(
    kind: Bounded, value: str, expected: float
) -> None:
    got = kind(value)
    assert got == expected and type(got) is kind.kind


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        (SECONDS, "0", "must be > 0 seconds, got 0.0"),
        (SECONDS, "soon", "expected a number > 0 seconds, got 'soon'"),
        (POSITIVE, "nan", "must be > 0, got nan"),
        (NON_NEGATIVE, "-0.5", "must be >= 0, got -0.5"),
        (UNIT_INTERVAL, "1.5", "must be in [0, 1], got 1.5"),
        (SHARE, "0", "must be in (0, 1], got 0.0"),
        (COUNT, "-1", "must be >= 0, got -1"),
        (AT_LEAST_ONE, "2.5", "expected a whole number >= 1, got '2.5'"),
        (AT_LEAST_ONE, "0", "must be >= 1, got 0"),
    ],
)
def test_a_number_out_of_bounds_or_no_number_is_refused_with_its_range(
    kind: Bounded, value: str, message: str
) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as error:
        kind(value)
    assert str(error.value) == message


def test_argparse_names_the_flag_and_the_range(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="emotrack")
    parser.add_argument("--weight", type=POSITIVE)
    with pytest.raises(SystemExit):
        parser.parse_args(["--weight", "-2"])
    assert "argument --weight: must be > 0, got -2.0" in capsys.readouterr().err
