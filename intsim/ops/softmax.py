"""Integer softmax: FQ-ViT's Log-Int-Softmax (4-bit log2 codes), I-BERT's integer exp, a uniform 8-bit softmax.

Softmax runs over the LAST axis of the attention logits (one row = one query's scores over all keys).
The logits arrive as integer codes ``q`` (uint8 in FQ-ViT; any ``bits``-wide signed/unsigned codes are
accepted and range-checked) with a per-tensor zero point and a real scale ``s`` (float metadata).

Plan time (floats allowed): :func:`i_exp_constants` turns ``s`` into the integers of I-BERT's i-exp,
``x0 = floor(-0.6931 / s)``, ``b_int = floor((b/a) / s)``, ``c_int = floor((c/a) / s**2)`` and ``n = 30``,
with I-BERT's coefficients ``a, b, c = 0.35815147, 0.96963238, 1.0`` (FQ-ViT ``QIntSoftmax.int_exp``).

Run time (integers only), per row ``x_j = q_j - zp`` over the positions taking part (``mask``)::

    x_j  -= max_j x_j                                   # x_j <= 0 (the zero point cancels here)
    e_j   = int_exp(x_j)                                # int64, 0 <= e_j <= c_int << n  (scale a*s**2 / 2**n)
    S     = sum_j e_j                                   # int64, S <= L * (c_int << n)
    LIS:      R_j = (S + (e_j >> 1)) // e_j ;  A_j = msb(R_j) + bit(R_j, msb(R_j) - 1)
              code_j = A_j if e_j > 0 and A_j <= 15 else ZERO_CODE (16)      # probability 2**-A_j, or 0
    uniform:  p_j = min((e_j * F + (S >> 1)) // S, 2**out_bits - 1)         # scale 1 / F
              F = full_scale (default 2**out_bits - 1): the code of probability 1, >= 2**out_bits - 1;
                  one int, or one per head (F[h] for the rows of q[..., h, :, :])

``int_exp`` (I-BERT Algorithm 2, n = 30, as FQ-ViT)::

    x = max(x, n * x0) ; q = x // x0 (in [0, n]) ; r = x - x0 * q (in (x0, 0])
    z = r * (r + b_int) + c_int ; e = max(z << (n - q), 0)

Integer contract
    ``q``           integer codes in the declared ``[qmin, qmax]`` of ``bits`` (1..32) / ``signed``, any
                    shape with at least one axis; ``zero_point`` in the same range.
    ``mask``        optional bool array broadcastable to ``q.shape``: True = the key takes part, False =
                    masked out (Swin's shifted windows): its probability is exactly 0 (``e = 0``). A fully
                    masked row gives code 16 everywhere (LIS) or 0 everywhere (uniform).
    ``e``, ``S``    int64; every bound is proved from the constants and the row length before computing
                    (``L * (c_int << n)`` and the rounding addends below) and ``OverflowError`` names the scale
                    (too small) and the row length otherwise. ``c_int << 30`` alone needs ``s >= ~1.8e-5``.
    LIS output      uint8 codes in ``0..16``: ``0..15`` mean probability ``2**-code`` (a 4-bit exponent, FQ-ViT's
                    uint4), ``16`` (:data:`ZERO_CODE`) means probability 0 (``A >= 16``, ``e == 0`` or masked).
                    RTL: a 5-bit field, or the 4-bit exponent plus a valid bit (valid = ``code != 16``).
    Rounding        ``R = round(S / e)`` ties half up (``(S + (e >> 1)) // e``; a tie needs an even ``e``);
                    FQ-ViT rounds half to even in float32. ``log_round`` rounds ``log2 R`` with the threshold
                    ``1.5 * 2**msb`` (FQ-ViT ``QIntSoftmax.log_round``), not ``sqrt(2) * 2**msb``.
                    Uniform: ``p = round(e * F / S)`` ties half up (ties need an even ``S``), then saturated to
                    ``2**out_bits - 1``; ``F > 2**out_bits - 1`` spends the codes on probabilities up to
                    ``(2**out_bits - 1) / F`` (FQ-ViT's minmax observer on the softmax output).
    ``attn @ V``    :func:`lis_attention_values` is exact: ``sum_j (v_j - zp_v) << (15 - code_j)`` over codes
                    ``< 16``, int64, scale ``s_v * 2**-15`` (the code's float product, with no truncation).

Kernels (numba, one row per thread, serial inside a row) look ``int_exp(-d)`` up in a table for the gaps
``d = 0..min(qmax - qmin, n*|x0|)`` (256 entries for uint8 logits: the ROM an RTL design would hold), built per
call by the :func:`int_exp` kernel; above ``2**16 + 1`` entries they evaluate the formula per element.

Validation and bounds (backend-neutral, shared with the torch twins): :func:`check_softmax_parameters`,
:func:`check_mask`, :func:`check_exp_constants`, :func:`check_int_exp`, :func:`uniform_levels`,
:func:`prove_log_int_softmax_bounds`, :func:`prove_uniform_int_softmax_bounds` and
:func:`check_lis_attention_values`; operands are read through :class:`~intsim.ops._checks.Operand`.
Kernel internals (public so that a fused or faster kernel can use or replace them by name):
:func:`log_int_softmax_row` and :func:`uniform_int_softmax_row` (one row into ``out[row]``), :func:`row_scratch`
(their int64 scratch) and :func:`exp_table` (the ``int_exp(-d)`` table they read).

Departures from FQ-ViT: integers instead of float32 (its ``S`` is a float32 sum that drops low bits and its
``S / e`` a float32 quotient); masked keys get ``e = 0`` instead of a ``-100`` added to dequantized logits;
a probability-zero key is the explicit code 16 instead of a separate float mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numba import prange
from numba.cpython.unsafe.numbers import leading_zeros

from intsim._jit import kernel, parallel_kernel
from intsim.limits import (
    I_EXP_MAX_B,
    I_EXP_MAX_C,
    I_EXP_MAX_N,
    I_EXP_MAX_X0,
    INT64_MAX,
    INT64_MIN,
    LIS_VALUE_SHIFT,
    MAX_FULL_SCALE,
    SOFTMAX_MAX_INPUT_BITS,
    SOFTMAX_MAX_OUT_BITS,
)
from intsim.limits import LIS_ZERO_CODE as ZERO_CODE
from intsim.ops._checks import (
    ArrayOperand,
    Operand,
    abs_max,
    as_int_array,
    check_code_range,
    check_in_range,
    check_int,
    declared_code_range,
    int_range,
    smallest_code_dtype,
)
from intsim.ops.matmul import integer_matmul

__all__ = [
    "I_EXP_A",
    "I_EXP_B",
    "I_EXP_C",
    "I_EXP_LN2",
    "I_EXP_N",
    "LIS_VALUE_SHIFT",
    "MAX_FULL_SCALE",
    "ZERO_CODE",
    "IExpConstants",
    "check_exp_constants",
    "check_int_exp",
    "check_lis_attention_values",
    "check_mask",
    "check_softmax_parameters",
    "exp_table",
    "fit_i_exp_constants",
    "largest_full_scale",
    "log_int_softmax_row",
    "prove_log_int_softmax_bounds",
    "prove_uniform_int_softmax_bounds",
    "row_scratch",
    "uniform_int_softmax_row",
    "uniform_levels",
    "i_exp_constants",
    "int_exp",
    "int_exp_reference",
    "log_round_reference",
    "log_round_scalar",
    "log_int_softmax",
    "log_int_softmax_reference",
    "lis_attention_values",
    "lis_attention_values_reference",
    "uniform_int_softmax",
    "uniform_int_softmax_reference",
]

# I-BERT's second-order fit of exp on [-ln 2, 0]: exp(t) ~ a*t**2 + b*t + c (FQ-ViT ``int_polynomial``, verbatim).
I_EXP_A = 0.35815147
I_EXP_B = 0.96963238
I_EXP_C = 1.0
I_EXP_LN2 = 0.6931  # FQ-ViT / I-BERT write x0 = -0.6931 (ln 2 truncated to 4 decimals)
I_EXP_N = 30  # FQ-ViT's n ("sufficiently large integer"): e carries up to 30 + 33 bits
# FQ-ViT divides the coefficients in Python floats (``coef[1] /= coef[0]``): float64, kept as such here.
_B_OVER_A = I_EXP_B / I_EXP_A
_C_OVER_A = I_EXP_C / I_EXP_A

# ZERO_CODE = 16 (intsim.limits.LIS_ZERO_CODE): the LIS code meaning "probability 0", a 4-bit exponent plus a zero
# flag; LIS_VALUE_SHIFT = 15: attn @ V weights are 2**(15 - code), the accumulator scale is s_v * 2**-15
_LIS_ZERO_THRESHOLD = 3 << 14  # log_round(R) >= 16  <=>  R >= 1.5 * 2**15 = 49152

_MAX_BITS = SOFTMAX_MAX_INPUT_BITS  # the limits under their earlier private names
_MAX_X0, _MAX_B, _MAX_C, _MAX_N = I_EXP_MAX_X0, I_EXP_MAX_B, I_EXP_MAX_C, I_EXP_MAX_N


@dataclass(frozen=True)
class IExpConstants:
    """The integer constants of I-BERT's i-exp for one logit scale (build them with :func:`i_exp_constants`).

    ``x0`` (< 0) is ``-ln 2`` in logit codes, ``b_int`` and ``c_int`` the polynomial's integer coefficients,
    ``n`` the number of halvings before ``exp`` is flushed to its floor value. ``e = int_exp(x)`` has the real
    scale ``a * s**2 / 2**n`` (``a = I_EXP_A``); softmax divides it out, so only the integers matter at run time.

    Construction validates the types and ranges (``x0`` in ``[-2**30, -1]``, ``|b_int| <= 2**30``,
    ``|c_int| <= 2**61``, ``n`` in ``[0, 62]``, so ``r * (r + b_int) + c_int`` always fits int64) and proves
    that the largest ``e`` (:attr:`e_max`) fits int64, else ``OverflowError``.
    """

    x0: int
    b_int: int
    c_int: int
    n: int = I_EXP_N

    def __post_init__(self):
        op = "IExpConstants"
        object.__setattr__(self, "x0", check_int(self.x0, "x0", op, lo=-I_EXP_MAX_X0, hi=-1))
        object.__setattr__(self, "b_int", check_int(self.b_int, "b_int", op, lo=-I_EXP_MAX_B, hi=I_EXP_MAX_B))
        object.__setattr__(self, "c_int", check_int(self.c_int, "c_int", op, lo=-I_EXP_MAX_C, hi=I_EXP_MAX_C))
        object.__setattr__(self, "n", check_int(self.n, "n", op, lo=0, hi=I_EXP_MAX_N))
        if self.e_max > INT64_MAX:
            raise OverflowError(
                f"{op}: the largest exp value max(z, 0) << n = {self.e_max} overflows int64 "
                f"(x0={self.x0}, b_int={self.b_int}, c_int={self.c_int}, n={self.n})"
            )

    @property
    def z_max(self) -> int:
        """The exact maximum of ``z = r * (r + b_int) + c_int`` over ``r`` in ``(x0, 0]`` (a convex parabola: an end)."""
        r = self.x0 + 1
        return max(self.c_int, r * (r + self.b_int) + self.c_int)

    @property
    def e_max(self) -> int:
        """The exact maximum of ``int_exp`` over all ``x <= 0``: ``max(z_max, 0) << n`` (reached at ``q = 0``)."""
        return max(self.z_max, 0) << self.n


def i_exp_constants(scale: float, *, n: int = I_EXP_N) -> IExpConstants:
    """Plan time: the i-exp constants for logits of real scale ``scale`` (float in, Python ints out).

    ``x0 = floor(-0.6931 / s)``, ``b_int = floor((b/a) / s)``, ``c_int = floor((c/a) / s**2)`` with ``a, b, c``
    = :data:`I_EXP_A`, :data:`I_EXP_B`, :data:`I_EXP_C`. The inputs are float64 numbers: ``s``, ``-0.6931`` and the
    ratios ``b/a``, ``c/a`` rounded to float64 exactly as FQ-ViT's Python code divides them. The quotients, ``s**2``
    and the floors are then evaluated exactly (rational arithmetic on those float64 values), so no second rounding
    can move a quotient across an integer. (FQ-ViT divides in float32 on the scale tensor; it can differ by one
    where a quotient lies within float32 rounding of an integer.)

    Raises ``TypeError`` for a non-number, ``ValueError`` for a non-finite or non-positive scale or one so
    large that ``c_int = 0`` (``s > 1.67``: every exp would be 0), and
    ``OverflowError`` when the scale is so small that ``c_int << n`` does not fit int64 (about ``s < 1.8e-5``
    for ``n = 30``).

    >>> i_exp_constants(0.1)
    IExpConstants(x0=-7, b_int=27, c_int=279, n=30)
    """
    op = "i_exp_constants"
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: scale must be a real number, got {type(scale).__name__} {scale!r}")
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0.0:
        raise ValueError(f"{op}: scale must be finite and > 0, got {scale!r}")
    n = check_int(n, "n", op, lo=0, hi=I_EXP_MAX_N)
    s = Fraction(scale)
    x0 = math.floor(Fraction(-I_EXP_LN2) / s)
    b_int = math.floor(Fraction(_B_OVER_A) / s)
    c_int = math.floor(Fraction(_C_OVER_A) / (s * s))
    limit = INT64_MAX >> n  # c_int << n fits int64  <=>  c_int <= INT64_MAX >> n
    if c_int > min(limit, I_EXP_MAX_C) or -x0 > I_EXP_MAX_X0 or b_int > I_EXP_MAX_B:
        smallest = math.sqrt(_C_OVER_A / min(limit, I_EXP_MAX_C))
        raise OverflowError(
            f"{op}: scale = {scale!r} is too small: c_int = floor({_C_OVER_A!r} / scale**2) = {c_int} and "
            f"e = c_int << {n} = {c_int << n} overflows int64; the logit scale must be at least about {smallest:.3g}"
        )
    if c_int < 1:
        raise ValueError(
            f"{op}: scale = {scale!r} is too large: c_int = floor({_C_OVER_A!r} / scale**2) = 0 makes every exp "
            f"value 0; the logit scale must be below about {math.sqrt(_C_OVER_A):.4g}"
        )
    return IExpConstants(x0=x0, b_int=b_int, c_int=c_int, n=n)


I_EXP_MIN_N = 16  # fit_i_exp_constants keeps exps down to 2**-16 of the row maximum: below every LIS / 8-bit code


def fit_i_exp_constants(scale: float, *, row_length: int, levels: int | None = None) -> IExpConstants:
    """Plan time: :func:`i_exp_constants` with the largest ``n <= I_EXP_N`` whose softmax sums fit int64.

    A fine logit scale (e.g. the ``q k^T`` accumulator's ``s_q s_k / sqrt(d)``, about ``1e-4``) gives a large
    ``c_int`` (about ``1/s**2``), and ``e_max = c_int << n`` times the row length can overflow int64 at FQ-ViT's
    ``n = 30``. ``n`` only sets how far below the row maximum an exp is still non-zero (``2**-n``); the polynomial
    keeps its precision. ``levels=None`` proves :func:`log_int_softmax`'s bound, an int ``levels`` (the uniform
    softmax's ``full_scale`` F, by default ``2**bits - 1``) :func:`uniform_int_softmax`'s, for rows of ``row_length``. Raises ``OverflowError`` when even ``n =
    I_EXP_MIN_N`` (16) does not fit.
    """
    op = "fit_i_exp_constants"
    row_length = check_int(row_length, "row_length", op, lo=1, hi=2**31)
    for n in range(I_EXP_N, I_EXP_MIN_N - 1, -1):
        try:
            constants = i_exp_constants(scale, n=n)
            if levels is None:
                prove_log_int_softmax_bounds(constants, row_length, op)
            else:
                prove_uniform_int_softmax_bounds(constants, row_length, check_int(levels, "levels", op, lo=1, hi=2**32), op)
        except OverflowError:
            continue
        return constants
    raise OverflowError(f"{op}: no n in [{I_EXP_MIN_N}, {I_EXP_N}] keeps the softmax sums of rows of {row_length} "
                        f"in int64 at logit scale {scale!r}")


def check_exp_constants(constants, op: str) -> IExpConstants:
    if not isinstance(constants, IExpConstants):
        raise TypeError(
            f"{op}: constants must be an IExpConstants (build it with i_exp_constants(scale)), "
            f"got {type(constants).__name__}"
        )
    return constants


def _overflow(op: str, what: str, bound: int, constants: IExpConstants, row_length: int) -> OverflowError:
    # c_int ~ (c/a) / s**2, so the scale these constants came from is about sqrt((c/a) / c_int)
    scale = math.sqrt(_C_OVER_A / constants.c_int) if constants.c_int > 0 else float("nan")
    return OverflowError(
        f"{op}: {what} can reach {bound} (about 2**{bound.bit_length() - 1}), which overflows int64: the logit "
        f"scale (about {scale:.3g}, c_int = {constants.c_int}, n = {constants.n}) is too small for rows of "
        f"length {row_length}; use a larger scale or a smaller n"
    )


# --------------------------------------------------------------------------------------------- int_exp


def check_int_exp(x: Operand, constants, op: str = "int_exp") -> IExpConstants:
    """Validate an int_exp call: ``constants`` an :class:`IExpConstants` (``TypeError``), every ``x <= 0``
    (``ValueError`` naming the first positive value). Backend-neutral (``x`` an :class:`~intsim.ops._checks.Operand`)."""
    constants = check_exp_constants(constants, op)
    found = x.bounds()
    if found is not None and found[1] > 0:
        raise ValueError(f"{op}: x holds {found[1]} at index {x.index_of(found[1])}, outside [{INT64_MIN}, 0]: x (the "
                         f"logits minus their row maximum) must be <= 0 everywhere, and it holds {found[1]}")
    return constants


def _prepare_int_exp(x, constants, op):
    x = as_int_array(x, "x", op)
    return x, check_int_exp(ArrayOperand(x), constants, op)


def _int_exp_array(x: np.ndarray, c: IExpConstants) -> np.ndarray:
    """The i-exp formula on an int64 array ``x <= 0`` (no validation; shared by the references)."""
    x = np.maximum(x, c.n * c.x0)
    q = x // c.x0  # floor division: x0 < 0 and n*x0 <= x <= 0 give q in [0, n]
    r = x - c.x0 * q  # in (x0, 0]
    z = r * (r + c.b_int) + c.c_int
    return np.maximum(z, 0) << (c.n - q)  # == max(z << (n - q), 0): shifting keeps the sign


def int_exp_reference(x, constants: IExpConstants) -> np.ndarray:
    """Reference (the specification) of :func:`int_exp`: I-BERT's integer exp, elementwise, int64 out."""
    x, constants = _prepare_int_exp(x, constants, "int_exp")
    return _int_exp_array(x.astype(np.int64), constants)


@kernel
def _int_exp_scalar(x, x0, b_int, c_int, n):
    """:func:`_int_exp_array` for one int64 ``x <= 0``, without branches or integer division (loops vectorise).

    ``q = x // x0`` is the truncated float64 quotient, exactly: ``|x| <= n * |x0| <= 62 * 2**30`` and ``x0`` are
    float64 integers, the quotient lies in ``[0, n]``, so its correctly rounded value is off by less than
    ``62 * 2**-53``, while a non-integer quotient lies at least ``1 / |x0| >= 2**-30`` below the next integer.
    """
    x = max(x, n * x0)
    q = np.int64(np.float64(x) / np.float64(x0))
    r = x - x0 * q
    z = r * (r + b_int) + c_int
    return max(z, np.int64(0)) << (n - q)


@parallel_kernel
def _int_exp_parallel(x, x0, b_int, c_int, n, out):
    for i in prange(x.shape[0]):
        out[i] = _int_exp_scalar(np.int64(x[i]), x0, b_int, c_int, n)


@kernel
def _int_exp_serial(x, x0, b_int, c_int, n, out):
    for i in range(x.shape[0]):
        out[i] = _int_exp_scalar(np.int64(x[i]), x0, b_int, c_int, n)


def int_exp(x, constants: IExpConstants) -> np.ndarray:
    """I-BERT's integer exp ``e ~ exp(x * s) / (a * s**2 / 2**n)`` of logit codes ``x <= 0``; int64, same shape.

    ``x = max(x, n*x0); q = x // x0; r = x - x0*q; z = r*(r + b_int) + c_int; e = max(z << (n - q), 0)``.
    ``0 <= e <= constants.e_max = c_int << n`` (int64, proved when the constants are built). Raises
    ``TypeError`` for non-integer ``x`` or constants that are not :class:`IExpConstants` and ``ValueError``
    for a positive ``x`` (the row maximum must be subtracted first).

    >>> int_exp(np.array([0, -7, -14, -1000]), i_exp_constants(0.1)).tolist() == [279 << 30, 279 << 29, 279 << 28, 279]
    True
    """
    x, constants = _prepare_int_exp(x, constants, "int_exp")
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.shape[0], dtype=np.int64)
    if flat.shape[0]:
        c = constants
        run = _int_exp_serial if flat.shape[0] < 2**15 else _int_exp_parallel
        run(flat, np.int64(c.x0), np.int64(c.b_int), np.int64(c.c_int), np.int64(c.n), out)
    return out.reshape(x.shape)


# --------------------------------------------------------------------------------------------- log_round


def log_round_reference(r) -> np.ndarray:
    """``A = msb(R) + bit(R, msb(R) - 1)`` for integers ``R >= 1`` (FQ-ViT ``log_round``): int64 out.

    That is ``floor(log2 R)``, plus one when ``R >= 1.5 * 2**floor(log2 R)``. R = 1..12 -> 0,1,2,2,2,3,3,3,3,3,3,4.
    """
    r = as_int_array(r, "R", "log_round")
    if r.size and int(r.min()) < 1:
        check_code_range(r, "R", "log_round", 1, INT64_MAX)
    r = r.astype(np.int64)
    msb = np.zeros(r.shape, dtype=np.int64)
    for k in range(1, 63):
        msb += r >= (np.int64(1) << k)
    next_bit = np.where(msb > 0, (r >> np.maximum(msb - 1, 0)) & 1, 0)
    return msb + next_bit


@kernel
def log_round_scalar(r):
    """Numba twin of :func:`log_round_reference` for one int64 ``r >= 1`` (msb by a binary search)."""
    msb = 0
    top = r
    if top >= np.int64(1) << 32:
        top >>= 32
        msb += 32
    if top >= 1 << 16:
        top >>= 16
        msb += 16
    if top >= 1 << 8:
        top >>= 8
        msb += 8
    if top >= 1 << 4:
        top >>= 4
        msb += 4
    if top >= 1 << 2:
        top >>= 2
        msb += 2
    if top >= 2:
        msb += 1
    if msb == 0:
        return np.int64(0)
    return np.int64(msb + ((r >> (msb - 1)) & 1))


# --------------------------------------------------------------------------------------------- softmax rows


def check_softmax_parameters(q: Operand, zero_point, constants, bits, signed, op) -> tuple[int, int, int, IExpConstants]:
    """Validate a softmax call but its mask: ``q`` (an :class:`~intsim.ops._checks.Operand`) with at least one axis
    and codes in the declared range of ``bits`` (1..32) / ``signed``, ``zero_point`` inside it, ``constants`` an
    :class:`IExpConstants`. Returns ``(qmin, qmax, zero_point, constants)``; backend-neutral."""
    if len(q.shape) == 0:
        raise ValueError(f"{op}: q must have at least one axis (softmax runs over the last one), got a scalar")
    qmin, qmax = declared_code_range(bits, signed, op, max_bits=SOFTMAX_MAX_INPUT_BITS)
    check_in_range(q, "q", op, qmin, qmax)
    zero_point = check_int(zero_point, "zero_point", op, lo=qmin, hi=qmax)
    return qmin, qmax, zero_point, check_exp_constants(constants, op)


def check_mask(is_bool: bool, dtype, shape, q_shape, op: str) -> None:
    """A softmax mask must be boolean (``TypeError`` naming its ``dtype``) and broadcast to ``q_shape`` (``ValueError``)."""
    if not is_bool:
        raise TypeError(f"{op}: mask must be a boolean array (True = takes part), got dtype {dtype}")
    try:
        fits = np.broadcast_shapes(tuple(shape), tuple(q_shape)) == tuple(q_shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op}: mask of shape {tuple(shape)} does not broadcast to q's shape {tuple(q_shape)}")


def _prepare_rows(q, zero_point, constants, bits, signed, mask, op):
    """Validate a softmax call once (kernel and reference raise the same errors); return the pieces."""
    q = as_int_array(q, "q", op)
    _, _, zero_point, constants = check_softmax_parameters(ArrayOperand(q), zero_point, constants, bits, signed, op)
    if mask is not None:
        mask = np.asarray(mask)
        check_mask(mask.dtype == np.bool_, mask.dtype, mask.shape, q.shape, op)
        mask = np.broadcast_to(mask, q.shape)
    return q, zero_point, constants, mask


def prove_log_int_softmax_bounds(constants, row_length, op):
    """Prove ``S + (e >> 1) <= L * e_max + (e_max >> 1)`` fits int64 (``S`` itself is smaller) for rows of
    ``row_length``, from the constants alone; ``OverflowError`` naming the scale otherwise. Backend-neutral."""
    e_max = constants.e_max
    bound = row_length * e_max + (e_max >> 1)
    if bound > INT64_MAX:
        raise _overflow(op, "S + (e >> 1)", bound, constants, row_length)


_check_lis_bound = prove_log_int_softmax_bounds  # the earlier private name


def largest_full_scale(constants, row_length: int) -> int:
    """The largest uniform ``full_scale`` F whose bound (:func:`prove_uniform_int_softmax_bounds`) fits int64 for these constants
    and rows of ``row_length`` (at most :data:`MAX_FULL_SCALE`); plan time."""
    e_max = constants.e_max
    room = INT64_MAX - ((row_length * e_max) >> 1) - row_length * e_max
    return max(0, min(MAX_FULL_SCALE, room // max(e_max, 1)))


def prove_uniform_int_softmax_bounds(constants, row_length, levels, op):
    """Prove ``e * F + (S >> 1) + S <= e_max * F + (L * e_max >> 1) + L * e_max`` fits int64 (``levels`` = F);
    backend-neutral, from the constants and the row length alone.

    The numerator ``e * F + (S >> 1)`` and, in the kernel's exact division, the products
    ``quotient * S <= numerator + S`` of its integer correction step (see ``uniform_int_softmax_row``).
    """
    e_max = constants.e_max
    bound = e_max * levels + ((row_length * e_max) >> 1) + row_length * e_max
    if bound > INT64_MAX:
        raise _overflow(op, f"e * {levels} + (S >> 1) + S", bound, constants, row_length)


_check_uniform_bound = prove_uniform_int_softmax_bounds  # the earlier private name


def _row_exp_reference(q, zero_point, constants, mask):
    """Shared by both references: ``e`` (int64, 0 where masked) and the row sums ``S`` (keepdims)."""
    x = q.astype(np.int64) - zero_point
    take = np.ones(x.shape, dtype=bool) if mask is None else mask
    row_max = np.max(np.where(take, x, INT64_MIN), axis=-1, keepdims=True, initial=INT64_MIN)
    row_max = np.where(np.any(take, axis=-1, keepdims=True), row_max, 0)  # a fully masked row's max is unused
    x = np.where(take, x - row_max, 0)
    e = np.where(take, _int_exp_array(x, constants), 0)
    return e, e.sum(axis=-1, keepdims=True)


def log_int_softmax_reference(q, *, zero_point, constants, bits=8, signed=False, mask=None) -> np.ndarray:
    """Reference (the specification) of :func:`log_int_softmax`: uint8 codes in ``0..16`` (16 = probability 0)."""
    op = "log_int_softmax"
    q, zero_point, constants, mask = _prepare_rows(q, zero_point, constants, bits, signed, mask, op)
    prove_log_int_softmax_bounds(constants, q.shape[-1], op)
    e, total = _row_exp_reference(q, zero_point, constants, mask)
    safe_e = np.where(e > 0, e, 1)
    rounded = np.where(e > 0, (total + (e >> 1)) // safe_e, 1)  # R = round(S / e), ties half up
    exponent = log_round_reference(rounded)
    return np.where((e > 0) & (exponent <= 15), exponent, ZERO_CODE).astype(np.uint8)


_PARALLEL_MIN_SIZE = 2**15  # smaller inputs run serially: a thread-pool launch costs more than the work
_MAX_TABLE = 2**16 + 1  # kernels look e up in a table of int_exp(-d), d = 0..T-1, when T is at most this


@kernel
def _row_max(q, row, has_mask, mask):
    """``(found, max)`` of the codes of one row over the positions taking part (``found`` False: fully masked)."""
    if not has_mask:  # a plain reduction (vectorises)
        top = np.int64(q[row, 0]) if q.shape[1] else np.int64(0)
        for j in range(1, q.shape[1]):
            top = max(top, np.int64(q[row, j]))
        return q.shape[1] > 0, top
    found = False
    top = np.int64(0)
    for j in range(q.shape[1]):
        if has_mask and not mask[row, j]:
            continue
        value = np.int64(q[row, j])
        if not found or value > top:
            top = value
            found = True
    return found, top


@kernel
def _exp_of_gap(gap, table, x0, b_int, c_int, n):
    """``int_exp(-gap)`` for ``gap = max code - code >= 0``: a table look-up, or the formula when no table fits."""
    size = table.shape[0]
    if size > 0:
        return table[gap] if gap < size else table[size - 1]
    return _int_exp_scalar(-gap, x0, b_int, c_int, n)


@kernel
def _row_exps(q, row, top, has_mask, mask, table, x0, b_int, c_int, n, exps):
    """``exps[j] = int_exp(q[row, j] - top)`` (0 where the mask leaves a key out); returns their sum ``S``."""
    total = np.int64(0)
    if table.shape[0] == 0 and not has_mask:  # the common case as a loop without branches (vectorises)
        for j in range(q.shape[1]):
            e = _int_exp_scalar(np.int64(q[row, j]) - top, x0, b_int, c_int, n)
            exps[j] = e
            total += e
        return total
    for j in range(q.shape[1]):
        e = _exp_of_gap(top - np.int64(q[row, j]), table, x0, b_int, c_int, n)
        if has_mask and not mask[row, j]:
            e = 0
        exps[j] = e
        total += e
    return total


_TRIPLE_LIMIT = INT64_MAX // 3  # 3 * e fits int64 up to here
_CODE_TABLE_PER_KEY = 2  # rows tabulate their codes per gap when the exp table has at most 2 entries per key


@kernel
def _lis_code(numerator, e):
    """The LIS code from ``numerator = S + (e >> 1)`` and ``e > 0``: ``log_round(R)``, or 16 once ``R >= 49152``.

    Branch-free: ``log_round(R) >= m`` exactly when ``R >= T_m`` with ``T_1 = 2`` and ``T_m = 3 * 2**(m-2)``
    (``1.5 * 2**(m-1)``, rounded up), so the code is the number of thresholds ``T_1..T_16`` that ``R`` reaches;
    ``T_16 = 49152`` is the zero-probability threshold and the count 16 is :data:`ZERO_CODE`.

    No division when ``3 * e`` fits int64 (always, in practice): for integers ``num >= 0``, ``e > 0``, ``s >= 0``,
    ``floor(num / e) >= T  <=>  num >= T * e`` and ``num >= 3e * 2**s  <=>  (num >> s) >= 3e`` (``3e * 2**s`` is a
    multiple of ``2**s``), so ``R >= 2 <=> (num >> 1) >= e`` and ``R >= 3 * 2**s <=> (num >> s) >= 3e``.
    """
    if e > _TRIPLE_LIMIT:
        rounded = numerator // e
        code = np.int64(rounded >= 2)
        threshold = np.int64(3)
        for _ in range(15):
            code += rounded >= threshold
            threshold <<= 1
        return code
    code = np.int64((numerator >> 1) >= e)
    triple = 3 * e
    for shift in range(15):
        code += (numerator >> shift) >= triple
    return code


@kernel
def _lis_codes(total, exps, codes):
    """``codes[g]`` = the LIS code of ``e = exps[g]`` in a row of sum ``total``: :func:`_lis_code`, 16 for ``e = 0``.

    Written without branches so that the loop vectorises; entries with ``3 * e`` beyond int64 (never for real
    scales) are redone with :func:`_lis_code`'s division afterwards.
    """
    size = exps.shape[0]
    for gap in range(size):
        e = exps[gap]
        numerator = total + (e >> 1)
        triple = 3 * min(e, _TRIPLE_LIMIT)  # never overflows; entries above the limit are redone below
        # _lis_code's count of shifts s in 0..14 with (numerator >> s) >= triple, without the loop: the condition
        # holds for s <= f = floor(log2(numerator / triple)), and with L = bit_length(numerator) -
        # bit_length(triple) the ratio lies in (2**(L-1), 2**(L+1)), so f is L or L - 1 (no s when L < 0, all
        # 15 when L >= 15): count = min(L' + ((numerator >> L') >= triple), 15) with L' = L clamped to [0, 15]
        top = min(max(leading_zeros(triple) - leading_zeros(numerator), 0), 15)
        count = min(top + ((numerator >> top) >= triple), 15)
        code = ((numerator >> 1) >= e) + count
        codes[gap] = code if e > 0 else ZERO_CODE
    for gap in range(size):
        if exps[gap] > _TRIPLE_LIMIT:
            codes[gap] = _lis_code(total + (exps[gap] >> 1), exps[gap])


@kernel
def log_int_softmax_row(q, row, has_mask, mask, table, x0, b_int, c_int, n, scratch, out):
    """One row of :func:`log_int_softmax` into ``out[row]``; ``scratch``: int64 ``(2, max(L, table size))``."""
    # x_j - max x = q_j - max q: the zero point cancels, so the kernels work on the codes directly
    length = q.shape[1]
    found, top = _row_max(q, row, has_mask, mask)
    if not found:
        for j in range(length):
            out[row, j] = ZERO_CODE
        return
    exps, codes = scratch[0], scratch[1]
    total = _row_exps(q, row, top, has_mask, mask, table, x0, b_int, c_int, n, exps)
    size = table.shape[0]
    if 0 < size <= _CODE_TABLE_PER_KEY * length:
        # the code depends on the key only through its gap: one code per table entry, then one look-up per key
        _lis_codes(total, table, codes[:size])
        for j in range(length):
            code = ZERO_CODE
            if not has_mask or mask[row, j]:
                code = codes[min(top - np.int64(q[row, j]), size - 1)]
            out[row, j] = code
        return
    _lis_codes(total, exps[:length], codes)  # the code of each key's e (a masked key has e = 0: code 16)
    for j in range(length):
        out[row, j] = codes[j]


@kernel
def row_scratch(length, table):
    """The int64 scratch of the row kernels for rows of ``length`` (see :func:`log_int_softmax_row`)."""
    return np.empty((2, max(length, table.shape[0] if table.shape[0] <= _CODE_TABLE_PER_KEY * length else 0)),
                    dtype=np.int64)


_ROWS_PER_TASK = 64  # rows per parallel task (each task has its own scratch)


@parallel_kernel
def _log_int_softmax_parallel(q, has_mask, mask, table, x0, b_int, c_int, n, out):
    rows = q.shape[0]
    for task in prange((rows + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK):
        scratch = row_scratch(q.shape[1], table)
        for row in range(task * _ROWS_PER_TASK, min(rows, (task + 1) * _ROWS_PER_TASK)):
            log_int_softmax_row(q, row, has_mask, mask, table, x0, b_int, c_int, n, scratch, out)


@kernel
def _log_int_softmax_serial(q, has_mask, mask, table, x0, b_int, c_int, n, out):
    scratch = row_scratch(q.shape[1], table)
    for row in range(q.shape[0]):
        log_int_softmax_row(q, row, has_mask, mask, table, x0, b_int, c_int, n, scratch, out)


def exp_table(constants, span):
    """``int_exp(-d)`` for ``d = 0..min(span, n*|x0|)`` (int64), computed by the int_exp kernel; empty if too long.

    ``span`` is the largest possible gap ``max code - code`` (``qmax - qmin``); beyond ``n*|x0|`` every value
    equals the last one (the clamp), so the kernels look up ``table[min(gap, T - 1)]``.
    """
    size = min(span, constants.n * -constants.x0) + 1
    if size > _MAX_TABLE:
        return np.empty(0, dtype=np.int64)
    return int_exp(-np.arange(size, dtype=np.int64), constants)


def _run_rows(kernels, q, bits, signed, constants, mask, out_dtype, *extra):
    """Run the (serial, parallel) row kernels on ``q`` viewed as rows; small inputs skip the thread pool."""
    length = q.shape[-1]
    out = np.empty(q.shape, dtype=out_dtype)
    if q.size == 0:
        return out
    rows = np.ascontiguousarray(q).reshape(-1, length)
    if mask is None:
        has_mask, mask_rows = False, np.ones((1, 1), dtype=np.bool_)
    else:
        has_mask, mask_rows = True, np.ascontiguousarray(mask).reshape(-1, length)
    qmin, qmax = int_range(bits, signed)
    c = constants
    kernel_function = kernels[0] if q.size < _PARALLEL_MIN_SIZE else kernels[1]
    kernel_function(
        rows, has_mask, mask_rows, exp_table(c, qmax - qmin),
        np.int64(c.x0), np.int64(c.b_int), np.int64(c.c_int), np.int64(c.n), *extra, out.reshape(-1, length),
    )
    return out


def log_int_softmax(q, *, zero_point, constants, bits=8, signed=False, mask=None) -> np.ndarray:
    """FQ-ViT's Log-Int-Softmax over the last axis: uint8 codes, ``0..15`` = probability ``2**-code``, 16 = 0.

    ``q``: logit codes of ``bits`` (1..32) and ``signed`` with ``zero_point``; ``constants`` from
    :func:`i_exp_constants` (the logits' scale); ``mask``: optional bool array broadcastable to ``q``'s shape,
    False = probability 0. Per row: ``e = int_exp(x - max x)``, ``S = sum e`` (int64, proved),
    ``R = (S + (e >> 1)) // e``, ``A = msb(R) + bit(R, msb(R) - 1)``, code ``A`` if ``A <= 15`` else 16.
    See the module docstring for the full contract. Raises ``TypeError`` (non-integer ``q``, non-bool mask, bad
    constants), ``ValueError`` (codes or zero point out of range, mask shape) or ``OverflowError`` (scale too small
    for the row length).

    >>> c = i_exp_constants(0.1)
    >>> log_int_softmax(np.array([[200, 193, 186, 0], [9, 9, 9, 9]], dtype=np.uint8), zero_point=0, constants=c)
    array([[ 1,  2,  3, 16],
           [ 2,  2,  2,  2]], dtype=uint8)
    """
    op = "log_int_softmax"
    q, zero_point, constants, mask = _prepare_rows(q, zero_point, constants, bits, signed, mask, op)
    prove_log_int_softmax_bounds(constants, q.shape[-1], op)
    return _run_rows((_log_int_softmax_serial, _log_int_softmax_parallel), q, bits, signed, constants, mask, np.uint8)


# --------------------------------------------------------------------------------------------- uniform softmax


def uniform_levels(out_bits, full_scale, op, shape=None):
    """``(2**out_bits - 1, F)`` validated: ``out_bits`` in ``[1, 16]``, ``F = full_scale`` (``None``:
    ``2**out_bits - 1``) in ``[2**out_bits - 1, 2**20]`` (:data:`MAX_FULL_SCALE`): an int, or a sequence of them
    (one per head: per slice of axis -3 of a ``q`` of ``shape``, which must have that length), returned as an
    int64 array. Backend-neutral."""
    levels = 2 ** check_int(out_bits, "out_bits", op, lo=1, hi=SOFTMAX_MAX_OUT_BITS) - 1
    if full_scale is None:
        return levels, levels
    if isinstance(full_scale, (list, tuple, np.ndarray)):
        values = [check_int(value, "full_scale", op, lo=levels, hi=MAX_FULL_SCALE) for value in full_scale]
        if not values:
            raise ValueError(f"{op}: full_scale is an empty list (give an int, or one per head)")
        if shape is not None and (len(shape) < 3 or shape[-3] != len(values)):
            raise ValueError(f"{op}: full_scale has {len(values)} values, one per head, but q has shape "
                             f"{tuple(shape)}: its axis -3 (the heads) must have that length")
        return levels, np.asarray(values, dtype=np.int64)
    return levels, check_int(full_scale, "full_scale", op, lo=levels, hi=MAX_FULL_SCALE)


def per_head(full, op_shape) -> np.ndarray:
    """``F`` (an int or one per head) broadcast against ``e`` of ``op_shape`` ``(..., heads, N, M)``."""
    return np.asarray(full, dtype=np.int64).reshape(-1, 1, 1) if np.ndim(full) else np.int64(full)


def uniform_int_softmax_reference(
    q, *, zero_point, constants, bits=8, signed=False, out_bits=8, full_scale=None, mask=None
) -> np.ndarray:
    """Reference (the specification) of :func:`uniform_int_softmax`."""
    op = "uniform_int_softmax"
    q, zero_point, constants, mask = _prepare_rows(q, zero_point, constants, bits, signed, mask, op)
    levels, full = uniform_levels(out_bits, full_scale, op, q.shape)
    prove_uniform_int_softmax_bounds(constants, q.shape[-1], int(np.max(full)), op)
    e, total = _row_exp_reference(q, zero_point, constants, mask)
    # S == 0 only for a fully masked row, where every e is 0: the numerator is 0 and so is p
    p = (e * per_head(full, q.shape) + (total >> 1)) // np.maximum(total, 1)  # round(e * F / S), ties half up
    return np.minimum(p, levels).astype(smallest_code_dtype(0, levels))


@kernel
def uniform_int_softmax_row(q, row, has_mask, mask, table, x0, b_int, c_int, n, levels, full, scratch, out):
    """One row of :func:`uniform_int_softmax` into ``out[row]``; ``scratch`` as for :func:`log_int_softmax_row`."""
    length = q.shape[1]
    found, top = _row_max(q, row, has_mask, mask)
    exps = scratch[0]
    total = np.int64(0)
    if found:
        total = _row_exps(q, row, top, has_mask, mask, table, x0, b_int, c_int, n, exps)
    if total <= 0:  # fully masked (or every e = 0 with hand-made constants): all probabilities 0
        for j in range(length):
            out[row, j] = 0
        return
    half = total >> 1
    inverse = 1.0 / np.float64(total)
    for j in range(length):
        numerator = exps[j] * full + half  # a masked key has e = 0
        # floor(numerator / total) exactly: a float64 estimate (relative error < 2**-50, and the quotient is at most
        # F + 1 <= 2**20 + 1, so it is off by at most one) corrected with exact integer comparisons
        quotient = np.int64(np.float64(numerator) * inverse)
        quotient -= quotient * total > numerator
        quotient += (quotient + 1) * total <= numerator
        out[row, j] = min(quotient, levels)


@parallel_kernel
def _uniform_int_softmax_parallel(q, has_mask, mask, table, x0, b_int, c_int, n, levels, fulls, out):
    # fulls: F of each row (int64, one per row)
    rows = q.shape[0]
    for task in prange((rows + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK):
        scratch = row_scratch(q.shape[1], table)
        for row in range(task * _ROWS_PER_TASK, min(rows, (task + 1) * _ROWS_PER_TASK)):
            uniform_int_softmax_row(q, row, has_mask, mask, table, x0, b_int, c_int, n, levels, fulls[row], scratch,
                                    out)


@kernel
def _uniform_int_softmax_serial(q, has_mask, mask, table, x0, b_int, c_int, n, levels, fulls, out):
    scratch = row_scratch(q.shape[1], table)
    for row in range(q.shape[0]):
        uniform_int_softmax_row(q, row, has_mask, mask, table, x0, b_int, c_int, n, levels, fulls[row], scratch, out)


def uniform_int_softmax(
    q, *, zero_point, constants, bits=8, signed=False, out_bits=8, full_scale=None, mask=None
) -> np.ndarray:
    """A uniform integer softmax over the last axis: ``p = min(round(e * F / S), 2**out_bits - 1)``, ties half up.

    Same ``e`` and ``S`` as :func:`log_int_softmax`; ``p = min((e * F + (S >> 1)) // S, 2**out_bits - 1)`` in
    int64 (proved: ``e_max * F + (L * e_max >> 1)`` fits). ``F`` = ``full_scale``, the code of probability 1:
    ``2**out_bits - 1`` by default (real scale ``1 / (2**out_bits - 1)``, no saturation), or a calibrated integer
    up to 2**20 (scale ``1 / F``: the codes cover probabilities up to ``(2**out_bits - 1) / F``, larger ones
    saturate; FQ-ViT's minmax observer on the softmax output), or one such integer per head: a list of
    ``q.shape[-3]`` values, ``F[h]`` for the rows of ``q[..., h, :, :]`` (APQ-ViT's MPQ). Output codes in ``[0, 2**out_bits - 1]``
    (``out_bits`` 1..16; uint8 for 8 bits), zero point 0: a one-hot row gives ``2**out_bits - 1`` at its
    maximum, a fully masked row all 0. Rows need not sum to ``F``.

    >>> uniform_int_softmax(np.array([[200, 193, 186, 0], [9, 9, 9, 9]], dtype=np.uint8), zero_point=0,
    ...                     constants=i_exp_constants(0.1))
    array([[146,  73,  36,   0],
           [ 64,  64,  64,  64]], dtype=uint8)
    """
    op = "uniform_int_softmax"
    q, zero_point, constants, mask = _prepare_rows(q, zero_point, constants, bits, signed, mask, op)
    levels, full = uniform_levels(out_bits, full_scale, op, q.shape)
    prove_uniform_int_softmax_bounds(constants, q.shape[-1], int(np.max(full)), op)
    kernels = (_uniform_int_softmax_serial, _uniform_int_softmax_parallel)
    out_dtype = smallest_code_dtype(0, levels)
    row_full = np.broadcast_to(full if not np.ndim(full) else np.asarray(full).reshape(-1, 1), q.shape[:-1])
    return _run_rows(kernels, q, bits, signed, constants, mask, out_dtype, np.int64(levels),
                     np.ascontiguousarray(row_full, dtype=np.int64).reshape(-1))


# --------------------------------------------------------------------------------------------- attn @ V


def check_lis_attention_values(codes: Operand, v: Operand, v_zero_point, op="lis_attention_values") -> tuple[int, int]:
    """Validate ``attn @ V`` for LIS codes: ``codes (..., N, M)`` in ``0..16``, ``v (..., M, D)``, leading axes that
    broadcast, ``v_zero_point`` in int64; prove ``M * max|v - zp| * 2**15`` fits int64 (``OverflowError``).
    Returns ``(v_zero_point, max|v - v_zero_point|)``; backend-neutral (operands as
    :class:`~intsim.ops._checks.Operand`)."""
    codes_shape, v_shape = tuple(codes.shape), tuple(v.shape)
    if len(codes_shape) < 2 or len(v_shape) < 2:
        raise ValueError(
            f"{op}: codes (..., N, M) and v (..., M, D) need at least two axes, got shapes {codes_shape} and {v_shape}"
        )
    if codes_shape[-1] != v_shape[-2]:
        raise ValueError(
            f"{op}: codes has {codes_shape[-1]} keys (last axis, shape {codes_shape}) but v has {v_shape[-2]} "
            f"(second to last axis, shape {v_shape})"
        )
    try:
        np.broadcast_shapes(codes_shape[:-2], v_shape[:-2])
    except ValueError:
        raise ValueError(f"{op}: the leading axes of codes {codes_shape} and v {v_shape} do not broadcast") from None
    check_in_range(codes, "codes", op, 0, ZERO_CODE)
    v_zero_point = check_int(v_zero_point, "v_zero_point", op, lo=INT64_MIN, hi=INT64_MAX)
    centred = abs_max(v, v_zero_point)
    bound = (centred << LIS_VALUE_SHIFT) * codes_shape[-1]
    if bound > INT64_MAX:
        raise OverflowError(
            f"{op}: sum_j (v_j - v_zero_point) << 15 can reach {bound} (about 2**{bound.bit_length() - 1}) "
            f"over {codes_shape[-1]} keys, which overflows int64"
        )
    return v_zero_point, centred


def _prepare_attention(codes, v, v_zero_point, op):
    codes = as_int_array(codes, "codes", op)
    v = as_int_array(v, "v", op)
    v_zero_point, _ = check_lis_attention_values(ArrayOperand(codes), ArrayOperand(v), v_zero_point, op)
    return codes, v, v_zero_point


_LIS_WEIGHTS = np.array([1 << (LIS_VALUE_SHIFT - code) for code in range(ZERO_CODE)] + [0], dtype=np.int32)


def lis_attention_values_reference(codes, v, *, v_zero_point) -> np.ndarray:
    """Reference (the specification) of :func:`lis_attention_values`: the shift-sum, key by key, in int64."""
    codes, v, v_zero_point = _prepare_attention(codes, v, v_zero_point, "lis_attention_values")
    lead = np.broadcast_shapes(codes.shape[:-2], v.shape[:-2])
    acc = np.zeros(lead + (codes.shape[-2], v.shape[-1]), dtype=np.int64)
    centred = v.astype(np.int64) - v_zero_point
    for j in range(codes.shape[-1]):
        code = codes[..., :, j, None].astype(np.int64)  # (..., N, 1)
        shift = LIS_VALUE_SHIFT - np.minimum(code, LIS_VALUE_SHIFT)
        term = centred[..., None, j, :] << shift  # (..., N, D): (v_j - zp) << (15 - code_ij)
        acc += np.where(code < ZERO_CODE, term, 0)
    return acc


def lis_attention_values(codes, v, *, v_zero_point) -> np.ndarray:
    """``attn @ V`` for Log-Int-Softmax codes, exact: ``acc[..., i, d] = sum_{code_ij < 16} (v[..., j, d] - zp) << (15 - code_ij)``.

    ``codes`` (..., N, M) in ``0..16`` (from :func:`log_int_softmax`), ``v`` (..., M, D) integer codes with
    ``v_zero_point``; leading axes broadcast like ``np.matmul``. Returns int64 with real scale ``s_v * 2**-15``
    (then requantize). Bound: ``|acc| <= M * max|v - zp| * 2**15`` (uint8 V, M = 197: below ``2**31``), proved
    before computing. Computed as ``integer_matmul(P, v, b_zero_point=v_zero_point)`` with the integer weights
    ``P = 2**(15 - code)`` (0 for code 16), which is the same exact sum.

    >>> lis_attention_values(np.array([[0, 1, 16]]), np.array([[3], [5], [7]]), v_zero_point=1).tolist()
    [[131072]]
    """
    codes, v, v_zero_point = _prepare_attention(codes, v, v_zero_point, "lis_attention_values")
    weights = _LIS_WEIGHTS[codes]  # 2**(15 - code), 0 for code 16 (codes were checked to lie in 0..16)
    return integer_matmul(weights, v, b_zero_point=v_zero_point)
