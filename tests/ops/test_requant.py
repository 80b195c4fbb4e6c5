"""Requantization and rounding: kernel == reference, reference == exact rational arithmetic, corners, errors."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from intsim.ops import quantize_multiplier, requantize, requantize_reference
from intsim.ops.rounding import ROUNDING_MODES
from intsim.testing import strategies as ist
from intsim.testing.oracles import exact_round


def exact_requantize(case) -> np.ndarray:
    acc = case["acc"]
    multiplier = np.broadcast_to(case["multiplier"], acc.shape[-1:])
    shift = np.broadcast_to(case["shift"], acc.shape[-1:])
    out = np.empty(acc.shape, dtype=np.int64)
    for index in np.ndindex(acc.shape):
        c = index[-1]
        value = exact_round(Fraction(int(acc[index]) * int(multiplier[c]), 2 ** int(shift[c])), case["rounding"])
        out[index] = min(max(value + case["zero_point"], case["qmin"]), case["qmax"])
    return out


@given(ist.requant_cases(acc_bits=32))
def test_requantize_kernel_matches_reference(case):
    want = requantize_reference(**case)
    got = requantize(**case)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@given(ist.requant_cases(acc_bits=32))
def test_requantize_reference_matches_exact_arithmetic(case):
    np.testing.assert_array_equal(requantize_reference(**case).astype(np.int64), exact_requantize(case))


@given(ist.requant_cases(acc_bits=64))
def test_requantize_wide_accumulators_are_exact_or_refused(case):
    try:
        got = requantize(**case)
    except OverflowError as error:
        assert "overflows int64" in str(error)
        bound = max(abs(int(v)) for v in case["acc"].ravel()) * int(np.max(np.abs(case["multiplier"])))
        assert bound >= 2**62  # only refused when the product really can leave int64
        return
    np.testing.assert_array_equal(got.astype(np.int64), exact_requantize(case))


# Ties: x / 2 for x = ±1, ±3, ±5 (exactly halfway). Columns: value, half_up, half_even, half_away.
TIE_TABLE = [
    (1, 1, 0, 1),
    (3, 2, 2, 2),
    (5, 3, 2, 3),
    (-1, 0, 0, -1),
    (-3, -1, -2, -2),
    (-5, -2, -2, -3),
]


@pytest.mark.parametrize("acc, half_up, half_even, half_away", TIE_TABLE)
@pytest.mark.parametrize("implementation", [requantize, requantize_reference])
def test_rounding_modes_on_exact_ties(implementation, acc, half_up, half_even, half_away):
    for rounding, want in (("half_up", half_up), ("half_even", half_even), ("half_away", half_away)):
        got = implementation(np.array([acc], dtype=np.int32), 1, 1, rounding=rounding)
        assert int(got[0]) == want, (rounding, acc)


@pytest.mark.parametrize("rounding", sorted(ROUNDING_MODES))
def test_ties_at_large_shifts_and_int32_extremes(rounding):
    acc = np.array([2**31 - 1, -(2**31), 2**40 + 2**39, -(2**40) - 2**39], dtype=np.int64)
    got = requantize(acc, 1, 40, qmin=-(2**31), qmax=2**31 - 1, rounding=rounding)
    want = [exact_round(Fraction(int(a), 2**40), rounding) for a in acc]
    assert got.tolist() == want


def test_saturation_at_both_ends_and_zero_point():
    acc = np.array([-(2**31), -300, -129, 0, 127, 128, 2**31 - 1], dtype=np.int32)
    assert requantize(acc, 1, 0).tolist() == [-128, -128, -128, 0, 127, 127, 127]
    assert requantize(acc, 1, 0, zero_point=128, qmin=0, qmax=255).tolist() == [0, 0, 0, 128, 255, 255, 255]


def test_per_channel_multipliers_follow_the_last_axis():
    acc = np.array([[10, 10, 10], [-10, -10, -10]], dtype=np.int32)
    got = requantize(acc, np.array([2**30, 2**29, -(2**30)]), np.array([30, 30, 31]))
    assert got.tolist() == [[10, 5, -5], [-10, -5, 5]]


@pytest.mark.parametrize("real", [1e-9, 1.5e-7, 0.003, 1 / 3, 0.5, 0.999999999, 1.0, 7.25, 12345.678, 2.0**20])
def test_quantize_multiplier_relative_error(real):
    multiplier, shift = quantize_multiplier(real)
    assert 2**30 <= multiplier < 2**31 and 0 <= shift <= 62
    assert abs(Fraction(multiplier, 2**shift) - Fraction(real)) <= Fraction(real) * Fraction(1, 2**30)


@given(st.floats(min_value=1e-9, max_value=2.0**20, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_contract(real):
    multiplier, shift = quantize_multiplier(real)
    assert abs(Fraction(multiplier, 2**shift) - Fraction(real)) <= Fraction(real) * Fraction(1, 2**30)
    negative_multiplier, negative_shift = quantize_multiplier(-real)
    assert (negative_multiplier, negative_shift) == (-multiplier, shift)


def test_quantize_multiplier_rounds_up_to_the_next_power_of_two():
    # m * 2**31 rounds to 2**31: halved, shift decremented (TFLite's rule)
    assert quantize_multiplier(1.0 - 2.0**-40) == (2**30, 30)


@pytest.mark.parametrize("real", [float("nan"), float("inf"), 2.0**31, 2.0**-40])
def test_quantize_multiplier_refuses_unrepresentable(real):
    with pytest.raises(ValueError, match="quantize_multiplier"):
        quantize_multiplier(real)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(acc=np.array([1.5]), multiplier=1, shift=0), TypeError, "acc must be an integer array"),
        (dict(acc=np.array([True]), multiplier=1, shift=0), TypeError, "acc must be an integer array"),
        (dict(acc=np.array([1], dtype=np.uint64), multiplier=1, shift=0), TypeError, "uint64"),
        (dict(acc=np.array([1]), multiplier=1.0, shift=0), TypeError, "multiplier must be an integer"),
        (dict(acc=np.array([1]), multiplier=1, shift=-1), ValueError, "shift = -1"),
        (dict(acc=np.array([1]), multiplier=1, shift=63), ValueError, "shift = 63"),
        (dict(acc=np.array([1]), multiplier=2**31, shift=0), ValueError, "multiplier = 2147483648"),
        (dict(acc=np.ones((2, 3), dtype=np.int32), multiplier=np.ones(4, dtype=np.int64), shift=0), ValueError, "length 3"),
        (dict(acc=np.array([1]), multiplier=1, shift=0, rounding="nearest"), ValueError, "unknown rounding mode"),
        (dict(acc=np.array([1]), multiplier=1, shift=0, zero_point=300), ValueError, "zero_point = 300"),
        (dict(acc=np.array([2**40]), multiplier=2**30, shift=0), OverflowError, "overflows int64"),
        # found by the torch-twin cross-check: a uint32 accumulator is not bounded by 2**31
        (dict(acc=np.array([2**32 - 1], dtype=np.uint32), multiplier=2**31 - 1, shift=62, qmin=-(2**31), qmax=2**31 - 1),
         OverflowError, "overflows int64"),
        (dict(acc=np.array([2**63 - 2]), multiplier=1, shift=0, qmin=0, qmax=2**31 - 1, zero_point=2**31 - 1), OverflowError, "zero_point"),
    ],
)
@pytest.mark.parametrize("implementation", [requantize, requantize_reference])
def test_bad_input_is_refused_with_a_named_argument(implementation, kwargs, error, message):
    with pytest.raises(error, match=message):
        implementation(**kwargs)
