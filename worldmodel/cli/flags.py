"""Command-line numbers checked where they are parsed: one shared set of ``argparse`` types.

Every numeric flag of ``worldmodel`` and of the ``agents`` scripts uses one of these as its
``type=``, so a value that would make a run silently wrong (a negative learning rate, ``nan``, a
zero step count) is refused before anything runs or is written, with one line naming the flag::

    worldmodel train: error: argument --lr: must be a finite number > 0, got 'nan'

``OneLineParser`` is the ``ArgumentParser`` whose errors are that one line (argparse's default
also prints the whole usage block first). Sub-parsers inherit it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are ``PROG: error: MESSAGE`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


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
