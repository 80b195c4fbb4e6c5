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

Validation and bounds are backend-neutral (:func:`check_requantize_parameters`, :func:`prove_requantize_bounds`):
the kernel, the reference, the torch twin and the fused kernels call the same functions.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import prange

from intsim._jit import parallel_kernel
from intsim.limits import INT32_MIN, INT64_MAX, MAX_MULTIPLIER, MAX_SHIFT, MULTIPLIER_BITS
from intsim.ops._checks import (
    ArrayOperand,
    Operand,
    abs_max,
    as_int_array,
    check_int_bounds_fit,
    check_output_range,
    column_abs_max,
    per_channel_vector,
    size_of,
    smallest_code_dtype,
)
from intsim.ops.rounding import round_shift_scalar, rounding_code, rounding_shift_right_reference

__all__ = [
    "MULTIPLIER_BITS",
    "MAX_SHIFT",
    "RequantParams",
    "check_requantize_parameters",
    "prepare_parameters",
    "prove_requantize_bounds",
    "quantize_multiplier",
    "requantize",
    "requantize_reference",
]


def quantize_multiplier(real: float, bits: int = MULTIPLIER_BITS) -> tuple[int, int]:
    """Return ``(M, k)`` with ``M / 2**k`` the nearest 31-bit dyadic value to ``real`` (plan time, float in).

    ``bits`` < 31 gives a shorter mantissa (``2**(bits-1) <= |M| < 2**bits``, relative error ``<= 2**-bits``):
    what a wide accumulator needs so that ``acc * M`` still fits int64 (the builder passes
    ``62 - accumulator bits``; every accumulator of at most 31 bits keeps the full 31-bit multiplier).

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
    if not isinstance(bits, int) or not 2 <= bits <= MULTIPLIER_BITS:
        raise ValueError(f"quantize_multiplier: bits must be an int in [2, {MULTIPLIER_BITS}], got {bits!r}")
    mantissa, exponent = math.frexp(abs(real))
    multiplier = round(mantissa * 2**bits)
    shift = bits - exponent
    if multiplier == 2**bits:
        multiplier //= 2
        shift -= 1
    if not 0 <= shift <= MAX_SHIFT:
        raise ValueError(
            f"quantize_multiplier: real = {real!r} needs shift {shift}, outside [0, {MAX_SHIFT}]; "
            f"representable magnitudes are [2**-32, 2**31)"
        )
    return (multiplier if real > 0 else -multiplier), shift


class RequantParams(NamedTuple):
    """Validated requantize parameters (int64 per-channel ``multipliers``/``shifts``, one per channel)."""

    multipliers: np.ndarray
    shifts: np.ndarray
    zero_point: int
    qmin: int
    qmax: int
    mode: int  # rounding code (intsim.ops.rounding)


def check_requantize_parameters(acc_shape, multiplier, shift, zero_point=0, qmin=-128, qmax=127, rounding="half_up",
                                op="requantize") -> RequantParams:
    """Validate everything of a requantize call but the accumulator values, for an ``acc`` of ``acc_shape``.

    ``[qmin, qmax]`` inside int32 with ``zero_point`` in it; ``multiplier`` (``|M| < 2**31``) and ``shift``
    (``[0, 62]``) each a scalar or one per channel of the last axis (a 0-d ``acc`` has one channel), returned as
    int64 ``(C,)`` arrays. Raises the errors of :func:`requantize`. Backend-neutral: the torch twin and the fused
    kernels (which never materialise the accumulator) call it too.
    """
    qmin, qmax, zero_point = check_output_range(qmin, qmax, zero_point, op)
    mode = rounding_code(rounding, op)
    channels = acc_shape[-1] if len(acc_shape) else 1
    of = f" (the last axis of acc, shape {tuple(acc_shape)})"
    multipliers = per_channel_vector(multiplier, "multiplier", op, channels, -MAX_MULTIPLIER, MAX_MULTIPLIER, of=of)
    shifts = per_channel_vector(shift, "shift", op, channels, 0, MAX_SHIFT, of=of)
    return RequantParams(multipliers, shifts, zero_point, qmin, qmax, mode)


prepare_parameters = check_requantize_parameters  # the earlier name, kept for callers


def prove_requantize_bounds(acc: Operand, params: RequantParams, op: str = "requantize") -> None:
    """Prove, per channel ``c``, that ``|acc*M_c| + 2**(k_c-1)`` and ``(|acc*M_c| >> k_c) + 1 + |zero_point|`` fit
    int64, from the exact ``max|acc|`` of each channel; ``OverflowError`` naming the channel otherwise.

    No pass over ``acc`` when its dtype bounds ``|acc|`` by ``2**31`` (``|M| < 2**31``: the product is below
    ``2**62``, plus ``2**61`` at most); else one global pass (``max|acc|`` with the largest ``|M|`` and the extreme
    shifts: a conservative bound); only when that fails, the exact per-channel bounds, which decide.
    """
    low, high = acc.dtype_range
    if size_of(acc.shape) == 0 or (low >= INT32_MIN and high <= 2**31):
        return
    magnitudes, shifts = [abs(m) for m in params.multipliers.tolist()], params.shifts.tolist()
    product = abs_max(acc) * max(magnitudes)
    if product + (1 << max(shifts) >> 1) <= INT64_MAX and (product >> min(shifts)) + 1 + abs(params.zero_point) <= INT64_MAX:
        return
    for channel, (bound, m, k) in enumerate(zip(column_abs_max(acc), magnitudes, shifts)):
        check_int_bounds_fit(bound * m + (1 << k >> 1), f"acc * multiplier (channel {channel})", op)
        check_int_bounds_fit(((bound * m) >> k) + 1 + abs(params.zero_point),
                             f"the shifted result plus zero_point (channel {channel})", op)


def _prepare(acc, multiplier, shift, zero_point, qmin, qmax, rounding, op="requantize"):
    """Validate requantize's arguments once; return the integer accumulator and its validated parameters."""
    acc = as_int_array(acc, "acc", op)
    params = check_requantize_parameters(acc.shape, multiplier, shift, zero_point, qmin, qmax, rounding, op)
    prove_requantize_bounds(ArrayOperand(acc), params, op)
    return acc, params


def requantize_reference(acc, multiplier, shift, *, zero_point=0, qmin=-128, qmax=127, rounding="half_up"):
    """Reference (the specification): ``clip(round(acc * multiplier / 2**shift) + zero_point, qmin, qmax)``."""
    acc, p = _prepare(acc, multiplier, shift, zero_point, qmin, qmax, rounding)
    product = acc.astype(np.int64) * p.multipliers  # broadcasts along the last axis
    rounded = rounding_shift_right_reference(product, p.shifts, rounding)
    return np.clip(rounded + p.zero_point, p.qmin, p.qmax).astype(smallest_code_dtype(p.qmin, p.qmax))


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
    acc, p = _prepare(acc, multiplier, shift, zero_point, qmin, qmax, rounding)
    rows = np.ascontiguousarray(acc).reshape(-1, p.multipliers.shape[0])
    out = np.empty(rows.shape, dtype=smallest_code_dtype(p.qmin, p.qmax))
    if rows.size:
        _requantize_kernel(rows, p.multipliers, p.shifts, np.int64(p.zero_point), np.int64(p.qmin), np.int64(p.qmax),
                           p.mode, out)
    return out.reshape(acc.shape)
