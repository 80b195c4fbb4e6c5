"""Residual add: kernel == reference, reference == exact rational arithmetic, ties, saturation, PTF, constants, errors."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from intsim.ops._checks import smallest_code_dtype
from intsim.ops.residual import residual_add, residual_add_constants, residual_add_reference
from intsim.ops.rounding import ROUNDING_MODES
from intsim.testing import gelu_strategies as gst
from intsim.testing.oracles import exact_round


def exact_residual_add(case) -> np.ndarray:
    a, b = case["a"], case["b"]
    channels = a.shape[-1] if a.ndim else 1
    ma, mb, k = (np.broadcast_to(case[n], (channels,)) for n in ("a_multiplier", "b_multiplier", "shift"))
    out = np.empty(a.shape, dtype=np.int64)
    for index in np.ndindex(a.shape):
        c = index[-1] if a.ndim else 0
        total = (int(a[index]) - case["a_zero_point"]) * int(ma[c]) + (int(b[index]) - case["b_zero_point"]) * int(mb[c])
        value = exact_round(Fraction(total, 2 ** int(k[c])), case.get("rounding", "half_up")) + case.get("out_zero_point", 0)
        out[index] = min(max(value, case.get("qmin", 0)), case.get("qmax", 255))
    return out


@given(gst.residual_add_cases())
def test_residual_add_kernel_matches_reference(case):
    want = residual_add_reference(**case)
    got = residual_add(**case)
    assert got.dtype == want.dtype == smallest_code_dtype(case["qmin"], case["qmax"])
    assert got.shape == case["a"].shape
    np.testing.assert_array_equal(got, want)


@given(gst.residual_add_cases())
def test_residual_add_reference_matches_exact_arithmetic(case):
    np.testing.assert_array_equal(residual_add_reference(**case).astype(np.int64), exact_residual_add(case))


@given(gst.residual_add_cases(wide=True))
def test_residual_add_wide_operands_are_exact_or_refused(case):
    try:
        got = residual_add(**case)
    except OverflowError as error:
        assert "residual_add:" in str(error) and "overflows int64" in str(error)
        a_bound = max(abs(int(v) - case["a_zero_point"]) for v in case["a"].ravel())
        b_bound = max(abs(int(v) - case["b_zero_point"]) for v in case["b"].ravel())
        m_bound = int(max(np.max(np.abs(case["a_multiplier"])), np.max(np.abs(case["b_multiplier"]))))
        assert (a_bound + b_bound) * m_bound >= 2**62  # only refused when the sum really can approach int64's limit
        return
    np.testing.assert_array_equal(got.astype(np.int64), exact_residual_add(case))


# Ties: (a - a_zp) * 1 + (b - b_zp) * 1 over 2 for sums ±1, ±3, ±5. Columns: a - a_zp, b - b_zp, half_up, half_even, half_away.
TIE_TABLE = [
    (1, 0, 1, 0, 1),
    (4, -1, 2, 2, 2),
    (2, 3, 3, 2, 3),
    (-1, 0, 0, 0, -1),
    (-5, 2, -1, -2, -2),
    (0, -5, -2, -2, -3),
]


@pytest.mark.parametrize("da, db, half_up, half_even, half_away", TIE_TABLE)
@pytest.mark.parametrize("implementation", [residual_add, residual_add_reference])
def test_rounding_modes_on_exact_ties(implementation, da, db, half_up, half_even, half_away):
    a, b = np.array([100 + da], dtype=np.int16), np.array([-7 + db], dtype=np.int16)
    for rounding, want in (("half_up", half_up), ("half_even", half_even), ("half_away", half_away)):
        got = implementation(a, b, a_zero_point=100, b_zero_point=-7, a_multiplier=1, b_multiplier=1, shift=1,
                             qmin=-128, qmax=127, rounding=rounding)
        assert int(got[0]) == want, (rounding, da, db)


@pytest.mark.parametrize("rounding", sorted(ROUNDING_MODES))
def test_one_rounding_of_the_sum_not_one_per_branch(rounding):
    # each branch alone is a tie (0.5 + 0.5): rounding each (I-ViT) gives 0 (half_even) or 2 (half_up);
    # intsim rounds the exact sum (2 / 2 = 1) once; 3/2 + 3/2 = 3 exactly (per branch: 2 + 2 = 4 in every mode).
    a, b = np.array([1, -1, 3, -3], dtype=np.int8), np.array([1, -1, 3, -3], dtype=np.int8)
    got = residual_add(a, b, a_zero_point=0, b_zero_point=0, a_multiplier=np.int64(1), b_multiplier=1, shift=1,
                       qmin=-128, qmax=127, rounding=rounding)
    assert got.tolist() == [1, -1, 3, -3]
    # 3/4 + 3/4 = 3/2: a tie of the sum only, rounded once by the op's mode
    got = residual_add(a[:2], b[:2], a_zero_point=0, b_zero_point=0, a_multiplier=3, b_multiplier=3, shift=2,
                       qmin=-128, qmax=127, rounding=rounding)
    assert got.tolist() == [exact_round(Fraction(3, 2), rounding), exact_round(Fraction(-3, 2), rounding)]


@pytest.mark.parametrize("rounding", sorted(ROUNDING_MODES))
def test_ties_at_large_shifts(rounding):
    # sums of ±(2**40 + 2**39) over 2**40 are ties at ±1.5 with 31-bit multipliers and 16-bit codes
    a = np.array([2**14, -(2**14), 3, -3], dtype=np.int64)
    b = np.array([2**14, -(2**14), 0, 0], dtype=np.int64)
    case = dict(a=a, b=b, a_zero_point=0, b_zero_point=0, a_multiplier=2**26, b_multiplier=2**25, shift=40,
                qmin=-(2**31), qmax=2**31 - 1, rounding=rounding)
    got = residual_add(**case)
    assert got.tolist() == exact_residual_add(case).tolist()
    assert got.tolist()[:2] == [exact_round(Fraction(3, 2), rounding), exact_round(Fraction(-3, 2), rounding)]


def test_saturation_at_both_ends_with_zero_points():
    a = np.array([0, 255, 128, 0, 255], dtype=np.uint8)
    b = np.array([0, 255, 128, 255, 0], dtype=np.uint8)
    kw = dict(a_zero_point=128, b_zero_point=128, a_multiplier=3, b_multiplier=3, shift=1)
    got = residual_add(a, b, **kw, out_zero_point=100)  # uint8 out: sums (-256, 254, 0, -1, -1) * 3 / 2
    assert got.tolist() == [0, 255, 100, 99, 99]  # -384 + 100 -> 0, 381 + 100 -> 255, -1.5 -> -1 (half_up)
    signed = residual_add(a, b, **kw, qmin=-8, qmax=7)  # int4 out
    assert signed.dtype == np.int8 and signed.tolist() == [-8, 7, 0, -1, -1]


def test_per_channel_multipliers_and_shifts_follow_the_last_axis():
    # PTF: channel c of a carries 2**alpha_c, alpha = (0, 1, 3): folded as multipliers 1, 2, 8 over a shared shift
    a = np.array([[10, 10, 10], [-10, -10, -10]], dtype=np.int16)
    b = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int16)
    got = residual_add(a, b, a_zero_point=0, b_zero_point=0, a_multiplier=np.array([1, 2, 8]),
                       b_multiplier=np.array([4, 4, -4]), shift=np.array([2, 2, 3]), qmin=-128, qmax=127)
    # row 0: 14/4 = 3.5 -> 4, 28/4 = 7, 68/8 = 8.5 -> 9; row 1: 6/4 = 1.5 -> 2, 0/4 = 0, -104/8 = -13
    assert got.tolist() == [[4, 7, 9], [2, 0, -13]]
    np.testing.assert_array_equal(got, residual_add_reference(a, b, a_zero_point=0, b_zero_point=0,
                                                              a_multiplier=np.array([1, 2, 8]),
                                                              b_multiplier=np.array([4, 4, -4]),
                                                              shift=np.array([2, 2, 3]), qmin=-128, qmax=127))


def test_scalar_operands_and_empty_arrays():
    got = residual_add(np.int16(5), np.int16(3), a_zero_point=0, b_zero_point=1, a_multiplier=2, b_multiplier=2, shift=1)
    assert got.shape == () and int(got) == 7
    empty = residual_add(np.zeros((3, 0), np.uint8), np.zeros((3, 0), np.uint8), a_zero_point=0, b_zero_point=0,
                         a_multiplier=1, b_multiplier=1, shift=0)
    assert empty.shape == (3, 0) and empty.dtype == np.uint8


# ------------------------------------------------------------------------------------------ plan time


def _check_constants(a_scale, b_scale, out_scale):
    ma, mb, k = residual_add_constants(a_scale, b_scale, out_scale)
    assert ma.dtype == mb.dtype == k.dtype == np.int64
    channels = ma.shape[0]
    sa, sb, so = (np.broadcast_to(np.asarray(s, dtype=np.float64).reshape(-1), (channels,)) for s in (a_scale, b_scale, out_scale))
    for c in range(channels):
        ra, rb = Fraction(float(sa[c])) / Fraction(float(so[c])), Fraction(float(sb[c])) / Fraction(float(so[c]))
        kc = int(k[c])
        assert 0 <= kc <= 62
        assert max(abs(int(ma[c])), abs(int(mb[c]))) < 2**31
        for m, r in ((int(ma[c]), ra), (int(mb[c]), rb)):
            assert abs(Fraction(m, 2**kc) - r) <= Fraction(1, 2 ** (kc + 1))  # nearest 2**-k multiple
        if kc < 62:  # k is the largest shift that keeps both multipliers below 2**31
            assert max(round(ra * 2 ** (kc + 1)), round(rb * 2 ** (kc + 1))) >= 2**31
            assert max(int(ma[c]), int(mb[c])) >= 2**30
            big = max(ra, rb)
            assert abs(Fraction(max(int(ma[c]), int(mb[c])), 2**kc) - big) <= big / 2**31
    return ma, mb, k


@given(gst.scales(lo=1e-4, hi=10.0), gst.scales(lo=1e-4, hi=10.0), gst.scales(lo=1e-4, hi=10.0))
def test_residual_add_constants_contract_scalar(a_scale, b_scale, out_scale):
    ma, mb, k = _check_constants(a_scale, b_scale, out_scale)
    assert ma.shape == mb.shape == k.shape == (1,)


@given(st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 3), min_size=n, max_size=n), st.lists(st.integers(0, 3), min_size=n, max_size=n),
    gst.scales(lo=1e-3, hi=1.0), gst.scales(lo=1e-3, hi=1.0), gst.scales(lo=1e-3, hi=1.0))))
def test_residual_add_constants_contract_ptf(drawn):
    alpha_in, alpha_out, s_a, s_b, s_out = drawn
    a_scale = s_a * 2.0 ** np.array(alpha_in)
    out_scale = s_out * 2.0 ** np.array(alpha_out)
    ma, mb, k = _check_constants(a_scale, s_b, out_scale)
    assert ma.shape == (len(alpha_in),)


def test_residual_add_constants_known_values():
    assert [v.tolist() for v in residual_add_constants(0.02, 0.01, 0.04)] == [[2**30], [2**29], [31]]
    # per-channel PTF on a: alpha = 0, 1, 2
    ma, mb, k = residual_add_constants(0.01 * np.array([1.0, 2.0, 4.0]), 0.01, 0.04)
    assert ma.tolist() == [2**30, 2**30, 2**30] and mb.tolist() == [2**30, 2**29, 2**28] and k.tolist() == [32, 31, 30]
    # ratios too tiny for 31 bits at k = 62: the shift saturates at 62
    ma, mb, k = residual_add_constants(2.0**-40, 2.0**-42, 1.0)
    assert k.tolist() == [62] and ma.tolist() == [2**22] and mb.tolist() == [2**20]
    # the rounded mantissa reaching 2**31 costs one bit of shift
    ma, mb, k = residual_add_constants(1.0 - 2.0**-40, 0.5, 1.0)
    assert ma.tolist() == [2**30] and mb.tolist() == [2**29] and k.tolist() == [30]


@given(gst.residual_add_cases(code_bits=(8,)), gst.scales(lo=0.005, hi=0.2), gst.scales(lo=0.005, hi=0.2),
       gst.scales(lo=0.005, hi=0.2))
def test_constants_then_add_match_the_real_sum_within_half_an_lsb(case, a_scale, b_scale, out_scale):
    ma, mb, k = residual_add_constants(a_scale, b_scale, out_scale)
    case = case | dict(a_multiplier=ma, b_multiplier=mb, shift=k, qmin=-(2**20), qmax=2**20, out_zero_point=0)
    got = residual_add(**case).astype(np.int64)
    real = ((case["a"].astype(np.float64) - case["a_zero_point"]) * a_scale
            + (case["b"].astype(np.float64) - case["b_zero_point"]) * b_scale) / out_scale
    # 0.5 LSB of rounding plus the multipliers' error: |d| * 2**-(k+1) per operand with |d| <= 510
    assert (np.abs(got - real) <= 0.5 + 510 * 2.0 ** -(int(k[0]) + 1) + 1e-9).all()


# ------------------------------------------------------------------------------------------ bad input

_GOOD = dict(a=np.array([1, 2], dtype=np.uint8), b=np.array([3, 4], dtype=np.uint8), a_zero_point=0, b_zero_point=0,
             a_multiplier=1, b_multiplier=1, shift=0)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(a=np.array([1.0, 2.0])), TypeError, "residual_add: a must be an integer array"),
        (dict(b=np.array([True, False])), TypeError, "b must be an integer array"),
        (dict(b=np.array([1, 2], dtype=np.uint64)), TypeError, "uint64"),
        (dict(b=np.array([1, 2, 3], dtype=np.uint8)), ValueError, r"a and b must have the same shape, got \(2,\) and \(3,\)"),
        (dict(a_zero_point=0.5), TypeError, "a_zero_point must be an integer"),
        (dict(b_zero_point=2**31), ValueError, "b_zero_point = 2147483648 is outside"),
        (dict(a_multiplier=2**31), ValueError, r"a_multiplier = 2147483648 is outside its allowed range \[-2147483647, 2147483647\]"),
        (dict(b_multiplier=-(2**31)), ValueError, "b_multiplier = -2147483648"),
        (dict(a_multiplier=1.0), TypeError, "a_multiplier must be an integer array"),
        (dict(a_multiplier=np.array([1, 2, 3])), ValueError, r"a_multiplier must be a scalar or a per-channel vector of length 2"),
        (dict(shift=-1), ValueError, r"shift = -1 is outside its allowed range \[0, 62\]"),
        (dict(shift=np.array([0, 63])), ValueError, "shift = 63"),
        (dict(rounding="nearest"), ValueError, "unknown rounding mode 'nearest'"),
        (dict(out_zero_point=256), ValueError, r"out_zero_point = 256 is outside its allowed range \[0, 255\]"),
        (dict(qmin=5, qmax=4), ValueError, "qmax = 4"),
        (dict(qmax=2**31), ValueError, "qmax = 2147483648"),
        (dict(a=np.array([2**40, 0]), b=np.array([0, 0]), a_multiplier=2**30), OverflowError,
         r"residual_add: \(a - a_zp\) \* Ma \+ \(b - b_zp\) \* Mb .* overflows int64"),
        (dict(a=np.array([2**63 - 1, 0]), b=np.array([0, 0]), a_zero_point=-1, a_multiplier=0), OverflowError,
         "a - a_zero_point or b - b_zero_point"),
        (dict(a=np.array([2**62, 0]), b=np.array([2**62, 0]), a_multiplier=1, qmin=0, qmax=255), OverflowError,
         "overflows int64"),
        (dict(a=np.array([2**63 - 2**31, 0]), b=np.array([0, 0]), a_multiplier=1, qmin=0, qmax=2**31 - 1,
              out_zero_point=2**31 - 1), OverflowError, "out_zero_point"),
    ],
)
@pytest.mark.parametrize("implementation", [residual_add, residual_add_reference])
def test_bad_input_is_refused_with_a_named_argument(implementation, kwargs, error, message):
    with pytest.raises(error, match=message):
        implementation(**(_GOOD | kwargs))


def test_per_channel_overflow_check_is_exact_per_channel():
    # channel 0 holds huge codes with a small multiplier, channel 1 small codes with a huge one: the global
    # worst case (huge x huge) overflows, the per-channel one does not, so the op must accept it
    a = np.array([[2**40, 3], [-(2**40), -3]], dtype=np.int64)
    b = np.zeros_like(a)
    case = dict(a=a, b=b, a_zero_point=0, b_zero_point=0, a_multiplier=np.array([1, 2**31 - 1]), b_multiplier=0,
                shift=np.array([40, 31]), qmin=-128, qmax=127)
    assert residual_add(**case).tolist() == [[1, 3], [-1, -3]] == exact_residual_add(case).tolist()
    with pytest.raises(OverflowError, match=r"channel 0"):
        residual_add(**(case | dict(a_multiplier=np.array([2**24, 1]))))


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((0.0, 0.1, 0.1), ValueError, r"residual_add_constants: a_scale\[0\] = 0.0 must be a finite number > 0"),
        ((0.1, float("nan"), 0.1), ValueError, r"b_scale\[0\] = nan"),
        ((0.1, 0.1, np.array([0.1, -0.2])), ValueError, r"out_scale\[1\] = -0.2"),
        ((0.1, "0.1", 0.1), TypeError, "b_scale must be a float or a per-channel float array"),
        ((np.ones((2, 2)), 0.1, 0.1), ValueError, r"a_scale must be a scalar or a non-empty 1-D per-channel array"),
        ((np.ones(3), np.ones(2), 0.1), ValueError, "b_scale has 2 channels, the others 3"),
        ((2.0**31, 1.0, 1.0), ValueError, r"channel 0: the ratio .* is >= 2\*\*31 - 1/2"),
        ((1e-300, 1e-300, 1.0), ValueError, "both multipliers would be 0"),
    ],
)
def test_residual_add_constants_refuse_bad_scales(args, error, message):
    with pytest.raises(error, match=message):
        residual_add_constants(*args)


def test_kernel_matches_reference_on_a_vit_sized_slice():
    # many rows for the parallel loop, per-channel PTF multipliers from the plan-time helper, mixed operand dtypes
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, size=(4, 197, 192), dtype=np.uint8)
    b = rng.integers(-(2**15), 2**15, size=(4, 197, 192), dtype=np.int16)
    ma, mb, k = residual_add_constants(0.05 * 2.0 ** rng.integers(0, 4, 192), 0.002, 0.07 * 2.0 ** rng.integers(0, 4, 192))
    for rounding in sorted(ROUNDING_MODES):
        case = dict(a=a, b=b, a_zero_point=120, b_zero_point=-3, a_multiplier=ma, b_multiplier=mb, shift=k,
                    out_zero_point=128, rounding=rounding)
        np.testing.assert_array_equal(residual_add(**case), residual_add_reference(**case))


def test_the_one_pass_proof_bounds_the_shifted_sum_at_the_smallest_shift():
    """Channel 0 (shift 0) sums to INT64_MAX - 2, channel 1 has shift 2: the shifted sum plus out_zero_point 5
    leaves int64 in channel 0. The one-pass bound must use the smallest shift for it (with the largest it passed,
    and the sum wrapped); numpy and the torch twin both refuse."""
    import torch

    from intsim.ops import residual_add, residual_add_reference
    from intsim.quant import torch_ops

    m_a = 2**31 - 1
    a_value = 2**32 - 1
    b_value = 2**63 - 1 - a_value * m_a - 2
    a = np.array([[a_value, 0]], dtype=np.int64)
    b = np.array([[b_value, 0]], dtype=np.int64)
    args = dict(a_zero_point=0, b_zero_point=0, a_multiplier=np.array([m_a, 1]), b_multiplier=np.array([1, 1]),
                shift=np.array([0, 2]), out_zero_point=5, qmin=-(2**31), qmax=2**31 - 1)
    for function in (residual_add, residual_add_reference):
        with pytest.raises(OverflowError, match="shifted sum plus out_zero_point.*channel 0"):
            function(a, b, **args)
    with pytest.raises(OverflowError, match="shifted sum plus out_zero_point.*channel 0"):
        torch_ops.residual_add(torch.from_numpy(a), torch.from_numpy(b), **args)
