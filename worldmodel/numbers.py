"""Checked numbers: ``argparse`` types that refuse a value which would make a run silently wrong.

Every numeric flag of ``worldmodel`` and of the agent scripts uses one of these as its ``type=``
(``worldmodel.cli.flags`` re-exports them), and configs stored as JSON (an agent run's
``config.json``, a ``--config`` file) are checked with the same functions, so a stored value is
refused exactly as its flag would refuse it. Each raises ``argparse.ArgumentTypeError`` with the
reason, e.g. ``must be a finite number > 0, got 'nan'``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An ``argparse`` type: a whole number ``>= low`` (and ``<= high`` when given)."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must be a whole number {bound}, got {text!r}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def float_in(
    low: float | None = None, high: float | None = None, *, low_open: bool = False
) -> Callable[[str], float]:
    """An ``argparse`` type: a finite number in ``[low, high]`` (``(low, high]`` with ``low_open``);
    a bound of ``None`` is unbounded."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        too_low = low is not None and (value <= low if low_open else value < low)
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_describe()}, got {text!r}")
        return value

    def _describe() -> str:
        if low is not None and high is not None:
            return f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}]"
        if low is not None:
            return f"a finite number {'>' if low_open else '>='} {low:g}"
        if high is not None:
            return f"a finite number <= {high:g}"
        return "a finite number"

    parse.__name__ = _describe()
    return parse


positive_int = int_at_least(1)
"""A whole number ``>= 1`` (counts of steps, episodes, envs, sizes)."""
nonneg_int = int_at_least(0)
"""A whole number ``>= 0`` (intervals where 0 switches something off, seeds)."""
positive_float = float_in(0.0, low_open=True)
"""A finite number ``> 0`` (learning rates, clip norms, bounds)."""
nonneg_float = float_in(0.0)
"""A finite number ``>= 0`` (weights, temperatures)."""
finite_float = float_in()
"""Any finite number."""
probability = float_in(0.0, 1.0)
"""A finite number in ``[0, 1]``."""
