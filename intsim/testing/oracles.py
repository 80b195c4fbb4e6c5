"""Exact-arithmetic oracles for property tests: written with Python ints and Fractions, independent of intsim.ops."""

from __future__ import annotations

import math
from fractions import Fraction

__all__ = ["exact_round"]


def exact_round(value: Fraction, rounding: str) -> int:
    """Round an exact rational with the named tie rule (``half_up``, ``half_even``, ``half_away``)."""
    floor = math.floor(value)
    fraction = value - floor
    if fraction != Fraction(1, 2):
        return floor + (fraction > Fraction(1, 2))
    return {"half_up": floor + 1, "half_even": floor + (floor % 2), "half_away": floor + (value > 0)}[rounding]
