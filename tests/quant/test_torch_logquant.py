"""Torch twins of the AdaLog ops (intsim.ops.logquant) against the numpy references, bit for bit.

Hypothesis draws the quantizer (bits, q, ratio), shapes and data; every twin's int64 result equals the reference's
values, and where the reference refuses (OverflowError at the int64 edge, bad codes, bad shapes) the twin raises the
same error with the same message.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import intsim.ops as ops
import intsim.quant.torch_ops as tops
from intsim.ops import logquant as lq

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _same(twin_out, numpy_out):
    assert isinstance(twin_out, torch.Tensor) and twin_out.dtype == torch.int64
    np.testing.assert_array_equal(twin_out.cpu().numpy(), np.asarray(numpy_out).astype(np.int64))
    assert tuple(twin_out.shape) == np.asarray(numpy_out).shape


def _both(name, args, kwargs, device="cpu", tensors=True):
    """Run the reference, the kernel and the twin; assert equal results or the same error, word for word."""
    try:
        want = getattr(ops, f"{name}_reference")(*args, **kwargs)
    except (ValueError, OverflowError, TypeError) as error:
        for f in (getattr(ops, name), getattr(tops, name)):
            call = [torch.as_tensor(a, device=device) if tensors and isinstance(a, np.ndarray) else a for a in args] \
                if f is getattr(tops, name) else args
            with pytest.raises(type(error)) as ours:
                f(*call, **kwargs)
            assert str(ours.value) == str(error)
        return None
    np.testing.assert_array_equal(getattr(ops, name)(*args, **kwargs), want)
    call = [torch.as_tensor(a, device=device) if tensors and isinstance(a, np.ndarray) else a for a in args]
    _same(getattr(tops, name)(*call, **kwargs), want)
    return want


@st.composite
def quantizers(draw, max_bits=6):
    bits, q = draw(st.integers(1, max_bits)), draw(st.integers(10, 137))
    sh, m = lq.adalog_shift_table(bits, q), lq.adalog_mantissa_table(bits, q)
    top = lq.max_log_shift(sh)
    max_shift = draw(st.integers(top, top + 2))
    return bits, sh, m, max_shift


@pytest.mark.parametrize("device", DEVICES)
@given(st.integers(1, 6), st.integers(10, 137), st.floats(1e-3, 1e9), st.integers(0, 2**31))
@settings(max_examples=40, deadline=None)
def test_log_encode_twin(device, bits, q, ratio, seed):
    rng = np.random.default_rng(seed)
    t = lq.adalog_thresholds(bits, q, ratio)
    x = np.concatenate([t, t - 1, t + 1, rng.integers(0, 2**16, 20)]).clip(0).reshape(-1, 2)
    for tensors in (True, False):
        _both("log_encode", (x, t), {}, device, tensors)
    _both("log_encode", (x.astype(np.uint16) if x.max() < 2**16 else x, t), {}, device)


@pytest.mark.parametrize("device", DEVICES)
@given(quantizers(), st.integers(0, 2**31), st.sampled_from([(1, 2, 3, 4), (2, 1, 5, 3), (1, 1, 1, 1)]),
       st.integers(0, 2**62))
@settings(max_examples=40, deadline=None)
def test_log_attention_values_twin(device, quantizer, seed, dims, v_span):
    bits, sh, m, max_shift = quantizer
    rng = np.random.default_rng(seed)
    heads, n, keys, d = dims
    codes = rng.integers(0, 2**bits + 1, (2, heads, n, keys))
    v_span = int(v_span) >> int(rng.integers(0, 63))  # from tiny to beyond the int64 edge
    v = rng.integers(-v_span, v_span, (2, 1, keys, d), endpoint=True)
    zp = int(rng.integers(-3, 4))
    _both("log_attention_values", (codes, v, sh, m), dict(v_zero_point=zp, max_shift=max_shift), device)


@pytest.mark.parametrize("device", DEVICES)
@given(st.integers(0, 2**31), st.integers(1, 6), st.integers(1, 5), st.integers(0, 40), st.booleans())
@settings(max_examples=40, deadline=None)
def test_asymmetric_linear_twin(device, seed, k, n, x_bits, as_uint8):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**x_bits, (2, 3, k), endpoint=True)
    weight = rng.integers(0, 256, (n, k)).astype(np.uint8 if as_uint8 else np.int64)
    wzp = rng.integers(0, 256, n)
    bias = rng.integers(-(2**31), 2**31 - 1, n)
    _both("asymmetric_linear", (x, weight, wzp, bias), dict(x_zero_point=int(rng.integers(0, 2**x_bits))), device)
    shift = rng.integers(0, 16, k)  # PTF input factors
    _both("asymmetric_linear", (x, weight, wzp, bias), dict(x_zero_point=int(rng.integers(0, 2**x_bits)),
                                                            x_shift=shift), device)


@pytest.mark.parametrize("device", DEVICES)
@given(quantizers(max_bits=5), st.integers(0, 2**31), st.integers(1, 6), st.integers(1, 4), st.integers(0, 62))
@settings(max_examples=40, deadline=None)
def test_log_linear_twin(device, quantizer, seed, k, n, bias_bits):
    bits, sh, m, max_shift = quantizer
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**bits + 1, (2, 3, k))
    weight = rng.integers(0, 256, (n, k))
    wzp = rng.integers(0, 256, n)
    bias = rng.integers(-(2**bias_bits), 2**bias_bits, n)
    _both("log_linear", (x, weight, wzp, bias, sh, m), dict(max_shift=max_shift), device)


@pytest.mark.parametrize("device", DEVICES)
def test_int64_edges_and_refusals(device):
    big = (2**63 - 1) // 7
    sh, m = np.array([0, 0]), np.array([7, 0])
    kw = dict(v_zero_point=0, max_shift=0)
    exact = _both("log_attention_values", (np.array([[0]]), np.array([[big]]), sh, m), kw, device) \
        if device == "cpu" else None
    if exact is not None:
        assert exact.tolist() == [[2**63 - 1]]
    _both("log_attention_values", (np.array([[0]]), np.array([[big + 1]]), sh, m), kw, device)  # OverflowError
    w, wzp = np.array([[1]]), np.array([0])
    if device == "cpu":
        assert _both("log_linear", (np.array([0]), w, wzp, np.array([2**63 - 8]), sh, m), dict(max_shift=0),
                     device).tolist() == [2**63 - 1]
        assert _both("asymmetric_linear", (np.array([[2**62]]), w, wzp, np.array([0])),
                     dict(x_zero_point=-(2**62 - 1)), device).tolist() == [[2**63 - 1]]
    _both("log_linear", (np.array([0]), w, wzp, np.array([2**63 - 7]), sh, m), dict(max_shift=0), device)
    _both("asymmetric_linear", (np.array([[2**62]]), w, wzp, np.array([1])), dict(x_zero_point=-(2**62 - 1)), device)
    _both("log_encode", (np.array([-1]), np.array([3, 1])), {}, device)  # negative code
    _both("log_encode", (np.array([1]), np.array([1, 3])), {}, device)  # increasing thresholds
    _both("log_linear", (np.array([[3]]), w, wzp, np.array([0]), sh, m), dict(max_shift=0), device)  # code > 2**b
    _both("asymmetric_linear", (np.array([[1]]), w, wzp, np.array([0, 0])), dict(x_zero_point=0), device)
    _both("asymmetric_linear", (np.array([[2**48]]), w, wzp, np.array([0])), dict(x_shift=[15]), device)  # 2**63
    _both("asymmetric_linear", (np.array([[1, 1]]), w, wzp, np.array([0])), dict(x_shift=[0, 0]), device)  # K
    _both("log_attention_values", (np.zeros((2, 1, 1), int), np.zeros((3, 1, 1), int), sh, m), kw, device)


def test_a_float_tensor_is_refused_naming_the_op():
    with pytest.raises(TypeError, match="log_encode: x must be an integer tensor"):
        tops.log_encode(torch.tensor([1.0]), np.array([3, 1]))
    with pytest.raises(TypeError, match="asymmetric_linear: weight must be an integer tensor"):
        tops.asymmetric_linear(torch.tensor([[1]]), torch.tensor([[1.0]]), np.array([0]), np.array([0]))


@given(st.integers(0, 2**31), st.integers(1, 40), st.integers(1, 62), st.integers(1, 30), st.booleans(),
       st.sampled_from([2**20, 2**30, 2**53]))
@settings(max_examples=80, deadline=None)
def test_limb_matmul_is_exact_where_float64_chunks_are_not(seed, k, a_bits, b_bits, signed, f64_exact):
    """The CUDA path (no int64 matmul), forced on the CPU with a small f64_exact: limbs, signs, transposes."""
    rng = np.random.default_rng(seed)
    a_abs = (1 << a_bits) - 1
    b_abs = (1 << b_bits) - 1
    if k * a_abs * b_abs > lq.INT64_MAX:
        return
    low = -a_abs if signed else 0
    a = rng.integers(low, a_abs, (2, 3, k), endpoint=True)
    b = rng.integers(-b_abs, b_abs, (k, 4), endpoint=True)
    a[0, 0, :] = a_abs  # the bound reached
    b[:, 0] = b_abs
    want = (a.astype(object) @ b.astype(object)).astype(np.int64)
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    for x, y, xa, ya, expect in ((ta, tb, a_abs, b_abs, want), (tb.t(), ta.transpose(-1, -2), b_abs, a_abs,
                                                               want.swapaxes(-1, -2))):
        if xa * ya > f64_exact and (f64_exact.bit_length() - 1 - min(xa, ya).bit_length()) < 1:
            continue
        got = tops._limb_matmul(x, y, xa, ya, f64_exact=f64_exact, int64_matmul=False)
        np.testing.assert_array_equal(got.numpy(), expect)
