"""Hypothesis strategies for intsim's integer ops, with corner values mixed into every draw.

Element strategies are ``sampled_from(edge_values(...)) | integers(lo, hi)``, so extremes (min,
min+1, -1, 0, 1, max-1, max and ``±2**i±1``) appear far more often than uniform sampling would give.
All bounds are keyword-only; shapes are small by default so that a profile runs quickly.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from intsim.ops._checks import int_range
from intsim.ops.requant import MAX_SHIFT, MULTIPLIER_BITS
from intsim.ops.rounding import ROUNDING_MODES

__all__ = [
    "edge_values",
    "int_codes",
    "int_arrays",
    "rounding_modes",
    "multipliers",
    "shifts",
    "requant_cases",
]


def edge_values(lo: int, hi: int) -> list[int]:
    """Corner values inside ``[lo, hi]``: both ends and their neighbours, -1/0/1, and ``±2**i ± 1``."""
    candidates = {lo, lo + 1, hi - 1, hi, -1, 0, 1}
    for i in range(1, 64):
        for sign in (1, -1):
            for delta in (-1, 0, 1):
                candidates.add(sign * 2**i + delta)
    return sorted(v for v in candidates if lo <= v <= hi)


def int_codes(*, lo: int, hi: int) -> st.SearchStrategy[int]:
    """Integers in ``[lo, hi]`` with corner values drawn often."""
    return st.sampled_from(edge_values(lo, hi)) | st.integers(lo, hi)


def int_arrays(
    *,
    bits: int = 8,
    signed: bool = True,
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=8),
    dtype=None,
    lo: int | None = None,
    hi: int | None = None,
) -> st.SearchStrategy[np.ndarray]:
    """Integer arrays of ``bits``-wide codes (or explicit ``[lo, hi]``), corner values mixed in.

    ``dtype`` defaults to the narrowest numpy integer type that holds the range.
    """
    default_lo, default_hi = int_range(bits, signed)
    lo = default_lo if lo is None else lo
    hi = default_hi if hi is None else hi
    if dtype is None:
        from intsim.ops._checks import smallest_code_dtype

        dtype = smallest_code_dtype(lo, hi)
    return hnp.arrays(dtype=dtype, shape=shape, elements=int_codes(lo=lo, hi=hi))


def rounding_modes() -> st.SearchStrategy[str]:
    """One of intsim's rounding mode names."""
    return st.sampled_from(sorted(ROUNDING_MODES))


def multipliers(*, signed: bool = True) -> st.SearchStrategy[int]:
    """31-bit requantization multipliers ``|M| < 2**31`` (negative ones when ``signed``)."""
    hi = 2**MULTIPLIER_BITS - 1
    return int_codes(lo=-hi if signed else 0, hi=hi)


def shifts(*, lo: int = 0, hi: int = MAX_SHIFT) -> st.SearchStrategy[int]:
    """Right shifts in ``[lo, hi]``."""
    return int_codes(lo=lo, hi=hi)


@st.composite
def requant_cases(draw, *, acc_bits: int = 32, per_channel: bool | None = None):
    """A requantization case ``dict(acc, multiplier, shift, zero_point, qmin, qmax, rounding)``.

    ``acc`` has ``acc_bits``-bit signed values; multiplier and shift are scalars or per-channel vectors
    (``per_channel=None`` draws both kinds); the output range is a signed or unsigned 4..16-bit range.
    Cases whose product could overflow int64 are not filtered out: ``acc_bits=32`` never overflows,
    wider accumulators let tests check the ``OverflowError``.
    """
    acc = draw(int_arrays(bits=acc_bits, signed=True, dtype=np.int64))
    channels = acc.shape[-1]
    per_channel = draw(st.booleans()) if per_channel is None else per_channel
    if per_channel:
        multiplier = np.array(draw(st.lists(multipliers(), min_size=channels, max_size=channels)), dtype=np.int64)
        shift = np.array(draw(st.lists(shifts(), min_size=channels, max_size=channels)), dtype=np.int64)
    else:
        multiplier, shift = draw(multipliers()), draw(shifts())
    out_bits = draw(st.integers(4, 16))
    out_signed = draw(st.booleans())
    qmin, qmax = int_range(out_bits, out_signed)
    zero_point = draw(int_codes(lo=qmin, hi=qmax))
    return dict(
        acc=acc, multiplier=multiplier, shift=shift, zero_point=zero_point,
        qmin=qmin, qmax=qmax, rounding=draw(rounding_modes()),
    )
