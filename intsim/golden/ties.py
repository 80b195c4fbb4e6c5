"""Exact rounding ties, built on purpose: the corner cases that tell the three rounding modes apart.

``round_shift(v, k)`` rounds ``v / 2**k``; the modes differ only on an **exact tie**, ``v ≡ 2**(k-1) (mod 2**k)``
(the fraction is exactly one half): ``half_up`` gives ``floor + 1``, ``half_even`` the even one of ``floor`` and
``floor + 1``, ``half_away`` ``floor + 1`` for a positive and ``floor`` for a negative value. A tie whose floor is
even separates ``half_even`` from the others; a negative tie separates ``half_up`` from ``half_away``. Ties are
computed here, never guessed, with Python integers:

- :func:`tie_operand` solves ``base + y * M ≡ 2**(k-1) (mod 2**k)`` for the operand ``y`` (a Requantize
  accumulator with ``base = 0``, a ResidualAdd ``b`` after ``(a - a_zp) * Ma``, a LayerNorm bias with ``M = 1``);
- :func:`power_of_two_sigma_rows` finds LayerNorm rows whose ``sigma = isqrt(C*S2 - S1**2)`` is a power of two
  ``2**p``: then ``n = t << (16 - p)`` exactly, and :func:`layernorm_tie_constants` makes every ``n * M + B`` of
  those rows a tie (``M = m << (k - 16 + p_max)``, ``B = b << k | 2**(k-1)``).

:func:`tie_program` is the hand-built Program of ``golden/ties/<mode>/`` (numpy only, no calibration, no floats):
``pixels (3, 8, 8) -> Patchify -> LayerNorm -> Linear -> Requantize -> ResidualAdd (+ a constant, like a position
embedding)``, where every element of the LayerNorm, Requantize and ResidualAdd outputs is an exact tie on
:func:`tie_pixels`, and the last two whatever codes arrive: the Linear's weights are multiples of ``2**j`` and its
biases ``≡ 2**(j-1) (mod 2**j)``, so is the constant ``b - 128``, and ``(a - 128)`` passes the ResidualAdd exactly
(``Ma = 2**k``). The three Programs differ only in their ``rounding``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from intsim.golden.formats import width_of_range
from intsim.ops.layernorm import NORM_FRACTION_BITS
from intsim.program import Op, Program, TensorSpec

__all__ = ["TIE_SOURCE", "is_tie", "layernorm_tie_constants", "power_of_two_sigma_rows", "tie_operand",
           "tie_pixels", "tie_program"]

TIE_SOURCE = "intsim.golden.ties.tie_pixels()"
_PATCH = 2
_ZERO_POINT = 128  # of the pixels, patches and every code tensor of the tie Program
_CODE = (8, False)
_MULTIPLIER = (32, True)
_SHIFT = (6, False)


def is_tie(value: int, shift: int) -> bool:
    """Is ``value / 2**shift`` an exact tie (fraction exactly one half)?"""
    return shift > 0 and value % (1 << shift) == 1 << (shift - 1)


def tie_operand(base: int, multiplier: int, shift: int, target: int) -> int:
    """The integer ``y`` that makes ``base + y * multiplier`` an exact tie of a right shift by ``shift``, chosen
    so the value ``(base + y * multiplier) / 2**shift`` is as near ``target + 1/2`` as the solutions allow.

    The solutions are one residue class modulo ``2**shift / g`` (``g = gcd(multiplier, 2**shift)``); they exist
    when ``g`` divides ``2**(shift-1) - base``, else ``ValueError``. The value lands within ``|multiplier| / g / 2``
    of ``target + 1/2``.
    """
    base, multiplier, shift = int(base), int(multiplier), int(shift)
    if shift < 1 or multiplier == 0:
        raise ValueError(f"no tie: shift {shift} must be at least 1 and the multiplier non-zero")
    modulus = 1 << shift
    need = ((1 << (shift - 1)) - base) % modulus  # y * multiplier ≡ need (mod 2**shift)
    g = math.gcd(multiplier, modulus)
    if need % g:
        raise ValueError(f"no y makes {base} + y * {multiplier} a tie of a shift by {shift}")
    step = modulus // g
    first = (need // g) * pow(multiplier // g, -1, step) % step if step > 1 else 0
    ideal = Fraction(target * modulus + modulus // 2 - base, multiplier)
    return first + step * round((ideal - first) / step)


def _lcg_codes(seed: int, low: int, high: int):
    """Deterministic integers in ``[low, high]`` from a 64-bit LCG (Knuth's MMIX constants), the same on every
    platform and numpy version."""
    state = seed
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        yield low + (state >> 33) % (high - low + 1)


def power_of_two_sigma_rows(count: int, alpha, *, zero_point: int, spread: int, max_log2: int, seed: int = 1):
    """``(rows, log2_sigmas)``: ``count`` rows of codes in ``zero_point ± spread`` (deterministic) whose LayerNorm
    ``sigma = isqrt(C*S2 - S1**2)`` of ``x_hat = (q - zero_point) << alpha`` is ``2**p`` with ``1 <= p <= max_log2``.
    """
    alpha = [int(a) for a in alpha]
    codes = _lcg_codes(seed, zero_point - spread, zero_point + spread)
    rows, logs = [], []
    for _ in range(200_000):
        row = [next(codes) for _ in alpha]
        x_hat = [(q - zero_point) << a for q, a in zip(row, alpha)]
        sigma = math.isqrt(len(x_hat) * sum(x * x for x in x_hat) - sum(x_hat) ** 2)
        if sigma >= 2 and sigma & (sigma - 1) == 0 and sigma.bit_length() - 1 <= max_log2:
            rows.append(row)
            logs.append(sigma.bit_length() - 1)
            if len(rows) == count:
                return np.array(rows, dtype=np.int64), logs
    raise ValueError(f"found only {len(rows)} of {count} rows with a power-of-two sigma")


def layernorm_tie_constants(m, shift, bias_floor, max_log2: int):
    """Per-channel ``(multiplier, bias, shift)`` int64 arrays that make ``n * M + B`` an exact tie for every row
    whose sigma is ``2**p`` with ``p <= max_log2``: ``M = m << (k - 16 + max_log2)`` (so ``n * M`` is a multiple
    of ``2**k``) and ``B = tie_operand(0, 1, k, b)`` (``b + 1/2`` after the shift). The output of such a row is
    ``t * m * 2**(max_log2 - p) + b + 1/2`` before rounding, ``t = C * x_hat - S1``."""
    multiplier = [int(mc) << (int(k) - NORM_FRACTION_BITS + max_log2) for mc, k in zip(m, shift)]
    bias = [tie_operand(0, 1, k, b) for k, b in zip(shift, bias_floor)]
    return (np.array(multiplier, dtype=np.int64), np.array(bias, dtype=np.int64), np.array(shift, dtype=np.int64))


# ------------------------------------------------------------------------------------------ the tie Program
_NORM_ALPHA = (0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1)  # the 12 patch channels (3 colours x 2 x 2 pixels)
_NORM_M = (1, -1, 2, 1, -1, 1, -2, 1, 1, -1, 2, 1)
_NORM_SHIFT = (42, 42, 20, 12, 42, 30, 25, 42, 13, 42, 28, 42)
_NORM_BIAS = (-2, 0, 1, -1, 2, 0, -3, 1, 0, 1, -1, 2)
_NORM_MAX_LOG2 = 4
_LINEAR_J = (1, 2, 3, 4, 1, 2, 3, 4)  # output channel c: weights are multiples of 2**j, bias ≡ 2**(j-1)
_LINEAR_OFFSET = (0, -1, 2, 1, -2, 0, 1, -1)
_REQUANT_M = (1, -1, 1, 1, -1, 1, -1, 3)
_REQUANT_EXTRA = (29, 29, 27, 10, 27, 0, 20, 26)  # k = j + extra
_RESIDUAL_SHIFT = (30, 30, 29, 30, 28, 30, 29, 30)  # Ma = 2**k: (a - zp) passes exactly
_RESIDUAL_MB = (-1, 1, -1, 1, 3, -3, 1, -1)  # odd: Mb = mb << (k - j)


def tie_pixels() -> np.ndarray:
    """The one input of the tie Program: uint8 ``(3, 8, 8)`` whose 16 patches are LayerNorm rows with a
    power-of-two sigma (:func:`power_of_two_sigma_rows`, codes ``128 ± 3``)."""
    rows, _ = power_of_two_sigma_rows(16, _NORM_ALPHA, zero_point=_ZERO_POINT, spread=3, max_log2=_NORM_MAX_LOG2)
    grid = 8 // _PATCH  # patch (gy, gx), channel index c*p*p + i*p + j (Patchify's order) -> pixel (c, y, x)
    patches = rows.reshape(grid, grid, 3, _PATCH, _PATCH)
    return np.ascontiguousarray(patches.transpose(2, 0, 3, 1, 4).reshape(3, 8, 8)).astype(np.uint8)


def _linear_weight() -> np.ndarray:
    """``(8, 12)`` int8: output channel ``c`` reads inputs ``c`` (+) and ``c + 4`` (-), times ``2**j_c``."""
    weight = np.zeros((len(_LINEAR_J), len(_NORM_ALPHA)), dtype=np.int64)
    for c, j in enumerate(_LINEAR_J):
        weight[c, c] = 1 << j
        weight[c, c + 4] = -(1 << j)
    return weight.astype(np.int8)


def _residual_constant() -> np.ndarray:
    """``(16, 8)`` uint8 ``b`` with ``b - 128 = (2u + 1) << (j_c - 1)``, ``2u + 1`` odd in ``[-15, 15]``."""
    odd = np.array([[2 * ((5 * r + 3 * c) % 16 - 8) + 1 for c in range(len(_LINEAR_J))] for r in range(16)])
    return (_ZERO_POINT + (odd << (np.array(_LINEAR_J) - 1))).astype(np.uint8)


def _constant(array, name: str, width=None, zero_point: int = 0) -> tuple[str, np.ndarray, TensorSpec]:
    array = np.asarray(array)
    bits, signed = width or width_of_range(min(int(array.min()), 0), max(int(array.max()), 0))
    return name, array, TensorSpec(bits=bits, signed=signed, zero_point=zero_point, shape=list(array.shape),
                                   kind="constant")


def tie_program(rounding: str) -> Program:
    """The tie Program with every rounding op set to ``rounding`` (deterministic: no randomness, no floats)."""
    norm_m, norm_b, norm_k = layernorm_tie_constants(_NORM_M, _NORM_SHIFT, _NORM_BIAS, _NORM_MAX_LOG2)
    j = np.array(_LINEAR_J)
    linear_bias = (1 << (j - 1)) + (np.array(_LINEAR_OFFSET) << j)
    requant_k = j + np.array(_REQUANT_EXTRA)
    residual_k = np.array(_RESIDUAL_SHIFT)
    weight = _linear_weight()
    span = max(_ZERO_POINT, 255 - _ZERO_POINT)
    acc_width = width_of_range(-(span * int(np.abs(weight).sum(axis=1).max()) + int(np.abs(linear_bias).max())),
                               span * int(np.abs(weight).sum(axis=1).max()) + int(np.abs(linear_bias).max()))
    constants = [
        _constant(np.array(_NORM_ALPHA, dtype=np.uint8), "norm.alpha", (3, False)),
        _constant(norm_m, "norm.multiplier", _MULTIPLIER), _constant(norm_b, "norm.bias"),
        _constant(norm_k, "norm.shift", _SHIFT),
        _constant(weight, "linear.weight", (8, True)),
        _constant(linear_bias.astype(np.int32), "linear.bias", (32, True)),
        _constant(np.array(_REQUANT_M) << (requant_k - j), "requant.multiplier", _MULTIPLIER),
        _constant(requant_k, "requant.shift", _SHIFT),
        _constant(_residual_constant(), "residual.b", _CODE, _ZERO_POINT),
        _constant(np.int64(1) << residual_k, "residual.a_multiplier", _MULTIPLIER),
        _constant(np.array(_RESIDUAL_MB) << (residual_k - j), "residual.b_multiplier", _MULTIPLIER),
        _constant(residual_k, "residual.shift", _SHIFT),
    ]
    codes = dict(bits=8, signed=False, zero_point=_ZERO_POINT)
    tensors = {
        "pixels": TensorSpec(**codes, shape=[3, 8, 8], kind="input"),
        "patches": TensorSpec(**codes), "norm": TensorSpec(**codes),
        "linear.acc": TensorSpec(bits=acc_width[0], signed=True), "requant": TensorSpec(**codes),
        "residual": TensorSpec(**codes, kind="output"),
        **{name: spec for name, _, spec in constants},
    }
    rounds = dict(qmin=0, qmax=255, rounding=rounding)
    ops = [
        Op("Patchify", "patchify", ["pixels"], ["patches"], {"patch": _PATCH}),
        Op("LayerNorm", "norm", ["patches", "norm.alpha", "norm.multiplier", "norm.bias", "norm.shift"], ["norm"],
           {"zero_point": _ZERO_POINT, "out_zero_point": _ZERO_POINT, "bits": 8, "signed": False, **rounds}),
        Op("Linear", "linear", ["norm", "linear.weight", "linear.bias"], ["linear.acc"],
           {"x_zero_point": _ZERO_POINT}),
        Op("Requantize", "requant", ["linear.acc", "requant.multiplier", "requant.shift"], ["requant"],
           {"zero_point": _ZERO_POINT, **rounds}),
        Op("ResidualAdd", "residual", ["requant", "residual.b", "residual.a_multiplier", "residual.b_multiplier",
                                       "residual.shift"], ["residual"],
           {"a_zero_point": _ZERO_POINT, "b_zero_point": _ZERO_POINT, "out_zero_point": _ZERO_POINT, **rounds}),
    ]
    metadata = {"model": "intsim-ties", "config": {"name": f"ties-{rounding}"}, "rounding": rounding}
    return Program(ops=ops, tensors=tensors, constants={name: array for name, array, _ in constants},
                   metadata=metadata).validate()
