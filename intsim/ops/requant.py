"""Dyadic requantization: ``y = sat(round(acc * M / 2**k) + zp)`` with integer ``M`` and ``k``.

A real rescaling factor ``r = s_in / s_out`` (float metadata, known at export) becomes an integer
multiplier ``M`` and a right shift ``k`` with :func:`quantize_multiplier`; at run time only integers
move. This is TFLite's single-rounding ``MultiplyByQuantizedMultiplier`` and TVM's
``FixedPointMultiply`` with ``UPWARD`` rounding when ``rounding="half_up"`` (the default).

Integer contract
    ``acc``        any signed/unsigned integer array up to int64 (typically an int32/int64 accumulator).
    ``multiplier`` int, or int array of shape ``(C,)`` for per-channel along the last axis; ``|M| < 2**31``
                   (a 31-bit mantissa plus sign; negative multipliers are allowed, e.g. a negative LN gamma).
    ``shift``      int or ``(C,)`` array in ``[0, 62]`` (a right shift; negative shifts are refused).
    product        ``acc * M`` is formed in int64; the op proves ``|acc * M| + 2**(k-1) <= 2**63 - 1``
                   from the actual ``acc`` values per channel before computing, and raises
                   ``OverflowError`` otherwise (an int32 ``acc`` always fits: ``2**31 * 2**31 = 2**62``).
    result         ``clip(round(acc * M / 2**k) + zero_point, qmin, qmax)`` with ``zero_point`` in
                   ``[qmin, qmax]`` and ``[qmin, qmax]`` inside int32; returned in the narrowest of
                   uint8/int8/uint16/int16/int32 that holds ``[qmin, qmax]``.
    Rounding       one rounding of the exact product, ties by ``rounding`` (see :mod:`intsim.ops.rounding`).
    Saturation     to ``[qmin, qmax]`` after the zero point is added.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import prange

from intsim._jit import parallel_kernel
from intsim.ops._checks import (
    INT64_MAX,
    as_int_array,
    check_int,
    check_int_bounds_fit,
    smallest_code_dtype,
)
from intsim.ops.rounding import round_shift_scalar, rounding_code, rounding_shift_right_reference

__all__ = [
    "MULTIPLIER_BITS",
    "MAX_SHIFT",
    "RequantParams",
    "prepare_parameters",
    "quantize_multiplier",
    "requantize",
    "requantize_reference",
]

MULTIPLIER_BITS = 31  # |M| < 2**31: the mantissa of a normalised multiplier lies in [2**30, 2**31)
MAX_SHIFT = 62
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Return ``(M, k)`` with ``M / 2**k`` the nearest 31-bit dyadic value to ``real`` (plan time, float in).

    ``real = m * 2**e`` with ``m`` in ``[0.5, 1)`` (``math.frexp``); ``M = round_half_even(m * 2**31)``
    (the product is exact in float64), ``k = 31 - e``; if rounding gives ``M = 2**31`` it is halved and
    ``k`` decremented (TFLite's ``QuantizeMultiplier``). Hence ``2**30 <= |M| < 2**31`` and
    ``|M / 2**k - real| <= 2**-(k+1) <= |real| * 2**-31``, within the contract ``|real| * 2**-30``.
    The sign of ``real`` goes to ``M``; ``real = 0`` gives ``(0, 0)``.

    Raises ``ValueError`` for non-finite values and for ``|real|`` outside ``[2**-32, 2**31)``, whose
    shift would leave ``[0, 62]``; the contract is tested for ``real`` in ``[1e-9, 2**20]``.

    >>> quantize_multiplier(0.5)
    (1073741824, 31)
    >>> quantize_multiplier(1.0 / 3.0)
    (1431655765, 32)
    """
    real = float(real)
    if not math.isfinite(real):
        raise ValueError(f"quantize_multiplier: real must be finite, got {real!r}")
    if real == 0.0:
        return 0, 0
    mantissa, exponent = math.frexp(abs(real))
    multiplier = round(mantissa * 2**MULTIPLIER_BITS)
    shift = MULTIPLIER_BITS - exponent
    if multiplier == 2**MULTIPLIER_BITS:
        multiplier //= 2
        shift -= 1
    if not 0 <= shift <= MAX_SHIFT:
        raise ValueError(
            f"quantize_multiplier: real = {real!r} needs shift {shift}, outside [0, {MAX_SHIFT}]; "
            f"representable magnitudes are [2**-32, 2**31)"
        )
    return (multiplier if real > 0 else -multiplier), shift


def _prepare(acc, multiplier, shift, zero_point, qmin, qmax, rounding, op="requantize"):
    """Validate requantize's arguments once; return int64 per-channel params and the output dtype."""
    acc = as_int_array(acc, "acc", op)
    multipliers, shifts, zero_point, qmin, qmax, mode = prepare_parameters(
        acc.shape, multiplier, shift, zero_point, qmin, qmax, rounding, op)
    _check_no_overflow(acc, multipliers, shifts, zero_point, op)
    return acc, multipliers, shifts, zero_point, qmin, qmax, mode


class RequantParams(NamedTuple):
    """Validated requantize parameters (int64 per-channel ``multipliers``/``shifts``, one per channel)."""

    multipliers: np.ndarray
    shifts: np.ndarray
    zero_point: int
    qmin: int
    qmax: int
    mode: int  # rounding code (intsim.ops.rounding)


def prepare_parameters(acc_shape, multiplier, shift, zero_point=0, qmin=-128, qmax=127, rounding="half_up",
                       op="requantize") -> RequantParams:
    """Validate everything of a requantize call but the accumulator values, for an ``acc`` of ``acc_shape``.

    Raises the same errors as :func:`requantize` (which calls it). Fused kernels call it with the shape of an
    accumulator they never materialise, and prove the product bound themselves (an int32-bounded ``acc``
    always fits, see :func:`requantize`).
    """
    qmin = check_int(qmin, "qmin", op, lo=_INT32_MIN, hi=_INT32_MAX)
    qmax = check_int(qmax, "qmax", op, lo=qmin, hi=_INT32_MAX)
    zero_point = check_int(zero_point, "zero_point", op, lo=qmin, hi=qmax)
    mode = rounding_code(rounding, op)
    channels = acc_shape[-1] if len(acc_shape) else 1
    params = []
    for name, value, lo, hi in (
        ("multiplier", multiplier, -(2**MULTIPLIER_BITS) + 1, 2**MULTIPLIER_BITS - 1),
        ("shift", shift, 0, MAX_SHIFT),
    ):
        array = as_int_array(value, name, op)
        if array.ndim > 1 or (array.ndim == 1 and array.shape[0] not in (1, channels)):
            raise ValueError(
                f"{op}: {name} must be a scalar or a per-channel vector of length {channels} "
                f"(the last axis of acc, shape {tuple(acc_shape)}), got shape {array.shape}"
            )
        if array.size and (int(array.min()) < lo or int(array.max()) > hi):
            bad = int(array.min()) if int(array.min()) < lo else int(array.max())
            raise ValueError(f"{op}: {name} = {bad} is outside its allowed range [{lo}, {hi}]")
        params.append(array.astype(np.int64).reshape(-1))
    channels_of_params = 1 if not len(acc_shape) else channels
    multipliers, shifts = (np.broadcast_to(p, (channels_of_params,)) for p in params)
    return RequantParams(multipliers, shifts, zero_point, qmin, qmax, mode)


def _check_no_overflow(acc, multipliers, shifts, zero_point, op):
    """Prove, per channel, that ``|acc*M| + 2**(k-1)`` and the shifted result plus ``zp`` fit int64."""
    info = np.iinfo(acc.dtype)
    if acc.size == 0 or (info.min >= _INT32_MIN and info.max <= 2**31):
        return  # the dtype bounds |acc| by 2**31 and |M| < 2**31: the product is below 2**62, plus 2**61 at most
    per_channel = acc.reshape(-1, multipliers.shape[0])
    lows, highs = per_channel.min(axis=0), per_channel.max(axis=0)
    for channel in range(per_channel.shape[1]):
        acc_bound = max(abs(int(lows[channel])), abs(int(highs[channel])))
        m, k = abs(int(multipliers[channel])), int(shifts[channel])
        product = acc_bound * m
        check_int_bounds_fit(product + (1 << k >> 1), f"acc * multiplier (channel {channel})", op)
        check_int_bounds_fit((product >> k) + 1 + abs(zero_point), f"the shifted result plus zero_point (channel {channel})", op, INT64_MAX)


def requantize_reference(acc, multiplier, shift, *, zero_point=0, qmin=-128, qmax=127, rounding="half_up"):
    """Reference (the specification): ``clip(round(acc * multiplier / 2**shift) + zero_point, qmin, qmax)``."""
    acc, multipliers, shifts, zero_point, qmin, qmax, _ = _prepare(acc, multiplier, shift, zero_point, qmin, qmax, rounding)
    product = acc.astype(np.int64) * multipliers  # broadcasts along the last axis
    rounded = rounding_shift_right_reference(product, shifts, rounding)
    return np.clip(rounded + zero_point, qmin, qmax).astype(smallest_code_dtype(qmin, qmax))


@parallel_kernel
def _requantize_kernel(acc, multipliers, shifts, zero_point, qmin, qmax, mode, out):
    # acc and out are (rows, C); multipliers and shifts have length C
    for row in prange(acc.shape[0]):
        for channel in range(acc.shape[1]):
            product = np.int64(acc[row, channel]) * multipliers[channel]
            value = round_shift_scalar(product, shifts[channel], mode) + zero_point
            out[row, channel] = min(max(value, qmin), qmax)


def requantize(acc, multiplier, shift, *, zero_point=0, qmin=-128, qmax=127, rounding="half_up"):
    """Requantize integer accumulators to codes: ``clip(round(acc * M / 2**k) + zero_point, qmin, qmax)``.

    See the module docstring for the integer contract. Raises ``TypeError`` for non-integer inputs,
    ``ValueError`` for out-of-range multipliers, negative or too large shifts, mismatched per-channel
    lengths and unknown rounding modes, and ``OverflowError`` when ``acc * multiplier`` could overflow int64.

    >>> import numpy as np
    >>> requantize(np.array([3, -3, 5, 1000]), 1, 1)            # ties +1.5 -> 2, -1.5 -> -1; 500 saturates
    array([  2,  -1,   3, 127], dtype=int8)
    >>> requantize(np.array([3, -3, 5]), 1, 1, rounding="half_even")
    array([ 2, -2,  2], dtype=int8)
    """
    acc, multipliers, shifts, zero_point, qmin, qmax, mode = _prepare(acc, multiplier, shift, zero_point, qmin, qmax, rounding)
    rows = np.ascontiguousarray(acc).reshape(-1, multipliers.shape[0])
    out = np.empty(rows.shape, dtype=smallest_code_dtype(qmin, qmax))
    if rows.size:
        _requantize_kernel(rows, np.ascontiguousarray(multipliers), np.ascontiguousarray(shifts),
                           np.int64(zero_point), np.int64(qmin), np.int64(qmax), mode, out)
    return out.reshape(acc.shape)
