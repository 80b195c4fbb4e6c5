"""Exact integer matrix products: ``sum_k (a - a_zp) * (b - b_zp) + bias`` in int64, at BLAS speed.

Integer contract
    ``a``       integer codes of shape ``(..., M, K)``, any numpy integer dtype but uint64 (uint8 activations,
                int8 codes, int16 attention probabilities ``2**(15 - A)``, ...). No code range is declared:
                the operands are just integers and the bounds below are proved from their actual values.
    ``b``       integer codes of shape ``(..., K, N)``; the leading (batch) dimensions of ``a`` and ``b``
                broadcast like :func:`numpy.matmul`.
    zero points Python ints, per tensor (``a_zero_point``, ``b_zero_point``; default 0), in int64 range.
    ``bias``    ``None`` or an integer vector of shape ``(N,)`` with values in int32 (added once per output).
    result      int64, shape ``broadcast(a.shape[:-2], b.shape[:-2]) + (M, N)``::

                    out[..., m, n] = sum_k (a[..., m, k] - a_zp) * (b[..., k, n] - b_zp) + bias[n]

                computed EXACTLY (no rounding, no saturation, no wrap-around).
    Accumulator With ``A = max|a - a_zp|`` and ``B = max|b - b_zp|`` taken from the actual operands (exact
                Python ints), every partial sum of every output is bounded by
                ``K * A * B + max|bias|``; the op proves this is ``<= 2**63 - 1`` before computing and raises
                ``OverflowError`` otherwise. When the bound is ``< 2**31`` an int32 accumulator suffices
                (hardware may use one); e.g. uint8 codes with a zero point (``A <= 255``) against int8 weights
                (``B <= 128``) fit int32 for ``K <= 2**31 / (255 * 128) = 65793`` (any ViT), ignoring bias.
                The result is returned as int64 whatever the bound.

How the kernel stays exact at BLAS speed (DESIGN.md section 5)
    Floats here carry integers, never approximations. ``a - a_zp`` and ``b - b_zp`` are converted once to
    float32 (or float64); BLAS multiplies them on K-chunks; each chunk's result is converted back to int64
    and the chunks are summed in int64 (fused with the conversion and the bias add, in numba).

    Proof of exactness. Let ``T_k = (a_mk - a_zp)(b_kn - b_zp)`` be the integer terms of one output and
    ``S`` the chunk of ``k`` that one BLAS call sums. Whatever order, blocking or FMA the BLAS uses, every
    intermediate value it forms is an integer partial sum ``sum_{k in P} T_k`` over a subset ``P`` of
    ``S`` (a single product is the case ``|P| = 1``), so its magnitude is at most
    ``L = sum_{k in S} |T_k|``. A float with a ``p``-bit significand (p = 24 for float32, 53 for float64)
    represents every integer of magnitude ``<= 2**p`` exactly, and the float sum or product of two such
    exactly represented integers whose exact result also has magnitude ``<= 2**p`` is that exact result
    (it is representable, and IEEE operations are correctly rounded). By induction every intermediate,
    hence the chunk result, is exact as long as ``L <= 2**p``; the operands themselves are exact since
    ``|a - a_zp| <= L`` (when ``B >= 1``). ``L`` is bounded by the smallest of

        ``|S| * A * B``,   ``B * max_m sum_{k in S} |a_mk - a_zp|``   and   ``A * max_n sum_{k in S} |b_kn - b_zp|``

    (row and column sums of absolute values, computed exactly in int64). The kernel therefore picks:

    1. one float32 BLAS call over all of K when the smallest bound over the whole K is ``<= 2**24``
       (e.g. uint8 x int8 with ``K <= 514``, or attention probabilities whose codes sum to about ``2**15``
       per row against int8 values);
    2. else float32 on chunks of ``c = floor(2**24 / (A * B))`` values of ``k`` when ``c >= 64`` (the same
       flops as one call, plus one int64 accumulation pass over the output per chunk);
       or, when ``b`` is 2-D (a weight), on equal chunks whose column-sum bound ``A * max_n sum_{k in chunk}
       |b_kn - b_zp|`` is ``<= 2**24`` (:func:`_column_chunk`: longer chunks when a few columns are large,
       down to :data:`MIN_COLUMN_CHUNK` values when many are, e.g. fc2 over PTF-shifted GELU codes);
    3. else, when ``a`` is the wide operand, a two-digit split ``a - a_zp = hi * 2**s + lo`` with
       ``hi = (a - a_zp) >> s`` (floor) and ``0 <= lo < 2**s``: two float32 products over all of K, exact
       when ``K * (2**s - 1) * B <= 2**24`` and ``K * ceil(A / 2**s) * B <= 2**24`` (the largest such
       ``s`` is taken), recombined as ``(hi @ b) * 2**s + lo @ b`` in int64. Twice the float32 flops, which
       is cheaper than float64 BLAS (about 2.5x float32 here); e.g. uniform attention codes up to
       ``2**15`` against int8 values at K = 197 (``s = 9``);
    4. else one float64 call when the bound is ``<= 2**53``, else float64 on chunks of
       ``floor(2**53 / (A * B))``;
    5. else (``A * B > 2**53``) a plain int64 numba loop.

    Chunk results are integers of magnitude ``<= 2**53``: their conversion to int64 is exact, and the
    running int64 sum of chunks plus bias is a partial sum of the exact result, bounded by the proved
    ``K * A * B + max|bias| <= 2**63 - 1``. The result therefore equals :func:`integer_matmul_reference`
    bit for bit, and does not depend on the BLAS, its thread count or its summation order.

    Speed notes: when ``b`` has no batch (a weight), ``a``'s batch is folded into M for one large GEMM;
    the float copies of the operands and the float result live in per-thread workspace buffers reused
    between calls (only the int64 result is allocated); the numba loops (conversion, row/column sums,
    int64 stores) run on all numba threads for large products and on one thread for small ones.

    This departs from I-ViT, whose float32 ``F.linear`` is exact only while partial sums stay below
    ``2**24`` (not the case for fc2, K = 3072, in the worst case), and follows TFLite's
    ``reference_integer_ops::FullyConnected`` (``sum (x + x_offset)(w + w_offset) + bias`` in integers)
    and TVM ``qnn.dense`` / ``qnn.batch_matmul`` (int32 accumulation).

:func:`integer_linear` is the weights-times-activations form (torch/timm ``nn.Linear`` layout): symmetric
per-output-channel weight codes ``(N, K)`` (zero point 0, typically int8), ``x`` codes ``(..., K)``.

Validation and bounds (backend-neutral, shared with the torch twins)
    :func:`check_matmul` (shapes, zero points, bias, the accumulator bound; returns :class:`MatmulBounds`),
    :func:`check_linear_shapes`, :func:`check_input_shift` and :func:`check_linear_input_shift` (``x_shift``
    and the proof that the shifted input fits int64). They read the operands through
    :class:`~intsim.ops._checks.Operand` (shapes and exact bounds), so any backend raises the same errors.

Kernel internals (public so that a faster kernel, e.g. :mod:`intsim.ops.fused`, can use or replace them by name)
    :func:`prepare_operands` (validated numpy operands, :class:`MatmulOperands`), :func:`linear_operands`,
    :func:`plan_weight_product` (a :class:`ProductPlan`: carrier, K-chunk, digit split),
    :func:`row_blocked_product` (the row-blocked exact float32 product with a caller's epilogue),
    :func:`column_abs_sum_max`, :func:`to_float` (centred float copies with row/column sums) and
    :func:`workspace` (per-thread scratch buffers).
"""

from __future__ import annotations

import contextlib
import threading
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from intsim._jit import kernel, parallel_kernel
from intsim.limits import FLOAT32_EXACT, FLOAT64_EXACT, INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, MAX_INPUT_SHIFT
from intsim.ops._checks import (
    ArrayOperand,
    Operand,
    abs_max,
    as_int_array,
    check_in_range,
    check_int,
    check_int_bounds_fit,
    max_abs,
    smallest_code_dtype,
)
from intsim.ops._threads import run_row_ranges, single_threaded_blas

__all__ = [
    "FLOAT32_EXACT",
    "FLOAT64_EXACT",
    "LINEAR_NAMES",
    "MAX_INPUT_SHIFT",
    "MIN_FLOAT32_CHUNK",
    "MatmulBounds",
    "MatmulOperands",
    "ProductPlan",
    "check_input_shift",
    "check_linear_input_shift",
    "check_linear_shapes",
    "check_matmul",
    "column_abs_sum_max",
    "integer_linear",
    "integer_linear_reference",
    "integer_matmul",
    "integer_matmul_reference",
    "linear_operands",
    "plan_weight_product",
    "prepare_operands",
    "row_blocked_product",
    "shifted_linear_input",
    "shifted_linear_weight",
    "to_float",
    "workspace",
]

# FLOAT32_EXACT = 2**24 and FLOAT64_EXACT = 2**53 (intsim.limits): every integer of at most that magnitude is a
# float32 / float64; MAX_INPUT_SHIFT = 15: Linear's x_shift values lie in [0, 15] (PTF factors 2**0 .. 2**15)
MIN_FLOAT32_CHUNK = 64  # below this chunk length float64 on fewer chunks is faster than many float32 chunks
MIN_COLUMN_CHUNK = 32  # shortest K-chunk proved by column sums (before a digit split, which doubles the flops)
SERIAL_BELOW = 2**16  # products with fewer elements (a + b + out) run their numba loops on one thread
LINEAR_NAMES = ("x", "weight", "x_zero_point", "weight zero point")  # integer_linear's names of a, b and zero points


# ------------------------------------------------------------------------ validation and bounds (backend-neutral)


class MatmulBounds(NamedTuple):
    """A matmul's validated zero points and bias and its proved bounds (exact Python ints), from :func:`check_matmul`."""

    a_zp: int
    b_zp: int
    bias: np.ndarray  # (N,) int64, zeros when no bias was given
    a_abs: int  # max |a - a_zp| (exact)
    b_abs: int  # max |b - b_zp| (exact)
    bound: int  # K * a_abs * b_abs + max|bias| (exact)
    out_shape: tuple


def check_matmul(a: Operand, b: Operand, a_zero_point, b_zero_point, bias, op="integer_matmul",
                 names=("a", "b", "a_zero_point", "b_zero_point")) -> MatmulBounds:
    """Validate a matmul (module docstring's contract) and prove its int64 accumulator bound.

    ``a (..., M, K)`` and ``b (..., K, N)`` with broadcasting batch axes (as :class:`~intsim.ops._checks.Operand`),
    zero points in int64, ``bias`` ``None`` or integers ``(N,)`` in int32; proves ``max|a - a_zp|``, ``max|b - b_zp|``
    and ``K * max|a - a_zp| * max|b - b_zp| + max|bias|`` fit int64 (``OverflowError`` otherwise). ``names`` are
    the names of ``a``, ``b`` and their zero points in messages. Backend-neutral: the kernel, the reference and the
    torch twin raise the same errors through it.
    """
    a_name, b_name, a_zp_name, b_zp_name = names
    a_shape, b_shape = tuple(a.shape), tuple(b.shape)
    expected = f"{op}: {a_name} must have shape (..., M, K) and {b_name} shape (..., K, N)"
    if len(a_shape) < 2 or len(b_shape) < 2:
        raise ValueError(f"{expected}, got {a_name}.shape = {a_shape} and {b_name}.shape = {b_shape}")
    if a_shape[-1] != b_shape[-2]:
        raise ValueError(
            f"{expected} with the same K, but the inner dimensions differ: {a_name}.shape = {a_shape} has "
            f"K = {a_shape[-1]}, {b_name}.shape = {b_shape} has K = {b_shape[-2]}"
        )
    try:
        batch = np.broadcast_shapes(a_shape[:-2], b_shape[:-2])
    except ValueError:
        raise ValueError(
            f"{op}: the batch dimensions of {a_name}.shape = {a_shape} and {b_name}.shape = {b_shape} "
            f"do not broadcast ({a_shape[:-2]} vs {b_shape[:-2]})"
        ) from None
    a_zp = check_int(a_zero_point, a_zp_name, op, lo=INT64_MIN, hi=INT64_MAX)
    b_zp = check_int(b_zero_point, b_zp_name, op, lo=INT64_MIN, hi=INT64_MAX)
    k, n = a_shape[-1], b_shape[-1]
    if bias is None:
        bias64 = np.zeros(n, dtype=np.int64)
    else:
        bias = as_int_array(bias, "bias", op)
        if bias.shape != (n,):
            raise ValueError(f"{op}: bias must have shape (N,) = ({n},) (one value per output column), got shape {bias.shape}")
        check_in_range(ArrayOperand(bias), "bias", op, INT32_MIN, INT32_MAX, locate=False,
                       where=f"its allowed range [{INT32_MIN}, {INT32_MAX}] (int32)")
        bias64 = np.ascontiguousarray(bias, dtype=np.int64)
    a_abs, b_abs = abs_max(a, a_zp), abs_max(b, b_zp)
    check_int_bounds_fit(a_abs, f"{a_name} - {a_zp_name}", op)
    check_int_bounds_fit(b_abs, f"{b_name} - {b_zp_name}", op)
    bound = k * a_abs * b_abs + max_abs(bias64)
    check_int_bounds_fit(
        bound, f"the accumulator K * max|{a_name} - zp| * max|{b_name} - zp| + max|bias| (K = {k})", op
    )
    return MatmulBounds(a_zp, b_zp, bias64, a_abs, b_abs, bound, tuple(batch) + (a_shape[-2], n))


def check_linear_shapes(x_shape, weight_shape, op: str = "integer_linear") -> tuple:
    """``x (..., K)`` and ``weight (N, K)`` (torch ``nn.Linear`` layout), else ``ValueError``; returns ``(..., N)``."""
    x_shape, weight_shape = tuple(x_shape), tuple(weight_shape)
    if len(x_shape) < 1 or len(weight_shape) != 2 or x_shape[-1] != weight_shape[1]:
        raise ValueError(
            f"{op}: x must have shape (..., K) and weight shape (N, K) (torch nn.Linear layout), "
            f"got x.shape = {x_shape} and weight.shape = {weight_shape}"
        )
    return x_shape[:-1] + (weight_shape[0],)


def check_input_shift(x_shift, channels: int | None, op: str = "integer_linear") -> np.ndarray:
    """``x_shift`` validated: integers of shape ``(K,)`` = ``(channels,)`` in ``[0, 15]``; returned as int64."""
    shift = as_int_array(x_shift, "x_shift", op)
    if shift.ndim != 1 or channels is None or shift.shape[0] != channels:
        raise ValueError(f"{op}: x_shift must have shape (K,) = ({'?' if channels is None else channels},) (one "
                         f"shift per input channel), got shape {shift.shape}")
    check_in_range(ArrayOperand(shift), "x_shift", op, 0, MAX_INPUT_SHIFT, locate=False,
                   where=f"its allowed range [0, {MAX_INPUT_SHIFT}]")
    return shift.astype(np.int64)


def check_linear_input_shift(x: Operand, x_zero_point, x_shift, op: str = "integer_linear") -> tuple[int, np.ndarray]:
    """``(x_zero_point, x_shift)`` validated, with the proof that the shifted input ``(x - x_zero_point) << x_shift``
    fits int64 (``OverflowError`` when ``max|x - x_zero_point| * 2**max(x_shift)`` does not); ``x`` an operand."""
    shift = check_input_shift(x_shift, x.shape[-1] if len(x.shape) else None, op)
    zero_point = check_int(x_zero_point, "x_zero_point", op, lo=INT64_MIN, hi=INT64_MAX)
    top = int(shift.max()) if shift.size else 0
    check_int_bounds_fit(abs_max(x, zero_point) << top, "max|x - x_zero_point| * 2**max(x_shift)", op)
    return zero_point, shift


# ------------------------------------------------------------------- prepared operands (numpy, kernel internals)


class MatmulOperands(NamedTuple("MatmulOperands", [("a", np.ndarray), ("b", np.ndarray),
                                                   *MatmulBounds.__annotations__.items()])):
    """Validated numpy operands of one matmul, ``a (..., M, K)`` and ``b (..., K, N)``, followed by the fields of
    their :class:`MatmulBounds` (the output of :func:`prepare_operands`)."""

    __slots__ = ()


def prepare_operands(a, b, a_zero_point, b_zero_point, bias, op="integer_matmul",
                     names=("a", "b", "a_zero_point", "b_zero_point")) -> MatmulOperands:
    """Validate a matmul's arguments once (shared by kernel and reference; :func:`check_matmul`)."""
    a = as_int_array(a, names[0], op)
    b = as_int_array(b, names[1], op)
    return MatmulOperands(a, b, *check_matmul(ArrayOperand(a), ArrayOperand(b), a_zero_point, b_zero_point, bias, op,
                                              names))


_Operands, _prepare = MatmulOperands, prepare_operands  # the earlier private names


# --------------------------------------------------------------------------------------------- reference


def integer_matmul_reference(a, b, *, a_zero_point=0, b_zero_point=0, bias=None):
    """Reference (the specification): int64 ``matmul(a - a_zero_point, b - b_zero_point) + bias``.

    Plain numpy integer arithmetic (numpy's int64 matmul loop, no BLAS, no float); the validation and the
    int64 bound proof are shared with :func:`integer_matmul`.
    """
    p = prepare_operands(a, b, a_zero_point, b_zero_point, bias, "integer_matmul_reference")
    acc = np.matmul(p.a.astype(np.int64) - p.a_zp, p.b.astype(np.int64) - p.b_zp)
    return (acc + p.bias).astype(np.int64, copy=False).reshape(p.out_shape)


def linear_operands(x, weight, op: str = "integer_linear"):
    """Validate ``integer_linear``'s ``x`` and ``weight`` (:func:`check_linear_shapes`); return x as ``(rows, K)``,
    the weight and the output shape."""
    x = as_int_array(x, "x", op)
    weight = as_int_array(weight, "weight", op)
    out_shape = check_linear_shapes(x.shape, weight.shape, op)
    return x.reshape(-1, x.shape[-1]), weight, out_shape


def _checked_input_shift(x, x_zero_point, x_shift, op: str) -> tuple[np.ndarray, int, np.ndarray]:
    """``(x, x_zero_point, x_shift)`` validated (:func:`check_linear_input_shift`), ``x`` as an integer array."""
    x = as_int_array(x, "x", op)
    return (x, *check_linear_input_shift(ArrayOperand(x), x_zero_point, x_shift, op))


def _narrowed(values: np.ndarray) -> np.ndarray:
    """An int64 array in the smallest integer dtype that holds its values."""
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    return values.astype(smallest_code_dtype(low, high))


def shifted_linear_input(x, x_zero_point, x_shift, op: str = "integer_linear"):
    """``(x, x_zero_point)`` unchanged when ``x_shift`` is ``None``; otherwise the power-of-two-factor input
    ``((x - x_zero_point) << x_shift[k], 0)``: int64 arithmetic, narrowed to the smallest dtype that holds it.

    ``x_shift``: integers ``(K,)`` in ``[0, 15]``, one per input channel (last axis of ``x``). The shift is exact
    (a multiplication by ``2**x_shift[k]``); ``OverflowError`` when ``max|x - x_zero_point| * 2**max(x_shift)``
    leaves int64. This is the one definition of the shifted input, used by the reference and the accumulator
    report (the kernels shift the weight instead: :func:`shifted_linear_weight`).
    """
    if x_shift is None:
        return x, x_zero_point
    x, zero_point, shift = _checked_input_shift(x, x_zero_point, x_shift, op)
    return _narrowed((x.astype(np.int64) - zero_point) << shift), 0


def shifted_linear_weight(weight, x_shift, op: str = "integer_linear"):
    """``weight`` unchanged when ``x_shift`` is ``None``, else ``weight[n, k] << x_shift[k]`` (int64 arithmetic,
    narrowed to the smallest dtype that holds it; ``OverflowError`` beyond int64).

    The kernels' form of the shifted input: ``sum_k ((x[k] - zp) << s[k]) * w[n, k] = sum_k (x[k] - zp) *
    (w[n, k] << s[k])`` exactly, and shifting the ``(N, K)`` weight once costs far less than shifting every row
    of ``x``; the exactness plan of the product then sees the true operand bounds."""
    if x_shift is None:
        return weight
    weight = as_int_array(weight, "weight", op)
    shift = check_input_shift(x_shift, weight.shape[1] if weight.ndim == 2 else None, op)
    top = int(shift.max()) if shift.size else 0
    check_int_bounds_fit(max_abs(weight) << top, "max|weight| * 2**max(x_shift)", op)
    return _narrowed(weight.astype(np.int64) << shift[None, :])


def integer_linear_reference(x, weight, *, x_zero_point=0, bias=None, x_shift=None):
    """Reference: int64 ``((x - x_zero_point) << x_shift) @ weight.T + bias`` (symmetric weights, zero point 0;
    no ``x_shift``: no shift)."""
    op = "integer_linear_reference"
    x, x_zero_point = shifted_linear_input(x, x_zero_point, x_shift, op)
    x2, weight, out_shape = linear_operands(x, weight, op)
    p = prepare_operands(x2, weight.T, x_zero_point, 0, bias, op, LINEAR_NAMES)
    acc = (p.a.astype(np.int64) - p.a_zp) @ p.b.astype(np.int64) + p.bias
    return acc.reshape(out_shape)


# ---------------------------------------------------------------------------------------- numba kernels


@parallel_kernel
def _shiftto_float(src, zero_point, dst):
    """``dst[i] = src[i] - zero_point`` (int64 subtraction; the caller proved the result is float-exact)."""
    for i in prange(src.shape[0]):
        dst[i] = np.int64(src[i]) - zero_point


@parallel_kernel
def _shift_to_float_row_sums(src, zero_point, dst, sums):
    """``dst = src - zero_point`` on ``(R, K)`` rows, and ``sums[r] = sum_k |src[r, k] - zero_point|`` in int64.

    The sums cannot overflow: ``sum_k |x| <= K * max|x|``, which the caller proved fits int64.
    """
    for r in prange(src.shape[0]):
        total = np.int64(0)
        for k in range(src.shape[1]):
            x = np.int64(src[r, k]) - zero_point
            dst[r, k] = x
            total += abs(x)
        sums[r] = total


@parallel_kernel
def _shift_to_float_column_sums(src, zero_point, dst, sums):
    """``dst = src - zero_point`` on ``(T, K, N)``, and ``sums[t, n] = sum_k |src[t, k, n] - zero_point|``."""
    for t in prange(src.shape[0]):
        for n in range(src.shape[2]):
            sums[t, n] = 0
        for k in range(src.shape[1]):
            for n in range(src.shape[2]):
                x = np.int64(src[t, k, n]) - zero_point
                dst[t, k, n] = x
                sums[t, n] += abs(x)


@parallel_kernel
def _splitto_float(src, zero_point, shift, hi, lo):
    """``x = src - zero_point = hi * 2**shift + lo`` with ``hi = x >> shift`` (floor) and ``0 <= lo < 2**shift``."""
    for i in prange(src.shape[0]):
        x = np.int64(src[i]) - zero_point
        high = x >> shift
        hi[i] = high
        lo[i] = x - (high << shift)


@parallel_kernel
def _store_chunk(chunk, bias, out, accumulate):
    """First chunk: ``out = int64(chunk) + bias``; later chunks: ``out += int64(chunk)`` (exact integers)."""
    for r in prange(chunk.shape[0]):
        if accumulate:
            for n in range(chunk.shape[1]):
                out[r, n] += np.int64(chunk[r, n])
        else:
            for n in range(chunk.shape[1]):
                out[r, n] = np.int64(chunk[r, n]) + bias[n]


@parallel_kernel
def _store_split(hi, lo, shift, bias, out):
    """``out = int64(hi) * 2**shift + int64(lo) + bias``: the two digit products recombined exactly."""
    scale = np.int64(1) << shift
    for r in prange(hi.shape[0]):
        for n in range(hi.shape[1]):
            out[r, n] = np.int64(hi[r, n]) * scale + np.int64(lo[r, n]) + bias[n]


@parallel_kernel
def _int64_matmul(a, b, a_zp, b_zp, bias, out):
    """Plain int64 loops for operands too wide for float64 (``A * B > 2**53``): ``a (T, M, K)``, ``b (T, K, N)``."""
    rows = a.shape[0] * a.shape[1]
    for row in prange(rows):
        t = row // a.shape[1]
        m = row % a.shape[1]
        for n in range(b.shape[2]):
            out[t, m, n] = bias[n]
        for k in range(a.shape[2]):
            x = np.int64(a[t, m, k]) - a_zp
            for n in range(b.shape[2]):
                out[t, m, n] += x * (np.int64(b[t, k, n]) - b_zp)


# ------------------------------------------------------------------------------------ conversion, planning


_WORKSPACE = threading.local()  # per-thread float scratch buffers, kept between calls (no page faults)


def workspace(slot: str, shape, dtype) -> np.ndarray:
    """A C-ordered scratch array of ``shape`` from this thread's buffer ``slot``, grown when too small.

    Reusing the buffers saves the page faults of fresh allocations (about as costly as the conversions
    themselves for ViT-sized operands). The buffers hold nothing a caller sees: only ``out`` is returned.
    The memory kept is the largest operands' float copies seen so far on this thread.
    """
    buffers = _WORKSPACE.__dict__.setdefault("buffers", {})
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = buffers.get(slot)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = buffers[slot] = np.empty(max(nbytes, 64), dtype=np.uint8)
    return buffer[:nbytes].view(dtype).reshape(shape)


def to_float(x: np.ndarray, zero_point: int, dtype, sums: str | None = None, slot: str | None = None):
    """``(x - zero_point)`` as a new float array of ``x``'s shape, and the largest sum of ``|x - zero_point|``.

    ``sums`` is ``"rows"`` (along the last axis), ``"columns"`` (along the second-to-last axis) or ``None``
    (no sums; the second value is then ``None``). A transposed 2-D operand (F-ordered, e.g. ``weight.T``)
    is converted in its own memory order and returned F-ordered (BLAS takes it without a copy). With a
    ``slot`` the result lives in that workspace buffer (valid until the next use of the slot).
    """
    if x.ndim == 2 and x.flags.f_contiguous and not x.flags.c_contiguous:
        flipped = {"rows": "columns", "columns": "rows", None: None}[sums]
        out, largest = to_float(x.T, zero_point, dtype, flipped, slot)
        return out.T, largest
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, dtype=dtype) if slot is None else workspace(slot, x.shape, dtype)
    zp = np.int64(zero_point)
    if sums is None:
        if x.size:
            _shiftto_float(x.reshape(-1), zp, out.reshape(-1))
        return out, None
    if x.size == 0:
        return out, 0
    if sums == "rows":
        totals = np.empty(x.size // x.shape[-1], dtype=np.int64)
        _shift_to_float_row_sums(x.reshape(-1, x.shape[-1]), zp, out.reshape(-1, x.shape[-1]), totals)
    else:
        shape3 = (-1,) + x.shape[-2:]
        totals = np.empty((x.size // (x.shape[-2] * x.shape[-1]), x.shape[-1]), dtype=np.int64)
        _shift_to_float_column_sums(x.reshape(shape3), zp, out.reshape(shape3), totals)
    return out, int(totals.max())


class ProductPlan(NamedTuple):
    """How the kernel computes one product.

    ``dtype`` float32/float64 carrier, or ``None`` for int64 loops; ``chunk`` the number of ``k`` per BLAS
    call (``K`` when one call); ``bound`` the proved bound on every partial sum of one call; ``split > 0``:
    ``a - a_zp = hi * 2**split + lo`` and two float32 products ``hi @ b``, ``lo @ b`` over all of ``K``.
    """

    dtype: type | None
    chunk: int
    bound: int
    split: int = 0


def _split_shift(k: int, a_abs: int, b_abs: int, limit: int) -> int:
    """The largest ``s`` with ``K * (2**s - 1) * B <= limit``, if the high digits also fit; else 0."""
    shift = (limit // (k * b_abs) + 1).bit_length() - 1
    if shift < 1 or k * -(-a_abs >> shift) * b_abs > limit:  # |hi| <= ceil(A / 2**s)
        return 0
    return shift


def _plan(p: MatmulOperands, *, sums=None, f32_exact=FLOAT32_EXACT, f64_exact=FLOAT64_EXACT, min_f32_chunk=MIN_FLOAT32_CHUNK) -> ProductPlan:
    """Choose the carrier, the K-chunk or the digit split (module docstring); limits are parameters for tests.

    ``sums`` = ``(largest row sum of |a - a_zp|, largest column sum of |b - b_zp|)`` when already known.
    """
    k = p.a.shape[-1]
    product = p.a_abs * p.b_abs  # >= 1 here
    whole = k * product
    if whole <= f32_exact:
        return ProductPlan(np.float32, k, whole)
    if sums is None:
        sums = (to_float(p.a, p.a_zp, np.float64, "rows")[1], to_float(p.b, p.b_zp, np.float64, "columns")[1])
    tight = min(whole, sums[0] * p.b_abs, sums[1] * p.a_abs)
    if tight <= f32_exact:
        return ProductPlan(np.float32, k, tight)
    chunk = f32_exact // product
    if chunk >= min_f32_chunk:
        column_chunk = _column_chunk(p, f32_exact, chunk) if p.b.ndim == 2 else None
        if column_chunk is not None:
            return ProductPlan(np.float32, *column_chunk)
        return ProductPlan(np.float32, chunk, chunk * product)
    column_chunk = _column_chunk(p, f32_exact, min(min_f32_chunk, MIN_COLUMN_CHUNK) - 1) if p.b.ndim == 2 else None
    if column_chunk is not None:
        return ProductPlan(np.float32, *column_chunk)
    shift = _split_shift(k, p.a_abs, p.b_abs, f32_exact)
    if shift:
        return ProductPlan(np.float32, k, k * max((1 << shift) - 1, -(-p.a_abs >> shift)) * p.b_abs, shift)
    if tight <= f64_exact:
        return ProductPlan(np.float64, k, tight)
    chunk = f64_exact // product
    if chunk >= 1:
        return ProductPlan(np.float64, chunk, chunk * product)
    return ProductPlan(None, k, whole)


def _column_chunk(p: MatmulOperands, limit: int, smallest: int) -> tuple[int, int] | None:
    """``(chunk, bound)``: the longest K-chunk (of equal chunks, each longer than ``smallest``) such that every chunk's
    ``max|a - a_zp| * max_n sum_{k in chunk} |b[k, n] - b_zp|`` is ``<= limit``, or ``None``.

    Every intermediate of one chunk's float product is a partial sum over a subset of that chunk (module
    docstring), bounded by this column-sum bound, so such a chunk is exact. It beats ``limit // (A * B)`` when
    a few columns of a 2-D ``b`` are much larger than the rest (weights shifted by PTF input factors).
    """
    k = p.b.shape[0]
    if p.a_abs == 0 or k < 2:
        return None
    sums = np.zeros((k + 1, p.b.shape[1]), dtype=np.int64)
    np.cumsum(np.abs(p.b.astype(np.int64) - p.b_zp), axis=0, out=sums[1:])
    for count in range(2, k + 1):
        chunk = -(-k // count)
        if chunk <= smallest:
            return None
        starts = np.arange(0, k, chunk)
        ends = np.minimum(starts + chunk, k)
        bound = p.a_abs * int((sums[ends] - sums[starts]).max())
        if bound <= limit:
            return chunk, bound
    return None


# ------------------------------------------------------------------------------------ row-blocked products

ROWS_PER_BLOCK = 128  # rows of ``a`` per block: the block's float copy and product stay in the core's cache


@kernel
def _blockto_float(src, zero_point, dst):
    """``dst = src - zero_point`` on one ``(R, K)`` block (serial: each block runs on one thread)."""
    for r in range(src.shape[0]):
        for k in range(src.shape[1]):
            dst[r, k] = np.int64(src[r, k]) - zero_point


@kernel
def _add_chunk(chunk, acc, first):
    """``acc = int64(chunk)`` (first K-chunk) or ``acc += int64(chunk)``: exact integers (bounds proved)."""
    for r in range(chunk.shape[0]):
        if first:
            for n in range(chunk.shape[1]):
                acc[r, n] = np.int64(chunk[r, n])
        else:
            for n in range(chunk.shape[1]):
                acc[r, n] += np.int64(chunk[r, n])


@kernel
def _finish_store(acc, bias, out):
    """``out = int64(acc) + bias``: the plain epilogue (an int64 accumulator per output)."""
    for r in range(acc.shape[0]):
        for n in range(acc.shape[1]):
            out[r, n] = np.int64(acc[r, n]) + bias[n]


def row_blocked_product(a: np.ndarray, a_zero_point: int, b_float: np.ndarray, chunk: int, finish) -> None:
    """The exact product ``(a - a_zero_point) @ b`` by blocks of :data:`ROWS_PER_BLOCK` rows, each block on one thread.

    ``a`` integer ``(M, K)``; ``b_float`` ``(K, N)``, ``b - b_zero_point`` already converted to the float carrier
    (any memory order); ``chunk`` the K-chunk length that :func:`_plan` proved exact in that carrier (``>= K``:
    one BLAS call per block). ``finish(acc, start, stop)`` receives each block's exact accumulator, without bias,
    as the carrier's floats (one chunk) or int64 (several), and must consume it before returning (the buffer
    is reused). Blocks run on :func:`~intsim.ops._threads.run_row_ranges`'s threads with single-threaded BLAS.

    Exactness is the module's proof applied per block (a block's partial sums are partial sums of the whole);
    a row's result does not depend on the block it falls in, nor on the thread count.
    """
    rows, k = a.shape
    n = b_float.shape[1]
    chunks = -(-k // chunk)
    size = -(-k // chunks)  # equal chunks, each <= chunk
    zero_point = np.int64(a_zero_point)

    def work(start, stop):
        block_float = workspace("block_a", (stop - start, k), b_float.dtype)
        _blockto_float(a[start:stop], zero_point, block_float)
        product = workspace("block_product", (stop - start, n), b_float.dtype)
        if chunks == 1:
            np.matmul(block_float, b_float, out=product)
            finish(product, start, stop)
            return
        acc = workspace("block_acc", (stop - start, n), np.int64)
        for index, first in enumerate(range(0, k, size)):
            np.matmul(block_float[:, first : first + size], b_float[first : first + size], out=product)
            _add_chunk(product, acc, index == 0)
        finish(acc, start, stop)

    with single_threaded_blas():
        run_row_ranges(rows, ROWS_PER_BLOCK, work)


def column_abs_sum_max(b: np.ndarray, zero_point: int) -> int:
    """``max_n sum_k |b[k, n] - zero_point|`` of a 2-D ``(K, N)`` operand, exact (a bound for :func:`_plan`)."""
    if b.size == 0:
        return 0
    return int(np.abs(b.astype(np.int64) - zero_point).sum(axis=0).max())


def plan_weight_product(p: MatmulOperands, columns: int | None = None, **limits) -> ProductPlan:
    """The plan of a product whose ``b`` is 2-D, from ``b``'s column sums alone (no pass over ``a``).

    The row sums of ``|a - a_zp|`` are bounded by ``K * max|a - a_zp|``, so the plan stays proved; it may chunk
    where the actual row sums would have allowed one call (same result, a little more work). ``columns``: the
    caller's :func:`column_abs_sum_max` of ``b``, when it already has it.
    """
    k = p.a.shape[-1]
    if columns is None:
        columns = column_abs_sum_max(p.b.reshape(k, -1), p.b_zp)
    return _plan(p, sums=(k * p.a_abs, columns), **limits)


@contextlib.contextmanager
def _numba_threads(count: int):
    """Run numba's parallel loops on ``count`` threads inside the block (small products: no thread launch)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(min(count, previous))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _matmul(p: MatmulOperands, **limits) -> np.ndarray:
    """The exact kernel on validated operands; small products run their numba loops on one thread."""
    if p.a.size + p.b.size + int(np.prod(p.out_shape)) < SERIAL_BELOW:
        with _numba_threads(1):
            return _matmul_any(p, **limits)
    return _matmul_any(p, **limits)


def _matmul_any(p: MatmulOperands, **limits) -> np.ndarray:
    out_shape = p.out_shape
    k, n = p.a.shape[-1], p.b.shape[-1]
    out = np.empty(out_shape, dtype=np.int64)
    if out.size == 0:
        return out
    if k == 0 or p.a_abs == 0 or p.b_abs == 0:
        out[...] = p.bias
        return out
    a, b = p.a, p.b
    batch = out_shape[:-2]
    if b.ndim == 2 or all(d == 1 for d in b.shape[:-2]):
        a = a.reshape(-1, k)  # one big GEMM instead of a batch of small ones (numpy loops over the batch)
        b = b.reshape(k, n)
        batch = ()
    if not batch:
        plan = plan_weight_product(p, **limits)
        if plan.dtype is np.float32 and not plan.split:
            out2 = out.reshape(-1, n)
            b_float = to_float(b, p.b_zp, np.float32)[0]
            row_blocked_product(a, p.a_zp, b_float, plan.chunk,
                                lambda acc, start, stop: _finish_store(acc, p.bias, out2[start:stop]))
            return out
    f32 = limits.get("f32_exact", FLOAT32_EXACT)
    af = bf = sums = None
    if k * p.a_abs * p.b_abs > f32:
        # the bound needs the row/column sums: get them while converting (float32 when that is exact)
        carrier = np.float32 if max(p.a_abs, p.b_abs) <= f32 else np.float64
        af, row_max = to_float(a, p.a_zp, carrier, "rows", "a")
        bf, column_max = to_float(b, p.b_zp, carrier, "columns", "b")
        sums = (row_max, column_max)
    plan = _plan(p, sums=sums, **limits)
    if plan.dtype is None:
        a3 = np.ascontiguousarray(np.broadcast_to(p.a, out_shape[:-2] + p.a.shape[-2:])).reshape(-1, *p.a.shape[-2:])
        b3 = np.ascontiguousarray(np.broadcast_to(p.b, out_shape[:-2] + p.b.shape[-2:])).reshape(-1, k, n)
        _int64_matmul(a3, b3, np.int64(p.a_zp), np.int64(p.b_zp), p.bias, out.reshape(-1, *out_shape[-2:]))
        return out
    if bf is None or bf.dtype != plan.dtype:
        bf = to_float(b, p.b_zp, plan.dtype, slot="b")[0]
    out2 = out.reshape(-1, n)
    if plan.split:
        a = np.ascontiguousarray(a).reshape((1,) * (len(batch) + 2 - a.ndim) + a.shape)  # batch rank of the output
        digits = workspace("a", (2,) + a.shape, np.float32)  # [0]: high digits, [1]: low digits
        _splitto_float(a.reshape(-1), np.int64(p.a_zp), np.int64(plan.split), digits[0].reshape(-1), digits[1].reshape(-1))
        products = workspace("out", (2,) + np.broadcast_shapes(a.shape[:-2], bf.shape[:-2]) + (a.shape[-2], n), np.float32)
        np.matmul(digits, bf, out=products)  # (2, *batch, M, N)
        _store_split(products[0].reshape(-1, n), products[1].reshape(-1, n), np.int64(plan.split), p.bias, out2)
        return out
    if af is None or af.dtype != plan.dtype:
        af = to_float(a, p.a_zp, plan.dtype, slot="a")[0]
    buffer = workspace("out", np.broadcast_shapes(af.shape[:-2], bf.shape[:-2]) + (af.shape[-2], n), plan.dtype)
    chunk_out = buffer.reshape(-1, n)
    chunks = -(-k // plan.chunk)
    size = -(-k // chunks)  # equal chunks, each <= plan.chunk
    for index, start in enumerate(range(0, k, size)):
        if chunks == 1:
            np.matmul(af, bf, out=buffer)
        else:
            np.matmul(af[..., start : start + size], bf[..., start : start + size, :], out=buffer)
        _store_chunk(chunk_out, p.bias, out2, index > 0)
    return out


# ------------------------------------------------------------------------------------------ public ops


def integer_matmul(a, b, *, a_zero_point=0, b_zero_point=0, bias=None):
    """Exact int64 ``sum_k (a[..., m, k] - a_zero_point) * (b[..., k, n] - b_zero_point) + bias[n]``.

    See the module docstring for the integer contract (accumulator bound ``K * max|a - a_zp| *
    max|b - b_zp| + max|bias|``, int32 enough below ``2**31``) and the proof that the float32/float64 BLAS
    chunks are exact. Raises ``TypeError`` for non-integer ``a``, ``b``, ``bias`` or zero points,
    ``ValueError`` for shapes that do not matmul/broadcast and out-of-int32 bias values, and
    ``OverflowError`` when the exact result could leave int64.

    >>> import numpy as np
    >>> a = np.array([[255, 0], [3, 4]], dtype=np.uint8)
    >>> b = np.array([[-128, 1], [127, 2]], dtype=np.int8)
    >>> integer_matmul(a, b, a_zero_point=128, bias=np.array([10, -10]))
    array([[-32502,   -139],
           [   262,   -383]])
    """
    return _matmul(prepare_operands(a, b, a_zero_point, b_zero_point, bias))


def integer_linear(x, weight, *, x_zero_point=0, bias=None, x_shift=None):
    """Exact int64 ``((x - x_zero_point) << x_shift) @ weight.T + bias``: a quantized ``nn.Linear``.

    ``x`` codes ``(..., K)`` with a per-tensor zero point, ``weight`` symmetric per-output-channel codes
    ``(N, K)`` (zero point 0; int8 in intsim's default scheme; the per-channel scales are requantization
    metadata, not used here), ``bias`` int32 ``(N,)`` at scale ``s_x * s_w[n]``. Returns int64 ``(..., N)``,
    equal to ``integer_matmul(x, weight.T)`` on the last axis; same bound, proof and errors.

    ``x_shift`` (optional): integers ``(K,)`` in ``[0, 15]``, a power-of-two factor per input channel (PTF codes,
    channel ``k`` at scale ``s_x * 2**x_shift[k]``): every term is ``(x[k] - x_zero_point) * 2**x_shift[k] * w[n, k]``
    (:func:`shifted_linear_input`); the bound is then proved for the shifted operand.

    >>> import numpy as np
    >>> integer_linear(np.array([[1, 2, 3]], dtype=np.uint8), np.array([[1, 0, -1], [2, 2, 2]], dtype=np.int8),
    ...                x_zero_point=1, bias=np.array([0, 100]))
    array([[ -2, 106]])
    """
    op = "integer_linear"
    if x_shift is not None:
        linear_operands(x, weight, op)  # shape errors first, as without x_shift
        # the reference's proof that the shifted input fits int64 (same errors), then the weight form of it
        x, x_zero_point, x_shift = _checked_input_shift(x, x_zero_point, x_shift, op)
        weight = shifted_linear_weight(weight, x_shift, op)
    x2, weight, out_shape = linear_operands(x, weight, op)
    return _matmul(prepare_operands(x2, weight.T, x_zero_point, 0, bias, op, LINEAR_NAMES)).reshape(out_shape)
