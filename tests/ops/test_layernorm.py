"""PTF LayerNorm: kernel == reference, reference == exact Python-int transcription, accuracy against float
LayerNorm, sigma = 0 rows, hand-computed ties, plan-time constants, and refused inputs."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intsim.ops.layernorm import (
    MAX_CHANNELS,
    NORM_FRACTION_BITS as F,
    RECIPROCAL_BITS as P,
    layernorm_constants,
    normalized_bound,
    ptf_layernorm,
    ptf_layernorm_reference,
)
from intsim.ops.requant import quantize_multiplier
from intsim.ops.rounding import ROUNDING_MODES
from intsim.testing import layernorm_strategies as lns
from intsim.testing.oracles import exact_round

INT64_MAX = 2**63 - 1


def exact_layernorm(case) -> np.ndarray:
    """The spec transcribed with Python ints and Fractions (no int64, no numpy arithmetic)."""
    q = case["q"]
    C = q.shape[-1]

    def per_channel(name):
        return [int(v) for v in np.broadcast_to(case[name], (C,))]

    alpha, mult, bias, shift = (per_channel(name) for name in ("alpha", "multiplier", "bias", "shift"))
    out = np.empty(q.shape, dtype=np.int64)
    for index in np.ndindex(q.shape[:-1]):
        xs = [(int(v) - case["zero_point"]) << alpha[c] for c, v in enumerate(q[index].tolist())]
        s1, s2 = sum(xs), sum(x * x for x in xs)
        d = C * s2 - s1 * s1
        assert d >= 0
        sigma = math.isqrt(d)
        inv = 2**P // sigma if sigma else 0
        for c, x in enumerate(xs):
            n = exact_round(Fraction((C * x - s1) * inv, 2 ** (P - F)), case["rounding"])
            y = exact_round(Fraction(n * mult[c] + bias[c], 2 ** shift[c]), case["rounding"]) + case["out_zero_point"]
            out[index + (c,)] = min(max(y, case["qmin"]), case["qmax"])
    return out


# ---------------------------------------------------------------------------------------------------------------
# kernel == reference == exact transcription
# ---------------------------------------------------------------------------------------------------------------


@given(lns.layernorm_cases())
def test_kernel_matches_reference(case):
    want = ptf_layernorm_reference(**case)
    got = ptf_layernorm(**case)
    assert got.dtype == want.dtype and got.shape == case["q"].shape
    np.testing.assert_array_equal(got, want)


@settings(max_examples=60)
@given(lns.layernorm_cases(channels=st.sampled_from([192, 768]), max_rows=3))
def test_kernel_matches_reference_at_vit_widths(case):
    np.testing.assert_array_equal(ptf_layernorm(**case), ptf_layernorm_reference(**case))


@given(lns.layernorm_cases(max_channels=16, max_rows=3))
def test_reference_matches_exact_transcription(case):
    np.testing.assert_array_equal(ptf_layernorm_reference(**case).astype(np.int64), exact_layernorm(case))


def test_all_zero_points_and_extreme_codes_at_the_largest_c():
    # C = 2**14 with 8-bit codes at both ends and alpha = 3: the widest statistics the op accepts
    q = np.zeros((2, MAX_CHANNELS), dtype=np.uint8)
    q[0, ::2] = 255
    q[1, 0] = 255
    c = layernorm_constants(np.full(MAX_CHANNELS, 2.0), np.zeros(MAX_CHANNELS), 0.01)
    case = dict(q=q, zero_point=0, alpha=3, out_zero_point=128, rounding="half_even", **c._asdict())
    got = ptf_layernorm(**case)
    np.testing.assert_array_equal(got, ptf_layernorm_reference(**case))
    # row 0 is +-1 standard deviation exactly: 2 / 0.01 = 200 -> saturates both ways
    assert set(got[0].tolist()) == {0, 255}
    # row 1: the outlier is at +sqrt(C-1) = 128 std -> 255; the others at -1/128 std -> 128 - 1.5625 -> 126
    assert got[1, 0] == 255 and set(got[1, 1:].tolist()) == {126}


# ---------------------------------------------------------------------------------------------------------------
# hand-computed cases: ties, sigma = 0, outliers
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rounding, want",
    [("half_up", [0, 1]), ("half_even", [0, 0]), ("half_away", [-1, 1])],
)
@pytest.mark.parametrize("implementation", [ptf_layernorm, ptf_layernorm_reference])
def test_exact_ties_follow_the_rounding_mode(implementation, rounding, want):
    # x_hat = (-1, 1): S1 = 0, S2 = 2, D = 4, sigma = 2, inv = 2**47, t = -+2, t*inv = -+2**48, n = -+2**16
    # exactly (one standard deviation); M = 1, B = 0, k = F + 1 gives y = -+0.5: a tie in every mode.
    q = np.array([127, 129], dtype=np.uint8)
    got = implementation(q, zero_point=128, alpha=0, multiplier=1, bias=0, shift=F + 1, qmin=-128, qmax=127,
                         rounding=rounding)
    assert got.tolist() == want


@pytest.mark.parametrize(
    "bias_units, want",  # bias / 2**10 with k = 10; sigma = 0 so y = round(B / 2**k) + zp_out
    [(5.5, {"half_up": 6, "half_even": 6, "half_away": 6}), (4.5, {"half_up": 5, "half_even": 4, "half_away": 5}),
     (-4.5, {"half_up": -4, "half_even": -4, "half_away": -5}), (-4.25, {m: -4 for m in ROUNDING_MODES})],
)
@pytest.mark.parametrize("implementation", [ptf_layernorm, ptf_layernorm_reference])
def test_constant_rows_give_the_rounded_bias(implementation, bias_units, want):
    bias = int(bias_units * 2**10)
    rows = np.array([[7, 7, 7, 7], [100, 100, 100, 100], [0, 0, 0, 0]], dtype=np.uint8)
    for rounding, value in want.items():
        # alpha = 1 everywhere keeps the rows constant in x_hat units; a huge multiplier must not matter
        got = implementation(rows, zero_point=3, alpha=1, multiplier=2**31 - 1, bias=bias, shift=10,
                             out_zero_point=10, qmin=0, qmax=255, rounding=rounding)
        assert (got == value + 10).all(), (rounding, got)


@pytest.mark.parametrize("implementation", [ptf_layernorm, ptf_layernorm_reference])
def test_zero_point_rows_are_constant_whatever_the_alphas(implementation):
    q = np.full((1, 5), 131, dtype=np.uint8)
    got = implementation(q, zero_point=131, alpha=np.array([0, 1, 2, 3, 0]), multiplier=2**30, bias=-(3 << 20),
                         shift=20, out_zero_point=1, qmin=0, qmax=15)
    assert got.tolist() == [[0] * 5]  # round(-3) + 1 = -2 saturates at qmin = 0


def test_constant_codes_with_different_alphas_are_not_constant():
    # q - zp = 1 everywhere but alpha differs: x_hat = (1, 8), a two-point row at +-1 std
    c = layernorm_constants(np.ones(2), np.zeros(2), 0.125)
    got = ptf_layernorm(np.array([[1, 1]], dtype=np.uint8), zero_point=0, alpha=np.array([0, 3]),
                        out_zero_point=100, **c._asdict())
    assert got.tolist() == [[92, 108]]


def test_single_channel_is_always_sigma_zero():
    q = np.arange(256, dtype=np.uint8).reshape(-1, 1)
    c = layernorm_constants([3.0], [0.75], 0.5)  # y = round(0.75 / 0.5) = round(1.5) = 2 (half_up)
    assert (ptf_layernorm(q, zero_point=9, alpha=2, out_zero_point=0, **c._asdict()) == 2).all()


@pytest.mark.parametrize("channels", [4, 64, 192, 768])
@pytest.mark.parametrize("outlier_code", [0, 255])
def test_one_outlier_channel(channels, outlier_code):
    # constant row plus one outlier: z = +-sqrt(C-1) for the outlier, -+1/sqrt(C-1) for the rest
    q = np.full((1, channels), 128, dtype=np.uint8)
    q[0, channels // 3] = outlier_code
    c = layernorm_constants(np.full(channels, 0.5), np.zeros(channels), 1 / 16)  # y = 8 z
    kwargs = dict(zero_point=128, alpha=np.arange(channels) % 4, out_zero_point=128, qmin=0, qmax=255, **c._asdict())
    got = ptf_layernorm(q, **kwargs)
    np.testing.assert_array_equal(got, ptf_layernorm_reference(q, **kwargs))
    sign = 1 if outlier_code > 128 else -1
    x_outlier = (outlier_code - 128) << (channels // 3 % 4)
    sigma = math.isqrt(channels * x_outlier**2 - x_outlier**2)  # D = C*S2 - S1**2 with one nonzero x_hat
    for channel, z in ((channels // 3, sign * math.sqrt(channels - 1)), ((channels // 3 + 1) % channels, -sign / math.sqrt(channels - 1))):
        real = min(max(128 + 8 * z, 0), 255)
        # half an LSB of output rounding plus the floor-sqrt error 8*|z|/sigma (tiny here) and F-bit rounding
        assert abs(int(got[0, channel]) - real) <= 0.5 + 8 * abs(z) / sigma + 2.0**-12, (channel, got[0, channel], real)
    assert len(set(np.delete(got[0], channels // 3).tolist())) == 1  # every other channel sits at the same -+z


# ---------------------------------------------------------------------------------------------------------------
# accuracy against float64 LayerNorm of the dequantized input
# ---------------------------------------------------------------------------------------------------------------


def float_layernorm_codes(case):
    """Float64 LayerNorm (eps = 0) of the dequantized PTF input, in output-code units (unclamped, unrounded).

    A row whose integer statistics say constant (D = 0) has 0/0 in float; its normalised value is defined as 0,
    the limit for any eps > 0 (float64's own mean of equal values need not be exact)."""
    q, alpha = case["q"].astype(np.int64), case["alpha"]
    x_hat = (q - case["zero_point"]) << alpha
    x = (q - case["zero_point"]) * case["in_scale"] * 2.0 ** alpha
    mean = x.mean(axis=-1, keepdims=True)
    std = np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True))
    C = q.shape[-1]
    d = C * (x_hat * x_hat).sum(-1, keepdims=True) - x_hat.sum(-1, keepdims=True) ** 2
    z = np.where(d > 0, (x - mean) / np.where(d > 0, std, 1.0), 0.0)
    return (case["gamma"] * z + case["beta"]) / case["out_scale"] + case["out_zero_point"], z, d


def integer_codes(case):
    constants = layernorm_constants(case["gamma"], case["beta"], case["out_scale"])
    y = ptf_layernorm(case["q"], zero_point=case["zero_point"], alpha=case["alpha"], out_zero_point=case["out_zero_point"],
                      rounding=case["rounding"], **constants._asdict())
    return y.astype(np.int64), constants


@given(lns.layernorm_float_cases())
def test_dequantized_output_is_within_half_an_lsb_plus_the_proven_approximation_error(case):
    # Error budget, in output LSB, with r = sqrt(D), sigma = floor(r), z the exact normalised value, g = gamma/out_scale:
    #   t*inv / 2**P = z * (1 + delta),  |delta| <= 1/sigma   (floor of the sqrt: r/sigma < 1 + 1/sigma; floor of the
    #                                                          reciprocal: 1 - sigma/2**P < inv*sigma/2**P <= 1)
    #   n / 2**F     = z * (1 + delta) + rho1 / 2**F,   |rho1| <= 1/2
    #   y            = round(n/2**F * (g + eM) + b + eB),  eM, eB the exact errors of the plan-time constants
    # so |y - (g z + b)| <= 1/2 + E with E = |g z delta| + |g| 2**-(F+1) + |eM| (|z| (1+|delta|) + 2**-(F+1)) + |eB|.
    # Saturation is 1-Lipschitz, so the clamped codes obey the same bound. E is tiny when sigma is large (a row
    # with non-trivial variance), so the dequantized output is then within 1 LSB; small-D rows are allowed their
    # (proven, larger) floor-sqrt error.
    real, z, d = float_layernorm_codes(case)
    got, constants = integer_codes(case)
    sigma = np.array([[math.isqrt(int(v))] for v in d.reshape(-1)], dtype=np.float64).reshape(d.shape)
    delta = np.where(sigma > 0, 1.0 / np.maximum(sigma, 1.0), 0.0)
    g_exact = [Fraction(float(gm)) / Fraction(case["out_scale"]) for gm in case["gamma"]]
    b_exact = [Fraction(float(bt)) / Fraction(case["out_scale"]) for bt in case["beta"]]
    e_m = np.array([float(abs(Fraction(int(m), 2 ** (int(k) - F)) - g))
                    for m, k, g in zip(constants.multiplier, constants.shift, g_exact)])
    e_b = np.array([float(abs(Fraction(int(b), 2 ** int(k)) - be))
                    for b, k, be in zip(constants.bias, constants.shift, b_exact)])
    g = np.abs(case["gamma"] / case["out_scale"])
    half_lsb_n = 2.0 ** -(F + 1)
    budget = (g * np.abs(z) * delta + np.where(d > 0, g * half_lsb_n + e_m * (np.abs(z) * (1 + delta) + half_lsb_n), 0.0)
              + e_b)
    slack = 1e-9 * (1.0 + np.abs(real))  # float64 evaluation of the float LayerNorm itself
    error = np.abs(got - np.clip(real, 0, 255))
    assert np.all(error <= 0.5 + budget + slack), (error.max(), budget.max())
    non_trivial = budget <= 0.5
    assert np.all(error[non_trivial] <= 1.0 + slack[non_trivial])


def test_realistic_rows_are_within_one_lsb_and_nearly_always_round_like_float():
    # A ViT-Ti-like residual stream: 192 channels, a few outlier channels, PTF alphas from FQ-ViT's rule
    # (per channel, the smallest power-of-two scale that covers the channel's range).
    rng = np.random.default_rng(7)
    C, rows = 192, 2000
    channel_std = np.where(rng.random(C) < 0.03, 30.0, rng.uniform(0.3, 2.0, C))
    x = rng.normal(0.0, 1.0, (rows, C)) * channel_std + rng.normal(0.0, 0.2, C)
    scale8 = (x.max() - x.min()) / 255
    zp = int(np.clip(round(-x.min() / scale8), 0, 255))
    ranges = np.abs(x).max(axis=0)
    alpha = np.clip(np.ceil(np.log2(np.maximum(ranges / (scale8 * 128), 2.0**-3))) + 3, 0, 3).astype(np.int64)
    in_scale = scale8 / 8
    q = np.clip(np.round(x / (in_scale * 2.0**alpha)) + zp, 0, 255).astype(np.uint8)
    gamma, beta = rng.normal(1.0, 0.3, C), rng.normal(0.0, 0.3, C)
    case = dict(q=q, zero_point=zp, alpha=alpha, in_scale=in_scale, gamma=gamma, beta=beta, out_scale=12.0 / 127,
                out_zero_point=128, rounding="half_up")
    real, _, d = float_layernorm_codes(case)
    got, _ = integer_codes(case)
    assert (d > 0).all()
    target = np.clip(real, 0, 255)
    error = np.abs(got - target)
    assert error.max() <= 1.0  # within 1 LSB everywhere (the bound in practice is 0.5 + ~1e-3)
    assert error.max() < 0.51
    same_code = got == np.clip(np.floor(real + 0.5), 0, 255)
    assert same_code.mean() >= 0.995  # only values within ~1e-3 LSB of a rounding boundary may differ
    assert np.abs(got - np.clip(np.floor(real + 0.5), 0, 255)).max() <= 1


@given(lns.layernorm_float_cases(max_channels=16, kinds=("constant", "zero_point")))
def test_zero_variance_rows_give_round_beta_over_out_scale_plus_zp(case):
    got, constants = integer_codes(case)
    _, _, d = float_layernorm_codes(case)
    rows = (d == 0).reshape(-1)
    b = case["beta"] / case["out_scale"]
    want = np.clip(np.floor(b + 0.5) + case["out_zero_point"], 0, 255) if case["rounding"] == "half_up" else None
    for row, constant in zip(got.reshape(-1, got.shape[-1]), rows):
        if not constant:
            continue
        exact = [min(max(exact_round(Fraction(int(bb), 2 ** int(k)), case["rounding"]) + case["out_zero_point"], 0), 255)
                 for bb, k in zip(constants.bias, constants.shift)]
        assert row.tolist() == exact
        if want is not None:  # equal to the float formula except within 2**-(k+1) of a tie
            near_tie = np.abs(b - np.floor(b) - 0.5) < 1e-6
            np.testing.assert_array_equal(row[~near_tie], want[~near_tie])


# ---------------------------------------------------------------------------------------------------------------
# plan time: layernorm_constants
# ---------------------------------------------------------------------------------------------------------------


def _start_shift(g: float) -> int:
    if g == 0:
        return 62
    if abs(g) >= 2.0**-32:
        return quantize_multiplier(g)[1] + F
    pre = -math.frexp(g)[1]
    return quantize_multiplier(math.ldexp(g, pre))[1] + pre + F


def _fits(bound_n, m0, start, k, b):
    drop = start - k
    m = (abs(m0) + (1 << drop >> 1)) >> drop
    scaled = math.ldexp(b, k)
    return math.isfinite(scaled) and bound_n * m + abs(round(scaled)) + (1 << k >> 1) <= INT64_MAX


@given(st.integers(1, 300).flatmap(lambda c: lns.layernorm_affine_floats(channels=c)),
       st.sampled_from([1.0, 2.0**20, 2.0**-20]))
def test_constants_reproduce_gamma_and_beta(params, beta_factor):
    gamma, beta, out_scale = params
    beta = beta * beta_factor  # large |beta / out_scale| forces the shift down
    c = layernorm_constants(gamma, beta, out_scale)
    C = gamma.shape[0]
    bound_n = normalized_bound(C)
    assert c.multiplier.dtype == c.bias.dtype == c.shift.dtype == np.int64
    for ch in range(C):
        m, b, k = int(c.multiplier[ch]), int(c.bias[ch]), int(c.shift[ch])
        g = float(gamma[ch]) / out_scale
        bb = float(beta[ch]) / out_scale
        assert 0 <= k <= 62 and abs(m) < 2**31
        assert bound_n * abs(m) + abs(b) + (1 << k >> 1) <= INT64_MAX  # the op's proof will accept it
        assert abs(Fraction(b, 2**k) - Fraction(bb)) <= Fraction(1, 2 ** (k + 1))
        start = _start_shift(g)
        error = abs(Fraction(m, 2 ** (k - F)) - Fraction(g))
        if k == start:  # no reduction: quantize_multiplier's guarantee
            assert error <= abs(Fraction(g)) * Fraction(1, 2**31)
        else:  # reduced: one more rounding of the mantissa, and k is the largest shift that fits
            assert k < start
            assert error <= abs(Fraction(g)) * Fraction(1, 2**31) + Fraction(1, 2 ** (k - F + 1))
            m0 = quantize_multiplier(g)[0] if abs(g) >= 2.0**-32 else 1  # any nonzero m0 only matters via |m0|
            if g != 0 and abs(g) >= 2.0**-32 and k < 62:
                assert not _fits(bound_n, m0, start, k + 1, bb)
        if g == 0:
            assert m == 0
        else:
            assert (m > 0) == (g > 0) or m == 0


def test_constants_typical_values_and_signs():
    c = layernorm_constants([1.0, -1.0, 0.0, 2.5], [0.5, 0.5, -0.25, 0.0], 1 / 20)
    # g = +-20 = 0.625 * 2**5 -> M = +-0.625 * 2**31, k = 31 - 5 + 16 = 42; b = 10 -> B = 10 * 2**42
    assert c.multiplier.tolist()[:2] == [1342177280, -1342177280] and c.shift.tolist()[:2] == [42, 42]
    assert c.bias.tolist()[:2] == [10 * 2**42] * 2
    assert c.multiplier[2] == 0 and c.bias[2] == round(-5 * 2.0 ** int(c.shift[2]))
    assert c.multiplier[3] == 1677721600 and c.shift[3] == 41  # g = 50 = 0.78125 * 2**6


def test_negative_gamma_mirrors_positive():
    gamma = np.array([0.3, 1.7, 1e-15, 3.0])
    plus = layernorm_constants(gamma, np.zeros(4), 0.02)
    minus = layernorm_constants(-gamma, np.zeros(4), 0.02)
    np.testing.assert_array_equal(plus.multiplier, -minus.multiplier)
    np.testing.assert_array_equal(plus.shift, minus.shift)


def test_tiny_gamma_loses_its_mantissa_gracefully():
    c = layernorm_constants([1e-30, 2.0**-40], [0.0, 0.0], 1.0)
    assert c.multiplier[0] == 0 and c.shift[0] == 62
    # 2**-40 = M / 2**(k - 16) with k capped at 62: M = 2**-40 * 2**46 = 64
    assert c.multiplier[1] == 64 and c.shift[1] == 62


@pytest.mark.parametrize(
    "args, error, message",
    [
        (([1.0, float("nan")], [0.0, 0.0], 1.0), ValueError, "gamma must be finite"),
        (([1.0], [0.0], 0.0), ValueError, "out_scale must be positive"),
        (([1.0], [0.0], -1.0), ValueError, "out_scale must be positive"),
        (([1.0, 1.0], [0.0, 0.0, 0.0], 1.0), ValueError, "beta must be a scalar or a per-channel vector of length 2"),
        (([[1.0]], [0.0], 1.0), ValueError, "gamma must be a vector"),
        (([True], [0.0], 1.0), TypeError, "gamma must be a real"),
        ((["a"], [0.0], 1.0), TypeError, "gamma must be a real"),
        (([1e10], [0.0], 1e-3), ValueError, "too large"),
        (([1.0], [1e30], 1.0), OverflowError, "does not fit"),
    ],
)
def test_constants_refuse_bad_input(args, error, message):
    with pytest.raises(error, match=message) as info:
        layernorm_constants(*args)
    assert str(info.value).startswith("layernorm_constants: ")


# ---------------------------------------------------------------------------------------------------------------
# refused inputs
# ---------------------------------------------------------------------------------------------------------------

_OK = dict(q=np.array([[1, 2, 3, 4]], dtype=np.uint8), zero_point=0, alpha=0, multiplier=1, bias=0, shift=0)


def _with(**changes):
    return {**_OK, **changes}


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (_with(q=np.array([[1.0, 2.0]])), TypeError, "q must be an integer array"),
        (_with(q=np.array([[True]])), TypeError, "q must be an integer array"),
        (_with(q=np.int64(3)), ValueError, "q must have at least one axis"),
        (_with(q=np.zeros((2, 0), dtype=np.uint8)), ValueError, r"C = 0 channels"),
        (_with(q=np.zeros((1, MAX_CHANNELS + 1), dtype=np.uint8)), ValueError, "C = 16385 channels"),
        (_with(q=np.array([[0, 256]], dtype=np.int16)), ValueError, r"q holds 256 at index \(0, 1\)"),
        (_with(q=np.array([[0, -1]], dtype=np.int16)), ValueError, "q holds -1"),
        (_with(q=np.array([[0, 16]]), bits=4), ValueError, r"q holds 16 .* \[0, 15\]"),
        (_with(zero_point=256), ValueError, "zero_point = 256"),
        (_with(zero_point=1.0), TypeError, "zero_point must be an integer"),
        (_with(alpha=8), ValueError, r"alpha = 8 is outside its allowed range \[0, 7\]"),
        (_with(alpha=np.array([0, 1, -1, 0])), ValueError, "alpha = -1"),
        (_with(alpha=np.array([0, 1, 2])), ValueError, "alpha must be a scalar or a per-channel vector of length 4"),
        (_with(multiplier=2**31), ValueError, "multiplier = 2147483648"),
        (_with(multiplier=-(2**31)), ValueError, "multiplier = -2147483648"),
        (_with(multiplier=np.array([1.0])), TypeError, "multiplier must be an integer array"),
        (_with(bias=np.ones(5, dtype=np.int64)), ValueError, "bias must be a scalar or a per-channel vector of length 4"),
        (_with(bias=np.array([1], dtype=np.uint64)), TypeError, "bias has dtype uint64"),
        (_with(shift=63), ValueError, "shift = 63"),
        (_with(shift=-1), ValueError, "shift = -1"),
        (_with(rounding="nearest"), ValueError, "unknown rounding mode 'nearest'"),
        (_with(out_zero_point=300), ValueError, "out_zero_point = 300"),
        (_with(qmin=10, qmax=5), ValueError, "qmax = 5"),
        (_with(qmax=2**31), ValueError, "qmax = 2147483648"),
        (_with(bits=0), ValueError, "bits = 0"),
        (_with(bits=17), ValueError, "bits = 17"),
        (_with(signed=1), TypeError, "signed must be a bool"),
        # C**2 * X**2 with 16-bit codes, alpha 3 and C = 2**14: 2**28 * (65535 * 8)**2 > 2**63
        (_with(q=np.zeros((1, MAX_CHANNELS), dtype=np.uint16), bits=16, alpha=3), OverflowError, r"C\*S2 and S1\*\*2"),
        # N(4) * |M| + |B| + 2**61 with B near 2**63
        (_with(multiplier=2**31 - 1, bias=2**63 - 2**40, shift=62), OverflowError, r"n \* multiplier \+ bias \(channel 0\)"),
        (_with(bias=2**63 - 2**20, shift=0, out_zero_point=2**20, qmax=2**21), OverflowError, "out_zero_point"),
    ],
)
@pytest.mark.parametrize("implementation", [ptf_layernorm, ptf_layernorm_reference])
def test_bad_input_is_refused_with_a_named_argument(implementation, kwargs, error, message):
    with pytest.raises(error, match=message) as info:
        implementation(**kwargs)
    assert str(info.value).startswith(f"{implementation.__name__}: ")


def test_16_bit_codes_are_accepted_when_the_bound_allows():
    q = np.array([[0, 65535, 30000, 12]], dtype=np.uint16)
    kwargs = dict(zero_point=32768, alpha=np.array([0, 3, 1, 2]), multiplier=2**30, bias=0, shift=40, bits=16,
                  out_zero_point=0, qmin=-(2**15), qmax=2**15 - 1)
    np.testing.assert_array_equal(ptf_layernorm(q, **kwargs), ptf_layernorm_reference(q, **kwargs))
