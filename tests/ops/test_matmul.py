"""Exact integer matmul: kernel == reference, reference == Python ints, exactness limits, float64 path, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from intsim.ops import matmul as mm
from intsim.ops.matmul import (
    integer_linear,
    integer_linear_reference,
    integer_matmul,
    integer_matmul_reference,
)
from intsim.testing import matmul_strategies as mst


def python_int_matmul(a, b, a_zero_point=0, b_zero_point=0, bias=None) -> np.ndarray:
    """The oracle: explicit loops over Python ints (unbounded), broadcasting the batch like np.matmul."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, batch + a.shape[-2:])
    b = np.broadcast_to(b, batch + b.shape[-2:])
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    out = np.empty(batch + (m, n), dtype=object)
    for index in np.ndindex(batch):
        for i in range(m):
            for j in range(n):
                total = sum((int(a[index + (i, t)]) - a_zero_point) * (int(b[index + (t, j)]) - b_zero_point) for t in range(k))
                out[index + (i, j)] = total + (0 if bias is None else int(bias[j]))
    return out


def assert_exact(got, want):
    assert got.dtype == np.int64
    assert got.shape == want.shape
    assert got.tolist() == want.tolist()


@given(mst.matmul_cases())
def test_kernel_matches_reference(case):
    want = integer_matmul_reference(**case)
    got = integer_matmul(**case)
    assert got.dtype == want.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@given(mst.matmul_cases(max_side=4))
def test_reference_matches_python_ints(case):
    assert_exact(integer_matmul_reference(**case), python_int_matmul(**case))


@given(mst.matmul_cases(dtypes=(np.uint8, np.int8, np.int16, np.uint16, np.int32), max_side=8), st.data())
def test_every_path_and_chunking_is_exact(case, data):
    """Shrunken exactness limits force float32 chunks, digit splits, float64 (chunks) and int64 loops.

    A smaller limit than the true 2**24 / 2**53 is only more conservative, so the result must stay exact
    while every planning branch and the chunk bookkeeping run on shapes hypothesis can explore.
    """
    try:
        want = integer_matmul_reference(**case)
    except OverflowError:
        return  # int32 x int32 with K >= 2 can leave int64: checked by test_wide_operands_*
    p = mm._prepare(case["a"], case["b"], case["a_zero_point"], case["b_zero_point"], case["bias"])
    k, product = case["a"].shape[-1], p.a_abs * p.b_abs
    # limits as (k per chunk) * product + jitter, so that every chunk count from 0 to K + 1 comes up
    f32_chunk = data.draw(st.integers(0, k + 1), label="float32 chunk")
    f32_exact = min(max(1, f32_chunk * product + data.draw(st.integers(0, max(product - 1, 0)))), mm.FLOAT32_EXACT)
    f64_chunk = data.draw(st.integers(0, k + 1), label="float64 chunk")
    f64_exact = min(max(f32_exact, f64_chunk * product), mm.FLOAT64_EXACT)
    min_chunk = data.draw(st.integers(1, 4), label="min_f32_chunk")
    got = mm._matmul(p, f32_exact=f32_exact, f64_exact=f64_exact, min_f32_chunk=min_chunk)
    np.testing.assert_array_equal(got, want)


@given(mst.matmul_cases(dtypes=(np.int32, np.int64, np.uint32), max_side=3, max_batch_dims=1))
def test_wide_operands_are_exact_or_refused(case):
    try:
        got = integer_matmul(**case)
    except OverflowError as error:
        assert "overflows int64" in str(error)
        k = case["a"].shape[-1]
        a_abs = max(abs(int(v) - case["a_zero_point"]) for v in case["a"].ravel())
        b_abs = max(abs(int(v) - case["b_zero_point"]) for v in case["b"].ravel())
        bias_abs = 0 if case["bias"] is None else max(abs(int(v)) for v in case["bias"])
        assert max(a_abs, b_abs, k * a_abs * b_abs + bias_abs) > 2**63 - 1  # refused only when it can overflow
        return
    assert_exact(got, python_int_matmul(**case))


@given(mst.linear_cases())
def test_linear_matches_reference_and_matmul(case):
    want = integer_linear_reference(**case)
    got = integer_linear(**case)
    assert got.dtype == want.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    x, weight = case["x"], case["weight"]
    via_matmul = integer_matmul(x[..., None, :], weight.T, a_zero_point=case["x_zero_point"], bias=case["bias"])[..., 0, :]
    np.testing.assert_array_equal(got, via_matmul)


def test_linear_reference_matches_python_ints():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, 3, 5), dtype=np.uint8)
    weight = rng.integers(-128, 128, (4, 5), dtype=np.int8)
    bias = rng.integers(-(2**31), 2**31, 4, dtype=np.int64).astype(np.int32)
    want = python_int_matmul(x[..., None, :], weight.T, 7, 0, bias)[..., 0, :]
    assert_exact(integer_linear_reference(x, weight, x_zero_point=7, bias=bias), want)
    assert_exact(integer_linear(x, weight, x_zero_point=7, bias=bias), want)


# ------------------------------------------------------------------------ exactness limits of the float paths

K_LIMIT = 4096


def naive_float32(a, b, a_zp=0, b_zp=0):
    return np.matmul(a.astype(np.float32) - a_zp, b.astype(np.float32) - b_zp).astype(np.int64)


@pytest.mark.parametrize("a_value, b_value, a_zp", [(255, -128, 0), (0, -128, 255), (255, 127, 0), (0, 127, 127)])
def test_extreme_operands_at_k_4096(a_value, b_value, a_zp):
    """All operands at their extremes: every partial sum grows past 2**24 (K * 255 * 128 is about 2**27)."""
    a = np.full((3, K_LIMIT), a_value, dtype=np.uint8)
    b = np.full((K_LIMIT, 5), b_value, dtype=np.int8)
    b[0, 1] = b_value + (1 if b_value < 0 else -1)  # makes the sums odd: not float32 numbers above 2**24
    want = [[K_LIMIT * (a_value - a_zp) * b_value + (a_value - a_zp) * (int(b[0, j]) - b_value) for j in range(5)]] * 3
    assert abs(want[0][0]) > 2**24
    assert mm._plan(mm._prepare(a, b, a_zp, 0, None)).chunk < K_LIMIT  # chunked: one float32 call would be wrong
    got = integer_matmul(a, b, a_zero_point=a_zp)
    assert got.tolist() == want
    np.testing.assert_array_equal(got, integer_matmul_reference(a, b, a_zero_point=a_zp))
    assert naive_float32(a, b, a_zp).tolist() != want  # the test can fail: plain float32 is not exact here


def test_partial_sums_crossing_2_24_in_every_chunk_position():
    """Random extreme +/-values, a bias, a zero point, a batch: sums cross 2**24 at many k."""
    rng = np.random.default_rng(7)
    a = rng.choice(np.array([0, 1, 254, 255], dtype=np.uint8), size=(2, 4, K_LIMIT))
    b = rng.choice(np.array([-128, -127, 126, 127], dtype=np.int8), size=(2, K_LIMIT, 6))
    b[..., : K_LIMIT // 2, :] = -128  # a long run of one sign pushes partial sums far past 2**24
    bias = np.array([2**31 - 1, -(2**31), 1, -1, 0, 12345], dtype=np.int32)
    want = integer_matmul_reference(a, b, a_zero_point=0, bias=bias)
    assert np.abs(want).max() > 2**24
    np.testing.assert_array_equal(integer_matmul(a, b, bias=bias), want)
    assert_exact(want[:, :1, :2], python_int_matmul(a[:, :1], b[..., :2], 0, 0, bias[:2]))


def test_float64_path_for_wide_values():
    """int16 values near 2**15 against values near 2**8: float32 chunks would hold 2 k, float64 holds all K."""
    rng = np.random.default_rng(3)
    a = rng.integers(2**15 - 8, 2**15, (4, K_LIMIT), dtype=np.int16)
    b = rng.integers(250, 256, (K_LIMIT, 3), dtype=np.int16)
    p = mm._prepare(a, b, 0, 0, None)
    plan = mm._plan(p)
    assert plan.dtype is np.float64 and plan.chunk == K_LIMIT
    want = python_int_matmul(a, b)
    assert_exact(integer_matmul(a, b), want)
    assert_exact(integer_matmul_reference(a, b), want)
    assert naive_float32(a, b).tolist() != want.tolist()


def test_float64_chunks_and_int64_loops_for_very_wide_values():
    rng = np.random.default_rng(4)
    a = rng.integers(-(2**31), 2**31, (3, 64), dtype=np.int64).astype(np.int32)
    b = rng.integers(-(2**20), 2**20, (64, 2), dtype=np.int32)
    plan = mm._plan(mm._prepare(a, b, 0, 0, None))
    assert plan.dtype is np.float64 and plan.chunk < 64
    assert_exact(integer_matmul(a, b), python_int_matmul(a, b))
    wide = np.array([[-(2**31), 2**31 - 1]], dtype=np.int32)
    wide_b = np.array([[-(2**31)], [-(2**31)]], dtype=np.int64)
    with pytest.raises(OverflowError):
        integer_matmul(wide, wide_b)  # 2 * 2**62 = 2**63 > int64 max
    plan = mm._plan(mm._prepare(wide[:, :1], wide_b[:1], 0, 0, None))
    assert plan.dtype is None  # 2**62 is past float64: int64 loops
    assert integer_matmul(wide[:, :1], wide_b[:1]).tolist() == [[2**62]]


def test_attention_probabilities_use_one_float32_call():
    """Log-int-softmax codes 2**(15 - A) whose rows sum to about 2**15: the row-sum bound keeps float32 exact."""
    rng = np.random.default_rng(5)
    exponents = rng.integers(1, 17, (2, 3, 50, 197))
    exponents[..., 0] = 1  # one 2**14 per row; the rest small: row sums < 2**16
    exponents[..., 1:] = np.maximum(exponents[..., 1:], 9)
    probs = np.where(exponents >= 16, 0, 2 ** (15 - np.minimum(exponents, 15))).astype(np.uint16)
    v = rng.integers(-128, 128, (2, 3, 197, 64), dtype=np.int8)
    plan = mm._plan(mm._prepare(probs, v, 0, 0, None))
    assert plan.dtype is np.float32 and plan.chunk == 197
    np.testing.assert_array_equal(integer_matmul(probs, v), integer_matmul_reference(probs, v))
    full = np.full_like(probs, 2**15)  # worst case: one float32 call is not exact, two-digit split is
    full[..., 1::3] = 2**15 - 1
    full[..., 2::3] = rng.integers(0, 2**15, full[..., 2::3].shape)
    plan = mm._plan(mm._prepare(full, v, 0, 0, None))
    assert plan.dtype is np.float32 and plan.split == 9 and plan.bound <= 2**24
    want = integer_matmul_reference(full, v)
    assert np.abs(want).max() > 2**24
    np.testing.assert_array_equal(integer_matmul(full, v), want)
    assert_exact(want[:1, :1, :2, :3], python_int_matmul(full[:1, :1, :2], v[:1, :1, :, :3]))


def test_split_digits_with_zero_points_and_negative_values():
    rng = np.random.default_rng(9)
    a = rng.integers(-(2**15), 2**15, (3, 1, 2, 300), dtype=np.int16)
    a[0, 0, 0, :] = -(2**15)
    b = rng.integers(0, 256, (2, 300, 4), dtype=np.uint8)
    p = mm._prepare(a, b, 1000, 128, np.arange(4, dtype=np.int32))
    assert mm._plan(p).split > 0
    want = integer_matmul_reference(a, b, a_zero_point=1000, b_zero_point=128, bias=np.arange(4, dtype=np.int32))
    np.testing.assert_array_equal(integer_matmul(a, b, a_zero_point=1000, b_zero_point=128, bias=np.arange(4, dtype=np.int32)), want)
    assert_exact(want[:1], python_int_matmul(a[:1], b, 1000, 128, np.arange(4)))


def test_transposed_weight_column_bound():
    """A transposed (F-ordered) weight uses its rows as column sums; small weights keep K = 3072 in one call."""
    rng = np.random.default_rng(6)
    weight = rng.integers(-3, 4, (8, 3072), dtype=np.int8)
    weight[:, 0] = -128
    x = rng.integers(0, 256, (2, 5, 3072), dtype=np.uint8)
    p = mm._prepare(x.reshape(-1, 3072), weight.T, 0, 0, None)
    plan = mm._plan(p)
    assert plan.dtype is np.float32 and plan.chunk == 3072 and plan.bound <= 2**24
    np.testing.assert_array_equal(integer_linear(x, weight), integer_linear_reference(x, weight))


def test_empty_and_zero_cases():
    a = np.zeros((2, 3, 0), dtype=np.uint8)
    b = np.zeros((0, 4), dtype=np.int8)
    bias = np.array([1, -2, 3, -4], dtype=np.int32)
    for fn in (integer_matmul, integer_matmul_reference):
        assert fn(a, b, bias=bias).tolist() == [[[1, -2, 3, -4]] * 3] * 2
        assert fn(np.zeros((0, 2), np.int8), np.zeros((2, 4), np.int8)).shape == (0, 4)
        assert fn(np.full((1, 2), 9, np.uint8), np.ones((2, 2), np.int8), a_zero_point=9).tolist() == [[0, 0]]


def test_non_contiguous_and_broadcast_operands():
    rng = np.random.default_rng(8)
    a = rng.integers(-128, 128, (4, 6, 10), dtype=np.int8)[:, ::2, 1::2]  # strided view
    b = np.asfortranarray(rng.integers(0, 256, (5, 3), dtype=np.uint8))
    want = python_int_matmul(a, b, 3, 200)
    assert_exact(integer_matmul(a, b, a_zero_point=3, b_zero_point=200), want)
    b_batch = rng.integers(-100, 100, (1, 2, 5, 3), dtype=np.int16)
    assert_exact(integer_matmul(a[:2, None], b_batch), python_int_matmul(a[:2, None], b_batch))


# ------------------------------------------------------------------------------------------ errors


def test_overflow_is_refused_at_the_exact_limit():
    a = np.full((1, 2), -(2**31), dtype=np.int64)
    b = np.full((2, 1), -(2**31), dtype=np.int64)
    assert integer_matmul(a[:, :1], b[:1]).tolist() == [[2**62]]
    with pytest.raises(OverflowError, match="integer_matmul: the accumulator .* overflows int64"):
        integer_matmul(a, b)
    with pytest.raises(OverflowError, match="integer_matmul_reference"):
        integer_matmul_reference(a, b)
    big = np.full((1, 4), 2**40, dtype=np.int64)
    with pytest.raises(OverflowError, match="overflows int64"):
        integer_linear(big, np.full((1, 4), 2**22, dtype=np.int64))
    with pytest.raises(OverflowError, match="a - a_zero_point"):
        integer_matmul(np.array([[2**62]], dtype=np.int64), np.zeros((1, 1), np.int8), a_zero_point=-(2**62))


I8 = np.zeros((2, 3), dtype=np.int8)
U8 = np.zeros((3, 4), dtype=np.uint8)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(a=I8.astype(np.float32), b=U8), TypeError, "a must be an integer array"),
        (dict(a=I8, b=U8.astype(bool)), TypeError, "b must be an integer array"),
        (dict(a=I8, b=U8.astype(np.uint64)), TypeError, "b has dtype uint64"),
        (dict(a=I8, b=U8, bias=np.zeros(4)), TypeError, "bias must be an integer array"),
        (dict(a=I8, b=U8, a_zero_point=1.0), TypeError, "a_zero_point must be an integer"),
        (dict(a=I8, b=U8, b_zero_point=2**63), ValueError, "b_zero_point = 9223372036854775808"),
        (dict(a=I8[0], b=U8), ValueError, r"a.shape = \(3,\)"),
        (dict(a=I8, b=U8[:2]), ValueError, r"inner dimensions differ: a.shape = \(2, 3\) has K = 3, b.shape = \(2, 4\)"),
        (dict(a=np.zeros((2, 2, 3), np.int8), b=np.zeros((3, 3, 4), np.int8)), ValueError, "batch dimensions .* do not broadcast"),
        (dict(a=I8, b=U8, bias=np.zeros(3, np.int32)), ValueError, r"bias must have shape \(N,\) = \(4,\)"),
        (dict(a=I8, b=U8, bias=np.zeros((1, 4), np.int32)), ValueError, r"got shape \(1, 4\)"),
        (dict(a=I8, b=U8, bias=np.array([0, 0, 2**31, 0])), ValueError, "bias holds 2147483648"),
    ],
)
@pytest.mark.parametrize("implementation", [integer_matmul, integer_matmul_reference])
def test_bad_input_is_refused_with_a_named_argument(implementation, kwargs, error, message):
    with pytest.raises(error, match=message):
        implementation(**kwargs)
    assert implementation.__name__ in _message(implementation, kwargs)


def _message(implementation, kwargs):
    try:
        implementation(**kwargs)
    except (TypeError, ValueError, OverflowError) as caught:
        return str(caught)
    return ""


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(x=np.zeros(3, np.float64), weight=np.zeros((2, 3), np.int8)), TypeError, "x must be an integer array"),
        (dict(x=np.zeros(3, np.uint8), weight=np.zeros((2, 3), np.float32)), TypeError, "weight must be an integer array"),
        (dict(x=np.zeros(3, np.uint8), weight=np.zeros((2, 4), np.int8)), ValueError, r"x.shape = \(3,\) and weight.shape = \(2, 4\)"),
        (dict(x=np.zeros(3, np.uint8), weight=np.zeros(3, np.int8)), ValueError, "weight shape \\(N, K\\)"),
        (dict(x=np.zeros(3, np.uint8), weight=np.zeros((2, 3), np.int8), x_zero_point="1"), TypeError, "x_zero_point"),
        (dict(x=np.zeros(3, np.uint8), weight=np.zeros((2, 3), np.int8), bias=np.zeros(3, np.int32)), ValueError, r"bias must have shape \(N,\) = \(2,\)"),
    ],
)
@pytest.mark.parametrize("implementation", [integer_linear, integer_linear_reference])
def test_linear_bad_input_is_refused(implementation, kwargs, error, message):
    with pytest.raises(error, match=message):
        implementation(**kwargs)
    assert implementation.__name__ in _message(implementation, kwargs)


# ------------------------------------------------------------------- PTF input factors (x_shift)


@given(mst.shifted_linear_cases())
def test_linear_with_input_shifts_equals_python_ints_and_the_kernel(case):
    x, weight, zp, shift = case["x"], case["weight"], case["x_zero_point"], case["x_shift"]
    shifted = np.array([[(int(v) - zp) << int(s) for v, s in zip(row, shift)] for row in x.reshape(-1, x.shape[-1])],
                       dtype=object)
    bias = [0] * weight.shape[0] if case["bias"] is None else [int(b) for b in case["bias"]]
    want = [[sum(int(w) * v for w, v in zip(weight[n], row)) + bias[n] for n in range(weight.shape[0])] for row in shifted]
    got_reference = integer_linear_reference(**case)
    got = integer_linear(**case)
    assert got.dtype == got_reference.dtype == np.int64
    assert got_reference.reshape(-1, weight.shape[0]).tolist() == want
    np.testing.assert_array_equal(got, got_reference)


def test_linear_without_shifts_equals_zero_shifts():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (4, 9), dtype=np.uint8)
    weight = rng.integers(-127, 128, (5, 9), dtype=np.int8)
    for implementation in (integer_linear, integer_linear_reference):
        np.testing.assert_array_equal(implementation(x, weight, x_zero_point=11, x_shift=np.zeros(9, np.uint8)),
                                      implementation(x, weight, x_zero_point=11))


@pytest.mark.parametrize(
    "shift, error, message",
    [
        (np.zeros(2, np.uint8), ValueError, r"x_shift must have shape \(K,\) = \(3,\)"),
        (np.zeros((1, 3), np.uint8), ValueError, r"got shape \(1, 3\)"),
        (np.array([0, 16, 0]), ValueError, r"x_shift holds 16, outside its allowed range \[0, 15\]"),
        (np.array([0, -1, 0]), ValueError, "x_shift holds -1"),
        (np.array([0.0, 1.0, 0.0]), TypeError, "x_shift must be an integer array"),
    ],
)
@pytest.mark.parametrize("implementation", [integer_linear, integer_linear_reference])
def test_linear_bad_shift_is_refused(implementation, shift, error, message):
    with pytest.raises(error, match=message):
        implementation(np.zeros((2, 3), np.uint8), np.zeros((2, 3), np.int8), x_shift=shift)
    assert implementation.__name__ in _message(implementation, dict(x=np.zeros((2, 3), np.uint8),
                                                                    weight=np.zeros((2, 3), np.int8), x_shift=shift))


@pytest.mark.parametrize("implementation", [integer_linear, integer_linear_reference])
def test_linear_shift_beyond_int64_is_an_overflow_error_not_a_wrap(implementation):
    x = np.array([[2**50, 0]], dtype=np.int64)
    with pytest.raises(OverflowError, match=r"max\|x - x_zero_point\| \* 2\*\*max\(x_shift\)"):
        implementation(x, np.ones((1, 2), np.int8), x_shift=np.array([15, 0]))


def test_weights_with_a_few_large_columns_get_long_exact_float32_chunks():
    # fc2 over PTF codes: the kernel shifts the weight columns by the input factors; one column at 2**7 makes
    # K * max|x| * max|w| far beyond 2**24, but chunks whose column sums stay below 2**24 are exact and long
    from intsim.ops.matmul import _plan, _prepare, shifted_linear_weight

    rng = np.random.default_rng(5)
    k = 1536
    x = rng.integers(0, 256, (64, k), dtype=np.uint8)
    weight = rng.integers(-20, 21, (32, k), dtype=np.int8)
    weight[:, 7] = 127
    shift = np.zeros(k, np.uint8)
    shift[7] = 7
    p = _prepare(x, shifted_linear_weight(weight, shift).T, 3, 0, None)
    plan = _plan(p)
    assert plan.dtype is np.float32 and plan.chunk > 2**24 // (p.a_abs * p.b_abs) and plan.bound <= 2**24
    x[:, 7] = 255  # the large column at its largest input
    np.testing.assert_array_equal(integer_linear(x, weight, x_zero_point=3, x_shift=shift),
                                  integer_linear_reference(x, weight, x_zero_point=3, x_shift=shift))


def test_weights_shifted_almost_everywhere_get_short_float32_chunks_not_a_digit_split():
    # ViT-Ti's fc2 over GELU PTF codes: most input channels at 2**4..2**5, so K-chunks proved by column sums are
    # shorter than MIN_FLOAT32_CHUNK; they still beat the digit split (twice the flops) and keep the fused path
    from intsim.ops.matmul import MIN_COLUMN_CHUNK, MIN_FLOAT32_CHUNK, _plan, _prepare, shifted_linear_weight

    rng = np.random.default_rng(6)
    k = 768
    x = rng.integers(0, 256, (48, k), dtype=np.uint8)
    weight = rng.integers(-100, 101, (24, k), dtype=np.int8)
    shift = rng.choice(np.array([0, 4, 5], np.uint8), k, p=[0.05, 0.55, 0.40])
    p = _prepare(x, shifted_linear_weight(weight, shift).T, 40, 0, None)
    plan = _plan(p)
    assert plan.dtype is np.float32 and not plan.split and plan.bound <= 2**24
    assert MIN_COLUMN_CHUNK <= plan.chunk < MIN_FLOAT32_CHUNK
    x[:, :] = 255 * (weight[0] > 0)  # the first output at its largest
    np.testing.assert_array_equal(integer_linear(x, weight, x_zero_point=40, x_shift=shift),
                                  integer_linear_reference(x, weight, x_zero_point=40, x_shift=shift))
