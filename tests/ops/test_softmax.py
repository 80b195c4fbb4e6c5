"""Integer softmax family: kernels == references, references == exact Python-int oracles, properties, errors."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import intsim.ops.softmax as softmax_module
from intsim.ops.matmul import integer_matmul_reference
from intsim.ops.softmax import (
    I_EXP_A,
    I_EXP_B,
    I_EXP_C,
    I_EXP_LN2,
    ZERO_CODE,
    IExpConstants,
    i_exp_constants,
    int_exp,
    int_exp_reference,
    lis_attention_values,
    lis_attention_values_reference,
    log_int_softmax,
    log_int_softmax_reference,
    log_round_reference,
    log_round_scalar,
    uniform_int_softmax,
    uniform_int_softmax_reference,
)
from intsim.testing import softmax_strategies as sst
from intsim.testing import strategies as ist

# ------------------------------------------------------------------------------------------ exact oracles


def exact_int_exp(x: int, c: IExpConstants) -> int:
    """I-BERT's i-exp transcribed with Python ints and Fractions (independent of numpy's floor division)."""
    x = max(x, c.n * c.x0)
    q = math.floor(Fraction(x, c.x0))
    r = x - c.x0 * q
    assert 0 <= q <= c.n and c.x0 < r <= 0
    z = r * (r + c.b_int) + c.c_int
    return max(z * 2 ** (c.n - q), 0)


def exact_log_round(r: int) -> int:
    """floor(log2 R), plus one when R >= 1.5 * 2**floor(log2 R)."""
    b = r.bit_length() - 1
    return b + (2 * r >= 3 * 2**b)


def exact_row_exps(case):
    """Yield ``(row index, e list, S)`` with Python ints, masked positions e = 0."""
    q = case["q"]
    mask = np.ones(q.shape, bool) if case["mask"] is None else np.broadcast_to(case["mask"], q.shape)
    for index in np.ndindex(q.shape[:-1]):
        take = [bool(t) for t in mask[index]]
        xs = [int(v) - case["zero_point"] for v in q[index]]
        if not any(take):
            yield index, [0] * len(xs), 0
            continue
        top = max(x for x, t in zip(xs, take) if t)
        e = [exact_int_exp(x - top, case["constants"]) if t else 0 for x, t in zip(xs, take)]
        yield index, e, sum(e)


def exact_lis(case) -> np.ndarray:
    out = np.empty(case["q"].shape, dtype=np.int64)
    for index, e, total in exact_row_exps(case):
        for j, ej in enumerate(e):
            if ej == 0:
                out[index + (j,)] = ZERO_CODE
                continue
            r = math.floor(Fraction(total, ej) + Fraction(1, 2))
            a = exact_log_round(r)
            out[index + (j,)] = a if a <= 15 else ZERO_CODE
    return out


def exact_uniform(case, out_bits, full_scale=None) -> np.ndarray:
    levels = 2**out_bits - 1
    full = levels if full_scale is None else full_scale
    out = np.empty(case["q"].shape, dtype=np.int64)
    for index, e, total in exact_row_exps(case):
        for j, ej in enumerate(e):
            out[index + (j,)] = min(math.floor(Fraction(ej * full, total) + Fraction(1, 2)), levels) if total else 0
    return out


# ------------------------------------------------------------------------------------------ i-exp constants


def test_i_exp_constants_follow_fq_vit_formulas():
    c = i_exp_constants(0.1)
    assert (c.x0, c.b_int, c.c_int, c.n) == (-7, 27, 279, 30)
    assert all(type(v) is int for v in (c.x0, c.b_int, c.c_int, c.n))
    assert (I_EXP_A, I_EXP_B, I_EXP_C, I_EXP_LN2) == (0.35815147, 0.96963238, 1.0, 0.6931)


@given(sst.logit_scales(min_scale=2e-5, max_scale=1.67))
def test_i_exp_constants_are_exact_floors_of_the_float64_quotients(scale):
    c = i_exp_constants(scale)
    s = Fraction(scale)
    for value, real in (
        (c.x0, Fraction(-0.6931) / s),
        (c.b_int, Fraction(0.96963238 / 0.35815147) / s),
        (c.c_int, Fraction(1.0 / 0.35815147) / s**2),
    ):
        assert value <= real < value + 1
    assert c.x0 < 0 and c.e_max == c.c_int << 30 and c.e_max <= 2**63 - 1


def test_x0_is_exact_where_float_division_would_round_across_an_integer():
    # -0.6931 / (0.6931 / 9) is not exactly -9 in float64 arithmetic; the exact quotient decides the floor.
    scale = 0.6931 / 9
    exact = Fraction(-0.6931) / Fraction(scale)
    assert i_exp_constants(scale).x0 == math.floor(exact)


def test_i_exp_constants_n_is_an_option():
    assert i_exp_constants(0.1, n=20) == IExpConstants(x0=-7, b_int=27, c_int=279, n=20)


def test_i_exp_constants_refuse_a_too_small_scale():
    with pytest.raises(OverflowError, match=r"scale = 1e-06 is too small"):
        i_exp_constants(1e-6)
    i_exp_constants(2e-5)  # c_int << 30 still fits int64


@pytest.mark.parametrize(
    "scale, error, message",
    [
        (0.0, ValueError, "finite and > 0"),
        (1.7, ValueError, "scale = 1.7 is too large"),
        (-0.1, ValueError, "finite and > 0"),
        (float("nan"), ValueError, "finite and > 0"),
        (float("inf"), ValueError, "finite and > 0"),
        ("0.1", TypeError, "scale must be a real number"),
        (True, TypeError, "scale must be a real number"),
    ],
)
def test_i_exp_constants_refuse_bad_scales(scale, error, message):
    with pytest.raises(error, match=message):
        i_exp_constants(scale)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(x0=0, b_int=1, c_int=1), ValueError, "x0 = 0"),
        (dict(x0=-1, b_int=1, c_int=1, n=63), ValueError, "n = 63"),
        (dict(x0=-1.0, b_int=1, c_int=1), TypeError, "x0 must be an integer"),
        (dict(x0=-1, b_int=True, c_int=1), TypeError, "b_int must be an integer"),
        (dict(x0=-1, b_int=1, c_int=2**40), OverflowError, "overflows int64"),
    ],
)
def test_i_exp_constants_dataclass_validates(kwargs, error, message):
    with pytest.raises(error, match=message):
        IExpConstants(**kwargs)


# ------------------------------------------------------------------------------------------ int_exp


def nonpositive_logits():
    return ist.int_arrays(lo=-(2**20), hi=0, dtype=np.int64)


@given(nonpositive_logits(), sst.i_exp_constant_sets(min_scale=2e-5, max_scale=1.67))
def test_int_exp_kernel_matches_reference(x, constants):
    want = int_exp_reference(x, constants)
    got = int_exp(x, constants)
    assert got.dtype == want.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@given(nonpositive_logits(), sst.i_exp_constant_sets(min_scale=2e-5, max_scale=1.67))
def test_int_exp_reference_matches_exact_python_ints(x, constants):
    got = int_exp_reference(x, constants)
    want = [exact_int_exp(int(v), constants) for v in x.ravel()]
    assert got.ravel().tolist() == want
    assert all(0 <= v <= constants.e_max for v in want)


@given(st.integers(-(2**30), -1), st.integers(-(2**30), 2**30), st.integers(-(2**61), 2**61), st.integers(0, 62))
def test_int_exp_kernel_is_exact_at_every_quotient_boundary_of_extreme_constants(x0, b_int, c_int, n):
    # the kernel's q = x // x0 is a float64 quotient: check it where floor(x / x0) steps, for |x0| up to 2**30
    try:
        c = IExpConstants(x0=x0, b_int=b_int, c_int=c_int, n=n)
    except OverflowError:
        assume(False)
    x = np.array(sorted({min(q * x0 + step, 0) for q in range(n + 2) for step in (-1, 0, 1)}), dtype=np.int64)
    assert int_exp(x, c).tolist() == [exact_int_exp(int(v), c) for v in x]


@given(sst.i_exp_constant_sets())
def test_int_exp_is_monotone_and_halves_every_x0(constants):
    c = constants
    x = np.arange(c.n * c.x0 - 5, 1, dtype=np.int64)
    e = int_exp(x, c)
    assert np.all(np.diff(e) >= 0) and np.all(e > 0)
    assert int(e[-1]) == c.c_int << c.n  # x = 0: q = 0, r = 0
    for q in range(c.n + 1):  # x = q * x0: r = 0, e = c_int << (n - q) exactly
        assert int(e[q * c.x0 - x[0]]) == c.c_int << (c.n - q)
    assert np.all(e[: 6] == c.c_int)  # clamped below n * x0


def test_int_exp_approximates_exp():
    scale = 0.05
    c = i_exp_constants(scale)
    x = np.arange(-200, 1)
    error = np.log(int_exp(x, c).astype(np.float64) * (I_EXP_A * scale**2 / 2**30) / np.exp(x * scale))
    # each of the q = x // x0 halvings stands for exp(x0 * s) = 2**-1 * exp(-delta); the polynomial is within
    # 1.6 % of exp on [-(ln 2 + s), 0]; the floors of b_int, c_int move z by < |x0| + 1 (z >= c_int / 2)
    delta = -c.x0 * scale - math.log(2)
    bound = (x // c.x0) * delta + 0.016 + (abs(c.x0) + 1) / (c.c_int / 2)
    assert np.all(np.abs(error) <= bound)
    assert np.abs(error).max() > 0.5 * bound.max()  # the bound is not vacuous


def test_int_exp_refuses_positive_inputs():
    with pytest.raises(ValueError, match=r"int_exp: x .* holds 3"):
        int_exp(np.array([0, 3]), i_exp_constants(0.1))
    with pytest.raises(TypeError, match="IExpConstants"):
        int_exp(np.array([0]), (-7, 27, 279, 30))


@given(nonpositive_logits(), sst.raw_i_exp_constants(max_n=30))
def test_int_exp_with_hand_made_constants(x, constants):
    want = [exact_int_exp(int(v), constants) for v in x.ravel()]
    assert int_exp_reference(x, constants).ravel().tolist() == want
    assert int_exp(x, constants).ravel().tolist() == want


# ------------------------------------------------------------------------------------------ log_round


LOG_ROUND_TABLE = [0, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3, 4]  # R = 1..12 (FQ-ViT's log_round)


@pytest.mark.parametrize("r, a", list(enumerate(LOG_ROUND_TABLE, start=1)))
def test_log_round_table(r, a):
    assert int(log_round_reference(np.array([r]))[0]) == a
    assert int(log_round_scalar(np.int64(r))) == a


@pytest.mark.parametrize(
    "r, a", [(2**15, 15), (49151, 15), (49152, 16), (2**16, 16), (2**63 - 1, 63), (2**62 - 1, 62), (3 * 2**60, 62), (2**62, 62)]
)
def test_log_round_corners(r, a):
    assert int(log_round_reference(np.array([r], dtype=np.int64))[0]) == a
    assert int(log_round_scalar(np.int64(r))) == a


@given(ist.int_arrays(lo=1, hi=2**63 - 1, dtype=np.int64))
def test_log_round_reference_and_scalar_match_exact(r):
    want = [exact_log_round(int(v)) for v in r.ravel()]
    assert log_round_reference(r).ravel().tolist() == want
    assert [int(log_round_scalar(np.int64(v))) for v in r.ravel()] == want


def test_log_round_refuses_non_positive():
    with pytest.raises(ValueError, match="R holds 0"):
        log_round_reference(np.array([3, 0]))


# ------------------------------------------------------------------------------------------ Log-Int-Softmax


@given(sst.softmax_cases())
def test_log_int_softmax_kernel_matches_reference(case):
    want = log_int_softmax_reference(**case)
    got = log_int_softmax(**case)
    assert got.dtype == want.dtype == np.uint8
    assert got.shape == case["q"].shape
    np.testing.assert_array_equal(got, want)


@given(sst.softmax_cases(constants=sst.raw_i_exp_constants()), st.integers(1, 16))
def test_kernels_match_references_with_hand_made_constants(case, out_bits):
    np.testing.assert_array_equal(log_int_softmax(**case), log_int_softmax_reference(**case))
    np.testing.assert_array_equal(log_int_softmax_reference(**case).astype(np.int64), exact_lis(case))
    got = uniform_int_softmax(**case, out_bits=out_bits)
    np.testing.assert_array_equal(got, uniform_int_softmax_reference(**case, out_bits=out_bits))
    np.testing.assert_array_equal(got.astype(np.int64), exact_uniform(case, out_bits))


@given(sst.softmax_cases(max_bits=32), st.integers(1, 16))
def test_parallel_kernels_without_the_exp_table_match_references(case, out_bits):
    # the kernels look int_exp up in a table of T <= 2**16 + 1 entries, else compute it: force the formula;
    # inputs below 2**15 elements run a serial driver: force the parallel one (the row code is shared)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(softmax_module, "_MAX_TABLE", 0)
        patch.setattr(softmax_module, "_PARALLEL_MIN_SIZE", 0)
        np.testing.assert_array_equal(log_int_softmax(**case), log_int_softmax_reference(**case))
        np.testing.assert_array_equal(
            uniform_int_softmax(**case, out_bits=out_bits), uniform_int_softmax_reference(**case, out_bits=out_bits)
        )


@given(sst.softmax_cases(max_bits=12))
def test_log_int_softmax_reference_matches_exact_python_ints(case):
    np.testing.assert_array_equal(log_int_softmax_reference(**case).astype(np.int64), exact_lis(case))


@given(sst.softmax_cases())
def test_log_int_softmax_row_properties(case):
    codes = log_int_softmax(**case).astype(np.int64)
    q = case["q"].astype(np.int64)
    mask = np.ones(q.shape, bool) if case["mask"] is None else np.broadcast_to(case["mask"], q.shape)
    assert np.all((0 <= codes) & (codes <= ZERO_CODE))
    assert np.all(codes[~mask] == ZERO_CODE)
    for index in np.ndindex(q.shape[:-1]):
        take = mask[index]
        row, row_codes = q[index][take], codes[index][take]
        if row.size == 0:
            continue
        # a higher logit never gets a larger code (int_exp is monotone for these scales); equal logits, equal codes
        order = np.argsort(row, kind="stable")
        assert np.all(np.diff(row_codes[order]) <= 0)
        for value in np.unique(row):
            assert len(set(row_codes[row == value].tolist())) == 1
        # the row maximum has the smallest code: log_round(round(S / e_max)), 0 exactly when S < 1.5 * e_max
        assert row_codes[np.argmax(row)] == row_codes.min() <= exact_log_round(row.size)
        # dequantized probabilities: each 2**-A is within [0.625, 1.5] * e/S, so the row sums to at most 1.5
        total = sum(Fraction(1, 2**int(a)) for a in row_codes if a < ZERO_CODE)
        assert Fraction(5, 8) * (1 - Fraction(2 * row.size, 3 * 2**15 - 1)) <= total <= Fraction(3, 2)
        # masking = softmax of the unmasked sub-row alone
        alone = log_int_softmax_reference(row, zero_point=case["zero_point"], constants=case["constants"],
                                bits=case["bits"], signed=case["signed"])
        np.testing.assert_array_equal(alone, row_codes)


@given(sst.softmax_cases(bits=8, signed=False), st.integers(0, 255))
def test_log_int_softmax_ignores_the_zero_point(case, other_zero_point):
    a = log_int_softmax(**case)
    case["zero_point"] = other_zero_point
    np.testing.assert_array_equal(log_int_softmax(**case), a)


def test_kernels_at_vit_size_match_references():
    # (2, 3, 197, 197) is above the serial/parallel switch: the parallel drivers with the exp table
    rng = np.random.default_rng(11)
    q = np.clip(rng.normal(128, 40, size=(2, 3, 197, 197)), 0, 255).astype(np.uint8)
    c = i_exp_constants(0.08)
    mask = rng.random((197, 197)) > 0.3
    mask[5] = False
    for m in (None, mask):
        np.testing.assert_array_equal(
            log_int_softmax(q, zero_point=90, constants=c, mask=m),
            log_int_softmax_reference(q, zero_point=90, constants=c, mask=m),
        )
        np.testing.assert_array_equal(
            uniform_int_softmax(q, zero_point=90, constants=c, mask=m),
            uniform_int_softmax_reference(q, zero_point=90, constants=c, mask=m),
        )
    x = -rng.integers(0, 2**12, size=2**16)
    np.testing.assert_array_equal(int_exp(x, c), int_exp_reference(x, c))


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 6, 7, 12, 13, 197])
def test_rows_of_equal_logits_get_log_round_of_the_row_length(length):
    q = np.full((2, length), 77, dtype=np.uint8)
    codes = log_int_softmax(q, zero_point=10, constants=i_exp_constants(0.1))
    assert codes.tolist() == [[exact_log_round(length)] * length] * 2  # R = (L*e + e//2) // e = L


@pytest.mark.parametrize("length", [2, 16, 197])
def test_one_hot_rows(length):
    # s = 0.1: x0 = -7, n*x0 = -210, so a gap of 255 codes clamps the small logits to e = c_int = e_max >> 30
    q = np.zeros((1, length), dtype=np.uint8)
    q[0, length // 2] = 255
    c = i_exp_constants(0.1)
    lis = log_int_softmax(q, zero_point=128, constants=c)
    assert lis[0, length // 2] == 0 and np.all(np.delete(lis[0], length // 2) == ZERO_CODE)
    uniform = uniform_int_softmax(q, zero_point=128, constants=c)
    assert uniform[0, length // 2] == 255 and np.all(np.delete(uniform[0], length // 2) == 0)
    assert uniform_int_softmax(q, zero_point=0, constants=c, out_bits=12)[0, length // 2] == 4095


def test_code_16_starts_where_round_s_over_e_reaches_49152():
    # s = 0.1: e(x)/e(0) ~ 2**-q; R = round(S / e) = 2**15 + 1 at x = -105 (q = 15) -> A = 15; at x = -112, A = 16
    c = i_exp_constants(0.1)
    gaps = np.arange(100, 121)
    q = np.stack([np.full(gaps.shape, 200), 200 - gaps], axis=1).astype(np.uint8)
    codes = log_int_softmax(q, zero_point=0, constants=c)
    assert np.all(codes[:, 0] == 0)
    r = [(int(c.e_max) + int(e) + int(e) // 2) // int(e) for e in int_exp(-gaps, c)]
    assert codes[:, 1].tolist() == [exact_log_round(v) if v < 49152 else ZERO_CODE for v in r]
    assert codes[gaps == 105, 1].tolist() == [15] and codes[gaps == 112, 1].tolist() == [ZERO_CODE]
    assert 15 in codes[:, 1] and ZERO_CODE in codes[:, 1]


def test_masks_broadcast_and_fully_masked_rows():
    q = np.array([[[10, 20, 30], [30, 20, 10]], [[5, 5, 5], [0, 9, 0]]], dtype=np.uint8)
    c = i_exp_constants(0.7)
    keys = np.array([True, False, True])
    got = log_int_softmax(q, zero_point=0, constants=c, mask=keys)
    assert np.all(got[..., 1] == ZERO_CODE)
    np.testing.assert_array_equal(got[..., [0, 2]], log_int_softmax(q[..., [0, 2]], zero_point=0, constants=c))
    rows = np.array([[[True], [False]], [[False], [True]]])
    got = log_int_softmax(q, zero_point=0, constants=c, mask=rows)
    assert np.all(got[0, 1] == ZERO_CODE) and np.all(got[1, 0] == ZERO_CODE)
    assert np.all(uniform_int_softmax(q, zero_point=0, constants=c, mask=rows)[0, 1] == 0)
    nothing = np.zeros(q.shape, dtype=bool)
    assert np.all(log_int_softmax(q, zero_point=0, constants=c, mask=nothing) == ZERO_CODE)
    assert np.all(log_int_softmax_reference(q, zero_point=0, constants=c, mask=nothing) == ZERO_CODE)
    assert np.all(uniform_int_softmax(q, zero_point=0, constants=c, mask=nothing) == 0)


def test_empty_rows_and_batches():
    c = i_exp_constants(0.1)
    for shape in [(0, 4), (3, 0), (2, 0, 5)]:
        q = np.zeros(shape, dtype=np.uint8)
        for op in (log_int_softmax, log_int_softmax_reference, uniform_int_softmax, uniform_int_softmax_reference):
            assert op(q, zero_point=0, constants=c).shape == shape


def test_signed_wide_codes_and_any_integer_dtype():
    c = i_exp_constants(0.01)
    q = np.array([[-(2**15), 2**15 - 1, 0, -5]], dtype=np.int32)
    got = log_int_softmax(q, zero_point=-3, constants=c, bits=16, signed=True)
    np.testing.assert_array_equal(got, log_int_softmax_reference(q, zero_point=-3, constants=c, bits=16, signed=True))
    assert got.tolist() == [[16, 0, 16, 16]]


@pytest.mark.parametrize("scale", [I_EXP_LN2 / (9 - 1e-3), 0.05, 0.08, 0.1, 0.2])
def test_dequantized_lis_is_close_to_float_softmax(scale):
    """2**-A against float64 softmax of the dequantized logits, with a bound derived from the algorithm.

    1. Log rounding: log(2**-A / (e/S)) lies in [log 0.625, log 1.5], since R = round(S/e) is within 1/2 of S/e
       and log_round's threshold sits at 1.5 * 2**msb (worst cases: R = 1 with S/e -> 1.5; R = 3 with S/e = 2.5).
    2. i-exp: with x' = max(x, n*x0) = q*x0 + r and delta = -x0*s - ln 2 >= 0, 2**-q = exp(q*x0*s) * exp(q*delta),
       so e_k = K * exp(y_k + eps_k) with y_k = x'_k*s + q_k*delta and |eps_k| <= eps = poly + floors
       (poly: I-BERT's relative error on [-(ln2 + delta), 0]; floors: the floors of b_int and c_int move z by
       less than |x0| + 1, relative to z >= z_min). Hence, per row, with p the float softmax and
       g_j = (y_j - x_j*s) - log(sum_k p_k * exp(y_k - x_k*s)) (the drift of the integer model, >= -log ...),
       log(e_j/S) - log(p_j) lies within g_j +- 2*eps.
    Keys with code 16 have e/S <= 1/49151.5, so p <= exp(2*eps - g) / 49151.5.
    Besides this tight bound, a loose one checks that no probability is off by more than 2**1.25 where the
    drift is small. (At s = 0.2, x0 = -4 and each halving really stands for exp(-0.8): q*delta grows to
    1.7 nats at q = 16, an error of FQ-ViT's constants that intsim reproduces.)
    """
    c = i_exp_constants(scale)
    rng = np.random.default_rng(1234)
    q = np.clip(rng.normal(128, 40, size=(64, 50)), 0, 255).astype(np.int64)
    q[:8] = rng.integers(120, 136, size=(8, 50))  # flat rows: many codes below 16
    mask = rng.random(q.shape) > 0.2
    codes = log_int_softmax(q.astype(np.uint8), zero_point=100, constants=c, mask=mask)

    xi = q - 100
    xi = np.where(mask, xi - np.max(np.where(mask, xi, -(10**9)), axis=-1, keepdims=True), 0)
    x = xi * scale
    p = np.where(mask, np.exp(x), 0.0)
    p /= p.sum(axis=-1, keepdims=True)

    delta = -c.x0 * scale - math.log(2)
    clamped = np.maximum(xi, c.n * c.x0)
    drift = np.where(mask, (clamped - xi) * scale + (clamped // c.x0) * delta, 0.0)  # y - x*s >= 0
    g = drift - np.log(np.sum(p * np.exp(drift), axis=-1, keepdims=True))
    t = np.linspace(-(math.log(2) + delta), 0, 100001)
    poly = np.max(np.abs(np.log((I_EXP_A * t * t + I_EXP_B * t + I_EXP_C) / np.exp(t)))) + 1e-9
    r = np.arange(c.x0 + 1, 1)
    z_min = int(np.min(r * (r + c.b_int) + c.c_int))
    eps = poly + (abs(c.x0) + 1) / z_min

    live = mask & (codes < ZERO_CODE)
    assert live.sum() > 300
    error = np.log(2.0 ** -codes[live].astype(np.float64) / p[live])  # nats
    assert np.all(error >= math.log(0.625) + g[live] - 2 * eps - 1e-9)
    assert np.all(error <= math.log(1.5) + g[live] + 2 * eps + 1e-9)
    if delta * 16 < 0.1:  # x0 * s close to -ln 2: loosely, no probability is off by more than 2**1.25
        assert np.all(np.abs(error) / math.log(2) <= 1.25)
    dead = mask & (codes == ZERO_CODE)
    assert np.all(p[dead] <= np.exp(2 * eps - g[dead]) / 49151.5)
    assert np.all(codes[~mask] == ZERO_CODE)


# ------------------------------------------------------------------------------------------ uniform softmax


@given(sst.softmax_cases(), st.sampled_from([8, 8, 1, 4, 16]) | st.integers(1, 16))
def test_uniform_int_softmax_kernel_matches_reference(case, out_bits):
    want = uniform_int_softmax_reference(**case, out_bits=out_bits)
    got = uniform_int_softmax(**case, out_bits=out_bits)
    assert got.dtype == want.dtype == (np.uint8 if out_bits <= 8 else np.uint16)
    np.testing.assert_array_equal(got, want)


@given(sst.softmax_cases(max_bits=12), st.integers(1, 16))
def test_uniform_int_softmax_reference_matches_exact_python_ints(case, out_bits):
    got = uniform_int_softmax_reference(**case, out_bits=out_bits).astype(np.int64)
    np.testing.assert_array_equal(got, exact_uniform(case, out_bits))


@given(sst.softmax_cases(max_bits=12), st.integers(1, 12), st.data())
def test_uniform_full_scale_kernel_reference_and_python_fractions_agree(case, out_bits, data):
    # a calibrated full scale F >= 2**out_bits - 1 (the code of probability 1): round(e * F / S), saturated
    levels = 2**out_bits - 1
    full = data.draw(st.sampled_from([levels, levels + 1, 2 * levels + 1]) | st.integers(levels, 2**16 - 1), "full_scale")
    want = exact_uniform(case, out_bits, full)
    np.testing.assert_array_equal(uniform_int_softmax_reference(**case, out_bits=out_bits, full_scale=full).astype(np.int64), want)
    np.testing.assert_array_equal(uniform_int_softmax(**case, out_bits=out_bits, full_scale=full).astype(np.int64), want)


@given(sst.softmax_cases(max_bits=12, max_leading_dims=3), st.integers(1, 12), st.data())
def test_a_full_scale_per_head_is_each_heads_own_softmax(case, out_bits, data):
    # APQ-ViT's MPQ: F[h] for the rows of q[..., h, :, :]; the same codes as the op on each head alone, and as
    # Python fractions
    case = sst.with_heads_axis(case)
    q = case["q"]
    levels = 2**out_bits - 1
    full = data.draw(st.lists(st.integers(levels, 4 * levels + 3), min_size=q.shape[-3], max_size=q.shape[-3]), "F")
    got = uniform_int_softmax(**case, out_bits=out_bits, full_scale=full)
    np.testing.assert_array_equal(uniform_int_softmax_reference(**case, out_bits=out_bits, full_scale=full), got)
    for head, value in enumerate(full):
        one = dict(case, q=q[..., head, :, :])
        if case["mask"] is not None:
            one["mask"] = np.broadcast_to(case["mask"], q.shape)[..., head, :, :]
        np.testing.assert_array_equal(got[..., head, :, :], uniform_int_softmax(**one, out_bits=out_bits, full_scale=value))
        np.testing.assert_array_equal(got[..., head, :, :].astype(np.int64), exact_uniform(one, out_bits, value))


@pytest.mark.parametrize("implementation", [uniform_int_softmax, uniform_int_softmax_reference])
def test_a_full_scale_per_head_must_match_the_heads_axis(implementation):
    q = np.zeros((1, 2, 3, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"full_scale has 3 values, one per head, but q has shape \(1, 2, 3, 4\)"):
        implementation(q, zero_point=0, constants=C01, full_scale=[255, 300, 400])
    with pytest.raises(ValueError, match="full_scale = 254"):
        implementation(q, zero_point=0, constants=C01, full_scale=[255, 254])
    with pytest.raises(ValueError, match="axis -3"):
        implementation(q[0, 0], zero_point=0, constants=C01, full_scale=[255])


def test_uniform_full_scale_saturates_large_probabilities_and_keeps_small_ones_finer():
    q = np.array([[200, 0, 0, 0], [10, 10, 10, 10]], dtype=np.uint8)
    c = i_exp_constants(0.1)
    plain = uniform_int_softmax(q, zero_point=0, constants=c)
    fine = uniform_int_softmax(q, zero_point=0, constants=c, full_scale=566)
    assert plain[0, 0] == 255 and fine[0, 0] == 255  # 566 * ~1 saturates at the top code
    assert plain[1].tolist() == [64] * 4 and fine[1].tolist() == [142] * 4  # round(566 / 4) = 142 (141.5 up)


@pytest.mark.parametrize("implementation", [uniform_int_softmax, uniform_int_softmax_reference])
def test_uniform_full_scale_outside_its_range_is_refused(implementation):
    with pytest.raises(ValueError, match="full_scale = 254"):
        implementation(Q, zero_point=0, constants=C01, full_scale=254)
    with pytest.raises(ValueError, match="full_scale = 1048577"):
        implementation(Q, zero_point=0, constants=C01, full_scale=2**20 + 1)


@pytest.mark.parametrize("length, want", [(1, 255), (2, 128), (3, 85), (4, 64), (5, 51), (6, 43), (197, 1)])
def test_uniform_rows_of_equal_logits(length, want):
    q = np.full((1, length), 3, dtype=np.uint8)
    got = uniform_int_softmax(q, zero_point=0, constants=i_exp_constants(0.1))
    assert got.tolist() == [[want] * length]  # round(255 / L), ties (L = 2: 127.5) half up


# ------------------------------------------------------------------------------------------ attn @ V


def exact_attention(case) -> np.ndarray:
    codes, v, zp = case["codes"], case["v"], case["v_zero_point"]
    lead = np.broadcast_shapes(codes.shape[:-2], v.shape[:-2])
    codes = np.broadcast_to(codes, lead + codes.shape[-2:])
    v = np.broadcast_to(v, lead + v.shape[-2:])
    out = np.zeros(lead + (codes.shape[-2], v.shape[-1]), dtype=np.int64)
    for index in np.ndindex(out.shape):
        *batch, i, d = index
        total = Fraction(0)
        for j in range(codes.shape[-1]):
            code = int(codes[(*batch, i, j)])
            if code < ZERO_CODE:
                total += (int(v[(*batch, j, d)]) - zp) * Fraction(1, 2**code)  # probability 2**-code
        out[index] = total * 2**15  # scale s_v * 2**-15: exact, an integer
        assert out[index] == total * 2**15
    return out


@given(sst.lis_attention_cases())
def test_lis_attention_values_matches_reference(case):
    want = lis_attention_values_reference(**case)
    got = lis_attention_values(**case)
    assert got.dtype == want.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@given(sst.lis_attention_cases(max_keys=5))
def test_lis_attention_reference_matches_exact_rationals(case):
    np.testing.assert_array_equal(lis_attention_values_reference(**case), exact_attention(case))


def test_lis_attention_values_at_vit_size_is_exact():
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 17, size=(2, 3, 197, 197)).astype(np.uint8)
    codes[..., 0] = 0
    v = rng.integers(0, 256, size=(2, 3, 197, 64)).astype(np.uint8)
    got = lis_attention_values(codes, v, v_zero_point=3)
    weights = np.where(codes < 16, 2 ** (15 - np.minimum(codes.astype(np.int64), 15)), 0)
    np.testing.assert_array_equal(got, integer_matmul_reference(weights, v, b_zero_point=3))
    np.testing.assert_array_equal(got[:1, :1], lis_attention_values_reference(codes[:1, :1], v[:1, :1], v_zero_point=3))


def test_lis_attention_values_of_real_softmax_codes():
    c = i_exp_constants(0.08)
    rng = np.random.default_rng(3)
    q = rng.integers(90, 160, size=(2, 7, 7)).astype(np.uint8)
    codes = log_int_softmax(q, zero_point=128, constants=c)
    v = rng.integers(-128, 128, size=(2, 7, 5)).astype(np.int8)
    got = lis_attention_values(codes, v, v_zero_point=-1)
    np.testing.assert_array_equal(got, lis_attention_values_reference(codes, v, v_zero_point=-1))


# ------------------------------------------------------------------------------------------ bad input

C01 = i_exp_constants(0.1)
Q = np.array([[1, 2, 3]], dtype=np.uint8)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(q=np.array([[1.0, 2.0]])), TypeError, "q must be an integer array"),
        (dict(q=np.array([[True]])), TypeError, "q must be an integer array"),
        (dict(q=np.array([[1]], dtype=np.uint64)), TypeError, "uint64"),
        (dict(q=np.array(3)), ValueError, "at least one axis"),
        (dict(q=np.array([[0, 300]])), ValueError, r"q holds 300 at index \(0, 1\), outside its declared code range \[0, 255\]"),
        (dict(q=np.array([[-1, 3]])), ValueError, r"q holds -1 .* \[0, 255\]"),
        (dict(q=np.array([[-9, 3]]), bits=4, signed=True), ValueError, r"q holds -9 .* \[-8, 7\]"),
        (dict(zero_point=256), ValueError, "zero_point = 256"),
        (dict(zero_point=1.5), TypeError, "zero_point must be an integer"),
        (dict(bits=0), ValueError, "bits = 0"),
        (dict(bits=33), ValueError, "bits = 33"),
        (dict(signed=1), TypeError, "signed must be a bool"),
        (dict(constants=(-7, 27, 279, 30)), TypeError, "constants must be an IExpConstants"),
        (dict(mask=np.array([1, 0, 1])), TypeError, "mask must be a boolean array"),
        (dict(mask=np.array([True, False])), ValueError, r"mask of shape \(2,\) does not broadcast to q's shape \(1, 3\)"),
        (dict(mask=np.ones((2, 1, 3), bool)), ValueError, "does not broadcast"),
        (dict(q=np.zeros((1, 2), np.uint8), constants=i_exp_constants(2e-5)), OverflowError, r"scale \(about 2e-05.*too small for rows of length 2"),
    ],
)
@pytest.mark.parametrize(
    "implementation",
    [log_int_softmax, log_int_softmax_reference, uniform_int_softmax, uniform_int_softmax_reference],
)
def test_softmax_bad_input_is_refused_with_a_named_argument(implementation, kwargs, error, message):
    arguments = dict(q=Q, zero_point=0, constants=C01) | kwargs
    with pytest.raises(error, match=message):
        implementation(**arguments)
    with pytest.raises(error, match=implementation.__name__.removesuffix("_reference")):
        implementation(**arguments)


@pytest.mark.parametrize("implementation", [uniform_int_softmax, uniform_int_softmax_reference])
def test_uniform_bad_out_bits_and_overflow(implementation):
    with pytest.raises(ValueError, match="out_bits = 17"):
        implementation(Q, zero_point=0, constants=C01, out_bits=17)
    with pytest.raises(ValueError, match="out_bits = 0"):
        implementation(Q, zero_point=0, constants=C01, out_bits=0)
    # s = 5e-4: e_max ~ 2**53; * 255 needs 2**61, fine for 8 bits; * 65535 overflows
    c = i_exp_constants(5e-4)
    implementation(Q, zero_point=0, constants=c, out_bits=8)
    with pytest.raises(OverflowError, match=r"uniform_int_softmax: e \* 65535 \+ \(S >> 1\)"):
        implementation(Q, zero_point=0, constants=c, out_bits=16)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(codes=np.array([[0, 17]])), ValueError, r"codes holds 17 .* \[0, 16\]"),
        (dict(codes=np.array([[0.0, 1.0]])), TypeError, "codes must be an integer array"),
        (dict(v=np.array([[1.5], [2.0]])), TypeError, "v must be an integer array"),
        (dict(v=np.array([[1], [2], [3]])), ValueError, "codes has 2 keys"),
        (dict(codes=np.array([0, 1])), ValueError, "at least two axes"),
        (dict(codes=np.zeros((2, 1, 2), np.uint8), v=np.zeros((3, 2, 1), np.uint8)), ValueError, "do not broadcast"),
        (dict(v_zero_point=0.5), TypeError, "v_zero_point must be an integer"),
        (dict(v=np.array([[2**62], [0]])), OverflowError, "overflows int64"),
    ],
)
@pytest.mark.parametrize("implementation", [lis_attention_values, lis_attention_values_reference])
def test_attention_bad_input_is_refused(implementation, kwargs, error, message):
    arguments = dict(codes=np.array([[0, 1]], dtype=np.uint8), v=np.array([[1], [2]]), v_zero_point=0) | kwargs
    with pytest.raises(error, match=message):
        implementation(**arguments)


def _lis_code_by_python_ints(numerator: int, e: int) -> int:
    rounded = numerator // e  # R = round(S / e) when numerator = S + (e >> 1)
    exponent = int(log_round_reference(np.array([rounded]))[0])
    return exponent if exponent <= 15 else ZERO_CODE


@given(st.integers(1, 2**63 - 1), st.integers(0, 2**63 - 1))
def test_lis_code_without_division_equals_the_division(e, extra):
    # the kernels compare shifted numerators with 3e instead of dividing (and divide when 3e leaves int64)
    numerator = min(e + extra, 2**63 - 1)
    assert softmax_module._lis_code(numerator, e) == _lis_code_by_python_ints(numerator, e)


@given(st.lists(st.integers(0, 2**62) | st.sampled_from([0, 1, 2**61, (2**63 - 1) // 3, (2**63 - 1) // 3 + 1, 2**62]),
                min_size=1, max_size=40), st.integers(0, 2**62))
def test_lis_codes_equal_the_code_of_each_exp(table, total):
    # entries above (2**63 - 1) // 3 take the division fallback; S >= every e of its row, S + (e >> 1) fits int64
    table = np.array(table, dtype=np.int64)
    total = max(total, int(table.max()))
    codes = np.empty(table.shape[0], dtype=np.int64)
    softmax_module._lis_codes(np.int64(total), table, codes)
    want = [_lis_code_by_python_ints(total + (int(e) >> 1), int(e)) if e > 0 else ZERO_CODE for e in table]
    assert codes.tolist() == want


def test_fit_i_exp_constants_keeps_n_30_when_it_fits_and_lowers_it_for_fine_scales():
    from intsim.ops.softmax import I_EXP_MIN_N, _check_lis_bound, _check_uniform_bound, fit_i_exp_constants

    assert fit_i_exp_constants(0.1, row_length=197) == i_exp_constants(0.1)  # FQ-ViT's n = 30
    for scale, levels in ((1e-4, 255), (1e-4, None), (3e-5, 255)):
        c = fit_i_exp_constants(scale, row_length=197, levels=levels)
        assert I_EXP_MIN_N <= c.n < 30
        (_check_lis_bound(c, 197, "t") if levels is None else _check_uniform_bound(c, 197, levels, "t"))
        with pytest.raises(OverflowError):  # n + 1 would not fit: the largest n was chosen
            bigger = i_exp_constants(scale, n=c.n + 1)
            (_check_lis_bound(bigger, 197, "t") if levels is None else _check_uniform_bound(bigger, 197, levels, "t"))
    with pytest.raises(OverflowError, match="fit_i_exp_constants: no n in"):
        fit_i_exp_constants(1e-7, row_length=197, levels=255)

