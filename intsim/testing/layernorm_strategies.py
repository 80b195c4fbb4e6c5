"""Hypothesis strategies for the integer square root and the PTF LayerNorm (:mod:`intsim.ops.layernorm`).

Every strategy mixes corner cases into its draws: perfect squares and their neighbours for ``isqrt``;
constant rows (``sigma = 0``), rows with one outlier channel, rows of extreme codes only and all PTF
alphas ``0..3`` for LayerNorm. Bounds are keyword-only; shapes stay small so the ``ci`` profile runs fast.

    from intsim.testing import layernorm_strategies as lns
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from intsim.ops._checks import INT64_MAX, int_range, smallest_code_dtype
from intsim.ops.layernorm import MAX_PTF_ALPHA, layernorm_constants, normalized_bound
from intsim.ops.requant import MAX_SHIFT, MULTIPLIER_BITS
from intsim.testing.strategies import int_codes, rounding_modes

__all__ = [
    "isqrt_values",
    "isqrt_arrays",
    "ptf_alphas",
    "layernorm_rows",
    "layernorm_affine_floats",
    "layernorm_int_params",
    "layernorm_cases",
    "layernorm_float_cases",
    "ROW_KINDS",
]

ROW_KINDS = ("random", "constant", "zero_point", "outlier", "extremes", "narrow")
_MAX_ROOT = math.isqrt(INT64_MAX)  # 3037000499


def isqrt_values(*, max_value: int = INT64_MAX) -> st.SearchStrategy[int]:
    """Integers in ``[0, max_value]``: uniform, corner values, perfect squares ``r*r`` and ``r*r - 1``, ``r*r + 2*r``."""
    max_root = math.isqrt(max_value)

    def near_square(root_and_offset):
        root, offset = root_and_offset
        return min(max(root * root + offset, 0), max_value)

    roots = st.sampled_from(sorted(r for r in {0, 1, 2, max_root, max_root - 1, 2**31 - 1, 2**31, 2**31 + 1} if 0 <= r <= max_root))
    squares = st.tuples(roots | st.integers(0, max_root), st.sampled_from([-1, 0, 1, 2])).map(near_square)
    upper = st.tuples(roots | st.integers(0, max_root), st.just(0)).map(lambda ro: min(ro[0] * ro[0] + 2 * ro[0], max_value))
    return int_codes(lo=0, hi=max_value) | squares | upper


def isqrt_arrays(*, max_value: int = INT64_MAX, max_side: int = 8) -> st.SearchStrategy[np.ndarray]:
    """int64 arrays (0 to 2 axes) of :func:`isqrt_values`."""
    shape = hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=max_side)
    return hnp.arrays(np.int64, shape, elements=isqrt_values(max_value=max_value))


def ptf_alphas(*, channels: int) -> st.SearchStrategy[np.ndarray]:
    """Per-channel PTF shifts: int64 ``(channels,)`` in ``[0, 3]`` (all equal, all zero, all three, or mixed)."""
    if channels > 16:  # long vectors come from a drawn seed (fast), short ones element by element (shrinkable)
        mixed = st.integers(0, 2**32 - 1).map(lambda seed: np.random.default_rng(seed).integers(0, MAX_PTF_ALPHA + 1, channels))
    else:
        mixed = st.lists(st.integers(0, MAX_PTF_ALPHA), min_size=channels, max_size=channels)
    constant = st.integers(0, MAX_PTF_ALPHA).map(lambda a: [a] * channels)
    return (mixed | constant).map(lambda values: np.array(values, dtype=np.int64))


@st.composite
def _row(draw, channels: int, lo: int, hi: int, zero_point: int, kinds):
    kind = draw(st.sampled_from(kinds))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "constant":
        return np.full(channels, draw(int_codes(lo=lo, hi=hi)), dtype=np.int64)
    if kind == "zero_point":  # x_hat = 0 everywhere, whatever the alphas: sigma = 0
        return np.full(channels, zero_point, dtype=np.int64)
    if kind == "outlier":  # a near-constant row with one extreme channel (the residual-stream outlier)
        base = draw(int_codes(lo=lo, hi=hi))
        row = np.clip(base + rng.integers(-2, 3, channels), lo, hi)
        row[draw(st.integers(0, channels - 1))] = draw(st.sampled_from([lo, hi]))
        return row.astype(np.int64)
    if kind == "extremes":
        return rng.choice(np.array([lo, hi], dtype=np.int64), channels)
    if kind == "narrow":  # small spread: small D, the hardest case for the precision of floor(sqrt(D))
        base = draw(int_codes(lo=lo, hi=hi))
        return np.clip(base + rng.integers(-1, 2, channels), lo, hi).astype(np.int64)
    if channels <= 16:
        return np.array(draw(st.lists(int_codes(lo=lo, hi=hi), min_size=channels, max_size=channels)), dtype=np.int64)
    return rng.integers(lo, hi + 1, channels, dtype=np.int64)


@st.composite
def layernorm_rows(
    draw, *, channels: int, zero_point: int, bits: int = 8, signed: bool = False, max_rows: int = 4, kinds=ROW_KINDS,
    dtype=None,
):
    """Codes ``q`` of shape ``(..., channels)`` (0 to 2 leading axes, at most ``max_rows`` rows in all).

    Each row is one of ``kinds``: ``random`` (corner codes mixed in), ``constant`` (one code), ``zero_point``
    (all codes equal ``zero_point``), ``outlier`` (near-constant plus one extreme channel), ``extremes``
    (only the two end codes) or ``narrow`` (codes within +-1 of a base). ``dtype`` defaults to the narrowest.
    """
    lo, hi = int_range(bits, signed)
    lead = draw(st.sampled_from([(), (1,), (max_rows,), (1, max_rows), (2, max(max_rows // 2, 1)), (0,)]))
    rows = math.prod(lead)
    data = [draw(_row(channels, lo, hi, zero_point, kinds)) for _ in range(rows)]
    q = np.array(data, dtype=np.int64).reshape(lead + (channels,))
    return q.astype(smallest_code_dtype(lo, hi) if dtype is None else dtype)


@st.composite
def layernorm_affine_floats(draw, *, channels: int):
    """Float LN parameters ``(gamma, beta, out_scale)``: gamma in [-4, 4] with 0 and +-tiny mixed in, beta in
    [-4, 4] with 0 mixed in, out_scale in [2**-8, 1] (so ``gamma / out_scale`` stays within ``2**10``)."""
    gamma_elements = st.sampled_from([0.0, 1.0, -1.0, 1e-12, -3.5]) | st.floats(-4.0, 4.0)
    beta_elements = st.sampled_from([0.0, 0.5, -0.25]) | st.floats(-4.0, 4.0)
    if channels > 16:  # a seeded draw with one corner channel each
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        gamma, beta = rng.uniform(-4.0, 4.0, channels), rng.uniform(-4.0, 4.0, channels)
        gamma[draw(st.integers(0, channels - 1))] = draw(gamma_elements)
        beta[draw(st.integers(0, channels - 1))] = draw(beta_elements)
    else:
        gamma = np.array(draw(st.lists(gamma_elements, min_size=channels, max_size=channels)), dtype=np.float64)
        beta = np.array(draw(st.lists(beta_elements, min_size=channels, max_size=channels)), dtype=np.float64)
    out_scale = draw(st.sampled_from([2.0**-8, 0.05, 1.0 / 3.0, 1.0]) | st.floats(2.0**-8, 1.0))
    return gamma, beta, out_scale


@st.composite
def layernorm_int_params(draw, *, channels: int):
    """Raw integer ``(multiplier, bias, shift)`` vectors of length ``channels`` that satisfy the op's bound
    ``N(C)*|M| + |B| + 2**(k-1) <= 2**63 - 1`` (multipliers clipped, biases drawn inside the room left),
    corner values (``|M| = 2**31 - 1``, ``k`` in {0, 62}, extreme biases) mixed in."""
    bound_n = normalized_bound(channels)
    hi_m = 2**MULTIPLIER_BITS - 1
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    corner = set(draw(st.lists(st.integers(0, channels - 1), max_size=4))) if channels > 16 else set(range(channels))
    multipliers, biases, shifts = [], [], []
    for channel in range(channels):
        # channels in `corner` are drawn by hypothesis (corner values mixed in); the rest of a long vector is seeded
        k = draw(int_codes(lo=0, hi=MAX_SHIFT)) if channel in corner else int(rng.integers(0, MAX_SHIFT + 1))
        room = INT64_MAX - (1 << k >> 1) - 2**17  # leaves room for the rounding constant and out_zero_point
        m = draw(int_codes(lo=-hi_m, hi=hi_m)) if channel in corner else int(rng.integers(-hi_m, hi_m + 1))
        if bound_n and abs(m) * bound_n > room:
            m = int(math.copysign(room // bound_n, m))
        b_room = room - abs(m) * bound_n
        if channel in corner:
            b = draw(int_codes(lo=-b_room, hi=b_room))
        else:  # a bias of the size the shift calls for, well inside the room
            b = int(rng.integers(-(2**20), 2**20)) << max(k - 20, 0)
            b = max(min(b, b_room), -b_room)
        multipliers.append(m)
        biases.append(b)
        shifts.append(k)
    return (np.array(multipliers, dtype=np.int64), np.array(biases, dtype=np.int64), np.array(shifts, dtype=np.int64))


@st.composite
def layernorm_cases(draw, *, min_channels: int = 1, max_channels: int = 64, channels=None, max_rows: int = 4,
                    raw_params: bool | None = None):
    """A full keyword set for ``ptf_layernorm(**case)``.

    ``channels`` (an int or a strategy) defaults to ``integers(min_channels, max_channels)`` with 1, 2 and the
    maximum mixed in. Input codes are 8-bit unsigned most of the time, sometimes another width/signedness;
    the affine constants come from :func:`layernorm_constants` on drawn floats, or are raw integers at the
    edges of the proven bound (``raw_params=None`` draws both kinds); the output range is uint8 or a drawn
    2..16-bit range; the rounding mode is drawn.
    """
    if channels is None:
        channels = st.sampled_from([1, 2, max_channels]) | st.integers(min_channels, max_channels)
    channels = draw(channels) if isinstance(channels, st.SearchStrategy) else channels
    bits, signed = draw(st.sampled_from([(8, False)] * 4 + [(8, True), (4, False), (1, False), (12, False)]))
    lo, hi = int_range(bits, signed)
    zero_point = draw(int_codes(lo=lo, hi=hi))
    q = draw(layernorm_rows(channels=channels, zero_point=zero_point, bits=bits, signed=signed, max_rows=max_rows))
    alpha = draw(ptf_alphas(channels=channels))
    raw_params = draw(st.booleans()) if raw_params is None else raw_params
    if raw_params:
        multiplier, bias, shift = draw(layernorm_int_params(channels=channels))
    else:
        multiplier, bias, shift = layernorm_constants(*draw(layernorm_affine_floats(channels=channels)))
    if draw(st.booleans()):
        qmin, qmax = 0, 255
    else:
        qmin, qmax = int_range(draw(st.integers(2, 16)), draw(st.booleans()))
    return dict(
        q=q, zero_point=zero_point, alpha=alpha, multiplier=multiplier, bias=bias, shift=shift,
        out_zero_point=draw(int_codes(lo=qmin, hi=qmax)), qmin=qmin, qmax=qmax, bits=bits, signed=signed,
        rounding=draw(rounding_modes()),
    )


@st.composite
def layernorm_float_cases(draw, *, min_channels: int = 2, max_channels: int = 64, max_rows: int = 4, kinds=ROW_KINDS):
    """A float-side LayerNorm case for accuracy checks: uint8 PTF codes plus float ``gamma``, ``beta``,
    ``out_scale``, an input scale ``in_scale`` (the finest PTF scale) and a uint8 output zero point.

    Returns ``dict(q, zero_point, alpha, in_scale, gamma, beta, out_scale, out_zero_point, rounding)``.
    """
    channels = draw(st.sampled_from([min_channels, max_channels]) | st.integers(min_channels, max_channels))
    zero_point = draw(int_codes(lo=0, hi=255))
    q = draw(layernorm_rows(channels=channels, zero_point=zero_point, max_rows=max_rows, kinds=kinds))
    gamma, beta, out_scale = draw(layernorm_affine_floats(channels=channels))
    return dict(
        q=q, zero_point=zero_point, alpha=draw(ptf_alphas(channels=channels)),
        in_scale=draw(st.sampled_from([1.0, 0.01]) | st.floats(1e-4, 10.0)), gamma=gamma, beta=beta,
        out_scale=out_scale, out_zero_point=draw(int_codes(lo=0, hi=255)), rounding=draw(rounding_modes()),
    )

