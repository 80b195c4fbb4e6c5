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
    :func:`lut_lookup`, :func:`i_gelu`, :func:`residual_add`, and the AdaLog ops of :mod:`intsim.ops.logquant`
    (:func:`log_encode`, :func:`log_attention_values`, :func:`asymmetric_linear`, :func:`log_linear`); plus :func:`round_shift`, the twin of
    :func:`intsim.ops.rounding.rounding_shift_right_reference` and the ONE place where the torch side rounds.

Integer contract (common to every twin)
    inputs   torch tensors of any integer dtype but ``torch.uint64`` (CPU or CUDA; the result lives on the
             device of the op's main tensor). Per-channel parameters (multipliers, shifts, ``alpha``, ``bias``,
             ``x_shift``, ``rows``), ``table`` and ``mask`` may also be numpy arrays, lists or Python ints.
             Float, complex and bool tensors raise ``TypeError`` naming the op.
    compute  torch int64 only (``+ - * // >> << &``, comparisons, ``torch.where``): no float touches a value,
             except the exact float64 matmul below.
    outputs  ALWAYS int64, for accumulators and for codes alike (the numpy ops narrow codes to the smallest
             dtype holding ``[qmin, qmax]``; the twins do not: callers compare values, not dtypes).
    checks   validation and int64 bound proofs are NOT written here: every twin calls the backend-neutral
             ``check_*`` / ``prove_*`` functions of the op's module in :mod:`intsim.ops` (the very functions the
             numpy ops call), so both sides accept the same inputs and raise the same errors, ``OverflowError``
             decisions included. A twin only hands them its tensors as :class:`TensorOperand` (shape, dtype
             range, exact ``(min, max)`` as Python ints from ``torch.aminmax``) and its per-channel parameters,
             which are read on the host as small numpy arrays and come back validated as int64 (then moved to
             the main tensor's device once). What remains here is each op's torch integer arithmetic.
    rounding every rounding right shift is :func:`round_shift` with the op's ``rounding`` attribute
             (``half_up`` ties toward +inf, ``half_even`` ties to even, ``half_away`` ties away from zero),
             written as floor shift plus remainder test, so it never overflows int64.

Float64 matmuls are exact (``integer_matmul``, ``integer_linear``, ``lis_attention_values`` and the AdaLog
products ``log_attention_values``, ``asymmetric_linear``, ``log_linear``)
    The product of the centred operands is computed with one float64 BLAS call (``torch.matmul`` on float64)
    when the exact Python-int bound ``K * max|a - a_zp| * max|b - b_zp|`` is ``<= 2**53``: every intermediate
    a BLAS forms (any order, blocking or FMA) is then an integer partial sum of magnitude ``<= 2**53``, which
    float64 represents exactly, and IEEE operations on exact operands with a representable exact result return
    it; so the float64 result is the exact integer, converted back to int64 without loss. TF32 cannot affect
    it: TF32 (``torch.backends.cuda.matmul.allow_tf32``, ``torch.set_float32_matmul_precision``) applies to
    float32 matmuls only, never to float64. Above ``2**53`` the product runs as an int64 ``torch.matmul`` on
    CPU; on CUDA (no int64 matmul there) as float64 matmuls on K-chunks of ``floor(2**53 / (A * B))`` columns
    summed in int64, and when even one term exceeds ``2**53`` (``A * B > 2**53``) it raises
    ``NotImplementedError``; the AdaLog twins (``log_attention_values``, ``asymmetric_linear``, ``log_linear``,
    whose log weights reach ``2**62``) split the wider operand into limbs there instead (:func:`_limb_matmul`), so
    they stay exact on CUDA whenever the int64 bound holds. (Opt-in FP64 emulation in cuBLAS, e.g. the Ozaki
    scheme on newer GPUs, is not covered by this argument; it is off by default.)

Memory: the row-wise ops (softmax, LayerNorm) process the rows in chunks of about ``2**22`` elements, so that
their int64 temporaries stay near 32 MB per tensor whatever the batch.
"""

from __future__ import annotations

import numpy as np
import torch

from intsim.limits import FLOAT64_EXACT, INT64_MIN, LIS_VALUE_SHIFT, MAX_SHIFT
from intsim.limits import LIS_ZERO_CODE as ZERO_CODE
from intsim.ops._checks import as_int_array, check_in_range, check_int
from intsim.ops.gelu import check_i_gelu, check_lut_lookup
from intsim.ops.isqrt import check_isqrt_input
from intsim.ops.logquant import (
    check_asymmetric_linear,
    check_linear_weight_shapes,
    check_log_attention_values,
    check_log_encode,
    check_log_linear,
)
from intsim.ops.layernorm import (
    NORM_FRACTION_BITS,
    RECIPROCAL_BITS,
    check_ptf_layernorm_parameters,
    prove_ptf_layernorm_bounds,
)
from intsim.ops.matmul import LINEAR_NAMES, check_linear_input_shift, check_linear_shapes, check_matmul
from intsim.ops.requant import check_requantize_parameters, prove_requantize_bounds
from intsim.ops.residual import check_residual_add_parameters, check_same_shape, prove_residual_add_bounds
from intsim.ops.rounding import rounding_code
from intsim.ops.softmax import (
    IExpConstants,
    check_int_exp,
    check_lis_attention_values,
    check_mask,
    check_softmax_parameters,
    prove_log_int_softmax_bounds,
    prove_uniform_int_softmax_bounds,
    uniform_levels,
)

__all__ = [
    "FLOAT64_EXACT",
    "ROW_CHUNK_ELEMENTS",
    "TensorOperand",
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
    "log_encode",
    "log_attention_values",
    "asymmetric_linear",
    "log_linear",
]

ROW_CHUNK_ELEMENTS = 2**22  # row-wise ops work on about this many elements at a time
_REFUSED_DTYPES = {torch.bool, torch.uint64}


# ------------------------------------------------------------------------------------ tensors for the checks


def _as_int64(value, name: str, op: str, device=None) -> tuple[torch.Tensor, tuple[int, int]]:
    """:func:`as_int64_tensor` of ``value`` and the ``(min, max)`` of its original dtype."""
    if isinstance(value, torch.Tensor):
        if value.dtype in _REFUSED_DTYPES or value.dtype.is_floating_point or value.dtype.is_complex:
            raise TypeError(f"{op}: {name} must be an integer tensor (not bool or uint64), got dtype {value.dtype}")
        info = torch.iinfo(value.dtype)
        tensor = value.to(device=device if device is not None else value.device, dtype=torch.int64)
    else:
        array = as_int_array(value, name, op)  # TypeError for floats, bools, objects and uint64
        info = np.iinfo(array.dtype)
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(device=device or "cpu")
    return tensor, (int(info.min), int(info.max))


def as_int64_tensor(value, name: str, op: str, device=None) -> torch.Tensor:
    """``value`` (torch tensor, numpy array, list or Python int) as an int64 torch tensor, or ``TypeError``.

    Float, complex, bool and uint64 values are refused (uint64 does not fit int64 arithmetic). A tensor stays
    on its device unless ``device`` is given; anything else is created on ``device`` (default CPU).
    """
    return _as_int64(value, name, op, device)[0]


class TensorOperand:
    """A torch integer operand as the backend-neutral checks of :mod:`intsim.ops` read it (their ``Operand``).

    ``tensor`` is the value as int64 (:func:`as_int64_tensor`), ``dtype_range`` the range of its original dtype;
    ``bounds()`` (computed once), ``column_bounds()`` and ``index_of()`` are exact Python ints from torch reductions.
    """

    def __init__(self, value, name: str, op: str, device=None):
        self.tensor, self.dtype_range = _as_int64(value, name, op, device)
        self.shape = tuple(self.tensor.shape)
        self._bounds: tuple[int, int] | None | bool = False

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def view(self, tensor: torch.Tensor) -> TensorOperand:
        """The operand of ``tensor``, an int64 reshape or transpose of this one (the same values: bounds are shared)."""
        other = object.__new__(TensorOperand)
        other.tensor, other.shape = tensor, tuple(tensor.shape)
        other.dtype_range, other._bounds = self.dtype_range, self._bounds
        return other

    def bounds(self) -> tuple[int, int] | None:
        if self._bounds is False:
            found = torch.aminmax(self.tensor) if self.tensor.numel() else None
            self._bounds = None if found is None else (int(found[0]), int(found[1]))
        return self._bounds

    def column_bounds(self) -> tuple[list[int], list[int]]:
        low, high = torch.aminmax(self.tensor.reshape(-1, self.shape[-1] if self.shape else 1), dim=0)
        return low.tolist(), high.tolist()

    def index_of(self, value: int) -> tuple[int, ...]:
        return tuple(int(i) for i in torch.nonzero(self.tensor == value)[0].tolist())


class _OnHost:
    """A small parameter tensor (per-channel values, ``bias``, ``x_shift``, ``rows``) for the neutral checks: they
    read it as a numpy array, and only then is it type-checked as a tensor and copied to the host."""

    def __init__(self, tensor: torch.Tensor, name: str, op: str):
        self.tensor, self.name, self.op = tensor, name, op

    def __array__(self, dtype=None, copy=None):
        array = as_int64_tensor(self.tensor, self.name, self.op).cpu().numpy()
        return array if dtype is None else array.astype(dtype)


def _param(value, name: str, op: str):
    """A parameter as the neutral checks take it: tensors wrapped (:class:`_OnHost`), anything else as it is."""
    return _OnHost(value, name, op) if isinstance(value, torch.Tensor) else value


def _on(device, array: np.ndarray) -> torch.Tensor:
    """A validated int64 numpy parameter as a tensor on ``device``."""
    return torch.tensor(array, dtype=torch.int64, device=device)


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
        return _round_shift(x, check_int(shift, "shift", op, lo=0, hi=MAX_SHIFT), mode)
    shifts = TensorOperand(shift, "shift", op, x.device)
    check_in_range(shifts, "shift", op, 0, MAX_SHIFT)
    return _round_shift(x, shifts.tensor, mode)


# ------------------------------------------------------------------------------------------------ requantize


def requantize(acc, multiplier, shift, *, zero_point=0, qmin=-128, qmax=127, rounding="half_up"):
    """Torch twin of :func:`intsim.ops.requant.requantize`: ``clip(round(acc * M / 2**k) + zero_point, qmin, qmax)``.

    ``multiplier``/``shift`` per tensor or per channel (last axis); ``|M| < 2**31``, ``k`` in ``[0, 62]``. The
    product ``acc * M`` is int64, proved to fit per channel (:func:`~intsim.ops.requant.prove_requantize_bounds`).
    Returns int64 codes.
    """
    op = "requantize"
    acc = TensorOperand(acc, "acc", op)
    p = check_requantize_parameters(acc.shape, _param(multiplier, "multiplier", op), _param(shift, "shift", op),
                                    zero_point, qmin, qmax, rounding, op)
    prove_requantize_bounds(acc, p, op)
    rounded = _round_shift(acc.tensor * _on(acc.device, p.multipliers), _on(acc.device, p.shifts), p.mode)
    return torch.clamp(rounded + p.zero_point, p.qmin, p.qmax).reshape(acc.shape)


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


def _limb_matmul(a_c, b_c, a_abs: int, b_abs: int, *, f64_exact: int = FLOAT64_EXACT,
                 int64_matmul: bool | None = None) -> torch.Tensor:
    """Exact int64 ``a_c @ b_c`` like :func:`_centred_matmul`, also where one product exceeds ``f64_exact`` on a
    device without int64 matmul (CUDA): the wider operand is split into sign and magnitude, ``a = p - n`` with
    ``p, n >= 0`` (never both non-zero in one element), and each magnitude into ``L``-bit limbs
    (``p = sum_i d_i 2**(iL)``), ``L = bitlen(f64_exact) - 1 - bitlen(b_abs)``, so that every limb product is exact
    in float64 (:func:`_centred_matmul`'s K-chunks); the limb products are shifted and summed in int64.

    No intermediate leaves int64 when ``K * a_abs * b_abs`` fits (the callers proved it): the lower limbs cover at
    most ``bitlen(a_abs) - 1`` bits, so every running sum is ``(x mod 2**(jL)) @ b`` or ``p @ b - (n mod 2**(jL)) @ b``
    with per-element factors of magnitude ``<= a_abs``, and the top limb's part is ``(x >> s) << s <= x``.
    """
    if int64_matmul is None:
        int64_matmul = a_c.device.type == "cpu"
    k = a_c.shape[-1]
    if int64_matmul or k * a_abs * b_abs <= f64_exact or a_abs * b_abs <= f64_exact:
        return _centred_matmul(a_c, b_c, a_abs, b_abs, f64_exact=f64_exact, int64_matmul=int64_matmul)
    if b_abs > a_abs:  # split the wider operand: (a @ b) = (b^T @ a^T)^T
        return _limb_matmul(b_c.transpose(-1, -2), a_c.transpose(-1, -2), b_abs, a_abs, f64_exact=f64_exact,
                            int64_matmul=False).transpose(-1, -2)
    width = f64_exact.bit_length() - 1 - b_abs.bit_length()  # (2**width) * b_abs <= f64_exact
    if width < 1:
        return _centred_matmul(a_c, b_c, a_abs, b_abs, f64_exact=f64_exact, int64_matmul=False)  # raises
    mask, top = (1 << width) - 1, a_abs.bit_length()
    out = None
    for sign, magnitude in ((1, a_c.clamp_min(0)), (-1, (-a_c).clamp_min(0))):
        if sign < 0 and not bool((a_c < 0).any()):
            break
        start = 0
        while True:
            last = start + width >= top
            limb = (magnitude >> start) if last else (magnitude >> start) & mask
            limb_abs = (a_abs >> start) if last else mask
            part = _centred_matmul(limb, b_c, limb_abs, b_abs, f64_exact=f64_exact, int64_matmul=False) << start
            out = part if out is None else (out + part if sign > 0 else out - part)
            if last:
                break
            start += width
    return out

def _matmul(a: TensorOperand, b: TensorOperand, a_zero_point, b_zero_point, bias, op,
            names=("a", "b", "a_zero_point", "b_zero_point")) -> torch.Tensor:
    c = check_matmul(a, b, a_zero_point, b_zero_point, _param(bias, "bias", op), op, names)
    out = _centred_matmul(a.tensor - c.a_zp, b.tensor - c.b_zp, c.a_abs, c.b_abs)
    return out if bias is None else out + _on(out.device, c.bias)


def integer_matmul(a, b, *, a_zero_point=0, b_zero_point=0, bias=None):
    """Torch twin of :func:`intsim.ops.matmul.integer_matmul`: exact int64 ``(a - a_zp) @ (b - b_zp) + bias``.

    ``a (..., M, K)``, ``b (..., K, N)`` (batch axes broadcast), ``bias`` int32 values ``(N,)`` or ``None``. The
    bound ``K * max|a - a_zp| * max|b - b_zp| + max|bias|`` is proved to fit int64 (``OverflowError``); the
    product is one exact float64 matmul below ``2**53`` (module docstring; TF32 never applies to float64).
    """
    op = "integer_matmul"
    a = TensorOperand(a, "a", op)
    return _matmul(a, TensorOperand(b, "b", op, a.device), a_zero_point, b_zero_point, bias, op)


def _shifted_input(x: "TensorOperand", x_zero_point, x_shift, op: str):
    """``(x, x_zero_point)``, or with ``x_shift`` the PTF input ``((x - x_zp) << x_shift, 0)`` (validated and proved
    to fit int64 by :func:`~intsim.ops.matmul.check_linear_input_shift`): the torch side of ``shifted_linear_input``."""
    if x_shift is None:
        return x, x_zero_point
    zero_point, shift = check_linear_input_shift(x, x_zero_point, _param(x_shift, "x_shift", op), op)
    return TensorOperand((x.tensor - zero_point) << _on(x.device, shift), "x", op), 0


def integer_linear(x, weight, *, x_zero_point=0, bias=None, x_shift=None):
    """Torch twin of :func:`intsim.ops.matmul.integer_linear`: exact int64
    ``((x - x_zp) << x_shift) @ weight.T + bias``.

    ``x (..., K)`` codes, ``weight (N, K)`` symmetric codes (zero point 0, ``nn.Linear`` layout), ``bias (N,)``,
    ``x_shift`` ``None`` or integers ``(K,)`` in ``[0, 15]`` (per input channel; the shifted input must fit int64).
    """
    op = "integer_linear"
    x = TensorOperand(x, "x", op)
    weight = TensorOperand(weight, "weight", op, x.device)
    x, x_zero_point = _shifted_input(x, x_zero_point, x_shift, op)
    out_shape = check_linear_shapes(x.shape, weight.shape, op)
    rows = x.view(x.tensor.reshape(-1, x.shape[-1]))
    return _matmul(rows, weight.view(weight.tensor.t()), x_zero_point, 0, bias, op, LINEAR_NAMES).reshape(out_shape)


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
    n = TensorOperand(n, "n", "isqrt")
    check_isqrt_input(n, "isqrt")
    return _isqrt(n.tensor)


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
    q = TensorOperand(q, "q", op)
    p = check_ptf_layernorm_parameters(
        q, zero_point, _param(alpha, "alpha", op), _param(multiplier, "multiplier", op), _param(bias, "bias", op),
        _param(shift, "shift", op), out_zero_point, qmin, qmax, bits, signed, rounding, op,
    )
    prove_ptf_layernorm_bounds(p, op)
    alpha, multiplier, bias, shift = (_on(q.device, v) for v in (p.alpha, p.multiplier, p.bias, p.shift))
    channels = p.channels
    rows = q.tensor.reshape(-1, channels)
    out = torch.empty_like(rows)
    one = 1 << RECIPROCAL_BITS
    drop = RECIPROCAL_BITS - NORM_FRACTION_BITS
    for part in _row_chunks(rows.shape[0], channels):
        x_hat = (rows[part] - p.zero_point) << alpha
        s1 = x_hat.sum(dim=-1, keepdim=True)
        s2 = (x_hat * x_hat).sum(dim=-1, keepdim=True)
        sigma = _isqrt(channels * s2 - s1 * s1)
        inv = torch.where(sigma > 0, torch.full_like(sigma, one) // sigma.clamp_min(1), torch.zeros_like(sigma))
        n = _round_shift((channels * x_hat - s1) * inv, drop, p.mode)
        y = _round_shift(n * multiplier + bias, shift, p.mode) + p.out_zero_point
        out[part] = torch.clamp(y, p.qmin, p.qmax)
    return out.reshape(q.shape)


# -------------------------------------------------------------------------------------------------- softmax


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
    x = TensorOperand(x, "x", "int_exp")
    return _int_exp(x.tensor, check_int_exp(x, constants, "int_exp"))


def _mask(mask, shape, op: str, device) -> torch.Tensor | None:
    """The softmax mask as a bool tensor broadcast to ``shape`` (:func:`~intsim.ops.softmax.check_mask`)."""
    if mask is None:
        return None
    source = mask if isinstance(mask, torch.Tensor) else np.asarray(mask)
    is_bool = source.dtype == (torch.bool if isinstance(source, torch.Tensor) else np.bool_)
    check_mask(is_bool, source.dtype, source.shape, shape, op)
    tensor = source if isinstance(source, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(source))
    return torch.broadcast_to(tensor.to(device), shape)


def _softmax_rows(q, zero_point, constants, bits, signed, mask, op):
    """Validate a softmax call; return the shape, int64 rows ``(R, L)``, the mask rows (or None) and the constants."""
    q = TensorOperand(q, "q", op)
    constants = check_softmax_parameters(q, zero_point, constants, bits, signed, op)[3]
    mask = _mask(mask, q.shape, op, q.device)
    length = q.shape[-1]
    rows = q.tensor.reshape(-1, length) if q.tensor.numel() else q.tensor.reshape(0, length)
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
    prove_log_int_softmax_bounds(c, shape[-1], op)
    out = torch.empty_like(rows)
    for part in _row_chunks(rows.shape[0], shape[-1]):
        e, total = _row_exps(rows[part], None if mask_rows is None else mask_rows[part], c)
        positive = e > 0
        rounded = (total + (e >> 1)) // torch.where(positive, e, torch.ones_like(e))  # R = round(S / e), ties up
        exponent = _log_round(torch.where(positive, rounded, torch.ones_like(rounded)))
        out[part] = torch.where(positive & (exponent <= 15), exponent, torch.full_like(exponent, ZERO_CODE))
    return out.reshape(shape)


def uniform_int_softmax(q, *, zero_point, constants, bits=8, signed=False, out_bits=8, full_scale=None,
                        mask=None) -> torch.Tensor:
    """Torch twin of :func:`intsim.ops.softmax.uniform_int_softmax`: ``p = min((e*F + (S >> 1)) // S, 2**out_bits - 1)``.

    Same ``e``/``S`` as :func:`log_int_softmax`; ``F = full_scale`` (default ``2**out_bits - 1``; an int or one per
    head, axis -3); ``S = 0`` (fully
    masked row) gives 0. int64 codes in ``[0, 2**out_bits - 1]``; ``OverflowError`` when ``e_max*F + (L*e_max >> 1)
    + L*e_max`` does not fit int64.
    """
    op = "uniform_int_softmax"
    shape, rows, mask_rows, c = _softmax_rows(q, zero_point, constants, bits, signed, mask, op)
    levels, full = uniform_levels(out_bits, full_scale, op, shape)
    prove_uniform_int_softmax_bounds(c, shape[-1], int(np.max(full)), op)
    # F of each row (one per head: rows of q[..., h, :, :] take F[h])
    row_full = torch.as_tensor(np.broadcast_to(np.asarray(full, dtype=np.int64).reshape(-1, 1) if np.ndim(full)
                                               else np.int64(full), shape[:-1]).reshape(-1, 1).copy(),
                               device=rows.device)
    out = torch.empty_like(rows)
    for part in _row_chunks(rows.shape[0], shape[-1]):
        e, total = _row_exps(rows[part], None if mask_rows is None else mask_rows[part], c)
        out[part] = ((e * row_full[part] + (total >> 1)) // total.clamp_min(1)).clamp_max(levels)  # round(e F / S), ties up
    return out.reshape(shape)


def lis_attention_values(codes, v, *, v_zero_point) -> torch.Tensor:
    """Torch twin of :func:`intsim.ops.softmax.lis_attention_values`: exact ``sum_{code_ij < 16} (v_j - zp) << (15 - code_ij)``.

    ``codes (..., N, M)`` in ``0..16``, ``v (..., M, D)``; int64 ``(..., N, D)`` at scale ``s_v * 2**-15``. Computed as
    an exact matmul of the weights ``2**(15 - code)`` (0 for 16) with ``v - zp``; bound ``M * max|v - zp| * 2**15``.
    """
    op = "lis_attention_values"
    codes = TensorOperand(codes, "codes", op)
    v = TensorOperand(v, "v", op, codes.device)
    v_zero_point, v_abs = check_lis_attention_values(codes, v, v_zero_point, op)
    kept = codes.tensor < ZERO_CODE
    weights = torch.where(kept, torch.ones_like(codes.tensor) << (LIS_VALUE_SHIFT - codes.tensor.clamp_max(LIS_VALUE_SHIFT)),
                          torch.zeros_like(codes.tensor))
    weight_abs = (1 << LIS_VALUE_SHIFT) if bool(kept.any()) else 0
    return _centred_matmul(weights, v.tensor - v_zero_point, weight_abs, v_abs)


# ----------------------------------------------------------------------------------------------------- gelu


def lut_lookup(codes, table, *, bits=8, signed=False, rows=None):
    """Torch twin of :func:`intsim.ops.gelu.lut_lookup`: ``table[codes - qmin]`` (a gather), int64 values; with
    ``rows`` (``(C,)``, one per channel of the last axis) ``table[rows[c], codes[..., c] - qmin]``.

    ``table`` 1-D of length ``2**bits`` (``bits`` in ``[1, 16]``), or 2-D ``(R, 2**bits)`` with ``rows`` in
    ``[0, R)``; codes are checked against the declared range.
    """
    op = "lut_lookup"
    codes = TensorOperand(codes, "codes", op)
    table = as_int64_tensor(table, "table", op, codes.device)
    qmin, _, rows = check_lut_lookup(codes, table.shape, bits, signed, _param(rows, "rows", op), op)
    if rows is None:
        return table[codes.tensor - qmin]
    return table[_on(codes.device, rows), codes.tensor - qmin]


def i_gelu(x, constants):
    """Torch twin of :func:`intsim.ops.gelu.i_gelu`: I-BERT's integer GELU of accumulator codes, int64.

    ``t = min(|x|, -b_int)``, ``y = sign(x) * ((t + b_int)**2 + c_int) >> shift`` (floor), ``out = x * (y + one)``;
    ``OverflowError`` unless ``max|x| * (((b_int**2 + |c_int|) >> shift) + 1 + |one|)`` fits int64.
    """
    x = TensorOperand(x, "x", "i_gelu")
    c = check_i_gelu(x, constants, "i_gelu")
    t = torch.clamp_max(x.tensor.abs(), -c.b_int)
    y = torch.sign(x.tensor) * ((t + c.b_int) * (t + c.b_int) + c.c_int)
    return x.tensor * ((y >> c.shift) + c.one)


# ------------------------------------------------------------------------------------------------- residual


def residual_add(a, b, *, a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift,
                 out_zero_point=0, qmin=0, qmax=255, rounding="half_up"):
    """Torch twin of :func:`intsim.ops.residual.residual_add`: one rounding of the exact int64 sum, int64 codes.

    ``clip(round_shift((a - a_zp)*Ma + (b - b_zp)*Mb, k) + out_zero_point, qmin, qmax)``, multipliers and shift
    per tensor or per channel (last axis); the same int64 proof as the numpy op (``OverflowError``).
    """
    op = "residual_add"
    a = TensorOperand(a, "a", op)
    b = TensorOperand(b, "b", op, a.device)
    check_same_shape(a.shape, b.shape, op)
    p = check_residual_add_parameters(
        a.shape, a_zero_point, b_zero_point, _param(a_multiplier, "a_multiplier", op),
        _param(b_multiplier, "b_multiplier", op), _param(shift, "shift", op), out_zero_point, qmin, qmax, rounding, op,
    )
    prove_residual_add_bounds(a, b, p, op)
    if a.tensor.numel() == 0:
        return torch.empty(a.shape, dtype=torch.int64, device=a.device)
    channels = a.shape[-1] if a.shape else 1
    ma, mb, shifts = (_on(a.device, v) for v in (p.a_multipliers, p.b_multipliers, p.shifts))
    a2, b2 = a.tensor.reshape(-1, channels), b.tensor.reshape(-1, channels)
    total = (a2 - p.a_zero_point) * ma + (b2 - p.b_zero_point) * mb
    rounded = _round_shift(total, shifts, p.mode)
    return torch.clamp(rounded + p.out_zero_point, p.qmin, p.qmax).reshape(a.shape)


# ------------------------------------------------------------------------------------------------- logquant


def log_encode(x, thresholds) -> torch.Tensor:
    """Torch twin of :func:`intsim.ops.logquant.log_encode`: ``#{k : x < T_k}`` (ties ``x == T_k`` not counted), int64.

    ``x`` non-negative integer codes of any shape, ``thresholds`` ``(2**b,)`` non-increasing (validated by
    :func:`~intsim.ops.logquant.check_log_encode`); a binary search (``torch.searchsorted``, right side) on the
    ascending thresholds: ``L - #{k : T_k <= x}``.
    """
    op = "log_encode"
    x = TensorOperand(x, "x", op)
    t = check_log_encode(x, _param(thresholds, "thresholds", op), op)
    ascending = _on(x.device, np.ascontiguousarray(t[::-1]))
    below = torch.searchsorted(ascending, x.tensor.reshape(-1).contiguous(), right=True)
    return (t.shape[0] - below).reshape(x.shape)


def log_attention_values(codes, v, shift, mantissa, *, v_zero_point, max_shift) -> torch.Tensor:
    """Torch twin of :func:`intsim.ops.logquant.log_attention_values`: exact ``sum_j W[c_ij] * (v_j - zp)``, int64.

    ``W = M << (max_shift - SH)`` (``W[2**b] = 0``) gathered from the codes, then one exact matmul with
    ``v - zp`` (:func:`_centred_matmul`); bound ``M * max(W) * max|v - zp|`` proved by
    :func:`~intsim.ops.logquant.check_log_attention_values`.
    """
    op = "log_attention_values"
    codes = TensorOperand(codes, "codes", op)
    v = TensorOperand(v, "v", op, codes.device)
    zp, table, v_abs = check_log_attention_values(codes, v, _param(shift, "shift", op), _param(mantissa, "mantissa", op),
                                                  v_zero_point, max_shift, op)
    weights = _on(codes.device, table)[codes.tensor]
    return _limb_matmul(weights, v.tensor - zp, int(table.max()), v_abs)


def _linear_rows(x: TensorOperand) -> torch.Tensor:
    return x.tensor.reshape(int(np.prod(x.shape[:-1], dtype=np.int64)), x.shape[-1])


def asymmetric_linear(x, weight, weight_zero_point, bias, *, x_zero_point=0, x_shift=None) -> torch.Tensor:
    """Torch twin of :func:`intsim.ops.logquant.asymmetric_linear`: exact ``((x - x_zp) << x_shift) @ (w - wzp).T +
    bias``, int64.

    ``x (..., K)``, ``weight (N, K)`` with a per-row zero point ``(N,)`` (int32), ``bias`` int32 ``(N,)``, ``x_shift``
    ``None`` or integers ``(K,)`` in ``[0, 15]``; the bound ``K * max|x' - x_zp'| * max|w - wzp| + max|bias|`` (``x'``
    the shifted input) is proved by :func:`~intsim.ops.logquant.check_asymmetric_linear`.
    """
    op = "asymmetric_linear"
    x = TensorOperand(x, "x", op)
    weight = TensorOperand(weight, "weight", op, x.device)
    if x_shift is not None:
        check_linear_weight_shapes(tuple(x.shape), tuple(weight.shape)[::-1], op)  # shapes first, as without
    x, x_zero_point = _shifted_input(x, x_zero_point, x_shift, op)
    weight_t = weight.view(weight.tensor.t()) if len(weight.shape) == 2 else weight
    c = check_asymmetric_linear(x, weight_t, _param(weight_zero_point, "weight_zero_point", op),
                                _param(bias, "bias", op), x_zero_point, op)
    centred_w = weight_t.tensor - _on(x.device, c.weight_zero_point)[None, :]
    out = _limb_matmul(_linear_rows(x) - c.x_zero_point, centred_w, c.x_abs, c.w_abs)
    return (out + _on(x.device, c.bias)).reshape(x.shape[:-1] + (weight.shape[0],))


def log_linear(x, weight, weight_zero_point, bias, shift, mantissa, *, max_shift) -> torch.Tensor:
    """Torch twin of :func:`intsim.ops.logquant.log_linear`: exact ``sum_k W[x_k] * (w_nk - wzp_n) + bias_n``, int64.

    ``x (..., K)`` log codes ``0..2**b``, ``weight (N, K)``, ``weight_zero_point (N,)`` int32, ``bias (N,)`` int64;
    the bound ``K * max(W) * max|w - wzp| + max|bias|`` (bias included: the final add cannot wrap) is proved by
    :func:`~intsim.ops.logquant.check_log_linear`.
    """
    op = "log_linear"
    x = TensorOperand(x, "x", op)
    weight = TensorOperand(weight, "weight", op, x.device)
    weight_t = weight.view(weight.tensor.t()) if len(weight.shape) == 2 else weight
    c = check_log_linear(x, weight_t, _param(weight_zero_point, "weight_zero_point", op), _param(bias, "bias", op),
                         _param(shift, "shift", op), _param(mantissa, "mantissa", op), max_shift, op)
    centred_w = weight_t.tensor - _on(x.device, c.weight_zero_point)[None, :]
    weights = _on(x.device, c.table)[_linear_rows(x)]
    out = _limb_matmul(weights, centred_w, c.x_abs, c.w_abs)
    return (out + _on(x.device, c.bias)).reshape(x.shape[:-1] + (weight.shape[0],))
