"""AdaLog integer ops (intsim.ops.logquant): tables, encoder, exact accumulations against Python ints."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intsim.ops import logquant as lq

PRINTED = {  # /work/shared/research/ptq_methods.md section 1.2, M(u) for u = 0..36
    3: "14 14 13 13 13 13 13 12 12 12 12 11 11 11 11 11 10 10 10 10 10 9 9 9 9 9 9 8 8 8 8 8 8 8 7 7 7",
    4: "30 29 29 28 28 27 27 26 26 25 25 24 24 24 23 23 22 22 21 21 21 20 20 19 19 19 18 18 18 17 17 17 16 16 16 16 15",
    6: "126 124 121 119 117 115 113 111 108 106 104 103 101 99 97 95 93 92 90 88 87 85 83 82 80 79 77 76 75 73 72 70 "
       "69 68 67 65 64",
}


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_mantissa_tables_match_the_printed_ones(bits):
    d = lq.adalog_denominator(bits)
    got = [lq._rhe_power(d, u, 37) for u in range(37)]
    assert got == [int(v) for v in PRINTED[bits].split()]
    m = lq.adalog_mantissa_table(bits, 1)  # q = 1: u = c for c < 37
    assert m[: min(37, 2**bits)].tolist() == got[: min(37, 2**bits)]


@given(st.integers(1, 8), st.integers(10, 137))
@settings(max_examples=50, deadline=None)
def test_tables_against_python_ints(bits, q):
    d = 2 ** (bits + 1) - 2
    sh, m = lq.adalog_shift_table(bits, q), lq.adalog_mantissa_table(bits, q)
    for c in range(2**bits):
        assert sh[c] == c * q // 37
        u = (q * c) % 37
        exact = d * 2 ** (-u / 37)
        assert abs(m[c] - exact) <= 0.5 + 1e-9 and d // 2 <= m[c] <= d


@given(st.integers(1, 6), st.integers(10, 137), st.floats(0.5, 1e6))
@settings(max_examples=50, deadline=None)
def test_thresholds_and_encoder_against_exact_comparisons(bits, q, ratio):
    t = lq.adalog_thresholds(bits, q, ratio)
    assert np.all(t[1:] <= t[:-1])
    xs = np.unique(np.concatenate([t, t - 1, t + 1, [0, 1]]).clip(0))
    codes = lq.log_encode(xs, t)
    np.testing.assert_array_equal(codes, lq.log_encode_reference(xs, t))
    for x, c in zip(xs.tolist(), codes.tolist()):
        # x < T_k  <=>  x**(2r) * 2**((2k+1) q) < ratio**(2r)  (exact, Fractions)
        r = Fraction(ratio)
        expected = sum(1 for k in range(2**bits) if Fraction(x) ** 74 * 2 ** ((2 * k + 1) * q) < r**74)
        assert c == expected
    for k in range(len(t)):  # a tie x == T_k is not below T_k: the lower code (fewer thresholds above x)
        assert lq.log_encode(t[k : k + 1], t)[0] == int((t > t[k]).sum())


@given(st.integers(2, 6), st.integers(10, 137), st.integers(0, 2**31))
@settings(max_examples=40, deadline=None)
def test_fake_quant_formula_agrees_with_thresholds(bits, q, seed):
    rng = np.random.default_rng(seed)
    s_in, s = 1e-4, 1.0
    t = lq.adalog_thresholds(bits, q, s / s_in)
    x = rng.integers(1, 10**4, 200)
    y = np.clip(x * s_in / s, 1e-15, 1.0)
    c = np.round(-np.log2(y) * 37 / q)
    c = np.where(c >= 2**bits, 2**bits, c)
    away = np.all(np.abs(x[:, None] - t[None, :]) > 1e-6 * t[None, :] + 1, axis=1)
    np.testing.assert_array_equal(lq.log_encode(x, t)[away], c[away])


def _python_log_values(codes, v, table, zp):
    return [[[sum(int(table[codes[b, i, j]]) * (int(v[b, j, d]) - zp) for j in range(codes.shape[-1]))
              for d in range(v.shape[-1])] for i in range(codes.shape[-2])] for b in range(codes.shape[0])]


def _python_log_linear(x, w, wzp, bias, table):
    return [[[sum(int(table[x[a, b, k]]) * (int(w[n, k]) - int(wzp[n])) for k in range(x.shape[-1])) + int(bias[n])
              for n in range(w.shape[0])] for b in range(x.shape[1])] for a in range(x.shape[0])]


def _bound(count, table, centred_abs, bias_abs=0):
    return count * max(int(t) for t in table) * centred_abs + bias_abs


@given(st.integers(1, 6), st.integers(10, 137), st.integers(0, 2**31))
@settings(max_examples=30, deadline=None)
def test_log_ops_against_python_ints(bits, q, seed):
    """Every op against Python-int sums; where the exact worst-case bound of the data exceeds int64 the op must
    raise OverflowError (the proof is data-dependent: M * max(W) * max|v - zp|), never wrap."""
    rng = np.random.default_rng(seed)
    sh, m = lq.adalog_shift_table(bits, q), lq.adalog_mantissa_table(bits, q)
    top = lq.max_log_shift(sh)
    largest = max(int(mm) << (top - int(h)) for h, mm in zip(sh, m))
    if largest > lq.INT64_MAX:
        with pytest.raises(OverflowError, match="log_weight_table"):
            lq.log_weight_table(sh, m, top)
        return
    table = lq.log_weight_table(sh, m, top)
    assert table[-1] == 0 and table[:-1].tolist() == [int(mm) << (top - int(h)) for h, mm in zip(sh, m)]
    codes = rng.integers(0, 2**bits + 1, (2, 3, 5))
    v = rng.integers(0, 256, (2, 5, 4), dtype=np.uint8)
    kw = dict(v_zero_point=7, max_shift=top)
    if _bound(5, table, max(abs(int(v.min()) - 7), abs(int(v.max()) - 7))) > lq.INT64_MAX:
        for f in (lq.log_attention_values, lq.log_attention_values_reference):
            with pytest.raises(OverflowError, match="log_attention_values"):
                f(codes, v, sh, m, **kw)
    else:
        want = _python_log_values(codes, v, table, 7)
        assert lq.log_attention_values_reference(codes, v, sh, m, **kw).tolist() == want
        assert lq.log_attention_values(codes, v, sh, m, **kw).tolist() == want
    w = rng.integers(0, 16, (3, 5))
    wzp, bias = rng.integers(0, 16, 3), rng.integers(-1000, 1000, 3)
    w_abs = int(np.abs(w - wzp[:, None]).max())
    if _bound(5, table, w_abs, int(np.abs(bias).max())) > lq.INT64_MAX:
        for f in (lq.log_linear, lq.log_linear_reference):
            with pytest.raises(OverflowError, match="log_linear"):
                f(codes, w, wzp, bias, sh, m, max_shift=top)
    else:
        ref = lq.log_linear_reference(codes, w, wzp, bias, sh, m, max_shift=top)
        exact = _python_log_linear(codes, w, wzp, bias, table)
        assert ref.tolist() == exact == lq.log_linear(codes, w, wzp, bias, sh, m, max_shift=top).tolist()
    x = rng.integers(0, 256, (2, 3, 5))
    exact = [[[sum((int(x[a, b, k]) - 3) * (int(w[n, k]) - int(wzp[n])) for k in range(5)) + int(bias[n])
               for n in range(3)] for b in range(3)] for a in range(2)]
    assert lq.asymmetric_linear_reference(x, w, wzp, bias, x_zero_point=3).tolist() == exact
    assert lq.asymmetric_linear(x, w, wzp, bias, x_zero_point=3).tolist() == exact


@given(st.integers(1, 4), st.integers(0, 2**31), st.integers(1, 6))
@settings(max_examples=30, deadline=None)
def test_largest_shifts_q137(bits, seed, keys):
    """q = 137 (the largest searched q): SH up to (2**b - 1) * 137 // 37; small b so that W fits, values scaled to
    the largest that still fit int64 (exact against Python ints), one step more raises OverflowError."""
    rng = np.random.default_rng(seed)
    sh, m = lq.adalog_shift_table(bits, 137), lq.adalog_mantissa_table(bits, 137)
    top = lq.max_log_shift(sh)
    table = lq.log_weight_table(sh, m, top)
    w_max = int(table.max())
    span = lq.INT64_MAX // (keys * w_max)  # the largest max|v - zp| the proof accepts
    codes = rng.integers(0, 2**bits + 1, (1, 2, keys))
    codes[0, 0, :] = 0  # one row at the largest weight: the bound is reached when v - zp = span everywhere
    v = rng.integers(-span, span, (1, keys, 2), endpoint=True)
    v[0, :, 0] = span
    want = _python_log_values(codes, v, table, 0)
    assert lq.log_attention_values(codes, v, sh, m, v_zero_point=0, max_shift=top).tolist() == want
    assert lq.log_attention_values_reference(codes, v, sh, m, v_zero_point=0, max_shift=top).tolist() == want
    for f in (lq.log_attention_values, lq.log_attention_values_reference):
        with pytest.raises(OverflowError, match="log_attention_values"):
            f(codes, v, sh, m, v_zero_point=-1, max_shift=top)  # max|v - zp| = span + 1
    # log_linear: K = keys, weight centred within +-span, bias filling the rest of int64
    w = rng.integers(-span, span, (2, keys), endpoint=True)
    w[0, 0] = span
    wzp = np.zeros(2, dtype=np.int64)
    spare = lq.INT64_MAX - keys * w_max * span
    bias = np.array([spare, -spare])
    x = codes[0]
    want = _python_log_linear(x[None], w, wzp, bias, table)[0]
    assert lq.log_linear(x, w, wzp, bias, sh, m, max_shift=top).tolist() == want
    assert lq.log_linear_reference(x, w, wzp, bias, sh, m, max_shift=top).tolist() == want
    for f in (lq.log_linear, lq.log_linear_reference):
        with pytest.raises(OverflowError, match="log_linear"):
            f(x, w, wzp, bias + np.array([1, 0]), sh, m, max_shift=top)


def test_int64_edge_and_bad_codes():
    sh, m = np.array([0, 61]), np.array([2, 2])
    assert lq.log_weight_table(sh, m, 61)[0] == 2 << 61  # 2**62 fits
    with pytest.raises(OverflowError, match="log_weight_table"):
        lq.log_weight_table(sh, m, 62)  # 2 << 62 = 2**63 does not
    with pytest.raises(OverflowError, match="log_attention_values"):
        lq.log_attention_values(np.array([[0, 0]]), np.array([[1], [1]]), sh, m, v_zero_point=0, max_shift=61)
    lq.log_attention_values(np.array([[0]]), np.array([[1]]), sh, m, v_zero_point=0, max_shift=61)
    with pytest.raises(ValueError, match="codes holds 3"):
        lq.log_attention_values(np.array([[3]]), np.array([[1]]), sh, m, v_zero_point=0, max_shift=61)
    with pytest.raises(ValueError, match="non-increasing"):
        lq.log_encode(np.array([1]), np.array([1, 2]))



def test_exact_int64_edges():
    """Results exactly at 2**63 - 1 are computed (no wrap); one more raises OverflowError, from every op."""
    big = (2**63 - 1) // 7  # 2**63 - 1 = 7 * big
    sh, m = np.array([0, 0]), np.array([7, 0])  # W = [7, 0, 0]
    codes, v = np.array([[0]]), np.array([[big]])
    assert lq.log_attention_values(codes, v, sh, m, v_zero_point=0, max_shift=0).tolist() == [[2**63 - 1]]
    assert lq.log_attention_values_reference(codes, v, sh, m, v_zero_point=0, max_shift=0).tolist() == [[2**63 - 1]]
    with pytest.raises(OverflowError, match="log_attention_values"):
        lq.log_attention_values(codes, v, sh, m, v_zero_point=-1, max_shift=0)
    w, wzp = np.array([[1]]), np.array([0])
    bias = np.array([2**63 - 1 - 7])
    assert lq.log_linear(np.array([0]), w, wzp, bias, sh, m, max_shift=0).tolist() == [2**63 - 1]
    assert lq.log_linear_reference(np.array([0]), w, wzp, bias, sh, m, max_shift=0).tolist() == [2**63 - 1]
    with pytest.raises(OverflowError, match="log_linear"):
        lq.log_linear(np.array([0]), w, wzp, bias + 1, sh, m, max_shift=0)
    x = np.array([[2**62]])
    for f in (lq.asymmetric_linear, lq.asymmetric_linear_reference):
        assert f(x, w, wzp, np.array([0]), x_zero_point=-(2**62 - 1)).tolist() == [[2**63 - 1]]
        with pytest.raises(OverflowError, match="asymmetric_linear"):
            f(x, w, wzp, np.array([0]), x_zero_point=-(2**62))  # max|x - x_zp| = 2**63 itself does not fit
        with pytest.raises(OverflowError, match="asymmetric_linear"):
            f(x, w, wzp, np.array([1]), x_zero_point=-(2**62 - 1))


@given(st.integers(1, 6), st.integers(1, 137), st.floats(1e-6, 1e12))
@settings(max_examples=60, deadline=None)
def test_thresholds_are_exact_ceilings(bits, q, ratio):
    """T_k = ceil(y), y = ratio * 2**(-(2k+1) q / (2r)): (T-1)**(2r) * 2**e < ratio**(2r) <= T**(2r) * 2**e
    (Fractions), or T = 2**62 where y > 2**62 - 1; tiny ratios give 1 (no 'too close to an integer' refusal)."""
    t = lq.adalog_thresholds(bits, q, ratio)
    r2 = 2 * lq.ADALOG_R
    exact = Fraction(ratio) ** r2
    for k, tk in enumerate(t.tolist()):
        e = (2 * k + 1) * q
        if tk == lq.THRESHOLD_MAX:
            assert (tk - 1) ** r2 * 2**e < exact
            continue
        assert 1 <= tk and (tk - 1) ** r2 * 2**e < exact <= tk ** r2 * 2**e, (k, tk)


@pytest.mark.parametrize("bits", [1, 3, 6])
def test_thresholds_at_exact_integers(bits):
    """q = 74 = 2r: y = ratio * 2**-(2k+1) exactly; at integer y the threshold is y itself (x == T_k: lower code)."""
    t = lq.adalog_thresholds(bits, 74, 2.0**40)
    assert t.tolist() == [max(1, math.ceil(Fraction(2) ** (40 - 2 * k - 1))) for k in range(2**bits)]
    t = lq.adalog_thresholds(bits, 74, 3.0 * 2**20)
    assert t.tolist() == [math.ceil(Fraction(3 * 2**20, 2 ** (2 * k + 1))) for k in range(2**bits)]
    assert lq.adalog_thresholds(bits, 10, 1e-300).tolist() == [1] * 2**bits  # tiny values: ceiling 1
    assert lq.adalog_thresholds(bits, 10, 1e300).tolist()[0] == lq.THRESHOLD_MAX


@given(st.integers(1, 8), st.integers(1, 137))
@settings(max_examples=50, deadline=None)
def test_mantissas_are_exact_round_half_even(bits, q):
    """M[c] = rhe(D * 2**(-u/r)), u = (q c) mod r, exactly: |M - D 2**(-u/r)| < 1/2, i.e.
    (2M - 1)**r * 2**u < (2D)**r < (2M + 1)**r * 2**u (u = 0: M = D; no ties for 0 < u < r)."""
    d, r = 2 ** (bits + 1) - 2, lq.ADALOG_R
    m = lq.adalog_mantissa_table(bits, q)
    for c in range(2**bits):
        u, mc = (q * c) % r, int(m[c])
        if u == 0:
            assert mc == d
        else:
            assert (2 * mc - 1) ** r * 2**u < (2 * d) ** r < (2 * mc + 1) ** r * 2**u


def test_bad_inputs_name_the_op_and_tensor():
    sh, m = lq.adalog_shift_table(2, 20), lq.adalog_mantissa_table(2, 20)
    top = lq.max_log_shift(sh)
    with pytest.raises(ValueError, match="log_encode: x holds -1"):
        lq.log_encode(np.array([-1, 2]), np.array([5, 3]))
    with pytest.raises(TypeError, match="log_encode: x must be an integer"):
        lq.log_encode(np.array([1.0]), np.array([5, 3]))
    with pytest.raises(ValueError, match="log_linear: x holds 5"):
        lq.log_linear(np.array([[5]]), np.array([[1]]), np.array([0]), np.array([0]), sh, m, max_shift=top)
    with pytest.raises(ValueError, match="asymmetric_linear: bias must have shape"):
        lq.asymmetric_linear(np.array([[1]]), np.array([[1]]), np.array([0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="asymmetric_linear: bias holds"):
        lq.asymmetric_linear(np.array([[1]]), np.array([[1]]), np.array([0]), np.array([2**40]))
    with pytest.raises(ValueError, match="log_attention_values: the leading axes"):
        lq.log_attention_values(np.zeros((2, 1, 1), int), np.zeros((3, 1, 1), int), sh, m, v_zero_point=0,
                                max_shift=top)


@given(st.integers(1, 4), st.integers(10, 137), st.data())
def test_fused_operand_forms_equal_the_ops_values(bits, q, data):
    # the fused kernels' plain-linear operands: W[codes] gathered (None for a code outside the table) and the
    # centred weight w - wzp in a narrow dtype, the very integers the ops multiply
    sh, m = lq.adalog_shift_table(bits, q), lq.adalog_mantissa_table(bits, q)
    table = lq.log_weight_table(sh, m, lq.max_log_shift(sh))
    codes = np.array(data.draw(st.lists(st.integers(0, 2**bits), min_size=1, max_size=50)), dtype=np.uint16)
    gathered = lq.log_weights_of(codes, table)
    assert gathered.tolist() == [int(table[c]) for c in codes]
    assert gathered.dtype.itemsize <= table.dtype.itemsize
    outside = codes.copy()
    outside[data.draw(st.integers(0, codes.size - 1))] = 2**bits + 1
    assert lq.log_weights_of(outside, table) is None
    assert lq.log_weights_of(np.array([-1, 0], dtype=np.int8), table) is None
    weight = np.array(data.draw(st.lists(st.integers(0, 255), min_size=6, max_size=6)), dtype=np.uint8).reshape(2, 3)
    zero_points = np.array([data.draw(st.integers(0, 255)) for _ in range(2)], dtype=np.int32)
    centred = lq.centred_weight(weight, zero_points)
    assert centred.tolist() == [[int(w) - int(z) for w in row] for row, z in zip(weight, zero_points)]
    assert centred.dtype.itemsize <= 2


@given(st.integers(0, 2**31), st.integers(1, 16), st.integers(1, 5), st.integers(1, 8))
@settings(max_examples=60, deadline=None)
def test_asymmetric_linear_with_input_shifts_against_python_ints(seed, k, n, x_bits):
    # PTF input codes (fc2 over a per-channel GELU output): term k is ((x_k - x_zp) << s_k) * (w_nk - wzp_n)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**x_bits, (2, 3, k))
    w, wzp = rng.integers(0, 256, (n, k)), rng.integers(0, 256, n)
    bias, shift = rng.integers(-(2**31), 2**31, n), rng.integers(0, 16, k)
    zp = int(rng.integers(0, 2**x_bits))
    exact = [[[sum(((int(x[a, b, j]) - zp) << int(shift[j])) * (int(w[c, j]) - int(wzp[c])) for j in range(k))
               + int(bias[c]) for c in range(n)] for b in range(3)] for a in range(2)]
    kw = dict(x_zero_point=zp, x_shift=shift)
    assert lq.asymmetric_linear_reference(x, w, wzp, bias, **kw).tolist() == exact
    assert lq.asymmetric_linear(x, w, wzp, bias, **kw).tolist() == exact
    no_shift = dict(x_zero_point=zp, x_shift=np.zeros(k, np.uint8))
    assert lq.asymmetric_linear(x, w, wzp, bias, **no_shift).tolist() == \
        lq.asymmetric_linear(x, w, wzp, bias, x_zero_point=zp).tolist()


def test_asymmetric_linear_input_shifts_are_checked_and_bounded():
    x, w, wzp, bias = np.array([[5, 1]]), np.array([[3, 1]]), np.array([0]), np.array([0])
    for f in (lq.asymmetric_linear, lq.asymmetric_linear_reference):
        with pytest.raises(ValueError, match="asymmetric_linear: x_shift must have shape"):
            f(x, w, wzp, bias, x_shift=np.array([1]))
        with pytest.raises(ValueError, match="asymmetric_linear: x_shift"):
            f(x, w, wzp, bias, x_shift=np.array([16, 0]))
        with pytest.raises(ValueError, match=r"asymmetric_linear: x \(\.\.\., K\) and weight"):
            f(x, np.array([[1, 2, 3]]), wzp, bias, x_shift=np.array([0, 0]))  # shapes first, as without shifts
        assert f(np.array([[2**47]]), np.array([[1]]), wzp, bias, x_shift=np.array([15])).tolist() == [[2**62]]
        with pytest.raises(OverflowError, match="asymmetric_linear"):  # the shifted input's accumulator: 2**63
            f(np.array([[2**48]]), np.array([[1]]), wzp, bias, x_shift=np.array([15]))
