"""AdaLog / log2 quantizer integer ops: encode by thresholds, decode tables, exact log-weighted products.

AdaLog (bits ``b``, fixed ``r = 37``, searched integer ``q``, scale ``s``): code ``c`` in ``0..2**b - 1``, plus the
zero code ``2**b``; ``D = 2**(b+1) - 2``, ``SH[c] = c*q // r``, ``M[c] = rhe(D * 2**(-((q*c) mod r)/r))``, value
``s * M[c] / D * 2**-SH[c]`` (code ``2**b``: 0). Every table here is computed with exact integer arithmetic
(Python ints; ``decimal`` only proposes a threshold, which exact integer comparisons then confirm), so it is the
same on every machine.

Integer contract of the ops (all int64, exact, bounds proved before computing, ``OverflowError`` naming the op):
    log_encode(x, thresholds)           out = #{k : x < T_k}   (ties x == T_k go to the lower code)
    log_attention_values(codes, v, ...) acc = sum_j W[c_ij] * (v_jd - zp),  W = log_weight_table(SH, M, max_shift)
    asymmetric_linear(x, w, wzp, bias)  acc = sum_k ((x_k - x_zp) << x_shift_k) * (w_nk - wzp_n) + bias_n
    log_linear(x, w, wzp, bias, SH, M)  acc = sum_k W[x_k] * (w_nk - wzp_n) + bias_n

Rounding: the ops themselves never round (comparisons, gathers, exact sums). Rounding happens at plan time only:
the thresholds are exact ceilings ``T_k = ceil(ratio * 2**(-(2k+1) q / (2r)))`` and the mantissas exact
round-half-even values ``M[c] = rhe(D * 2**(-u/r))`` (no ties occur for ``0 < u < r``).

Validation is backend-neutral (:func:`check_log_encode`, :func:`check_log_attention_values`,
:func:`check_asymmetric_linear`, :func:`check_log_linear`: operands as :class:`~intsim.ops._checks.Operand`), so
the numpy ops, their references and the torch twins of :mod:`intsim.quant.torch_ops` raise the same errors.
"""

from __future__ import annotations

import decimal
import math
from fractions import Fraction
from typing import NamedTuple

import numba
import numpy as np

from intsim._jit import kernel, parallel_kernel
from intsim.limits import INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN
from intsim.ops._checks import (
    ArrayOperand,
    Operand,
    abs_max,
    as_int_array,
    check_in_range,
    check_int,
    check_int_bounds_fit,
    smallest_code_dtype,
)
from intsim.ops.matmul import _narrowed, integer_matmul, shifted_linear_input

__all__ = ["ADALOG_R", "adalog_denominator", "adalog_shift_table", "adalog_mantissa_table", "adalog_thresholds",
           "log_weight_table", "max_log_shift", "check_log_tables", "log_encode", "log_encode_reference",
           "log_attention_values", "log_attention_values_reference", "asymmetric_linear",
           "asymmetric_linear_reference", "log_linear", "log_linear_reference", "check_log_encode",
           "check_log_attention_values", "check_asymmetric_linear", "check_log_linear", "check_linear_weight_shapes",
           "LinearBounds",
           "centred_weight", "count_at_most", "log_weights_of"]

ADALOG_R = 37
LOG_MAX_BITS = 8
THRESHOLD_MAX = 2**62


def _bits(bits, op):
    return check_int(bits, "bits", op, lo=1, hi=LOG_MAX_BITS)


def adalog_denominator(bits: int) -> int:
    """``D = 2**(bits+1) - 2``: the mantissa grid of an AdaLog quantizer."""
    return 2 ** (_bits(bits, "adalog_denominator") + 1) - 2


def adalog_shift_table(bits: int, q: int, r: int = ADALOG_R) -> np.ndarray:
    """``SH[c] = c*q // r`` for ``c = 0..2**bits - 1`` (int64)."""
    op = "adalog_shift_table"
    bits, q, r = _bits(bits, op), check_int(q, "q", op, lo=1, hi=2**20), check_int(r, "r", op, lo=1, hi=2**20)
    return np.array([c * q // r for c in range(2**bits)], dtype=np.int64)


def _rhe_power(d: int, u: int, r: int) -> int:
    """``rhe(d * 2**(-u/r))`` exactly: the m with ``(2m-1)^r * 2^u <= (2d)^r < (2m+1)^r * 2^u`` (no ties for 0<u<r)."""
    if u == 0:
        return d
    target = (2 * d) ** r
    m = d  # d * 2**(-u/r) lies in (d/2, d]
    while m > 0 and (2 * m - 1) ** r << u > target:
        m -= 1
    while (2 * m + 1) ** r << u <= target:
        m += 1
    return m


def adalog_mantissa_table(bits: int, q: int, r: int = ADALOG_R) -> np.ndarray:
    """``M[c] = rhe(D * 2**(-((q*c) mod r)/r))`` (int64, in ``[D/2, D]``), exact integer arithmetic."""
    op = "adalog_mantissa_table"
    bits, q, r = _bits(bits, op), check_int(q, "q", op, lo=1, hi=2**20), check_int(r, "r", op, lo=1, hi=2**20)
    d = adalog_denominator(bits)
    return np.array([_rhe_power(d, (q * c) % r, r) for c in range(2**bits)], dtype=np.int64)


def adalog_thresholds(bits: int, q: int, ratio: float, r: int = ADALOG_R) -> np.ndarray:
    """``T_k = ceil(ratio * 2**(-(2k+1) q / (2r)))``, clipped to ``[0, 2**62]``, int64, non-increasing (``T_k >= 1``).

    ``ratio = s / s_in`` (a positive finite float, taken exactly as the Fraction ``n/d``). For an integer code
    ``x >= 0``: ``x < T_k  <=>  x * s_in < s * 2**(-(k + 1/2) q / r)``. Exact: with ``y = ratio * 2**(-e/(2r))``,
    ``e = (2k+1) q``, ``y <= T  <=>  n**(2r) <= T**(2r) * d**(2r) * 2**e`` (Python ints). A 60-digit ``decimal``
    value of ``y`` decides the ceiling when it lies farther than ``1e-40 * max(1, y)`` from an integer (its error
    is far below that); otherwise (``y`` an exact integer, or within that distance of one) the integer comparison
    above decides, so no input is refused and no guess is made. Values ``y <= 1`` (ceiling 1) are decided the same
    way: only values ``>= 1`` can lie near an integer above 0."""
    op = "adalog_thresholds"
    bits, q, r = _bits(bits, op), check_int(q, "q", op, lo=1, hi=2**20), check_int(r, "r", op, lo=1, hi=2**20)
    if isinstance(ratio, (bool, np.bool_)):
        raise TypeError(f"{op}: ratio must be a positive finite number, got {ratio!r}")
    ratio = float(ratio)
    if not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"{op}: ratio must be a positive finite number, got {ratio!r}")
    context = decimal.Context(prec=60)
    exact_ratio = decimal.Decimal(ratio)
    fraction = Fraction(ratio)
    powers = {}

    def at_most(t: int, e: int) -> bool:  # y <= t, exactly
        if "n" not in powers:
            powers["n"], powers["d"] = fraction.numerator ** (2 * r), fraction.denominator ** (2 * r)
        return powers["n"] <= (t ** (2 * r) * powers["d"]) << e

    margin = decimal.Decimal("1e-40")
    below_one = context.subtract(decimal.Decimal(1), margin)
    out = []
    for k in range(2**bits):
        e = (2 * k + 1) * q
        power = context.power(decimal.Decimal(2), context.divide(decimal.Decimal(-e), decimal.Decimal(2 * r)))
        value = context.multiply(exact_ratio, power)
        if value > THRESHOLD_MAX:
            out.append(THRESHOLD_MAX)  # then y > 2**62 - 1: the ceiling is >= 2**62, clipped to it
            continue
        if value < below_one:
            out.append(1)  # 0 < y < 1: ceiling 1
            continue
        nearest = int(value.to_integral_value(rounding=decimal.ROUND_HALF_EVEN))
        if abs(value - nearest) > margin * max(1, value):
            out.append(min(int(value.to_integral_value(rounding=decimal.ROUND_CEILING)), THRESHOLD_MAX))
            continue
        # y within 1e-40 of the integer `nearest` (or equal to it): decide exactly
        if not at_most(THRESHOLD_MAX, e):
            out.append(THRESHOLD_MAX)
            continue
        ceiling = max(1, min(nearest, THRESHOLD_MAX))
        while not at_most(ceiling, e):
            ceiling += 1
        while ceiling > 1 and at_most(ceiling - 1, e):
            ceiling -= 1
        out.append(ceiling)
    return np.array(out, dtype=np.int64)


def log_weight_table(shift, mantissa, max_shift: int) -> np.ndarray:
    """``W[c] = M[c] << (max_shift - SH[c])`` for ``c < 2**b``, ``W[2**b] = 0`` (int64, length ``2**b + 1``)."""
    shift, mantissa, max_shift = check_log_tables(shift, mantissa, max_shift, "log_weight_table")
    return np.array([int(m) << (max_shift - int(h)) for h, m in zip(shift, mantissa)] + [0], dtype=np.int64)


def max_log_shift(shift) -> int:
    """The smallest valid ``max_shift`` for a shift table: ``max(SH)``."""
    return int(np.max(as_int_array(shift, "shift", "max_log_shift")))


def check_log_tables(shift, mantissa, max_shift, op):
    """Validate decode tables: ``shift``/``mantissa`` int ``(L,)``, ``L = 2**b`` (b in 1..8), ``0 <= SH <= max_shift``,
    ``M >= 0``, and ``max(M << (max_shift - SH))`` fits int64 (``OverflowError``). Returns Python-int lists."""
    shift, mantissa = as_int_array(shift, "shift", op), as_int_array(mantissa, "mantissa", op)
    length = shift.shape[0] if shift.ndim == 1 else 0
    if shift.ndim != 1 or mantissa.shape != shift.shape or length < 2 or length & (length - 1) or length > 2**LOG_MAX_BITS:
        raise ValueError(f"{op}: shift and mantissa must have the same shape (2**b,), b in 1..{LOG_MAX_BITS}, got "
                         f"{shift.shape} and {mantissa.shape}")
    max_shift = check_int(max_shift, "max_shift", op, lo=0, hi=INT64_MAX)
    check_in_range(ArrayOperand(shift), "shift", op, 0, max_shift, where=f"[0, max_shift = {max_shift}]")
    check_in_range(ArrayOperand(mantissa), "mantissa", op, 0, INT64_MAX, where="[0, 2**63 - 1]")
    sh, m = [int(v) for v in shift], [int(v) for v in mantissa]
    largest = max((mm << (max_shift - h)) if mm else 0 for h, mm in zip(sh, m))
    check_int_bounds_fit(largest, "the largest log weight mantissa << (max_shift - shift)", op)
    return sh, m, max_shift


# ------------------------------------------------------------------------------------------------ LogEncode
def _check_thresholds(thresholds, op):
    t = as_int_array(thresholds, "thresholds", op)
    if t.ndim != 1 or t.shape[0] < 2 or t.shape[0] & (t.shape[0] - 1) or t.shape[0] > 2**LOG_MAX_BITS:
        raise ValueError(f"{op}: thresholds must have shape (2**b,), b in 1..{LOG_MAX_BITS}, got {t.shape}")
    t = t.astype(np.int64)
    if np.any(t[1:] > t[:-1]):
        bad = int(np.argmax(t[1:] > t[:-1]))
        raise ValueError(f"{op}: thresholds must be non-increasing (T_{bad} = {t[bad]} < T_{bad + 1} = {t[bad + 1]})")
    return t


def check_log_encode(x: Operand, thresholds, op: str = "log_encode") -> np.ndarray:
    """Validate :func:`log_encode`: ``thresholds`` integers ``(2**b,)``, b in 1..8, non-increasing; ``x`` values
    ``>= 0`` (non-negative codes). Returns the thresholds as int64 numpy; backend-neutral (``x`` an Operand)."""
    t = _check_thresholds(thresholds, op)
    check_in_range(x, "x", op, 0, INT64_MAX, where="[0, 2**63 - 1] (non-negative codes)")
    return t


def log_encode_reference(x, thresholds) -> np.ndarray:
    """Reference: ``out = #{k : x < T_k}`` (uint16), one comparison per threshold (a tie ``x == T_k`` is not below)."""
    op = "log_encode"
    x = as_int_array(x, "x", op)
    t = check_log_encode(ArrayOperand(x), thresholds, op)
    out = np.zeros(x.shape, dtype=np.int64)
    for k in range(t.shape[0]):
        out += x.astype(np.int64) < t[k]
    return out.astype(np.uint16)


def log_encode(x, thresholds) -> np.ndarray:
    """``#{k : x < T_k}`` by binary search (``searchsorted`` on the reversed thresholds): equal to the reference.

    ``x`` non-negative integer codes of any shape, ``thresholds`` ``(L,)`` non-increasing, ``L = 2**b``; uint16
    codes in ``0..L`` of ``x``'s shape (``L``: ``x < T_{L-1}``, the zero code; 0: ``x >= T_0``)."""
    op = "log_encode"
    x = as_int_array(x, "x", op)
    t = check_log_encode(ArrayOperand(x), thresholds, op)
    # #{k: x < T_k} = L - #{k: T_k <= x}; ascending = T reversed; #{T <= x} = searchsorted(side="right")
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.size, np.uint16)
    _count_below_thresholds(flat, np.ascontiguousarray(t[::-1], dtype=np.int64), out)
    return out.reshape(x.shape)


@kernel
def count_at_most(ascending, value):
    """``#{k : ascending[k] <= value}`` by binary search (``searchsorted``, right side); ``ascending`` sorted."""
    low, high = 0, ascending.size
    while low < high:
        middle = (low + high) // 2
        if ascending[middle] <= value:
            low = middle + 1
        else:
            high = middle
    return low


@parallel_kernel
def _count_below_thresholds(x, ascending, out):
    """``out[i] = L - #{ascending <= x[i]}``, elements in parallel."""
    for index in numba.prange(x.size):
        out[index] = ascending.size - count_at_most(ascending, np.int64(x[index]))


# ------------------------------------------------------------------------------------------------ attention
def _weight_table(sh, m, max_shift) -> np.ndarray:
    return np.array([mm << (max_shift - h) for h, mm in zip(sh, m)] + [0], dtype=np.int64)


def check_log_attention_values(codes: Operand, v: Operand, shift, mantissa, v_zero_point, max_shift,
                               op: str = "log_attention_values") -> tuple[int, np.ndarray, int]:
    """Validate :func:`log_attention_values` and prove its bound; backend-neutral (``codes``, ``v`` Operands).

    Tables by :func:`check_log_tables`; ``codes (..., N, M)`` in ``0..L`` (``L = len(shift)``, the zero code),
    ``v (..., M, D)``, leading axes that broadcast, ``v_zero_point`` int64; proves ``max|v - zp|`` and
    ``M * max(W) * max|v - zp|`` fit int64. Returns ``(v_zero_point, W (L+1,) int64, max|v - zp|)``."""
    sh, m, max_shift = check_log_tables(shift, mantissa, max_shift, op)
    codes_shape, v_shape = tuple(codes.shape), tuple(v.shape)
    if len(codes_shape) < 2 or len(v_shape) < 2 or codes_shape[-1] != v_shape[-2]:
        raise ValueError(f"{op}: codes (..., N, M) and v (..., M, D) needed, got {codes_shape} and {v_shape}")
    try:
        np.broadcast_shapes(codes_shape[:-2], v_shape[:-2])
    except ValueError:
        raise ValueError(f"{op}: the leading axes of codes {codes_shape} and v {v_shape} do not broadcast") from None
    zero = len(sh)
    check_in_range(codes, "codes", op, 0, zero, where=f"[0, {zero}] (2**b = {zero} is the zero code)")
    zp = check_int(v_zero_point, "v_zero_point", op, lo=INT64_MIN, hi=INT64_MAX)
    v_abs = abs_max(v, zp)
    check_int_bounds_fit(v_abs, "max|v - v_zero_point|", op)
    table = _weight_table(sh, m, max_shift)
    bound = codes_shape[-1] * int(table.max()) * v_abs
    check_int_bounds_fit(bound, f"the accumulator M * max(W) * max|v - v_zero_point| (M = {codes_shape[-1]})", op)
    return zp, table, v_abs


def _prepare_log_values(codes, v, shift, mantissa, v_zero_point, max_shift, op):
    codes, v = as_int_array(codes, "codes", op), as_int_array(v, "v", op)
    zp, table, _ = check_log_attention_values(ArrayOperand(codes), ArrayOperand(v), shift, mantissa, v_zero_point,
                                              max_shift, op)
    return codes, v, zp, table


def log_attention_values_reference(codes, v, shift, mantissa, *, v_zero_point, max_shift) -> np.ndarray:
    """Reference: ``acc[..., i, d] = sum_j W[c_ij] * (v[..., j, d] - zp)`` key by key in int64 (codes per head)."""
    codes, v, zp, table = _prepare_log_values(codes, v, shift, mantissa, v_zero_point, max_shift,
                                              "log_attention_values")
    lead = np.broadcast_shapes(codes.shape[:-2], v.shape[:-2])
    acc = np.zeros(lead + (codes.shape[-2], v.shape[-1]), dtype=np.int64)
    centred = v.astype(np.int64) - zp
    for j in range(codes.shape[-1]):
        acc += table[codes[..., :, j, None]] * centred[..., None, j, :]
    return acc


def log_attention_values(codes, v, shift, mantissa, *, v_zero_point, max_shift) -> np.ndarray:
    """Exact ``sum_j W[c_ij] * (v_j - zp)``: the weight table gathered, then :func:`integer_matmul` (same sum).

    ``codes (..., N, M)`` AdaLog codes ``0..2**b`` (``2**b``: probability 0), ``v (..., M, D)``; int64
    ``(..., N, D)`` at scale ``s_p / D * 2**-max_shift * s_v``; bound ``M * max(W) * max|v - zp|`` proved first."""
    codes, v, zp, table = _prepare_log_values(codes, v, shift, mantissa, v_zero_point, max_shift,
                                              "log_attention_values")
    return integer_matmul(table[codes], v, b_zero_point=zp)


# ------------------------------------------------------------------------------------------------ linears
class LinearBounds(NamedTuple):
    """What :func:`check_asymmetric_linear` / :func:`check_log_linear` return (validated, as int64 numpy / ints)."""

    x_zero_point: int  # 0 for the log linear
    weight_zero_point: np.ndarray  # (N,) int64
    bias: np.ndarray  # (N,) int64
    x_abs: int  # max|x - x_zp|, or max(W) for the log linear
    w_abs: int  # max|w - wzp|
    table: np.ndarray | None  # the log weights W (L+1,), None for the asymmetric linear


def check_linear_weight_shapes(x_shape: tuple, k_n: tuple, op: str) -> None:
    """``x (..., K)`` and the TRANSPOSED weight ``(K, N)`` (``k_n``), else ``ValueError`` naming the op."""
    if len(x_shape) < 1 or len(k_n) != 2 or x_shape[-1] != k_n[0]:
        raise ValueError(f"{op}: x (..., K) and weight (N, K) needed, got {x_shape} and {k_n[::-1]}")


def _check_linear(x: Operand, weight_t: Operand, weight_zero_point, bias, op, bias_range, bias_where):
    x_shape, k_n = tuple(x.shape), tuple(weight_t.shape)
    check_linear_weight_shapes(x_shape, k_n, op)
    n = k_n[1]
    wzp = as_int_array(weight_zero_point, "weight_zero_point", op)
    bias = as_int_array(bias, "bias", op)
    for name, value in (("weight_zero_point", wzp), ("bias", bias)):
        if value.shape != (n,):
            raise ValueError(f"{op}: {name} must have shape (N,) = ({n},), got {value.shape}")
    check_in_range(ArrayOperand(wzp), "weight_zero_point", op, INT32_MIN, INT32_MAX, where="int32")
    check_in_range(ArrayOperand(bias), "bias", op, *bias_range, where=bias_where)
    wzp, bias = wzp.astype(np.int64), bias.astype(np.int64)
    if n and k_n[0]:  # max_n max_k |w_nk - wzp_n| from the per-row (min, max) of the weight
        lows, highs = weight_t.column_bounds()
        w_abs = max(max(abs(lo - z), abs(hi - z)) for lo, hi, z in zip(lows, highs, wzp.tolist()))
    else:
        w_abs = 0
    check_int_bounds_fit(w_abs, "max|weight - weight_zero_point|", op)
    return wzp, bias, w_abs


def _bias_abs(bias: np.ndarray) -> int:
    return max(abs(int(bias.min())), abs(int(bias.max()))) if bias.size else 0


def check_asymmetric_linear(x: Operand, weight_t: Operand, weight_zero_point, bias, x_zero_point,
                            op: str = "asymmetric_linear") -> LinearBounds:
    """Validate :func:`asymmetric_linear` and prove its bound; backend-neutral.

    ``x (..., K)``, ``weight_t`` the Operand of the weight TRANSPOSED, ``(K, N)`` (its per-column bounds are the
    weight's per-row bounds), ``weight_zero_point`` int32 ``(N,)``, ``bias`` int32 ``(N,)``, ``x_zero_point`` int64;
    proves ``max|x - x_zp|``, ``max|w - wzp|`` and ``K * max|x - x_zp| * max|w - wzp| + max|bias|`` fit int64."""
    wzp, bias, w_abs = _check_linear(x, weight_t, weight_zero_point, bias, op, (INT32_MIN, INT32_MAX), "int32")
    zp = check_int(x_zero_point, "x_zero_point", op, lo=INT64_MIN, hi=INT64_MAX)
    x_abs = abs_max(x, zp)
    check_int_bounds_fit(x_abs, "max|x - x_zero_point|", op)
    check_int_bounds_fit(x.shape[-1] * x_abs * w_abs + _bias_abs(bias),
                         "the accumulator K * max|x - x_zp| * max|w - wzp| + max|bias|", op)
    return LinearBounds(zp, wzp, bias, x_abs, w_abs, None)


def check_log_linear(x: Operand, weight_t: Operand, weight_zero_point, bias, shift, mantissa, max_shift,
                     op: str = "log_linear") -> LinearBounds:
    """Validate :func:`log_linear` and prove its bound; backend-neutral.

    Tables by :func:`check_log_tables`; ``x (..., K)`` log codes in ``0..L`` (``L = 2**b`` the zero code),
    ``weight_t`` the weight transposed ``(K, N)``, ``weight_zero_point`` int32 ``(N,)``, ``bias`` int64 ``(N,)``;
    proves ``K * max(W) * max|w - wzp| + max|bias|`` fits int64. Returns ``(0, wzp, bias, max(W), w_abs, W)``."""
    sh, m, max_shift = check_log_tables(shift, mantissa, max_shift, op)
    wzp, bias, w_abs = _check_linear(x, weight_t, weight_zero_point, bias, op, (INT64_MIN, INT64_MAX), "int64")
    zero = len(sh)
    check_in_range(x, "x", op, 0, zero, where=f"[0, {zero}] (2**b = {zero} is the zero code)")
    table = _weight_table(sh, m, max_shift)
    table_max = int(table.max())
    check_int_bounds_fit(x.shape[-1] * table_max * w_abs + _bias_abs(bias),
                         "the accumulator K * max(W) * max|w - wzp| + max|bias|", op)
    return LinearBounds(0, wzp, bias, table_max, w_abs, table)


def _numpy_linear(x, weight, check, *args):
    op = check.__name__.removeprefix("check_")
    x, weight = as_int_array(x, "x", op), as_int_array(weight, "weight", op)
    weight_t = ArrayOperand(weight.T) if weight.ndim == 2 else ArrayOperand(weight)
    c = check(ArrayOperand(x), weight_t, *args, op)
    centred_w = weight.astype(np.int64) - c.weight_zero_point[:, None]  # |w - wzp| <= w_abs was proved to fit
    return x, centred_w, c


def _shifted_input(x, weight, x_zero_point, x_shift, op: str):
    """``(x, x_zero_point)``, or with ``x_shift`` the power-of-two-factor input ``((x - x_zp) << x_shift[k], 0)``
    (:func:`intsim.ops.matmul.shifted_linear_input`: validated, int64, the shifted input proved to fit int64); the
    shapes of ``x`` and ``weight`` are checked first, as without ``x_shift``."""
    if x_shift is None:
        return x, x_zero_point
    x, weight = as_int_array(x, "x", op), as_int_array(weight, "weight", op)
    check_linear_weight_shapes(tuple(x.shape), tuple(weight.shape[::-1]), op)
    return shifted_linear_input(x, x_zero_point, x_shift, op)


def asymmetric_linear_reference(x, weight, weight_zero_point, bias, *, x_zero_point=0, x_shift=None) -> np.ndarray:
    """Reference: ``acc[..., n] = sum_k ((x_k - x_zp) << x_shift_k) * (w_nk - wzp_n) + bias_n`` in int64 (bias
    int32; no ``x_shift``: no shift)."""
    x, x_zero_point = _shifted_input(x, weight, x_zero_point, x_shift, "asymmetric_linear")
    x, cw, c = _numpy_linear(x, weight, check_asymmetric_linear, weight_zero_point, bias, x_zero_point)
    centred = x.astype(np.int64) - c.x_zero_point
    acc = np.zeros(x.shape[:-1] + (cw.shape[0],), dtype=np.int64) + c.bias
    for k in range(cw.shape[1]):
        acc += centred[..., k, None] * cw[:, k]
    return acc


def _centred_columns(cw: np.ndarray) -> np.ndarray:
    """``(w - wzp).T`` in the smallest integer dtype that holds it (int8 for weights up to 8 bits): the same values,
    so the same exact sum, but :func:`integer_matmul` then takes its float32 BLAS path instead of the wide-operand
    one (8x faster on ViT-Ti's fc1)."""
    return np.ascontiguousarray(_narrowed(cw).T)


def centred_weight(weight, weight_zero_point) -> np.ndarray:
    """``w - wzp`` per output row ``(N, K)``, in the smallest integer dtype that holds it (int8 for weights up to 8
    bits): the plain-linear weight whose sum equals the asymmetric one exactly (the fused kernels' operand)."""
    centred = np.asarray(weight).astype(np.int64) - np.asarray(weight_zero_point, dtype=np.int64)[:, None]
    return np.ascontiguousarray(_narrowed(centred))


def log_weights_of(codes, table: np.ndarray) -> np.ndarray | None:
    """``table[codes]`` (the log weights ``W[c]`` of :func:`log_weight_table`) in the smallest integer dtype that
    holds the table (unsigned, as every decoded weight is ``>= 0``), or ``None`` when a code lies outside ``0..len(table) - 1`` (the op's own check then names it).
    One parallel pass that gathers and checks together."""
    codes = np.ascontiguousarray(codes)
    low, high = int(table.min()), int(table.max())
    narrow = table.astype(np.min_scalar_type(high) if low >= 0 and high < 2**32  # unsigned: every W >= 0
                          else smallest_code_dtype(low, high))
    out = np.empty(codes.shape, dtype=narrow.dtype)
    outside = _gather_codes(codes.reshape(-1), narrow, out.reshape(-1))
    return None if outside else out


@parallel_kernel
def _gather_codes(codes, table, out):
    """``out[i] = table[codes[i]]`` for codes inside the table; returns how many were outside (then 0 stored)."""
    outside = 0
    for index in numba.prange(codes.size):
        code = np.int64(codes[index])
        if 0 <= code < table.size:
            out[index] = table[code]
        else:
            out[index] = 0
            outside += 1
    return outside


def asymmetric_linear(x, weight, weight_zero_point, bias, *, x_zero_point=0, x_shift=None) -> np.ndarray:
    """Exact asymmetric linear ``((x - x_zp) << x_shift) @ (w - wzp).T + bias``: ``x (..., K)`` codes with a
    per-tensor zero point, ``weight (N, K)`` unsigned codes with a per-row zero point ``(N,)`` (int32), ``bias`` int32
    ``(N,)``, ``x_shift`` ``None`` or integers ``(K,)`` in ``[0, 15]`` (PTF codes: input channel ``k`` at scale
    ``s_x * 2**x_shift[k]``, as for :func:`intsim.ops.matmul.integer_linear`); int64 ``(..., N)``. The shifted input
    and the centred weight (int64), then :func:`integer_matmul` (same proof, on the shifted input)."""
    x, x_zero_point = _shifted_input(x, weight, x_zero_point, x_shift, "asymmetric_linear")
    x, cw, c = _numpy_linear(x, weight, check_asymmetric_linear, weight_zero_point, bias, x_zero_point)
    rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
    out = integer_matmul(rows, _centred_columns(cw), a_zero_point=c.x_zero_point) + c.bias
    return out.reshape(x.shape[:-1] + (cw.shape[0],))


def log_linear_reference(x, weight, weight_zero_point, bias, shift, mantissa, *, max_shift) -> np.ndarray:
    """Reference: ``acc[..., n] = sum_k W[x_k] * (w_nk - wzp_n) + bias_n`` (int64, bias int64), term by term."""
    x, cw, c = _numpy_linear(x, weight, check_log_linear, weight_zero_point, bias, shift, mantissa, max_shift)
    w = c.table[x]
    acc = np.zeros(x.shape[:-1] + (cw.shape[0],), dtype=np.int64) + c.bias
    for k in range(cw.shape[1]):
        acc += w[..., k, None] * cw[:, k]
    return acc


def log_linear(x, weight, weight_zero_point, bias, shift, mantissa, *, max_shift) -> np.ndarray:
    """Exact log-code linear: ``W[x]`` gathered, :func:`integer_matmul` with the centred weight, then the int64 bias
    (the bound proved includes the bias, so the final add cannot wrap). ``x (..., K)`` log codes ``0..2**b``,
    ``weight (N, K)``, ``weight_zero_point (N,)`` int32, ``bias (N,)`` int64; int64 ``(..., N)``."""
    x, cw, c = _numpy_linear(x, weight, check_log_linear, weight_zero_point, bias, shift, mantissa, max_shift)
    rows = c.table[x.reshape(math.prod(x.shape[:-1]), x.shape[-1])]
    out = integer_matmul(rows, _centred_columns(cw)) + c.bias
    return out.reshape(x.shape[:-1] + (cw.shape[0],))
