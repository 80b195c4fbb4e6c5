"""Integer square root: kernel == math.isqrt, exhaustively on [0, 2**20] and near the int64 end; errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given

from intsim.ops.isqrt import isqrt, isqrt_reference
from intsim.testing import layernorm_strategies as lns

INT64_MAX = 2**63 - 1


def assert_is_floor_sqrt(n: np.ndarray, r: np.ndarray) -> None:
    """The defining property with exact Python ints: r*r <= n < (r+1)**2."""
    for value, root in zip(n.reshape(-1).tolist(), r.reshape(-1).tolist()):
        assert root * root <= value < (root + 1) * (root + 1), (value, root)


def test_exhaustive_up_to_2_pow_20():
    n = np.arange(2**20 + 1, dtype=np.int64)
    r = isqrt(n)
    assert r.dtype == np.int64
    np.testing.assert_array_equal(r, isqrt_reference(n))
    # vectorised defining property (fits int64 here)
    assert np.all(r * r <= n) and np.all((r + 1) * (r + 1) > n)


def _near(root_lo, root_hi):
    roots = range(root_lo, root_hi)
    values = sorted({v for r in roots for v in (r * r - 1, r * r, r * r + 1, r * r + 2 * r) if 0 <= v <= INT64_MAX})
    return np.array(values, dtype=np.int64)


@pytest.mark.parametrize(
    "values",
    [
        _near(2**31 - 2000, 2**31 + 2000),  # squares near 2**62 and their neighbours
        _near(math.isqrt(INT64_MAX) - 2000, math.isqrt(INT64_MAX) + 1),  # the top of int64
        np.array([INT64_MAX, INT64_MAX - 1, 2**62, 2**62 - 1, 2**62 + 1, 2**61, 2**32, 2**32 - 1, 0, 1, 2, 3], dtype=np.int64),
    ],
    ids=["near_2^62", "near_2^63", "corners"],
)
def test_squares_and_neighbours_near_the_top(values):
    r = isqrt(values)
    np.testing.assert_array_equal(r, isqrt_reference(values))
    assert_is_floor_sqrt(values, r)


def test_largest_values():
    assert isqrt(np.array([INT64_MAX]))[0] == 3037000499 == math.isqrt(INT64_MAX)
    assert isqrt(np.array([3037000499**2 - 1]))[0] == 3037000498


@given(lns.isqrt_arrays())
def test_kernel_matches_math_isqrt_over_int64(n):
    r = isqrt(n)
    assert r.dtype == np.int64 and r.shape == n.shape
    np.testing.assert_array_equal(r, isqrt_reference(n))
    assert_is_floor_sqrt(n, r)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64, np.uint64])
def test_any_integer_dtype_returns_int64(dtype):
    n = np.array([0, 1, 4, 15, 16, 17, 100], dtype=dtype)
    r = isqrt(n)
    assert r.dtype == np.int64
    assert r.tolist() == [0, 1, 2, 3, 4, 4, 10]


def test_scalar_and_empty():
    assert isqrt(99).shape == () and int(isqrt(99)) == 9
    assert isqrt(np.zeros((0, 3), dtype=np.int64)).shape == (0, 3)


@pytest.mark.parametrize(
    "value, error, message",
    [
        (np.array([4, -1]), ValueError, r"n holds -1 at index \(1,\)"),
        (np.array([-(2**63)]), ValueError, "n holds"),
        (np.array([1.0]), TypeError, "n must be an integer array"),
        (np.array([True]), TypeError, "n must be an integer array"),
        (2.5, TypeError, "n must be an integer array"),
        (np.array([2**63], dtype=np.uint64), ValueError, "n holds 9223372036854775808"),
    ],
)
@pytest.mark.parametrize("implementation, op", [(isqrt, "isqrt"), (isqrt_reference, "isqrt_reference")])
def test_bad_input_is_refused(implementation, op, value, error, message):
    with pytest.raises(error, match=message) as info:
        implementation(value)
    assert str(info.value).startswith(f"{op}: ")
