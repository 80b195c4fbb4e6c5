"""Torch twins of every run-time integer op of :mod:`intsim.ops`: the same integer semantics, bit for bit.

The fake-quant torch model computes, in its ``exact`` precision, the same integers as the Program. It does so
with these functions, which are an implementation of the specification (the ``*_reference`` functions of
:mod:`intsim.ops`, described in ``docs/semantics.md``) that is independent of the numba kernels: two
implementations, one spec, cross-checked by ``tests/quant/test_torch_ops.py`` on every generated case.

API
    One function per op of :data:`intsim.ops.OPS`, with the SAME name and the SAME signature (parameter
    names, keyword-only-ness, defaults; the constants arguments are the same dataclasses,
    :class:`~intsim.ops.softmax.IExpConstants` and :class:`~intsim.ops.gelu.IGeluConstants`):
    :func:`requantize`, :func:`integer_matmul`, :func:`integer_linear`, :func:`isqrt`, :func:`ptf_layernorm`,
    :func:`int_exp`, :func:`log_int_softmax`, :func:`uniform_int_softmax`, :func:`lis_attention_values`,
    :func:`lut_lookup`, :func:`i_gelu`, :func:`residual_add`; plus :func:`round_shift`, the twin of
    :func:`intsim.ops.rounding.rounding_shift_right_reference` and the ONE place where the torch side rounds.

Integer contract (common to every twin)
    inputs   torch tensors of any integer dtype but ``torch.uint64`` (CPU or CUDA; the result lives on the
             device of the op's main tensor). Per-channel parameters (multipliers, shifts, ``alpha``, ``bias``,
             ``table``, ``mask``) may also be numpy arrays, lists or Python ints: :func:`as_int64_tensor`
             converts them. Float, complex and bool tensors raise ``TypeError`` naming the op.
    compute  torch int64 only (``+ - * // >> << &``, comparisons, ``torch.where``): no float touches a value,
             except the exact float64 matmul below.
    outputs  ALWAYS int64, for accumulators and for codes alike (the numpy ops narrow codes to the smallest
             dtype holding ``[qmin, qmax]``; the twins do not: callers compare values, not dtypes).
    bounds   the same int64 bounds as the numpy side are proved, from the actual ``max |values|`` as exact
             Python ints, before computing; ``OverflowError`` naming the op otherwise. Argument validation is
             lighter than on the numpy side (types, shapes, ranges that the integer algorithm relies on).
    rounding every rounding right shift is :func:`round_shift` with the op's ``rounding`` attribute
             (``half_up`` ties toward +inf, ``half_even`` ties to even, ``half_away`` ties away from zero),
             written as floor shift plus remainder test, so it never overflows int64.

Float64 matmuls are exact (``integer_matmul``, ``integer_linear``, ``lis_attention_values``)
    The product of the centred operands is computed with one float64 BLAS call (``torch.matmul`` on float64)
    when the exact Python-int bound ``K * max|a - a_zp| * max|b - b_zp|`` is ``<= 2**53``: every intermediate
    a BLAS forms (any order, blocking or FMA) is then an integer partial sum of magnitude ``<= 2**53``, which
    float64 represents exactly, and IEEE operations on exact operands with a representable exact result return
    it; so the float64 result is the exact integer, converted back to int64 without loss. TF32 cannot affect
    it: TF32 (``torch.backends.cuda.matmul.allow_tf32``, ``torch.set_float32_matmul_precision``) applies to
    float32 matmuls only, never to float64. Above ``2**53`` the product runs as an int64 ``torch.matmul`` on
    CPU; on CUDA (no int64 matmul there) as float64 matmuls on K-chunks of ``floor(2**53 / (A * B))`` columns
    summed in int64, and when even one term exceeds ``2**53`` (``A * B > 2**53``) it raises
    ``NotImplementedError``. (Opt-in FP64 emulation in cuBLAS, e.g. the Ozaki scheme on newer GPUs, is not
    covered by this argument; it is off by default.)

Memory: the row-wise ops (softmax, LayerNorm) process the rows in chunks of about ``2**22`` elements, so that
their int64 temporaries stay near 32 MB per tensor whatever the batch.
"""

from __future__ import annotations

import numpy as np
import torch

from intsim.ops._checks import INT64_MAX, INT64_MIN, as_int_array, check_int, check_int_bounds_fit, int_range
from intsim.ops.gelu import MAX_LUT_BITS, IGeluConstants
from intsim.ops.layernorm import (
    MAX_CHANNELS,
    MAX_PTF_ALPHA,
    NORM_FRACTION_BITS,
    RECIPROCAL_BITS,
    normalized_bound,
)
from intsim.ops.matmul import MAX_INPUT_SHIFT
from intsim.ops.requant import MAX_SHIFT, MULTIPLIER_BITS
from intsim.ops.rounding import rounding_code
from intsim.ops.softmax import LIS_VALUE_SHIFT, ZERO_CODE, IExpConstants, uniform_levels

__all__ = [
    "FLOAT64_EXACT",
    "ROW_CHUNK_ELEMENTS",
    "as_int64_tensor",
    "round_shift",
    "requantize",
    "integer_matmul",
    "integer_linear",
    "isqrt",
    "ptf_layernorm",
    "int_exp",
    "log_int_softmax",
    "uniform_int_softmax",
    "lis_attention_values",
    "lut_lookup",
    "i_gelu",
    "residual_add",
]

FLOAT64_EXACT = 2**53  # every integer of magnitude <= 2**53 is a float64
ROW_CHUNK_ELEMENTS = 2**22  # row-wise ops work on about this many elements at a time
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_MAX_MULTIPLIER = 2**MULTIPLIER_BITS - 1
_REFUSED_DTYPES = {torch.bool, torch.uint64}


# ------------------------------------------------------------------------------------------------ helpers


def as_int64_tensor(value, name: str, op: str, device=None) -> torch.Tensor:
    """``value`` (torch tensor, numpy array, list or Python int) as an int64 torch tensor, or ``TypeError``.

    Float, complex, bool and uint64 values are refused (uint64 does not fit int64 arithmetic). A tensor stays
    on its device unless ``device`` is given; anything else is created on ``device`` (default CPU).
    """
    if isinstance(value, torch.Tensor):
        if value.dtype in _REFUSED_DTYPES or value.dtype.is_floating_point or value.dtype.is_complex:
            raise TypeError(f"{op}: {name} must be an integer tensor (not bool or uint64), got dtype {value.dtype}")
        return value.to(device=device if device is not None else value.device, dtype=torch.int64)
    array = as_int_array(value, name, op)  # TypeError for floats, bools, objects and uint64
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(device=device or "cpu")


def _bounds(x: torch.Tensor) -> tuple[int, int] | None:
    """``(min, max)`` of an int64 tensor as exact Python ints, ``None`` when it is empty."""
    if x.numel() == 0:
        return None
    low, high = torch.aminmax(x)
    return int(low), int(high)


def _abs_max(x: torch.Tensor, zero_point: int = 0) -> int:
    """``max |x - zero_point|`` as an exact Python int (0 for an empty tensor)."""
    found = _bounds(x)
    return 0 if found is None else max(abs(found[0] - zero_point), abs(found[1] - zero_point))


def _check_codes(x: torch.Tensor, name: str, op: str, lo: int, hi: int) -> None:
    """``ValueError`` when a value of ``x`` lies outside its declared range ``[lo, hi]``."""
    found = _bounds(x)
    if found is not None and (found[0] < lo or found[1] > hi):
        bad = found[0] if found[0] < lo else found[1]
        raise ValueError(f"{op}: {name} holds {bad}, outside its declared code range [{lo}, {hi}]")


def _per_channel(value, name: str, op: str, channels: int, lo: int, hi: int, device) -> torch.Tensor:
    """A scalar or ``(1,)``/``(C,)`` integer parameter in ``[lo, hi]``, as an int64 tensor of shape ``(1,)`` or ``(C,)``."""
    tensor = as_int64_tensor(value, name, op, device)
    if tensor.dim() > 1 or (tensor.dim() == 1 and tensor.shape[0] not in (1, channels)):
        raise ValueError(
            f"{op}: {name} must be a scalar or a per-channel vector of length {channels}, got shape {tuple(tensor.shape)}"
        )
    _check_codes(tensor, name, op, lo, hi)
    return tensor.reshape(-1)


def _check_bool(value, name: str, op: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def _mask(mask, shape, op: str, device) -> torch.Tensor | None:
    """The softmax mask as a bool tensor broadcast to ``shape``; ``TypeError`` unless boolean."""
    if mask is None:
        return None
    if isinstance(mask, torch.Tensor):
        if mask.dtype != torch.bool:
            raise TypeError(f"{op}: mask must be a boolean tensor (True = takes part), got dtype {mask.dtype}")
        tensor = mask.to(device)
    else:
        array = np.asarray(mask)
        if array.dtype != np.bool_:
            raise TypeError(f"{op}: mask must be a boolean array (True = takes part), got dtype {array.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    try:
        return torch.broadcast_to(tensor, shape)
    except RuntimeError:
        raise ValueError(f"{op}: mask of shape {tuple(tensor.shape)} does not broadcast to q's shape {tuple(shape)}") from None


def _row_chunks(rows: int, length: int):
    """Slices over ``rows`` rows of ``length`` elements, about :data:`ROW_CHUNK_ELEMENTS` elements each."""
    step = max(1, ROW_CHUNK_ELEMENTS // max(length, 1))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


# ----------------------------------------------------------------------------------------------- rounding


def _round_shift(x: torch.Tensor, shift, mode: int) -> torch.Tensor:
    """``round(x / 2**shift)`` on int64 ``x``, ``shift`` an int or an int64 tensor in ``[0, 62]`` (no checks).

    Floor shift plus a remainder test, with the remainder doubled so that ``shift = 0`` needs no special case:
    ``twice = 2 * (x mod 2**k)`` in ``[0, 2**(k+1))`` and ``unit = 2**k``; round up when ``twice > unit``, and on
    a tie (``twice == unit``, impossible for ``k = 0``) by the mode. No intermediate exceeds ``2**63 - 1``.
    """
    if isinstance(shift, torch.Tensor):
        unit = torch.ones_like(shift) << shift
    else:
        unit = 1 << int(shift)
    floor_quotient = x >> shift
    twice = (x - (floor_quotient << shift)) << 1
    if mode == 0:  # half_up: ties toward +inf
        round_up = twice >= unit
    elif mode == 1:  # half_even: ties to the even neighbour
        round_up = (twice > unit) | ((twice == unit) & ((floor_quotient & 1) == 1))
    else:  # half_away: ties away from zero
        round_up = (twice > unit) | ((twice == unit) & (x >= 0))
    return floor_quotient + round_up.to(torch.int64)


def round_shift(x, shift, rounding) -> torch.Tensor:
    """Torch twin of :func:`intsim.ops.rounding.rounding_shift_right_reference`: ``round(x / 2**shift)``, int64.

    ``x`` an integer tensor, ``shift`` an int or an integer tensor broadcasting against ``x``, every value in
    ``[0, 62]``; ties by ``rounding`` (``half_up``: toward +inf, ``half_even``: to even, ``half_away``: away from
    zero); ``shift = 0`` returns ``x``. Exact for every int64 ``x`` (no rounding addend that could overflow).

    >>> round_shift(torch.tensor([3, -3, 5, -5]), 1, "half_even").tolist()
    [2, -2, 2, -2]
    """
    op = "round_shift"
    x = as_int64_tensor(x, "x", op)
    mode = rounding_code(rounding, op)
    if isinstance(shift, (int, np.integer)) and not isinstance(shift, (bool, np.bool_)):
        shift = check_int(shift, "shift", op, lo=0, hi=MAX_SHIFT)
    else:
        shift = as_int64_tensor(shift, "shift", op, x.device)
        _check_codes(shift, "shift", op, 0, MAX_SHIFT)
    return _round_shift(x, shift, mode)


# ------------------------------------------------------------------------------------------------ requantize


def requantize(acc, multiplier, shift, *, zero_point=0, qmin=-128, qmax=127, rounding="half_up"):
    """Torch twin of :func:`intsim.ops.requant.requantize`: ``clip(round(acc * M / 2**k) + zero_point, qmin, qmax)``.

    ``multiplier``/``shift`` per tensor or per channel (last axis); ``|M| < 2**31``, ``k`` in ``[0, 62]``. The
    product ``acc * M`` is int64; like the numpy op it is proved to fit (``|acc*M| + 2**(k-1)`` and the shifted
    value plus ``zero_point``, per channel) unless ``acc`` is at most 32 bits wide. Returns int64 codes.
    """
    op = "requantize"
    acc_in = acc
    acc = as_int64_tensor(acc, "acc", op)
    qmin = check_int(qmin, "qmin", op, lo=_INT32_MIN, hi=_INT32_MAX)
    qmax = check_int(qmax, "qmax", op, lo=qmin, hi=_INT32_MAX)
    zero_point = check_int(zero_point, "zero_point", op, lo=qmin, hi=qmax)
    mode = rounding_code(rounding, op)
    channels = acc.shape[-1] if acc.dim() else 1
    multipliers = _per_channel(multiplier, "multiplier", op, channels, -_MAX_MULTIPLIER, _MAX_MULTIPLIER, acc.device)
    shifts = _per_channel(shift, "shift", op, channels, 0, MAX_SHIFT, acc.device)
    narrow = (acc_in.element_size() if isinstance(acc_in, torch.Tensor) else np.asarray(acc_in).itemsize) <= 4
    if acc.numel() and not narrow:
        _check_requant_bounds(acc, multipliers, shifts, zero_point, op)
    rounded = _round_shift(acc * multipliers, shifts, mode)
    return torch.clamp(rounded + zero_point, qmin, qmax).reshape(acc.shape)


def _check_requant_bounds(acc, multipliers, shifts, zero_point, op):
    """A conservative global bound first (one pass); only when it fails, the exact per-channel bound of the numpy op."""
    m_list, k_list = [abs(v) for v in multipliers.tolist()], shifts.tolist()
    acc_bound = _abs_max(acc)
    product = acc_bound * max(m_list)
    if product + (1 << max(k_list) >> 1) <= INT64_MAX and (product >> min(k_list)) + 1 + abs(zero_point) <= INT64_MAX:
        return
    channels = max(len(m_list), len(k_list))
    per_channel = acc.reshape(-1, acc.shape[-1] if acc.dim() else 1)
    if channels > 1:
        lows, highs = (v.tolist() for v in torch.aminmax(per_channel, dim=0))
    else:
        lows, highs = [int(per_channel.min())], [int(per_channel.max())]
    for c in range(channels):
        bound = max(abs(lows[c % len(lows)]), abs(highs[c % len(highs)]))
        m, k = m_list[c % len(m_list)], k_list[c % len(k_list)]
        check_int_bounds_fit(bound * m + (1 << k >> 1), f"acc * multiplier (channel {c})", op)
        check_int_bounds_fit(((bound * m) >> k) + 1 + abs(zero_point), f"the shifted result plus zero_point (channel {c})", op)


# --------------------------------------------------------------------------------------------------- matmul


def _centred_matmul(a_c, b_c, a_abs: int, b_abs: int, *, f64_exact: int = FLOAT64_EXACT, int64_matmul: bool | None = None):
    """Exact int64 ``a_c @ b_c`` of centred int64 operands with ``max|a_c| = a_abs``, ``max|b_c| = b_abs``.

    One float64 matmul when ``K * a_abs * b_abs <= f64_exact``; else an int64 matmul (``int64_matmul``, default:
    on CPU only), else float64 K-chunks of ``f64_exact // (a_abs * b_abs)`` columns summed in int64, else
    ``NotImplementedError``. ``f64_exact`` and ``int64_matmul`` are parameters so that tests reach every path.
    """
    k = a_c.shape[-1]
    out_shape = torch.broadcast_shapes(a_c.shape[:-2], b_c.shape[:-2]) + (a_c.shape[-2], b_c.shape[-1])
    if k == 0 or a_abs == 0 or b_abs == 0:
        return torch.zeros(out_shape, dtype=torch.int64, device=a_c.device)
    term = a_abs * b_abs
    if k * term <= f64_exact:
        return torch.matmul(a_c.to(torch.float64), b_c.to(torch.float64)).to(torch.int64)
    if int64_matmul is None:
        int64_matmul = a_c.device.type == "cpu"
    if int64_matmul:
        return torch.matmul(a_c, b_c)
    chunk = f64_exact // term
    if chunk < 1:
        raise NotImplementedError(
            f"exact matmul on {a_c.device.type}: a single product can reach {term} > 2**53, which float64 cannot hold, "
            f"and this device has no int64 matmul; move the operands to the CPU"
        )
    out = torch.zeros(out_shape, dtype=torch.int64, device=a_c.device)
    for start in range(0, k, chunk):
        part = torch.matmul(a_c[..., start : start + chunk].to(torch.float64), b_c[..., start : start + chunk, :].to(torch.float64))
        out += part.to(torch.int64)  # each part is exact (<= 2**53); the running sum is bounded by the proof
    return out


def _matmul(a, b, a_zero_point, b_zero_point, bias, op, names=("a", "b", "a_zero_point", "b_zero_point")):
    a_name, b_name, a_zp_name, b_zp_name = names
    a = as_int64_tensor(a, a_name, op)
    b = as_int64_tensor(b, b_name, op, a.device)
    if a.dim() < 2 or b.dim() < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"{op}: {a_name} must have shape (..., M, K) and {b_name} shape (..., K, N), "
            f"got {a_name}.shape = {tuple(a.shape)} and {b_name}.shape = {tuple(b.shape)}"
        )
    try:
        torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except RuntimeError:
        raise ValueError(f"{op}: the batch dimensions of {tuple(a.shape)} and {tuple(b.shape)} do not broadcast") from None
    a_zp = check_int(a_zero_point, a_zp_name, op, lo=INT64_MIN, hi=INT64_MAX)
    b_zp = check_int(b_zero_point, b_zp_name, op, lo=INT64_MIN, hi=INT64_MAX)
    n = b.shape[-1]
    bias_abs = 0
    if bias is not None:
        bias = as_int64_tensor(bias, "bias", op, a.device)
        if tuple(bias.shape) != (n,):
            raise ValueError(f"{op}: bias must have shape (N,) = ({n},), got shape {tuple(bias.shape)}")
        _check_codes(bias, "bias", op, _INT32_MIN, _INT32_MAX)
        bias_abs = _abs_max(bias)
    a_abs, b_abs = _abs_max(a, a_zp), _abs_max(b, b_zp)
    check_int_bounds_fit(a_abs, f"{a_name} - {a_zp_name}", op)
    check_int_bounds_fit(b_abs, f"{b_name} - {b_zp_name}", op)
    k = a.shape[-1]
    check_int_bounds_fit(
        k * a_abs * b_abs + bias_abs,
        f"the accumulator K * max|{a_name} - zp| * max|{b_name} - zp| + max|bias| (K = {k})", op,
    )
    out = _centred_matmul(a - a_zp, b - b_zp, a_abs, b_abs)
    return out if bias is None else out + bias


def integer_matmul(a, b, *, a_zero_point=0, b_zero_point=0, bias=None):
    """Torch twin of :func:`intsim.ops.matmul.integer_matmul`: exact int64 ``(a - a_zp) @ (b - b_zp) + bias``.

    ``a (..., M, K)``, ``b (..., K, N)`` (batch axes broadcast), ``bias`` int32 values ``(N,)`` or ``None``. The
    bound ``K * max|a - a_zp| * max|b - b_zp| + max|bias|`` is proved to fit int64 (``OverflowError``); the
    product is one exact float64 matmul below ``2**53`` (module docstring; TF32 never applies to float64).
    """
    return _matmul(a, b, a_zero_point, b_zero_point, bias, "integer_matmul")


def integer_linear(x, weight, *, x_zero_point=0, bias=None, x_shift=None):
    """Torch twin of :func:`intsim.ops.matmul.integer_linear`: exact int64
    ``((x - x_zp) << x_shift) @ weight.T + bias``.

    ``x (..., K)`` codes, ``weight (N, K)`` symmetric codes (zero point 0, ``nn.Linear`` layout), ``bias (N,)``,
    ``x_shift`` ``None`` or integers ``(K,)`` in ``[0, 15]`` (per input channel; the shifted input must fit int64).
    """
    op = "integer_linear"
    x = as_int64_tensor(x, "x", op)
    weight = as_int64_tensor(weight, "weight", op, x.device)
    if x_shift is not None:
        shift = as_int64_tensor(x_shift, "x_shift", op, x.device)
        if shift.dim() != 1 or x.dim() < 1 or shift.shape[0] != x.shape[-1]:
            raise ValueError(f"{op}: x_shift must have shape (K,) = ({x.shape[-1] if x.dim() else '?'},) (one shift "
                             f"per input channel), got shape {tuple(shift.shape)}")
        _check_codes(shift, "x_shift", op, 0, MAX_INPUT_SHIFT)
        zero_point = check_int(x_zero_point, "x_zero_point", op, lo=INT64_MIN, hi=INT64_MAX)
        top = int(shift.max()) if shift.numel() else 0
        check_int_bounds_fit(_abs_max(x, zero_point) << top, "max|x - x_zero_point| * 2**max(x_shift)", op)
        x, x_zero_point = (x - zero_point) << shift, 0
    if x.dim() < 1 or weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{op}: x must have shape (..., K) and weight shape (N, K), "
            f"got x.shape = {tuple(x.shape)} and weight.shape = {tuple(weight.shape)}"
        )
    out = _matmul(x.reshape(-1, x.shape[-1]), weight.t(), x_zero_point, 0, bias, op,
                  ("x", "weight", "x_zero_point", "weight zero point"))
    return out.reshape(tuple(x.shape[:-1]) + (weight.shape[0],))


# ---------------------------------------------------------------------------------------------------- isqrt


def _isqrt(n: torch.Tensor) -> torch.Tensor:
    """``floor(sqrt(n))`` of int64 ``n >= 0``: the binary restoring square root, 32 fixed iterations, vectorised."""
    rem = n.clone()
    res = torch.zeros_like(n)
    trial = torch.empty_like(n)
    take = torch.empty(n.shape, dtype=torch.bool, device=n.device)
    taken = torch.empty_like(n)
    bit = 1 << 62
    for _ in range(32):  # in place, one pass per step:
        torch.add(res, bit, out=trial)  # trial = res + bit (res < 2**31.5, bit <= 2**62: below 2**63)
        torch.ge(rem, trial, out=take)  # take = rem >= trial
        taken.copy_(take)
        rem.sub_(trial.mul_(taken))  # rem -= trial where taken
        res.bitwise_right_shift_(1).add_(taken.mul_(bit))  # res = (res >> 1) + (bit where taken)
        bit >>= 2
    return res


def isqrt(n) -> torch.Tensor:
    """Torch twin of :func:`intsim.ops.isqrt.isqrt`: ``floor(sqrt(n))`` of every value in ``[0, 2**63 - 1]``, int64.

    The digit-by-digit square root of :mod:`intsim.ops.isqrt` (32 iterations of compare, subtract, two shifts)
    on whole tensors. ``ValueError`` for negative values, ``TypeError`` for non-integer ones.

    >>> isqrt(torch.tensor([0, 3, 4, 2**63 - 1])).tolist()
    [0, 1, 2, 3037000499]
    """
    op = "isqrt"
    n = as_int64_tensor(n, "n", op)
    found = _bounds(n)
    if found is not None and found[0] < 0:
        raise ValueError(f"{op}: n holds {found[0]}; the square root needs n in [0, {INT64_MAX}]")
    return _isqrt(n)


# ------------------------------------------------------------------------------------------------ layernorm


def ptf_layernorm(
    q, *, zero_point, alpha, multiplier, bias, shift, out_zero_point=0, qmin=0, qmax=255, bits=8, signed=False,
    rounding="half_up",
):
    """Torch twin of :func:`intsim.ops.layernorm.ptf_layernorm`: integer LayerNorm of PTF codes, last axis; int64 codes.

    Per row: ``x_hat = (q - zp) << alpha``, ``S1``, ``S2``, ``D = C*S2 - S1**2``, ``sigma = isqrt(D)``,
    ``inv = 2**48 // sigma`` (0 when ``sigma = 0``), ``n = round_shift((C*x_hat - S1) * inv, 32)``,
    ``y = sat(round_shift(n*M + B, k) + out_zero_point, qmin, qmax)``; the same int64 bounds as the numpy op.
    """
    op = "ptf_layernorm"
    q = as_int64_tensor(q, "q", op)
    if q.dim() == 0:
        raise ValueError(f"{op}: q must have at least one axis (the last one holds the C channels), got a scalar")
    channels = q.shape[-1]
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"{op}: q has C = {channels} channels (last axis); allowed range [1, {MAX_CHANNELS}]")
    bits = check_int(bits, "bits", op, lo=1, hi=16)
    in_lo, in_hi = int_range(bits, _check_bool(signed, "signed", op))
    _check_codes(q, "q", op, in_lo, in_hi)
    zero_point = check_int(zero_point, "zero_point", op, lo=in_lo, hi=in_hi)
    qmin = check_int(qmin, "qmin", op, lo=_INT32_MIN, hi=_INT32_MAX)
    qmax = check_int(qmax, "qmax", op, lo=qmin, hi=_INT32_MAX)
    out_zero_point = check_int(out_zero_point, "out_zero_point", op, lo=qmin, hi=qmax)
    mode = rounding_code(rounding, op)
    device = q.device
    alpha = _per_channel(alpha, "alpha", op, channels, 0, MAX_PTF_ALPHA, device)
    multiplier = _per_channel(multiplier, "multiplier", op, channels, -_MAX_MULTIPLIER, _MAX_MULTIPLIER, device)
    bias = _per_channel(bias, "bias", op, channels, INT64_MIN, INT64_MAX, device)
    shift = _per_channel(shift, "shift", op, channels, 0, MAX_SHIFT, device)

    # the numpy op's bounds, from the declared code range and the constants (exact Python ints)
    x_bound = max(abs(in_lo - zero_point), abs(in_hi - zero_point)) << int(alpha.max())
    check_int_bounds_fit(channels * channels * x_bound * x_bound, "C*S2 and S1**2", op)
    check_int_bounds_fit(2 * channels * x_bound, "t = C*x_hat - S1", op)
    drop = RECIPROCAL_BITS - NORM_FRACTION_BITS
    bound_n = normalized_bound(channels)  # ceil(2*sqrt(C-1)) << F
    check_int_bounds_fit(((bound_n >> NORM_FRACTION_BITS) << RECIPROCAL_BITS) + (1 << (drop - 1)), "t * inv", op)
    m_list, b_list, k_list = (v.expand(channels).tolist() for v in (multiplier, bias, shift))
    for c in range(channels):
        affine = bound_n * abs(m_list[c]) + abs(b_list[c])
        check_int_bounds_fit(affine + (1 << k_list[c] >> 1), f"n * multiplier + bias (channel {c})", op)
        check_int_bounds_fit((affine >> k_list[c]) + 1 + abs(out_zero_point),
                             f"the shifted affine plus out_zero_point (channel {c})", op)

    rows = q.reshape(-1, channels)
    out = torch.empty_like(rows)
    one = 1 << RECIPROCAL_BITS
    for part in _row_chunks(rows.shape[0], channels):
        x_hat = (rows[part] - zero_point) << alpha
        s1 = x_hat.sum(dim=-1, keepdim=True)
        s2 = (x_hat * x_hat).sum(dim=-1, keepdim=True)
        sigma = _isqrt(channels * s2 - s1 * s1)
        inv = torch.where(sigma > 0, torch.full_like(sigma, one) // sigma.clamp_min(1), torch.zeros_like(sigma))
        n = _round_shift((channels * x_hat - s1) * inv, drop, mode)
        y = _round_shift(n * multiplier + bias, shift, mode) + out_zero_point
        out[part] = torch.clamp(y, qmin, qmax)
    return out.reshape(q.shape)


# -------------------------------------------------------------------------------------------------- softmax


def _check_exp_constants(constants, op) -> IExpConstants:
    if not isinstance(constants, IExpConstants):
        raise TypeError(f"{op}: constants must be an IExpConstants (from i_exp_constants), got {type(constants).__name__}")
    return constants


def _int_exp(x: torch.Tensor, c: IExpConstants) -> torch.Tensor:
    """I-BERT's i-exp on int64 ``x <= 0``: ``x = max(x, n*x0); q = x // x0; r = x - x0*q; max(z, 0) << (n - q)``."""
    x = torch.clamp_min(x, c.n * c.x0)
    q = torch.div(x, c.x0, rounding_mode="floor")  # in [0, n]
    r = x - c.x0 * q  # in (x0, 0]
    z = r * (r + c.b_int) + c.c_int
    return torch.clamp_min(z, 0) << (c.n - q)


def int_exp(x, constants: IExpConstants) -> torch.Tensor:
    """Torch twin of :func:`intsim.ops.softmax.int_exp`: I-BERT's integer exp of ``x <= 0``, int64 in ``[0, e_max]``.

    >>> from intsim.ops import i_exp_constants
    >>> int_exp(torch.tensor([0, -7, -1000]), i_exp_constants(0.1)).tolist() == [279 << 30, 279 << 29, 279]
    True
    """
    op = "int_exp"
    x = as_int64_tensor(x, "x", op)
    c = _check_exp_constants(constants, op)
    found = _bounds(x)
    if found is not None and found[1] > 0:
        raise ValueError(f"{op}: x holds {found[1]} > 0; x must be the logits minus their row maximum (<= 0)")
    return _int_exp(x, c)


def _overflow(op, what, bound, c: IExpConstants, length) -> OverflowError:
    return OverflowError(
        f"{op}: {what} can reach {bound} (about 2**{bound.bit_length() - 1}), which overflows int64: the logit scale "
        f"(c_int = {c.c_int}, n = {c.n}) is too small for rows of length {length}; use a larger scale or a smaller n"
    )


def _softmax_rows(q, zero_point, constants, bits, signed, mask, op):
    """Validate a softmax call; return int64 rows ``(R, L)``, the mask rows (or None) and the constants."""
    q = as_int64_tensor(q, "q", op)
    if q.dim() == 0:
        raise ValueError(f"{op}: q must have at least one axis (softmax runs over the last one), got a scalar")
    bits = check_int(bits, "bits", op, lo=1, hi=32)
    lo, hi = int_range(bits, _check_bool(signed, "signed", op))
    _check_codes(q, "q", op, lo, hi)
    check_int(zero_point, "zero_point", op, lo=lo, hi=hi)
    constants = _check_exp_constants(constants, op)
    mask = _mask(mask, q.shape, op, q.device)
    length = q.shape[-1]
    rows = q.reshape(-1, length) if q.numel() else q.reshape(0, length)
    return q.shape, rows, None if mask is None else mask.reshape(rows.shape), constants


def _row_exps(rows: torch.Tensor, mask: torch.Tensor | None, c: IExpConstants):
    """``e = int_exp(q - rowmax)`` over the positions taking part (0 elsewhere) and ``S = sum e`` (keepdim).

    The zero point cancels in ``x - max x``, so the codes are used directly. A fully masked row has ``e = 0``.
    """
    if mask is None:
        return_e = _int_exp(rows - rows.amax(dim=-1, keepdim=True), c)
        return return_e, return_e.sum(dim=-1, keepdim=True)
    top = torch.where(mask, rows, torch.full_like(rows, INT64_MIN)).amax(dim=-1, keepdim=True)
    top = torch.where(mask.any(dim=-1, keepdim=True), top, torch.zeros_like(top))  # fully masked: unused
    x = torch.where(mask, rows - top, torch.zeros_like(rows))
    e = torch.where(mask, _int_exp(x, c), torch.zeros_like(rows))
    return e, e.sum(dim=-1, keepdim=True)


def _msb(r: torch.Tensor) -> torch.Tensor:
    """``floor(log2 r)`` of int64 ``r >= 1``: a binary search over the 63 value bits (6 compare-and-shift steps)."""
    msb = torch.zeros_like(r)
    top = r.clone()
    above = torch.empty(r.shape, dtype=torch.bool, device=r.device)
    taken = torch.empty_like(r)
    for step in (32, 16, 8, 4, 2, 1):  # in place: this loop dominates log_int_softmax
        torch.ge(top, 1 << step, out=above)
        taken.copy_(above).mul_(step)  # step where top >= 2**step, else 0
        top.bitwise_right_shift_(taken)
        msb.add_(taken)
    return msb


def _log_round(r: torch.Tensor) -> torch.Tensor:
    """FQ-ViT's ``log_round`` of int64 ``r >= 1``: ``msb(r) + bit(r, msb(r) - 1)`` (0 for ``r = 1``)."""
    msb = _msb(r)
    next_bit = (r >> (msb - 1).clamp_min(0)) & 1
    return msb + torch.where(msb > 0, next_bit, torch.zeros_like(msb))


def log_int_softmax(q, *, zero_point, constants, bits=8, signed=False, mask=None) -> torch.Tensor:
    """Torch twin of :func:`intsim.ops.softmax.log_int_softmax`: Log-Int-Softmax codes ``0..16`` (int64) over the last axis.

    ``e = int_exp(q - rowmax)`` over unmasked keys (0 when masked), ``S = sum e``, ``R = (S + (e >> 1)) // e``,
    ``A = msb(R) + bit(R, msb(R) - 1)``; code ``A`` when ``e > 0`` and ``A <= 15``, else 16 (probability 0).
    ``OverflowError`` when ``L * e_max + (e_max >> 1)`` does not fit int64.
    """
    op = "log_int_softmax"
    shape, rows, mask_rows, c = _softmax_rows(q, zero_point, constants, bits, signed, mask, op)
    length = shape[-1]
    bound = length * c.e_max + (c.e_max >> 1)
    if bound > INT64_MAX:
        raise _overflow(op, "S + (e >> 1)", bound, c, length)
    out = torch.empty_like(rows)
    for part in _row_chunks(rows.shape[0], length):
        e, total = _row_exps(rows[part], None if mask_rows is None else mask_rows[part], c)
        positive = e > 0
        rounded = (total + (e >> 1)) // torch.where(positive, e, torch.ones_like(e))  # R = round(S / e), ties up
        exponent = _log_round(torch.where(positive, rounded, torch.ones_like(rounded)))
        out[part] = torch.where(positive & (exponent <= 15), exponent, torch.full_like(exponent, ZERO_CODE))
    return out.reshape(shape)


def uniform_int_softmax(q, *, zero_point, constants, bits=8, signed=False, out_bits=8, full_scale=None,
                        mask=None) -> torch.Tensor:
    """Torch twin of :func:`intsim.ops.softmax.uniform_int_softmax`: ``p = min((e*F + (S >> 1)) // S, 2**out_bits - 1)``.

    Same ``e``/``S`` as :func:`log_int_softmax`; ``F = full_scale`` (default ``2**out_bits - 1``); ``S = 0`` (fully
    masked row) gives 0. int64 codes in ``[0, 2**out_bits - 1]``; ``OverflowError`` when ``e_max*F + (L*e_max >> 1)
    + L*e_max`` does not fit int64.
    """
    op = "uniform_int_softmax"
    shape, rows, mask_rows, c = _softmax_rows(q, zero_point, constants, bits, signed, mask, op)
    levels, full = uniform_levels(out_bits, full_scale, op)
    length = shape[-1]
    bound = c.e_max * full + ((length * c.e_max) >> 1) + length * c.e_max  # the numpy side's bound, exactly
    if bound > INT64_MAX:
        raise _overflow(op, f"e * {full} + (S >> 1) + S", bound, c, length)
    out = torch.empty_like(rows)
    for part in _row_chunks(rows.shape[0], length):
        e, total = _row_exps(rows[part], None if mask_rows is None else mask_rows[part], c)
        out[part] = ((e * full + (total >> 1)) // total.clamp_min(1)).clamp_max(levels)  # round(e * F / S), ties half up
    return out.reshape(shape)


def lis_attention_values(codes, v, *, v_zero_point) -> torch.Tensor:
    """Torch twin of :func:`intsim.ops.softmax.lis_attention_values`: exact ``sum_{code_ij < 16} (v_j - zp) << (15 - code_ij)``.

    ``codes (..., N, M)`` in ``0..16``, ``v (..., M, D)``; int64 ``(..., N, D)`` at scale ``s_v * 2**-15``. Computed as
    an exact matmul of the weights ``2**(15 - code)`` (0 for 16) with ``v - zp``; bound ``M * max|v - zp| * 2**15``.
    """
    op = "lis_attention_values"
    codes = as_int64_tensor(codes, "codes", op)
    v = as_int64_tensor(v, "v", op, codes.device)
    if codes.dim() < 2 or v.dim() < 2 or codes.shape[-1] != v.shape[-2]:
        raise ValueError(
            f"{op}: codes must have shape (..., N, M) and v (..., M, D) with the same M, "
            f"got {tuple(codes.shape)} and {tuple(v.shape)}"
        )
    try:
        torch.broadcast_shapes(codes.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"{op}: the leading axes of codes {tuple(codes.shape)} and v {tuple(v.shape)} do not broadcast") from None
    _check_codes(codes, "codes", op, 0, ZERO_CODE)
    v_zero_point = check_int(v_zero_point, "v_zero_point", op, lo=INT64_MIN, hi=INT64_MAX)
    v_abs = _abs_max(v, v_zero_point)
    bound = (v_abs << LIS_VALUE_SHIFT) * codes.shape[-1]
    if bound > INT64_MAX:
        raise OverflowError(
            f"{op}: sum_j (v_j - v_zero_point) << 15 can reach {bound} (about 2**{bound.bit_length() - 1}) "
            f"over {codes.shape[-1]} keys, which overflows int64"
        )
    kept = codes < ZERO_CODE
    weights = torch.where(kept, torch.ones_like(codes) << (LIS_VALUE_SHIFT - codes.clamp_max(LIS_VALUE_SHIFT)),
                          torch.zeros_like(codes))
    weight_abs = (1 << LIS_VALUE_SHIFT) if bool(kept.any()) else 0
    return _centred_matmul(weights, v - v_zero_point, weight_abs, v_abs)


# ----------------------------------------------------------------------------------------------------- gelu


def lut_lookup(codes, table, *, bits=8, signed=False, rows=None):
    """Torch twin of :func:`intsim.ops.gelu.lut_lookup`: ``table[codes - qmin]`` (a gather), int64 values; with
    ``rows`` (``(C,)``, one per channel of the last axis) ``table[rows[c], codes[..., c] - qmin]``.

    ``table`` 1-D of length ``2**bits`` (``bits`` in ``[1, 16]``), or 2-D ``(R, 2**bits)`` with ``rows`` in
    ``[0, R)``; codes are checked against the declared range.
    """
    op = "lut_lookup"
    codes = as_int64_tensor(codes, "codes", op)
    table = as_int64_tensor(table, "table", op, codes.device)
    bits = check_int(bits, "bits", op, lo=1, hi=MAX_LUT_BITS)
    qmin, qmax = int_range(bits, _check_bool(signed, "signed", op))
    if rows is None and (table.dim() != 1 or table.shape[0] != 2**bits):
        raise ValueError(
            f"{op}: table must be 1-D with one entry per {bits}-bit code (length {2**bits}), got shape {tuple(table.shape)}"
        )
    if rows is not None and (table.dim() != 2 or table.shape[0] < 1 or table.shape[1] != 2**bits):
        raise ValueError(f"{op}: with rows, table must be 2-D (R, {2**bits}) with R >= 1 tables of one entry per "
                         f"{bits}-bit code, got shape {tuple(table.shape)}")
    _check_codes(codes, "codes", op, qmin, qmax)
    if rows is None:
        return table[codes - qmin]
    rows = as_int64_tensor(rows, "rows", op, codes.device)
    channels = codes.shape[-1] if codes.dim() else None
    if rows.dim() != 1 or channels is None or rows.shape[0] != channels:
        raise ValueError(f"{op}: rows must have shape (C,) = ({channels},) (one table row per channel, the last "
                         f"axis of codes), got shape {tuple(rows.shape)}")
    _check_codes(rows, "rows", op, 0, table.shape[0] - 1)
    return table[rows, codes - qmin]


def i_gelu(x, constants):
    """Torch twin of :func:`intsim.ops.gelu.i_gelu`: I-BERT's integer GELU of accumulator codes, int64.

    ``t = min(|x|, -b_int)``, ``y = sign(x) * ((t + b_int)**2 + c_int) >> shift`` (floor), ``out = x * (y + one)``;
    ``OverflowError`` unless ``max|x| * (((b_int**2 + |c_int|) >> shift) + 1 + |one|)`` fits int64.
    """
    op = "i_gelu"
    x = as_int64_tensor(x, "x", op)
    if not isinstance(constants, IGeluConstants):
        raise TypeError(f"{op}: constants must be an IGeluConstants (from i_gelu_constants), got {type(constants).__name__}")
    c = constants
    factor = ((c.b_int**2 + abs(c.c_int)) >> c.shift) + 1 + abs(c.one)
    check_int_bounds_fit(_abs_max(x) * factor, "x * (y + one)", op)
    t = torch.clamp_max(x.abs(), -c.b_int)
    y = torch.sign(x) * ((t + c.b_int) * (t + c.b_int) + c.c_int)
    return x * ((y >> c.shift) + c.one)


# ------------------------------------------------------------------------------------------------- residual


def _column_bounds(x2: torch.Tensor, zero_point: int, per_channel: bool) -> list[int]:
    if x2.numel() == 0:
        return [0] * (x2.shape[1] if per_channel else 1)
    if not per_channel:
        return [_abs_max(x2, zero_point)]
    lows, highs = (v.tolist() for v in torch.aminmax(x2, dim=0))
    return [max(abs(lo - zero_point), abs(hi - zero_point)) for lo, hi in zip(lows, highs)]


def _check_residual_bounds(a2, b2, a_zp, b_zp, ma, mb, shifts, out_zp, op):
    """The numpy op's two-stage proof: global maxima first; only when that fails, exact per channel (which decides)."""
    channels = a2.shape[1]
    ma_list, mb_list, k_list = (t.expand(channels).tolist() for t in (ma, mb, shifts))
    for per_channel in (False, True):
        a_bounds, b_bounds = _column_bounds(a2, a_zp, per_channel), _column_bounds(b2, b_zp, per_channel)
        for c in range(channels if per_channel else 1):
            if per_channel:
                m_a, m_b, k = abs(ma_list[c]), abs(mb_list[c]), k_list[c]
            else:
                m_a, m_b, k = max(map(abs, ma_list)), max(map(abs, mb_list)), max(k_list)
            a_bound, b_bound = a_bounds[c if per_channel else 0], b_bounds[c if per_channel else 0]
            total = a_bound * m_a + b_bound * m_b
            where = f" (channel {c})" if per_channel else ""
            checks = (
                (max(a_bound, b_bound), "a - a_zero_point or b - b_zero_point"),
                (total + (1 << k >> 1), "(a - a_zp) * Ma + (b - b_zp) * Mb (plus the rounding half)"),
                ((total >> k) + 1 + abs(out_zp), "the shifted sum plus out_zero_point"),
            )
            failed = next(((bound, what) for bound, what in checks if bound > INT64_MAX), None)
            if failed is not None:
                if per_channel:
                    check_int_bounds_fit(failed[0], failed[1] + where, op)
                break
        else:
            return


def residual_add(a, b, *, a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift,
                 out_zero_point=0, qmin=0, qmax=255, rounding="half_up"):
    """Torch twin of :func:`intsim.ops.residual.residual_add`: one rounding of the exact int64 sum, int64 codes.

    ``clip(round_shift((a - a_zp)*Ma + (b - b_zp)*Mb, k) + out_zero_point, qmin, qmax)``, multipliers and shift
    per tensor or per channel (last axis); the same int64 proof as the numpy op (``OverflowError``).
    """
    op = "residual_add"
    a = as_int64_tensor(a, "a", op)
    b = as_int64_tensor(b, "b", op, a.device)
    if a.shape != b.shape:
        raise ValueError(f"{op}: a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    qmin = check_int(qmin, "qmin", op, lo=_INT32_MIN, hi=_INT32_MAX)
    qmax = check_int(qmax, "qmax", op, lo=qmin, hi=_INT32_MAX)
    out_zero_point = check_int(out_zero_point, "out_zero_point", op, lo=qmin, hi=qmax)
    a_zero_point = check_int(a_zero_point, "a_zero_point", op, lo=_INT32_MIN, hi=_INT32_MAX)
    b_zero_point = check_int(b_zero_point, "b_zero_point", op, lo=_INT32_MIN, hi=_INT32_MAX)
    mode = rounding_code(rounding, op)
    channels = a.shape[-1] if a.dim() else 1
    ma = _per_channel(a_multiplier, "a_multiplier", op, channels, -_MAX_MULTIPLIER, _MAX_MULTIPLIER, a.device)
    mb = _per_channel(b_multiplier, "b_multiplier", op, channels, -_MAX_MULTIPLIER, _MAX_MULTIPLIER, a.device)
    shifts = _per_channel(shift, "shift", op, channels, 0, MAX_SHIFT, a.device)
    if a.numel() == 0:
        return torch.empty(a.shape, dtype=torch.int64, device=a.device)
    a2, b2 = a.reshape(-1, channels), b.reshape(-1, channels)
    if a2.numel():
        _check_residual_bounds(a2, b2, a_zero_point, b_zero_point, ma, mb, shifts, out_zero_point, op)
    total = (a2 - a_zero_point) * ma + (b2 - b_zero_point) * mb
    rounded = _round_shift(total, shifts, mode)
    return torch.clamp(rounded + out_zero_point, qmin, qmax).reshape(a.shape)
