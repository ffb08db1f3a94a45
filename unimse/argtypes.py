"""argparse types for bounded numbers, shared by every command so that each says the same.

``type=POSITIVE`` accepts "0.5" and refuses "0" with ``--flag: must be > 0, got 0.0``; a word
that is not a number gets ``expected a number > 0, got 'x'``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Bounded:
    """An argparse type: an ``int`` or ``float`` above ``low`` (open: strictly) and at most
    ``high``; ``unit`` follows the bounds in messages (" seconds")."""

    kind: type[int] | type[float] = float
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    unit: str = ""

    @property
    def bounds(self) -> str:
        """The accepted range as messages write it: "> 0", ">= 1", "in (0, 1]"."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return "" if self.high is None else f"<= {self.high:g}"

    def __call__(self, value: str) -> float:
        noun = "a whole number" if self.kind is int else "a number"
        try:
            number = self.kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {noun} {self.bounds}{self.unit}, got {value!r}"
            ) from None
        below = self.low is not None and not (
            number > self.low if self.low_open else number >= self.low
        )
        if below or (self.high is not None and not number <= self.high) or number != number:
            raise argparse.ArgumentTypeError(f"must be {self.bounds}{self.unit}, got {number}")
        return number


SECONDS = Bounded(low=0, low_open=True, unit=" seconds")
POSITIVE = Bounded(low=0, low_open=True)
NON_NEGATIVE = Bounded(low=0)
UNIT_INTERVAL = Bounded(low=0, high=1)
SHARE = Bounded(low=0, low_open=True, high=1)  # a share that cannot be none
COUNT = Bounded(int, low=0)
AT_LEAST_ONE = Bounded(int, low=1)
