"""The cache of forms derived from constant operands: reused only for the same array with the same contents."""

import numpy as np
import pytest

from intsim.ops import _derived
from intsim.ops._derived import derived
from intsim.ops.fused import linear_requantize
from intsim.ops.matmul import integer_linear
from intsim.ops.requant import requantize


@pytest.fixture(autouse=True)
def _empty_cache():
    _derived.clear()
    yield
    _derived.clear()


def test_a_value_is_derived_once_per_array_and_returned_read_only():
    calls = []
    weight = np.arange(12, dtype=np.int8).reshape(3, 4)

    def double(w):
        calls.append(1)
        return w.astype(np.int64) * 2

    first = derived("double", (weight,), double)
    assert derived("double", (weight,), double) is first and len(calls) == 1
    assert not first.flags.writeable
    derived("double", (weight.copy(),), double)  # an equal but different array is derived again
    assert len(calls) == 2


def test_a_weight_changed_in_place_is_derived_again_never_served_stale():
    weight = np.ones((2, 3), dtype=np.int8)
    assert derived("sum", (weight,), lambda w: int(w.sum())) == 6
    weight[0, 0] = 100
    assert derived("sum", (weight,), lambda w: int(w.sum())) == 105


def test_fused_linear_follows_a_weight_changed_in_place_between_calls():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (8, 16), dtype=np.uint8)
    weight = rng.integers(-127, 128, (4, 16), dtype=np.int8)
    part = dict(multiplier=np.full(4, 1 << 20), shift=np.full(4, 24), zero_point=10, qmin=0, qmax=255)
    for _ in range(2):
        (codes,) = linear_requantize(x, weight, x_zero_point=3, parts=[part])
        np.testing.assert_array_equal(codes, requantize(integer_linear(x, weight, x_zero_point=3), **part))
        weight[:, 0] = -weight[:, 0]  # the next call must see the new weight


def test_the_cache_keeps_to_its_byte_budget(monkeypatch):
    monkeypatch.setattr(_derived, "MAX_BYTES", 10_000)
    arrays = [np.zeros(1000, dtype=np.int8) + i for i in range(30)]
    for a in arrays:
        derived("copy", (a,), lambda w: w.astype(np.int32))
    assert sum(entry.nbytes for entry in _derived._ENTRIES.values()) <= 10_000
    assert len(_derived._ENTRIES) < len(arrays)
