"""Residual add of two code tensors with different scales: both rescaled to the output scale in ONE rounding.

``out = sat(round(((a - a_zp) * Ma + (b - b_zp) * Mb) / 2**k) + out_zp, qmin, qmax)``
(DESIGN.md section 2 item 8). The real ratios ``s_a / s_out`` and ``s_b / s_out`` become integer
multipliers ``Ma``, ``Mb`` over one shared shift ``k`` (per channel) with :func:`residual_add_constants`
at plan time; at run time only integers move.

Integer contract
    ``a``, ``b``     integer arrays of the same shape (any dtype up to int64; uint8/int16 codes typically).
    zero points      ``a_zero_point``, ``b_zero_point``: ints in the int32 range.
    ``a_multiplier``, ``b_multiplier``
                     int, or int array of shape ``(C,)`` (or ``(1,)``) per channel along the last axis;
                     ``|M| < 2**31`` (negative allowed). Per-channel multipliers are how PTF's power-of-two
                     factors ``2**alpha_c`` of an input (or ``2**-alpha'_c`` of the output) are folded in.
    ``shift``        int or ``(C,)`` array in ``[0, 62]`` (right shift).
    sum              ``(a - a_zp) * Ma + (b - b_zp) * Mb`` formed exactly in int64; the op proves, per channel,
                     ``max|a - a_zp| * |Ma| + max|b - b_zp| * |Mb| + 2**(k-1) <= 2**63 - 1`` from the actual
                     values before computing, and raises ``OverflowError`` otherwise (16-bit codes with 31-bit
                     multipliers use at most 2**49).
    result           ``clip(round(sum / 2**k) + out_zero_point, qmin, qmax)``, ``[qmin, qmax]`` inside int32,
                     ``out_zero_point`` in ``[qmin, qmax]``; dtype = narrowest of uint8/int8/uint16/int16/int32
                     holding ``[qmin, qmax]``.
    Rounding         ONE rounding of the exact sum, ties by ``rounding`` (``half_up`` default, ``half_even``,
                     ``half_away``; see :mod:`intsim.ops.rounding`).
    Saturation       to ``[qmin, qmax]`` after the zero point is added.
    Checks           backend-neutral, shared with the torch twin and the fused linear + residual kernel:
                     :func:`check_same_shape`, :func:`check_residual_add_parameters`,
                     :func:`prove_residual_add_bounds`.

Where this departs from the public code: FQ-ViT adds the two dequantized operands in float and quantizes
the sum (``qact2(x + attn_out)``, round-half-even in float32); I-ViT rounds each branch separately
(``rhe(z*M/2**k) + rhe(z_id*M_id/2**k_id)``, two roundings, up to 1 LSB different); TFLite pre-shifts both
operands by 2**20 and rounds three times. intsim rounds once, which is the most accurate integer form
(error at most 1/2 LSB plus the multiplier error) and is one adder plus one rounding shifter in RTL.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import numpy as np
from numba import prange

from intsim._jit import parallel_kernel
from intsim.limits import INT32_MAX, INT32_MIN, INT64_MAX, MAX_MULTIPLIER, MAX_SHIFT, MULTIPLIER_BITS
from intsim.ops._checks import (
    ArrayOperand,
    Operand,
    abs_max,
    as_int_array,
    check_int,
    check_int_bounds_fit,
    check_output_range,
    column_abs_max,
    per_channel_vector,
    size_of,
    smallest_code_dtype,
)
from intsim.ops.rounding import round_shift_scalar, rounding_code, rounding_shift_right_reference

__all__ = [
    "MAX_SHIFT",
    "MULTIPLIER_BITS",
    "ResidualParams",
    "check_same_shape",
    "check_residual_add_parameters",
    "prove_residual_add_bounds",
    "residual_add",
    "residual_add_constants",
    "residual_add_reference",
    "residual_parameters",
]


# --------------------------------------------------------------------------------------------------
# plan time


def _scale_vector(value, name: str, op: str) -> np.ndarray:
    """A float scale or 1-D per-channel scale array, as float64 ``(C,)``, all finite and > 0."""
    array = np.asarray(value)
    if array.dtype == np.bool_ or array.dtype.kind not in "iuf":
        raise TypeError(f"{op}: {name} must be a float or a per-channel float array, got dtype {array.dtype}")
    if array.ndim > 1 or array.size == 0:
        raise ValueError(f"{op}: {name} must be a scalar or a non-empty 1-D per-channel array, got shape {array.shape}")
    array = array.astype(np.float64).reshape(-1)
    bad = ~np.isfinite(array) | (array <= 0)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(f"{op}: {name}[{index}] = {float(array[index])!r} must be a finite number > 0")
    return array


def residual_add_constants(a_scale, b_scale, out_scale) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plan time: integer ``(Ma, Mb, k)`` with ``Ma / 2**k ~ a_scale / out_scale`` and ``Mb / 2**k ~ b_scale / out_scale``.

    Each scale is a float or a per-channel 1-D float array (PTF: ``s * 2**alpha_c``); lengths must be 1
    or a common ``C``. Per channel, with the exact ratios ``ra``, ``rb`` of the float64 values (Fractions),
    ``k`` is the LARGEST shift in ``[0, 62]`` with ``max(|Ma|, |Mb|) < 2**31`` where
    ``Ma = round_half_even(ra * 2**k)``, ``Mb = round_half_even(rb * 2**k)``: both operands share one shift,
    the larger ratio gets a full 31-bit mantissa (``2**30 <= M < 2**31`` unless ``k = 62``).

    Error: ``|Ma/2**k - ra| <= 2**-(k+1)`` and likewise for ``b``; when ``k < 62`` this is at most
    ``2**-31 * max(ra, rb)``, i.e. a relative error of at most ``2**-31`` for the larger ratio and
    ``2**-31 * max(ra, rb) / min(ra, rb)`` for the smaller one (a ratio smaller than ``max * 2**-31``
    may round to ``M = 0``).

    Returns three int64 arrays of shape ``(C,)`` (``(1,)`` when every scale is a scalar). Raises
    ``TypeError``/``ValueError`` for non-positive, non-finite or mismatched scales and ``ValueError`` when a
    ratio is ``>= 2**31 - 1/2`` (no shift ``k >= 0`` represents it) or ``< 2**-63`` (both multipliers 0).

    >>> [v.tolist() for v in residual_add_constants(0.02, 0.01, 0.04)]
    [[1073741824], [536870912], [31]]
    >>> [v.tolist() for v in residual_add_constants(np.array([0.02, 0.04]), 0.01, 0.04)]   # PTF: alpha = 0, 1
    [[1073741824, 1073741824], [536870912, 268435456], [31, 30]]
    """
    op = "residual_add_constants"
    scales = [_scale_vector(v, n, op) for v, n in ((a_scale, "a_scale"), (b_scale, "b_scale"), (out_scale, "out_scale"))]
    channels = max(s.shape[0] for s in scales)
    for s, name in zip(scales, ("a_scale", "b_scale", "out_scale")):
        if s.shape[0] not in (1, channels):
            raise ValueError(f"{op}: {name} has {s.shape[0]} channels, the others {channels}; use 1 or {channels}")
    sa, sb, so = (np.broadcast_to(s, (channels,)) for s in scales)
    limit = 2**MULTIPLIER_BITS
    ma, mb, ks = (np.empty(channels, dtype=np.int64) for _ in range(3))
    for c in range(channels):
        ra = Fraction(float(sa[c])) / Fraction(float(so[c]))
        rb = Fraction(float(sb[c])) / Fraction(float(so[c]))
        big = max(ra, rb)
        exponent = big.numerator.bit_length() - big.denominator.bit_length()  # floor(log2(big)) or one more
        if Fraction(2) ** exponent > big:
            exponent -= 1
        k = min(MAX_SHIFT, MULTIPLIER_BITS - 1 - exponent)  # big * 2**k in [2**30, 2**31)
        if k >= 0 and round(big * 2**k) >= limit:  # rounding reached 2**31
            k -= 1
        if k < 0:
            raise ValueError(
                f"{op}: channel {c}: the ratio {float(big)!r} of an input scale to out_scale is >= 2**31 - 1/2; "
                f"no shift k >= 0 gives a multiplier below 2**31"
            )
        if round(big * 2**k) == 0:
            raise ValueError(
                f"{op}: channel {c}: both ratios of input scales to out_scale are below 2**-63 "
                f"(largest {float(big)!r}); both multipliers would be 0"
            )
        ma[c], mb[c], ks[c] = round(ra * 2**k), round(rb * 2**k), k  # round(Fraction): half-even, exact
    return ma, mb, ks


# --------------------------------------------------------------------------------------------------
# run time


def check_same_shape(a_shape, b_shape, op: str = "residual_add") -> None:
    """``ValueError`` unless the operands ``a`` and ``b`` have the same shape (no broadcasting)."""
    if tuple(a_shape) != tuple(b_shape):
        raise ValueError(f"{op}: a and b must have the same shape, got {tuple(a_shape)} and {tuple(b_shape)}")


class ResidualParams(NamedTuple):
    """Validated residual_add parameters: zero points, int64 per-channel ``(C,)`` multipliers and shifts, the output
    code range and the rounding code (unpacks in this order)."""

    a_zero_point: int
    b_zero_point: int
    a_multipliers: np.ndarray
    b_multipliers: np.ndarray
    shifts: np.ndarray
    out_zero_point: int
    qmin: int
    qmax: int
    mode: int


def check_residual_add_parameters(shape, a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift, out_zero_point,
                                  qmin, qmax, rounding, op="residual_add") -> ResidualParams:
    """Validate residual_add's parameters (not the operand values) for operands of ``shape``: ``[qmin, qmax]`` inside
    int32 with ``out_zero_point`` in it, input zero points in int32, multipliers ``|M| < 2**31`` and shifts in
    ``[0, 62]`` per tensor or per channel (last axis). Backend-neutral: the kernel, the reference, the torch twin and
    the fused linear + residual kernel raise the same errors through it."""
    qmin, qmax, out_zero_point = check_output_range(qmin, qmax, out_zero_point, op, "out_zero_point")
    a_zero_point = check_int(a_zero_point, "a_zero_point", op, lo=INT32_MIN, hi=INT32_MAX)
    b_zero_point = check_int(b_zero_point, "b_zero_point", op, lo=INT32_MIN, hi=INT32_MAX)
    mode = rounding_code(rounding, op)
    channels = shape[-1] if len(shape) else 1
    of = f" (the last axis of a and b, shape {tuple(shape)})"
    ma = per_channel_vector(a_multiplier, "a_multiplier", op, channels, -MAX_MULTIPLIER, MAX_MULTIPLIER, of=of)
    mb = per_channel_vector(b_multiplier, "b_multiplier", op, channels, -MAX_MULTIPLIER, MAX_MULTIPLIER, of=of)
    shifts = per_channel_vector(shift, "shift", op, channels, 0, MAX_SHIFT, of=of)
    return ResidualParams(a_zero_point, b_zero_point, ma, mb, shifts, out_zero_point, qmin, qmax, mode)


residual_parameters = check_residual_add_parameters  # the earlier name, kept for callers


def _first_overflow(a_bound: int, b_bound: int, m_a: int, m_b: int, k: int, out_zp: int,
                    k_least: int | None = None) -> tuple[int, str] | None:
    """The first of residual_add's int64 bounds that fails for these maxima, as ``(bound, what)``, or ``None``.

    ``k`` bounds the rounding half (the largest shift is the worst) and ``k_least`` the shifted sum (the smallest
    shift is the worst; default ``k``): with both, one call bounds every channel at once."""
    total = a_bound * m_a + b_bound * m_b
    k_least = k if k_least is None else k_least
    for bound, what in (
        (max(a_bound, b_bound), "a - a_zero_point or b - b_zero_point"),
        (total + (1 << k >> 1), "(a - a_zp) * Ma + (b - b_zp) * Mb (plus the rounding half)"),
        ((total >> k_least) + 1 + abs(out_zp), "the shifted sum plus out_zero_point"),
    ):
        if bound > INT64_MAX:
            return bound, what
    return None


def prove_residual_add_bounds(a: Operand, b: Operand, params: ResidualParams, op: str = "residual_add") -> None:
    """Prove ``max|a - a_zp|``, ``max|b - b_zp|``, ``|a - a_zp|*|Ma| + |b - b_zp|*|Mb| + 2**(k-1)`` and the shifted sum
    plus ``out_zero_point`` fit int64, from the exact value bounds of ``a`` and ``b`` (same shape).

    First with global maxima (one pass each, the common case: the largest ``|Ma|``, ``|Mb|``, the largest shift for
    the rounding half and the smallest for the shifted sum); only if that bound fails, exactly per channel, which decides (``OverflowError`` naming the first failing channel).
    """
    p = params
    if size_of(a.shape) == 0:
        return
    magnitudes_a, magnitudes_b = [abs(m) for m in p.a_multipliers.tolist()], [abs(m) for m in p.b_multipliers.tolist()]
    shifts = p.shifts.tolist()
    if _first_overflow(abs_max(a, p.a_zero_point), abs_max(b, p.b_zero_point), max(magnitudes_a), max(magnitudes_b),
                       max(shifts), p.out_zero_point, min(shifts)) is None:
        return
    columns = zip(column_abs_max(a, p.a_zero_point), column_abs_max(b, p.b_zero_point), magnitudes_a, magnitudes_b, shifts)
    for channel, (a_bound, b_bound, m_a, m_b, k) in enumerate(columns):
        failed = _first_overflow(a_bound, b_bound, m_a, m_b, k, p.out_zero_point)
        if failed is not None:
            check_int_bounds_fit(failed[0], f"{failed[1]} (channel {channel})", op)


def _kernel_dtype(a_dtype, b_dtype) -> np.dtype:
    """One operand dtype for the kernel, from four (uint8, int16, int32, int64): few numba variants to compile."""
    if a_dtype == b_dtype == np.uint8:
        return np.dtype(np.uint8)
    common = np.result_type(a_dtype, b_dtype)  # uint64 was refused, so this is an integer type
    for dtype in (np.int16, np.int32):
        if np.can_cast(common, dtype):
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _prepare(a, b, a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift, out_zero_point, qmin, qmax, rounding,
             op="residual_add"):
    """Validate residual_add's arguments once; return 2-D operands, int64 per-channel params and scalars."""
    a = as_int_array(a, "a", op)
    b = as_int_array(b, "b", op)
    check_same_shape(a.shape, b.shape, op)
    params = check_residual_add_parameters(a.shape, a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift,
                                           out_zero_point, qmin, qmax, rounding, op)
    prove_residual_add_bounds(ArrayOperand(a), ArrayOperand(b), params, op)
    channels = a.shape[-1] if a.ndim else 1
    rows = a.size // channels if channels else 0
    common = _kernel_dtype(a.dtype, b.dtype)
    a2 = np.ascontiguousarray(a, dtype=common).reshape(rows, channels)
    b2 = np.ascontiguousarray(b, dtype=common).reshape(rows, channels)
    return (a, a2, b2, *params)


def residual_add_reference(a, b, *, a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift,
                           out_zero_point=0, qmin=0, qmax=255, rounding="half_up"):
    """Reference (the specification): ``clip(round(((a-a_zp)*Ma + (b-b_zp)*Mb) / 2**k) + out_zp, qmin, qmax)``."""
    a, a2, b2, a_zp, b_zp, ma, mb, shifts, out_zp, qmin, qmax, _ = _prepare(
        a, b, a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift, out_zero_point, qmin, qmax, rounding
    )
    total = (a2.astype(np.int64) - a_zp) * ma + (b2.astype(np.int64) - b_zp) * mb  # exact, proven to fit int64
    rounded = rounding_shift_right_reference(total, shifts, rounding)  # one rounding of the exact sum
    return np.clip(rounded + out_zp, qmin, qmax).astype(smallest_code_dtype(qmin, qmax)).reshape(a.shape)


@parallel_kernel
def _residual_add_kernel(a, b, a_zp, b_zp, ma, mb, shifts, out_zp, qmin, qmax, mode, out):
    rows, channels = a.shape
    for r in prange(rows):
        for c in range(channels):
            total = (np.int64(a[r, c]) - a_zp) * ma[c] + (np.int64(b[r, c]) - b_zp) * mb[c]
            value = round_shift_scalar(total, shifts[c], mode) + out_zp
            out[r, c] = min(max(value, qmin), qmax)


def residual_add(a, b, *, a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift,
                 out_zero_point=0, qmin=0, qmax=255, rounding="half_up"):
    """Add two code tensors at different scales into output codes, with one rounding of the exact int64 sum.

    ``out = clip(round(((a - a_zero_point) * a_multiplier + (b - b_zero_point) * b_multiplier) / 2**shift)
    + out_zero_point, qmin, qmax)``; see the module docstring for the integer contract. Multipliers and
    shift come from :func:`residual_add_constants` (plan time).

    Raises ``TypeError`` for non-integer operands or parameters, ``ValueError`` for mismatched shapes,
    out-of-range multipliers/shifts/zero points, wrong per-channel lengths and unknown rounding modes, and
    ``OverflowError`` when the exact sum could leave int64.

    >>> import numpy as np
    >>> a, b = np.array([129, 130, 131], dtype=np.uint8), np.array([1, 1, 1], dtype=np.uint8)
    >>> residual_add(a, b, a_zero_point=128, b_zero_point=0, a_multiplier=1, b_multiplier=1, shift=1)  # 1, 1.5, 2
    array([1, 2, 2], dtype=uint8)
    >>> residual_add(a, b, a_zero_point=128, b_zero_point=0, a_multiplier=1, b_multiplier=1, shift=1,
    ...              rounding="half_even", out_zero_point=254)
    array([255, 255, 255], dtype=uint8)
    """
    a, a2, b2, a_zp, b_zp, ma, mb, shifts, out_zp, qmin, qmax, mode = _prepare(
        a, b, a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift, out_zero_point, qmin, qmax, rounding
    )
    out = np.empty(a2.shape, dtype=smallest_code_dtype(qmin, qmax))
    if a2.size:
        # the kernel stores each clipped value (inside out's dtype) through an unsigned view of the same width:
        # numba's integer store truncates, so the bits are the two's complement code; one variant per width
        unsigned = np.dtype(f"u{out.dtype.itemsize}")
        _residual_add_kernel(
            a2, b2, np.int64(a_zp), np.int64(b_zp), ma, mb, shifts, np.int64(out_zp), np.int64(qmin), np.int64(qmax),
            mode, out.view(unsigned),
        )
    return out.reshape(a.shape)
