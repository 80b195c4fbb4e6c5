"""The int8 path (intsim.ops.int8_gemm, onnxruntime's MatMulInteger) equals the exact integer product, and the
fused linears equal the ops on both paths (int8 and float BLAS)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intsim.ops import int8_gemm
from intsim.ops import integer_linear_reference, requantize_reference
from intsim.ops.fused import linear_requantize
from intsim.testing.strategies import int_arrays

needs_int8 = pytest.mark.skipif(not int8_gemm.available(),
                                reason="onnxruntime and onnx are not installed (pip install -e '.[test]'), or the "
                                       "probe found inexact u8 x s8 products on this CPU")


@needs_int8
@settings(max_examples=60)
@given(st.integers(1, 300), st.integers(1, 80), st.integers(1, 20), st.integers(0, 255), st.data())
def test_int8_weight_product_equals_the_int64_product(rows, k, n, zero_point, data):
    extreme = data.draw(st.booleans(), label="extreme")  # all-255 codes against +127 / -128: pair sums past int16
    if extreme:
        a = np.full((rows, k), 255, dtype=np.uint8)
        b = np.where(np.arange(k * n).reshape(k, n) % 3 == 0, -128, 127).astype(np.int8)
    else:
        a = data.draw(int_arrays(bits=8, signed=False, shape=(rows, k)), label="a")
        b = data.draw(int_arrays(bits=8, signed=True, shape=(k, n)), label="b")
    got = int8_gemm.weight_product(b, zero_point).run(a)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.astype(np.int64), (a.astype(np.int64) - zero_point) @ b.astype(np.int64))


@needs_int8
def test_int8_path_takes_only_uint8_codes_and_int8_weights_within_int32():
    b = np.ones((4, 3), dtype=np.int8)
    assert int8_gemm.weight_product(b.astype(np.int16), 0) is None
    assert int8_gemm.weight_product(b, 256) is None
    assert int8_gemm.weight_product(np.ones((int8_gemm.MAX_K + 1, 1), dtype=np.int8), 0) is None
    assert int8_gemm.MAX_K * 255 * 128 <= 2**31 - 1 < (int8_gemm.MAX_K + 1) * 255 * 128


def test_probe_turns_the_path_off_where_products_saturate(monkeypatch):
    # vpmaddubsw (x86 without VNNI) saturates each u8 x s8 pair sum at int16: the probe must see it
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")

    def saturating(self, a):
        a = a.astype(np.int64)
        b = self.b.astype(np.int64)
        k = a.shape[1] - a.shape[1] % 2
        pairs = a[:, :k, None] * b[None, :k, :]
        pairs = np.clip(pairs[:, 0::2] + pairs[:, 1::2], -(2**15), 2**15 - 1).sum(axis=1)
        rest = a[:, k:] @ b[k:]
        return (pairs + rest - self.zp * b.sum(axis=0)).astype(np.int32)

    original_init = int8_gemm.Int8WeightProduct.__init__

    def init(self, b, a_zero_point):
        original_init(self, b, a_zero_point)
        self.b, self.zp = b, a_zero_point

    monkeypatch.setattr(int8_gemm.Int8WeightProduct, "__init__", init)
    monkeypatch.setattr(int8_gemm.Int8WeightProduct, "run", saturating)
    assert not int8_gemm._probe()


@settings(max_examples=40)
@given(st.booleans(), st.integers(1, 300), st.integers(1, 40), st.integers(1, 12), st.data())
def test_fused_linear_equals_the_ops_on_both_paths(int8_allowed, rows, k, n, data):
    x = data.draw(int_arrays(bits=8, signed=False, shape=(rows, k)), label="x")
    weight = data.draw(int_arrays(bits=8, signed=True, shape=(n, k)), label="weight")
    x_zero_point = data.draw(st.integers(0, 255), label="x_zero_point")
    part = dict(multiplier=np.array([2**30 + 12345] * n), shift=np.array([38] * n), zero_point=3, qmin=-128, qmax=127)
    previous = int8_gemm._AVAILABLE
    try:
        if not int8_allowed:
            int8_gemm._AVAILABLE = False
        from intsim.ops import _derived

        _derived.clear()  # the weight's forms (and its int8 session) are derived again under this setting
        (got,) = linear_requantize(x, weight, x_zero_point=x_zero_point, bias=np.arange(n), parts=[part])
    finally:
        int8_gemm._AVAILABLE = previous
    want = requantize_reference(integer_linear_reference(x, weight, x_zero_point=x_zero_point, bias=np.arange(n)),
                                **part)
    np.testing.assert_array_equal(got, want)


@needs_int8
@settings(max_examples=40)
@given(st.integers(1, 300), st.integers(1, 40), st.integers(1, 12), st.sampled_from([np.uint16, np.uint32]), st.data())
def test_fused_linear_of_wide_unsigned_codes_splits_them_into_uint8_digits(rows, k, n, dtype, data):
    # AdaLog's gathered log weights W[x] (uint16 at W4A4, up to 2**24 at W6A6) against int8 weights: base-256
    # digits, one int8 product each, recombined in int64 before the epilogue
    high = data.draw(st.sampled_from([255, 256, 2**16 - 1] + ([2**24, 2**31] if dtype == np.uint32 else [])), label="high")
    x = data.draw(int_arrays(lo=0, hi=high, dtype=dtype, shape=(rows, k)), label="x")
    weight = data.draw(int_arrays(bits=8, signed=True, shape=(n, k)), label="weight")
    part = dict(multiplier=np.array([1] * n), shift=np.array([4] * n), zero_point=0, qmin=-(2**31), qmax=2**31 - 1)
    from intsim.ops import _derived

    _derived.clear()
    calls = []
    original = int8_gemm.row_blocked_digits
    int8_gemm.row_blocked_digits = lambda a, digits, *rest: calls.append(digits) or original(a, digits, *rest)
    try:
        (got,) = linear_requantize(x, weight, bias=np.arange(n), parts=[part])
    finally:
        int8_gemm.row_blocked_digits = original
    assert calls == [int8_gemm.digits_of(int(x.max()))] or calls == [int8_gemm.digits_of(np.iinfo(dtype).max)]
    want = requantize_reference(integer_linear_reference(x, weight, bias=np.arange(n)), **part)
    np.testing.assert_array_equal(got, want)
    assert int8_gemm.digits_of(255) == 1 and int8_gemm.digits_of(256) == 2 and int8_gemm.digits_of(2**24) == 4
