"""Hypothesis strategies for intsim's integer softmax family (:mod:`intsim.ops.softmax`).

Cases are dictionaries of keyword arguments, ready for ``log_int_softmax(**case)`` and its twins. Rows are
drawn from several kinds so that the corners come up often: random codes (corner values mixed in), rows of
equal logits, one-hot-like rows (one code at the top of the range, the rest at the bottom), rows whose codes
sit in a narrow band (realistic attention rows, many non-zero probabilities) and rows with tied maxima.
Masks are absent, random, shared by all rows (a key mask, broadcast), or whole-row masks that leave some rows
fully masked. All bounds are keyword-only; shapes are small so that a profile runs quickly.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from intsim.ops._checks import int_range, smallest_code_dtype
from intsim.ops.softmax import I_EXP_LN2, ZERO_CODE, IExpConstants, i_exp_constants
from intsim.testing.strategies import int_codes

__all__ = [
    "ROW_KINDS",
    "MASK_KINDS",
    "logit_scales",
    "i_exp_constant_sets",
    "raw_i_exp_constants",
    "softmax_rows",
    "softmax_cases",
    "lis_codes",
    "lis_attention_cases",
    "with_heads_axis",
]

ROW_KINDS = ("random", "equal", "one_hot", "band", "tied_max")
MASK_KINDS = ("none", "random", "keys", "rows")

# Scales whose constants sit at corners: x0 = -1 (s >= 0.6931), c_int = 1 (s = 1.5; i_exp_constants refuses
# s > 1.67, where c_int = 0), s = ln2/k (x0 around -k), typical attention-logit scales, and the default bounds.
_CORNER_SCALES = (I_EXP_LN2, I_EXP_LN2 / 7, I_EXP_LN2 / 8, 0.1, 0.05, 1 / 32, 20 / 255, 0.5, 1.0, 1.5)


def logit_scales(*, min_scale: float = 5e-3, max_scale: float = 1.5) -> st.SearchStrategy[float]:
    """Positive finite logit scales in ``[min_scale, max_scale]``, log-uniform, corner scales mixed in.

    ``i_exp_constants`` accepts scales up to about 1.67 (``c_int >= 1``); the default ``max_scale = 1.5``.
    The default ``min_scale = 5e-3`` keeps every int64 bound of the softmax ops satisfied for rows of up to
    16 keys and ``out_bits`` up to 16 (``c_int << 30`` is then below ``2**47``); smaller scales are for
    overflow tests.
    """
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"logit_scales: need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
    corners = [s for s in _CORNER_SCALES + (min_scale, max_scale) if min_scale <= s <= max_scale]
    log_uniform = st.floats(math.log(min_scale), math.log(max_scale)).map(
        lambda t: min(max(math.exp(t), min_scale), max_scale)
    )
    return st.sampled_from(corners) | log_uniform


def i_exp_constant_sets(*, min_scale: float = 5e-3, max_scale: float = 1.5):
    """:class:`~intsim.ops.softmax.IExpConstants` built by ``i_exp_constants`` from :func:`logit_scales`."""
    return logit_scales(min_scale=min_scale, max_scale=max_scale).map(i_exp_constants)


@st.composite
def raw_i_exp_constants(draw, *, max_n: int = 20) -> IExpConstants:
    """Hand-made :class:`~intsim.ops.softmax.IExpConstants`, not from a scale: any signs of ``b_int`` and ``c_int``.

    ``|x0|, |b_int| <= 2**12``, ``|c_int| <= 2**24`` and ``n <= max_n`` (default 20), so ``e < 2**46`` and every
    softmax bound holds for short rows and ``out_bits <= 16``. They exercise ``z <= 0`` (e = 0 for kept keys),
    non-monotone exps and rows whose every ``e`` is 0.
    """
    return IExpConstants(
        x0=draw(int_codes(lo=-(2**12), hi=-1)),
        b_int=draw(int_codes(lo=-(2**12), hi=2**12)),
        c_int=draw(int_codes(lo=-(2**24), hi=2**24)),
        n=draw(st.integers(0, max_n)),
    )


@st.composite
def softmax_rows(draw, *, length: int, lo: int, hi: int, kinds=ROW_KINDS) -> list[int]:
    """One row of ``length`` codes in ``[lo, hi]``, of a kind drawn from ``kinds`` (see :data:`ROW_KINDS`)."""
    kind = draw(st.sampled_from(kinds))
    codes = int_codes(lo=lo, hi=hi)
    if kind == "equal":
        return [draw(codes)] * length
    if kind == "one_hot":
        row = [lo] * length
        row[draw(st.integers(0, length - 1))] = hi
        return row
    if kind == "band":
        width = draw(st.integers(0, min(40, hi - lo)))
        base = draw(st.integers(lo, hi - width))
        return [base + draw(st.integers(0, width)) for _ in range(length)]
    if kind == "tied_max":
        top = draw(codes)
        return [top if draw(st.booleans()) else draw(st.integers(lo, top)) for _ in range(length)]
    return [draw(codes) for _ in range(length)]


@st.composite
def softmax_cases(
    draw,
    *,
    bits: int | None = None,
    signed: bool | None = None,
    max_bits: int = 16,
    max_leading_dims: int = 2,
    max_side: int = 3,
    max_row_length: int = 12,
    mask_kinds=MASK_KINDS,
    min_scale: float = 5e-3,
    max_scale: float = 1.5,
    constants=None,
) -> dict:
    """A softmax case ``dict(q, zero_point, constants, bits, signed, mask)`` for ``log_int_softmax`` and twins.

    ``bits`` (default: drawn in ``[2, max_bits]``, 8 drawn often) and ``signed`` (default: drawn) fix the
    code range; ``q`` has 0..``max_leading_dims`` leading axes of size 1..``max_side`` and rows of
    1..``max_row_length`` keys, each row of a kind from :data:`ROW_KINDS`, in the narrowest numpy dtype.
    ``mask`` is ``None`` or a bool array of one of :data:`MASK_KINDS` (``keys``: shape ``(L,)``, broadcast;
    ``rows``: shape ``(..., 1)``, so some rows are fully masked; ``random``: full shape, sometimes with a
    fully masked row forced in). ``constants`` (a strategy) replaces the default
    ``i_exp_constant_sets(min_scale=..., max_scale=...)``.
    """
    if bits is None:
        bits = draw(st.sampled_from([8, 8, 2, 4, max_bits]) | st.integers(2, max_bits))
    if signed is None:
        signed = draw(st.booleans())
    lo, hi = int_range(bits, signed)
    leading = tuple(draw(st.lists(st.integers(1, max_side), max_size=max_leading_dims)))
    length = draw(st.integers(1, max_row_length))
    rows = [draw(softmax_rows(length=length, lo=lo, hi=hi)) for _ in range(math.prod(leading))]
    q = np.array(rows, dtype=smallest_code_dtype(lo, hi)).reshape(leading + (length,))
    mask_kind = draw(st.sampled_from(mask_kinds))
    mask = None
    if mask_kind == "random":
        mask = np.array(draw(st.lists(st.booleans(), min_size=q.size, max_size=q.size)), dtype=bool).reshape(q.shape)
        if leading and draw(st.booleans()):
            mask.reshape(-1, length)[draw(st.integers(0, math.prod(leading) - 1))] = False
    elif mask_kind == "keys":
        mask = np.array(draw(st.lists(st.booleans(), min_size=length, max_size=length)), dtype=bool)
    elif mask_kind == "rows":
        count = math.prod(leading)
        mask = np.array(draw(st.lists(st.booleans(), min_size=count, max_size=count)), dtype=bool)
        mask = mask.reshape(leading + (1,))
    return dict(
        q=q,
        zero_point=draw(int_codes(lo=lo, hi=hi)),
        constants=draw(i_exp_constant_sets(min_scale=min_scale, max_scale=max_scale) if constants is None else constants),
        bits=bits,
        signed=signed,
        mask=mask,
    )


def lis_codes() -> st.SearchStrategy[int]:
    """Log-Int-Softmax codes ``0..16``, with 0, 15 and the zero code 16 drawn often."""
    return st.sampled_from([0, 1, 15, ZERO_CODE]) | st.integers(0, ZERO_CODE)


@st.composite
def lis_attention_cases(
    draw,
    *,
    v_bits: int = 8,
    v_signed: bool | None = None,
    max_leading_dims: int = 2,
    max_side: int = 3,
    max_keys: int = 8,
    max_queries: int = 4,
    max_channels: int = 4,
) -> dict:
    """A case ``dict(codes, v, v_zero_point)`` for ``lis_attention_values`` and its reference.

    ``codes`` ``(..., N, M)`` uint8 in ``0..16``; ``v`` ``(..., M, D)`` codes of ``v_bits`` / ``v_signed``; the
    leading axes are equal or broadcast (a 1 on either side, or fewer axes on one side).
    """
    if v_signed is None:
        v_signed = draw(st.booleans())
    lo, hi = int_range(v_bits, v_signed)
    leading = tuple(draw(st.lists(st.integers(1, max_side), max_size=max_leading_dims)))
    codes_leading = tuple(1 if draw(st.booleans()) and d > 1 else d for d in leading)
    v_leading = leading[draw(st.integers(0, len(leading))):]
    n, m, d = draw(st.integers(1, max_queries)), draw(st.integers(1, max_keys)), draw(st.integers(1, max_channels))
    codes_shape, v_shape = codes_leading + (n, m), v_leading + (m, d)
    codes = np.array(draw(st.lists(lis_codes(), min_size=math.prod(codes_shape), max_size=math.prod(codes_shape))))
    v = np.array(draw(st.lists(int_codes(lo=lo, hi=hi), min_size=math.prod(v_shape), max_size=math.prod(v_shape))))
    return dict(
        codes=codes.astype(np.uint8).reshape(codes_shape),
        v=v.astype(smallest_code_dtype(lo, hi)).reshape(v_shape),
        v_zero_point=draw(int_codes(lo=lo, hi=hi)),
    )


def with_heads_axis(case: dict) -> dict:
    """``case`` with ``q`` (and an array ``mask`` of more than one axis) given leading axes of size 1 up to three
    axes, so that axis -3 is a heads axis (for a ``full_scale`` per head)."""
    case = dict(case)
    q = case["q"]
    if q.ndim < 3:
        case["q"] = q.reshape((1,) * (3 - q.ndim) + q.shape)
        mask = case.get("mask")
        if mask is not None and mask.ndim > 1:
            case["mask"] = mask.reshape((1,) * (3 - mask.ndim) + mask.shape)
    return case
