"""Integer LayerNorm over PTF (power-of-two factor) input codes, scale-free and exact (FQ-ViT, integer).

The input is the residual stream quantized with FQ-ViT's PTF: uint8 codes ``q`` with one zero point shared
by all channels and per-channel scales ``s * 2**alpha_c``, ``alpha_c`` in ``0..7`` (FQ-ViT: ``0..3``). LayerNorm
(without eps) is invariant to the input scale ``s``, so it never appears: only ``alpha`` does. The last
axis holds the ``C`` channels; every other axis indexes tokens (rows), normalised independently.

Algorithm (the specification; ``P = RECIPROCAL_BITS = 48``, ``F = NORM_FRACTION_BITS = 16``)::

    x_hat_c = (q_c - zp_in) << alpha_c          # |x_hat| <= 255 << 7 = 32640: 16 bits signed for 8-bit codes
    S1 = sum_c x_hat_c ;  S2 = sum_c x_hat_c**2  # int64
    D  = C*S2 - S1**2                            # int64, exact, >= 0 (Cauchy-Schwarz); = C**2 * var(x_hat)
    sigma = isqrt(D)                             # floor(sqrt(D)) = floor(C * std(x_hat)), exact integer sqrt
    inv   = (2**P) // sigma if sigma > 0 else 0  # reciprocal of sigma with P fraction bits (floor)
    t_c   = C*x_hat_c - S1                       # = C * (x_hat_c - mean); |t_c| <= sqrt((C-1) * D)
    n_c   = round_shift(t_c * inv, P - F)        # (x - mean) / std with F fraction bits
    y_c   = sat(round_shift(n_c * M_c + B_c, k_c) + zp_out, qmin, qmax)

``M_c / 2**(k_c - F) ~ gamma_c / out_scale`` and ``B_c / 2**k_c ~ beta_c / out_scale`` are integer
per-channel constants made at plan time by :func:`layernorm_constants`. ``round_shift`` is
:mod:`intsim.ops.rounding` with the op's ``rounding`` attribute (default ``half_up``: ties toward +inf).

Integer contract
    ``q``          integer codes in the declared range of ``bits`` (1..16) / ``signed`` (default uint8
                   ``[0, 255]``), checked; any integer dtype; shape ``(..., C)``, ``1 <= C <= 2**14``.
    ``zero_point`` shared input zero point inside the declared code range.
    ``alpha``      per-channel PTF shifts in ``[0, 7]`` (scalar or length ``C``).
    ``multiplier`` per-channel ``|M_c| < 2**31``; ``bias`` per-channel int64 ``B_c``; ``shift`` per-channel
                   ``k_c`` in ``[0, 62]`` (each a scalar or length ``C``).
    output         codes in ``[qmin, qmax]`` (inside int32, ``qmin <= out_zero_point <= qmax``), in the
                   narrowest of uint8/int8/uint16/int16/int32 that holds the range.
    Widths (proved in validation with exact Python ints, ``OverflowError`` otherwise), ``X = max|q - zp| << max(alpha)``:
      - ``C*S2`` and ``S1**2`` are at most ``C**2 * X**2`` (8-bit codes: ``2**28 * 32640**2 < 2**58`` at ``C = 2**14``);
      - ``|t_c * inv| <= 2*sqrt(C-1) * 2**P``: ``|t_c| <= sqrt((C-1)*D)`` and ``sigma >= sqrt(D)/2`` for ``D >= 1``,
        so it is below ``2**56`` for every ``C <= 2**14``, independent of the codes;
      - hence ``|n_c| <= N(C) = ceil(2*sqrt(C-1)) * 2**F`` (:func:`normalized_bound`), and the op proves
        ``N(C)*|M_c| + |B_c| + 2**(k_c-1) <= 2**63 - 1`` per channel (the affine product and its rounding).
    ``sigma = 0`` (all ``x_hat`` of the row equal, e.g. ``C = 1``) is defined: ``inv = 0``, ``n = 0``,
    ``y_c = sat(round_shift(B_c, k_c) + zp_out)``, i.e. ``round(beta_c / out_scale) + zp_out`` — no NaN, no
    division by zero.
    Checks: :func:`check_ptf_layernorm_parameters` and :func:`prove_ptf_layernorm_bounds` (backend-neutral: the
    torch twin calls them too; the bounds depend on the declared code range and the constants, not on the data).

Relation to FQ-ViT (``QIntLayerNorm``, mode ``int``): same PTF input (``x_hat = (q - zp) << alpha``) and the same
integer ``S1``/``S2``; FQ-ViT then computes ``sigma``, ``1/sigma`` and an 8-bit mantissa ``M``/shift ``N`` per token
in float32 (no eps; ``sigma = 0`` gives inf/NaN). intsim keeps everything integer: ``D`` exact in int64 (no float32
cancellation), ``sigma`` by exact integer square root (floor), a 48-bit fixed-point reciprocal, a 16-bit-fraction
normalised value and a 31-bit per-channel multiplier with its bias, one rounding per shift. No eps (as FQ-ViT;
timm's ``eps = 1e-6`` only matters for near-constant rows). The rounding follows the Program's ``rounding`` attribute
instead of FQ-ViT's float half-to-even.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import prange

from intsim._jit import parallel_kernel
from intsim.limits import INT64_MAX, INT64_MIN, MAX_MULTIPLIER, MAX_PTF_ALPHA, MAX_SHIFT
from intsim.limits import LAYERNORM_MAX_CHANNELS as MAX_CHANNELS
from intsim.limits import LAYERNORM_MAX_INPUT_BITS as MAX_INPUT_BITS
from intsim.ops._checks import (
    ArrayOperand,
    Operand,
    as_int_array,
    check_in_range,
    check_int,
    check_int_bounds_fit,
    check_output_range,
    declared_code_range,
    per_channel_vector,
    smallest_code_dtype,
)
from intsim.ops.isqrt import isqrt_reference, isqrt_scalar
from intsim.ops.requant import quantize_multiplier
from intsim.ops.rounding import round_shift_scalar, rounding_code, rounding_shift_right_reference

__all__ = [
    "RECIPROCAL_BITS",
    "NORM_FRACTION_BITS",
    "MAX_CHANNELS",
    "MAX_INPUT_BITS",
    "MAX_PTF_ALPHA",
    "LayerNormConstants",
    "LayerNormParams",
    "check_ptf_layernorm_parameters",
    "layernorm_constants",
    "layernorm_steps",
    "normalized_bound",
    "prove_ptf_layernorm_bounds",
    "ptf_layernorm",
    "ptf_layernorm_reference",
]

RECIPROCAL_BITS = 48  # P: inv = 2**P // sigma
NORM_FRACTION_BITS = 16  # F: fraction bits of the normalised value n = (x - mean) / std
# MAX_CHANNELS (2**14): C bound under which |t * inv| <= 2*sqrt(C-1) * 2**48 < 2**56 always fits int64;
# MAX_PTF_ALPHA (7): FQ-ViT uses K = 3 (alpha in 0..3), intsim accepts up to 7 (|x_hat| <= 255 << 7, 16 bits);
# MAX_INPUT_BITS (16): the widest declared input codes. All three live in intsim.limits.


def _ceil_sqrt(value: int) -> int:
    root = math.isqrt(value)
    return root if root * root == value else root + 1


def normalized_bound(channels: int) -> int:
    """``N(C) = ceil(2*sqrt(C-1)) * 2**F``: a proven bound on ``|n_c|`` for a row of ``C`` channels.

    ``|t_c| <= sqrt((C-1)*D)`` (a single deviation cannot exceed the whole spread) and ``sigma = isqrt(D) >=
    sqrt(D)/2`` for ``D >= 1``, so ``|t_c * inv| <= |t_c| * 2**P / sigma <= 2*sqrt(C-1) * 2**P``; the rounding
    shift by ``P - F`` keeps the bound because it is a multiple of ``2**(P-F)``. ``N(1) = 0``.

    >>> normalized_bound(1), normalized_bound(2), normalized_bound(192) == 28 * 2**16
    (0, 131072, True)
    """
    return _ceil_sqrt(4 * (channels - 1)) << NORM_FRACTION_BITS


# --------------------------------------------------------------------------------------------------------------
# plan time: float gamma / beta / out_scale -> integer (M, B, k)
# --------------------------------------------------------------------------------------------------------------


class LayerNormConstants(NamedTuple):
    """Per-channel integer affine constants of :func:`ptf_layernorm` (int64 arrays of length ``C``)."""

    multiplier: np.ndarray
    bias: np.ndarray
    shift: np.ndarray


def _float_vector(value, name: str, op: str, channels: int | None) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == np.bool_ or array.dtype.kind not in "fiu":
        raise TypeError(f"{op}: {name} must be a real (float or integer) array, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if channels is None:
        if array.ndim != 1 or not 1 <= array.shape[0] <= MAX_CHANNELS:
            raise ValueError(f"{op}: {name} must be a vector of 1..{MAX_CHANNELS} channels, got shape {array.shape}")
    elif array.ndim > 1 or (array.ndim == 1 and array.shape[0] not in (1, channels)):
        raise ValueError(
            f"{op}: {name} must be a scalar or a per-channel vector of length {channels}, got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{op}: {name} must be finite, got {array[~np.isfinite(array)][0]!r}")
    return np.broadcast_to(array.reshape(-1), (channels,)) if channels is not None else array


def _dyadic(real: float) -> tuple[int, int]:
    """``(M, s)`` with ``M / 2**s`` the 31-bit dyadic nearest ``real`` (quantize_multiplier; ``s`` may exceed 62)."""
    if abs(real) >= 2.0**-32:
        return quantize_multiplier(real)
    pre = -math.frexp(real)[1]  # real * 2**pre lies in [0.5, 1): an exact power-of-two scaling
    multiplier, shift = quantize_multiplier(math.ldexp(real, pre))
    return multiplier, shift + pre


def layernorm_constants(gamma, beta, out_scale) -> LayerNormConstants:
    """Plan time (float in, integers out): the per-channel ``(M, B, k)`` of :func:`ptf_layernorm`.

    With ``g = gamma_c / out_scale`` and ``b = beta_c / out_scale`` (float64 divisions; ``out_scale`` a
    positive scalar or per-channel vector)::

        (M0, s0) = quantize_multiplier(g)        # g = M0 / 2**s0 * (1 + e), |e| <= 2**-31, 2**30 <= |M0| < 2**31
        k        = s0 + F                        # n carries F fraction bits; g == 0: M0 = 0, k = 62
        repeat, k = k-1 each time, while k > 62 or N(C)*|M| + |B| + 2**(k-1) > 2**63 - 1:
            M = sign(M0) * ((|M0| + 2**(d-1)) >> d),  d = s0 + F - k     # fewer mantissa bits, ties away
        B  = round(ldexp(b, k))                  # Python round (half to even) of the exact float product

    so ``y ~ n/2**F * g + b``. Guarantees (tested): ``|M / 2**(k-F) - g| <= |g| * 2**-31`` when no reduction was
    needed (the usual case: ``k = s0 + 16 ~ 42`` for ``g ~ 20``) and ``<= |g| * 2**-31 + 2**-(k-F+1)`` otherwise;
    ``|B / 2**k - b| <= 2**-(k+1)``; both relative to the float64 quotients, which carry ``2**-53`` relative error
    of their own. ``gamma_c = 0`` gives ``M_c = 0`` (the channel outputs ``round(b) + zp_out``); a negative
    gamma gives a negative ``M_c``. ``|g|`` tiny enough to lose every mantissa bit also gives ``M_c = 0``.

    Raises ``TypeError``/``ValueError`` for non-real, non-finite or mis-shaped arguments, a non-positive
    ``out_scale`` or ``|g| >= 2**31``, and ``OverflowError`` when ``|b|`` is too large to fit even with ``k = 0``.

    >>> c = layernorm_constants([1.0, -0.5, 0.0], [0.0, 0.25, 1.5], 0.0625)
    >>> c.multiplier.tolist(), c.bias.tolist(), c.shift.tolist()
    ([1073741824, -1073741824, 0], [0, 35184372088832, 6917529027641081856], [42, 43, 58])
    """
    op = "layernorm_constants"
    gamma = _float_vector(gamma, "gamma", op, None)
    channels = gamma.shape[0]
    beta = _float_vector(beta, "beta", op, channels)
    out_scale = _float_vector(out_scale, "out_scale", op, channels)
    if np.any(out_scale <= 0):
        raise ValueError(f"{op}: out_scale must be positive, got {float(out_scale[out_scale <= 0][0])!r}")
    bound_n = normalized_bound(channels)
    multipliers = np.zeros(channels, dtype=np.int64)
    biases = np.zeros(channels, dtype=np.int64)
    shifts = np.zeros(channels, dtype=np.int64)
    for c in range(channels):
        g = float(gamma[c]) / float(out_scale[c])
        b = float(beta[c]) / float(out_scale[c])
        if not (math.isfinite(g) and math.isfinite(b)):
            raise ValueError(f"{op}: gamma[{c}] / out_scale or beta[{c}] / out_scale is not finite ({g!r}, {b!r})")
        if abs(g) >= 2.0**31:
            raise ValueError(f"{op}: gamma[{c}] / out_scale = {g!r} is too large; |gamma / out_scale| must be < 2**31")
        if g == 0.0:
            m0, k_start = 0, MAX_SHIFT
        else:
            m0, s0 = _dyadic(g)
            k_start = s0 + NORM_FRACTION_BITS
        for k in range(min(k_start, MAX_SHIFT), -1, -1):
            drop = k_start - k
            magnitude = (abs(m0) + (1 << drop >> 1)) >> drop
            m = magnitude if m0 >= 0 else -magnitude
            scaled = math.ldexp(b, k)
            if not math.isfinite(scaled):
                continue
            bias = round(scaled)
            if bound_n * magnitude + abs(bias) + (1 << k >> 1) <= INT64_MAX:
                break
        else:
            raise OverflowError(
                f"{op}: channel {c}: beta / out_scale = {b!r} (with gamma / out_scale = {g!r}) does not fit the int64 "
                f"affine n*M + B even with shift 0"
            )
        multipliers[c], biases[c], shifts[c] = m, bias, k
    return LayerNormConstants(multipliers, biases, shifts)


# --------------------------------------------------------------------------------------------------------------
# run time: validation shared by the reference and the kernel
# --------------------------------------------------------------------------------------------------------------


class LayerNormParams(NamedTuple):
    """Validated ptf_layernorm parameters: the declared input range, int64 per-channel ``(C,)`` vectors, the output
    code range and the rounding code."""

    channels: int
    in_lo: int
    in_hi: int
    zero_point: int
    alpha: np.ndarray
    multiplier: np.ndarray
    bias: np.ndarray
    shift: np.ndarray
    out_zero_point: int
    qmin: int
    qmax: int
    mode: int


def check_ptf_layernorm_parameters(q: Operand, zero_point, alpha, multiplier, bias, shift, out_zero_point, qmin, qmax,
                                   bits, signed, rounding, op="ptf_layernorm") -> LayerNormParams:
    """Validate a ptf_layernorm call (module docstring's contract): ``q`` has ``1 <= C <= 2**14`` channels on its last
    axis and codes in the declared range of ``bits`` (1..16) / ``signed``, ``zero_point`` inside it, ``[qmin, qmax]``
    inside int32 with ``out_zero_point`` in it, ``alpha`` in ``[0, 7]``, ``|multiplier| < 2**31``, int64 ``bias`` and
    ``shift`` in ``[0, 62]`` per tensor or per channel. Backend-neutral (``q`` an :class:`~intsim.ops._checks.Operand`)."""
    if len(q.shape) == 0:
        raise ValueError(f"{op}: q must have at least one axis (the last one holds the C channels), got a scalar")
    channels = q.shape[-1]
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"{op}: q has C = {channels} channels (last axis); allowed range [1, {MAX_CHANNELS}]")
    in_lo, in_hi = declared_code_range(bits, signed, op, max_bits=MAX_INPUT_BITS)
    check_in_range(q, "q", op, in_lo, in_hi)
    zero_point = check_int(zero_point, "zero_point", op, lo=in_lo, hi=in_hi)
    qmin, qmax, out_zero_point = check_output_range(qmin, qmax, out_zero_point, op, "out_zero_point")
    mode = rounding_code(rounding, op)
    of = " (the last axis of q)"
    alpha = per_channel_vector(alpha, "alpha", op, channels, 0, MAX_PTF_ALPHA, of=of)
    multiplier = per_channel_vector(multiplier, "multiplier", op, channels, -MAX_MULTIPLIER, MAX_MULTIPLIER, of=of)
    bias = per_channel_vector(bias, "bias", op, channels, INT64_MIN, INT64_MAX, of=of)
    shift = per_channel_vector(shift, "shift", op, channels, 0, MAX_SHIFT, of=of)
    return LayerNormParams(channels, in_lo, in_hi, zero_point, alpha, multiplier, bias, shift, out_zero_point, qmin,
                           qmax, mode)


def prove_ptf_layernorm_bounds(p: LayerNormParams, op: str = "ptf_layernorm") -> None:
    """Prove every int64 width of the module docstring from the declared code range and the constants alone (exact
    Python ints; no pass over the data), ``OverflowError`` naming the intermediate (and the channel) otherwise."""
    channels = p.channels
    # statistics: |x_hat| <= X, C*S2 and S1**2 <= C**2 * X**2, |t| <= 2*C*X
    x_bound = max(abs(p.in_lo - p.zero_point), abs(p.in_hi - p.zero_point)) << int(p.alpha.max())
    check_int_bounds_fit(channels * channels * x_bound * x_bound, "C*S2 and S1**2", op)
    check_int_bounds_fit(2 * channels * x_bound, "t = C*x_hat - S1", op)
    # normalisation: |t * inv| <= 2*sqrt(C-1) * 2**P, then the rounding constant 2**(P-F-1)
    drop = RECIPROCAL_BITS - NORM_FRACTION_BITS
    check_int_bounds_fit((_ceil_sqrt(4 * (channels - 1)) << RECIPROCAL_BITS) + (1 << (drop - 1)), "t * inv", op)
    # affine: |n*M + B| + 2**(k-1) per channel, then the shifted value plus out_zero_point
    bound_n = normalized_bound(channels)
    for c, (m, b, k) in enumerate(zip(p.multiplier.tolist(), p.bias.tolist(), p.shift.tolist())):
        affine = bound_n * abs(m) + abs(b)
        check_int_bounds_fit(affine + (1 << k >> 1), f"n * multiplier + bias (channel {c})", op)
        check_int_bounds_fit((affine >> k) + 1 + abs(p.out_zero_point),
                             f"the shifted affine plus out_zero_point (channel {c})", op)


def _prepare(q, zero_point, alpha, multiplier, bias, shift, out_zero_point, qmin, qmax, bits, signed, rounding, op):
    """Validate every argument and prove every int64 bound; shared by the reference and the kernel."""
    q = as_int_array(q, "q", op)
    p = check_ptf_layernorm_parameters(ArrayOperand(q), zero_point, alpha, multiplier, bias, shift, out_zero_point,
                                       qmin, qmax, bits, signed, rounding, op)
    prove_ptf_layernorm_bounds(p, op)
    return q, p, smallest_code_dtype(p.qmin, p.qmax)


# --------------------------------------------------------------------------------------------------------------
# the reference (the specification) and the kernel
# --------------------------------------------------------------------------------------------------------------


def ptf_layernorm_reference(
    q, *, zero_point, alpha, multiplier, bias, shift, out_zero_point=0, qmin=0, qmax=255, bits=8, signed=False,
    rounding="half_up",
):
    """Reference (the specification) of :func:`ptf_layernorm`: the module docstring's algorithm in numpy int64."""
    q, p, out_dtype = _prepare(q, zero_point, alpha, multiplier, bias, shift, out_zero_point, qmin, qmax, bits, signed,
                               rounding, "ptf_layernorm_reference")
    steps = layernorm_steps(q, p.zero_point, p.alpha, p.multiplier, p.bias, p.shift, p.out_zero_point, rounding)
    return np.clip(steps["rounded"], p.qmin, p.qmax).astype(out_dtype)


def layernorm_steps(q, zero_point, alpha, multiplier, bias, shift, out_zero_point, rounding) -> dict[str, np.ndarray]:
    """Every intermediate of the module docstring's algorithm, unclipped, as int64 numpy arrays (no validation:
    :func:`ptf_layernorm_reference` validates first; the accumulator report of ``intsim report`` reads them):
    ``x_hat, S1, S2, D, sigma, inv, t, t_inv, n, affine, rounded`` (``rounded`` before saturation)."""
    x_hat = (np.asarray(q).astype(np.int64) - zero_point) << np.asarray(alpha).astype(np.int64)  # (..., C)
    channels = x_hat.shape[-1]
    s1 = x_hat.sum(axis=-1, keepdims=True)
    s2 = (x_hat * x_hat).sum(axis=-1, keepdims=True)
    d = channels * s2 - s1 * s1
    sigma = isqrt_reference(d)
    inv = np.where(sigma > 0, (1 << RECIPROCAL_BITS) // np.maximum(sigma, 1), 0)
    t = channels * x_hat - s1
    t_inv = t * inv
    n = rounding_shift_right_reference(t_inv, RECIPROCAL_BITS - NORM_FRACTION_BITS, rounding)
    affine = n * multiplier + bias
    rounded = rounding_shift_right_reference(affine, shift, rounding) + out_zero_point
    return {"x_hat": x_hat, "S1": s1, "S2": s2, "D": d, "sigma": sigma, "inv": inv, "t": t, "t_inv": t_inv, "n": n,
            "affine": affine, "rounded": rounded}


@parallel_kernel
def _ptf_layernorm_kernel(q, zero_point, alpha, multiplier, bias, shift, out_zero_point, qmin, qmax, mode, out):
    # q and out are (rows, C); one row (token) per thread, serial sums inside the row
    channels = np.int64(q.shape[1])
    one = np.int64(1) << RECIPROCAL_BITS
    drop = RECIPROCAL_BITS - NORM_FRACTION_BITS
    for row in prange(q.shape[0]):
        s1 = np.int64(0)
        s2 = np.int64(0)
        for c in range(q.shape[1]):
            x = (np.int64(q[row, c]) - zero_point) << alpha[c]
            s1 += x
            s2 += x * x
        sigma = isqrt_scalar(channels * s2 - s1 * s1)
        inv = one // sigma if sigma > 0 else np.int64(0)
        for c in range(q.shape[1]):
            x = (np.int64(q[row, c]) - zero_point) << alpha[c]
            n = round_shift_scalar((channels * x - s1) * inv, drop, mode)
            y = round_shift_scalar(n * multiplier[c] + bias[c], shift[c], mode) + out_zero_point
            out[row, c] = min(max(y, qmin), qmax)


def ptf_layernorm(
    q, *, zero_point, alpha, multiplier, bias, shift, out_zero_point=0, qmin=0, qmax=255, bits=8, signed=False,
    rounding="half_up",
):
    """Integer LayerNorm of PTF codes along the last axis; returns codes in ``[qmin, qmax]``.

    See the module docstring for the algorithm and the integer contract; ``multiplier``/``bias``/``shift``
    come from :func:`layernorm_constants`. Raises ``TypeError`` for non-integer arguments, ``ValueError``
    for out-of-range codes, zero points, alphas, multipliers, shifts, per-channel lengths, ``C`` and unknown
    rounding modes, and ``OverflowError`` when an int64 intermediate could overflow.

    >>> import numpy as np
    >>> q = np.array([[28, 78, 178, 228], [7, 7, 7, 7]], dtype=np.uint8)
    >>> c = layernorm_constants(np.ones(4), np.zeros(4), 0.0625)    # y = 16 * (x - mean) / std
    >>> ptf_layernorm(q, zero_point=128, alpha=0, out_zero_point=128, **c._asdict())  # float: 107.8 117.9 138.1 148.2
    array([[108, 118, 138, 148],
           [128, 128, 128, 128]], dtype=uint8)
    """
    op = "ptf_layernorm"
    q, p, out_dtype = _prepare(q, zero_point, alpha, multiplier, bias, shift, out_zero_point, qmin, qmax, bits, signed,
                               rounding, op)
    rows = np.ascontiguousarray(q).reshape(-1, p.channels)
    out = np.empty(rows.shape, dtype=out_dtype)
    if rows.shape[0]:
        _ptf_layernorm_kernel(
            rows, np.int64(p.zero_point), p.alpha, p.multiplier, p.bias, p.shift, np.int64(p.out_zero_point),
            np.int64(p.qmin), np.int64(p.qmax), p.mode, out,
        )
    return out.reshape(q.shape)
