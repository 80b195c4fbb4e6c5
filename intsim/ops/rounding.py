"""Rounding right shifts: the single place where intsim rounds an integer division by ``2**k``.

Every op that drops fractional bits (requantization, LayerNorm, residual add, ...) calls
:func:`round_shift_scalar` from its numba kernel and :func:`rounding_shift_right_reference` from its
numpy reference, so one rounding attribute means the same thing everywhere.

Integer contract
    ``x`` int64, ``k`` int64 in ``[0, 62]``; the result is ``round(x / 2**k)`` with the tie rule of the
    mode; it is exact (no intermediate can overflow) whenever ``|x| + 2**(k-1) <= 2**63 - 1``, which
    the callers prove before calling.

Modes (ties are values whose fraction is exactly one half)
    ``half_up``   ties toward +inf: ``(x + 2**(k-1)) >> k``. One add and an arithmetic shift; TFLite's
                  single rounding, TVM's ``UPWARD``; Verilog ``(x + (1 <<< (k-1))) >>> k``. The default.
    ``half_even`` ties to the even neighbour (IEEE round-to-nearest-even, ``torch.round``).
    ``half_away`` ties away from zero (C ``round``, TVM ``TONEAREST``, gemmlowp ``RoundingDivideByPOT``).
    With ``k = 0`` every mode returns ``x``.
"""

from __future__ import annotations

import numpy as np

from intsim import limits
from intsim._jit import kernel
from intsim.ops._checks import check_choice

__all__ = [
    "ROUNDING_MODES",
    "HALF_UP",
    "HALF_EVEN",
    "HALF_AWAY",
    "rounding_code",
    "rounding_shift_right_reference",
    "round_shift_scalar",
]

HALF_UP, HALF_EVEN, HALF_AWAY = 0, 1, 2
ROUNDING_MODES = {name: code for code, name in enumerate(limits.ROUNDING_MODES)}  # the names live in intsim.limits
assert ROUNDING_MODES == {"half_up": HALF_UP, "half_even": HALF_EVEN, "half_away": HALF_AWAY}


def rounding_code(rounding: str, op: str) -> int:
    """The integer code of a rounding mode name, or ``ValueError`` listing the known modes."""
    return ROUNDING_MODES[check_choice(rounding, "rounding mode", op, tuple(ROUNDING_MODES))]


def rounding_shift_right_reference(x: np.ndarray, shift: np.ndarray, rounding: str) -> np.ndarray:
    """Reference: ``round(x / 2**shift)`` elementwise on int64 arrays (broadcasting), ties by ``rounding``.

    Written as floor division plus a remainder test so that each mode's tie rule is visible.
    """
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    floor_quotient = x >> shift
    remainder = x - (floor_quotient << shift)  # in [0, 2**shift)
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    is_tie = (remainder == half) & (shift > 0)
    if rounding == "half_up":
        round_up_on_tie = np.ones_like(is_tie)
    elif rounding == "half_even":
        round_up_on_tie = (floor_quotient & 1) == 1
    elif rounding == "half_away":
        round_up_on_tie = x >= 0
    else:  # callers validate first; this guards direct use
        raise ValueError(f"unknown rounding mode {rounding!r}; known: {', '.join(ROUNDING_MODES)}")
    round_up = (remainder > half) | (is_tie & round_up_on_tie)
    return floor_quotient + round_up.astype(np.int64)


@kernel
def round_shift_scalar(x, shift, mode):
    """Numba twin of :func:`rounding_shift_right_reference` for one int64 (``mode`` is a rounding code)."""
    if mode == 0:  # half_up, branch-free so that loops over channels vectorise; shift 0 adds 0
        return (x + ((np.int64(1) << shift) >> 1)) >> shift
    if shift == 0:
        return x
    half = np.int64(1) << (shift - 1)
    floor_quotient = x >> shift
    remainder = x - (floor_quotient << shift)
    if remainder > half:
        return floor_quotient + 1
    if remainder < half:
        return floor_quotient
    if mode == 1:  # half_even
        return floor_quotient + (floor_quotient & 1)
    return floor_quotient + 1 if x >= 0 else floor_quotient  # half_away
