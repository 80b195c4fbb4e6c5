"""Torch twins of the integer ops (intsim.quant.torch_ops) == the numpy references, bit for bit.

A twin exists for every op of the registry with the same signature; hypothesis cases from the public strategies
(every rounding mode) give equal values; the OverflowError decisions agree on cases built to overflow; ViT-Ti-sized
fixed-seed cases equal the numba kernels; every matmul path (float64, int64, float64 K-chunks) is exact.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import intsim.ops as ops
import intsim.quant.torch_ops as tops
from intsim.ops.rounding import ROUNDING_MODES, rounding_shift_right_reference
from intsim.ops.softmax import ZERO_CODE
from intsim.testing import gelu_strategies as gst
from intsim.testing import layernorm_strategies as lns
from intsim.testing import matmul_strategies as mst
from intsim.testing import softmax_strategies as sst
from intsim.testing import strategies as ist

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def tt(value, device="cpu"):
    """numpy arrays -> torch tensors on ``device`` (through int64 when torch lacks the dtype); others unchanged."""
    if isinstance(value, np.ndarray):
        try:
            return torch.from_numpy(np.ascontiguousarray(value)).to(device)
        except TypeError:
            return torch.from_numpy(value.astype(np.int64)).to(device)
    return value


def torch_case(case, device="cpu", keep_numpy=()):
    """The case with its arrays as torch tensors, except the keys in ``keep_numpy`` (the twins accept both)."""
    return {k: (v if k in keep_numpy else tt(v, device)) for k, v in case.items()}


def assert_same(twin_out, numpy_out):
    assert isinstance(twin_out, torch.Tensor) and twin_out.dtype == torch.int64
    got = twin_out.cpu().numpy()
    assert got.shape == np.asarray(numpy_out).shape
    np.testing.assert_array_equal(got, np.asarray(numpy_out).astype(np.int64))


def outcome(function, **kwargs):
    """``("ok", result)`` or ``("raises", exception type)``."""
    try:
        return "ok", function(**kwargs)
    except (OverflowError, ValueError, TypeError) as error:
        return "raises", type(error)


# ------------------------------------------------------------------------------------------------ registry


@pytest.mark.parametrize("spec", ops.OPS, ids=lambda spec: spec.name)
def test_every_op_has_a_torch_twin_with_the_same_signature(spec):
    twin = getattr(tops, spec.name, None)
    assert twin is not None, f"intsim.quant.torch_ops lacks a twin of {spec.name}"
    assert spec.name in tops.__all__
    ours, theirs = inspect.signature(twin), inspect.signature(spec.kernel)
    assert ours.replace(return_annotation=inspect.Signature.empty) == theirs.replace(
        return_annotation=inspect.Signature.empty
    )


def test_round_shift_has_the_reference_parameters():
    assert list(inspect.signature(tops.round_shift).parameters) == list(
        inspect.signature(rounding_shift_right_reference).parameters
    )


# ------------------------------------------------------------------------------------------------ rounding


@given(
    x=hnp.arrays(np.int64, hnp.array_shapes(max_dims=2, max_side=6), elements=ist.int_codes(lo=-(2**63), hi=2**63 - 1)),
    shift=ist.shifts(),
    rounding=ist.rounding_modes(),
)
def test_round_shift_matches_reference(x, shift, rounding):
    assert_same(tops.round_shift(torch.from_numpy(x), shift, rounding), rounding_shift_right_reference(x, shift, rounding))


@given(
    x=hnp.arrays(np.int64, (3, 5), elements=ist.int_codes(lo=-(2**40), hi=2**40)),
    shifts=hnp.arrays(np.int64, (5,), elements=ist.shifts()),
    rounding=ist.rounding_modes(),
)
def test_round_shift_per_element_shifts_match_reference(x, shifts, rounding):
    assert_same(tops.round_shift(torch.from_numpy(x), shifts, rounding), rounding_shift_right_reference(x, shifts, rounding))


@pytest.mark.parametrize(
    "rounding, want",
    [("half_up", [2, -1, 3, -2, 0]), ("half_even", [2, -2, 2, -2, 0]), ("half_away", [2, -2, 3, -3, 0])],
)
def test_round_shift_ties(rounding, want):
    assert tops.round_shift(torch.tensor([3, -3, 5, -5, 0]), 1, rounding).tolist() == want


# -------------------------------------------------------------------------------------------- hypothesis


@given(ist.requant_cases())
def test_requantize_matches_reference(case):
    assert_same(tops.requantize(**torch_case(case, keep_numpy=("shift",))), ops.requantize_reference(**case))


@settings(max_examples=150)
@given(ist.requant_cases(acc_bits=62))
def test_requantize_overflow_decisions_match(case):
    ours, theirs = outcome(tops.requantize, **torch_case(case)), outcome(ops.requantize_reference, **case)
    assert ours[0] == theirs[0]
    if ours[0] == "ok":
        assert_same(ours[1], theirs[1])
    else:
        assert ours[1] is theirs[1] is OverflowError


@given(mst.matmul_cases())
def test_integer_matmul_matches_reference(case):
    assert_same(tops.integer_matmul(**torch_case(case)), ops.integer_matmul_reference(**case))


@given(mst.linear_cases())
def test_integer_linear_matches_reference(case):
    assert_same(tops.integer_linear(**torch_case(case, keep_numpy=("bias",))), ops.integer_linear_reference(**case))


@given(lns.isqrt_arrays())
def test_isqrt_matches_reference(n):
    assert_same(tops.isqrt(torch.from_numpy(n)), ops.isqrt_reference(n))


@settings(max_examples=200)
@given(lns.layernorm_cases())
def test_ptf_layernorm_matches_reference(case):
    assert_same(tops.ptf_layernorm(**torch_case(case, keep_numpy=("alpha",))), ops.ptf_layernorm_reference(**case))


@given(
    x=hnp.arrays(np.int64, hnp.array_shapes(max_dims=2, max_side=6), elements=ist.int_codes(lo=-(2**40), hi=0)),
    constants=sst.i_exp_constant_sets() | sst.raw_i_exp_constants(),
)
def test_int_exp_matches_reference(x, constants):
    assert_same(tops.int_exp(torch.from_numpy(x), constants), ops.int_exp_reference(x, constants))


@given(sst.softmax_cases(constants=sst.i_exp_constant_sets() | sst.raw_i_exp_constants()))
def test_log_int_softmax_matches_reference(case):
    ours = tops.log_int_softmax(**torch_case(case))
    assert_same(ours, ops.log_int_softmax_reference(**case))
    assert ours.numel() == 0 or 0 <= int(ours.min()) <= int(ours.max()) <= ZERO_CODE


@given(sst.softmax_cases(constants=sst.i_exp_constant_sets() | sst.raw_i_exp_constants()), st.integers(1, 16),
       st.data())
def test_uniform_int_softmax_matches_reference(case, out_bits, data):
    mask_as_numpy = ("mask",) if out_bits % 2 else ()  # the mask may come as numpy or torch
    levels = 2**out_bits - 1
    full = data.draw(st.none() | st.integers(levels, 2**16 - 1), "full_scale")  # None: 2**out_bits - 1
    ours = tops.uniform_int_softmax(**torch_case(case, keep_numpy=mask_as_numpy), out_bits=out_bits, full_scale=full)
    assert_same(ours, ops.uniform_int_softmax_reference(**case, out_bits=out_bits, full_scale=full))


@given(sst.softmax_cases(max_leading_dims=3), st.integers(1, 16), st.data())
def test_uniform_int_softmax_with_a_full_scale_per_head_matches_reference(case, out_bits, data):
    case = sst.with_heads_axis(case)  # one F per head needs a heads axis (-3)
    levels = 2**out_bits - 1
    full = data.draw(st.lists(st.integers(levels, 2**16 - 1), min_size=case["q"].shape[-3],
                              max_size=case["q"].shape[-3]), "full_scale")
    ours = tops.uniform_int_softmax(**torch_case(case), out_bits=out_bits, full_scale=full)
    assert_same(ours, ops.uniform_int_softmax_reference(**case, out_bits=out_bits, full_scale=full))


@settings(max_examples=100)
@given(sst.softmax_cases(min_scale=2e-5, max_scale=2e-3, max_row_length=16))
def test_softmax_overflow_decisions_match(case):
    """Small logit scales: ``L * e_max`` overflows for some row lengths; both sides must decide alike."""
    for twin, reference in ((tops.log_int_softmax, ops.log_int_softmax_reference),
                            (tops.uniform_int_softmax, ops.uniform_int_softmax_reference)):
        ours, theirs = outcome(twin, **torch_case(case)), outcome(reference, **case)
        assert ours[0] == theirs[0]
        if ours[0] == "ok":
            assert_same(ours[1], theirs[1])
        else:
            assert ours[1] is theirs[1]


@given(sst.lis_attention_cases())
def test_lis_attention_values_matches_reference(case):
    assert_same(tops.lis_attention_values(**torch_case(case)), ops.lis_attention_values_reference(**case))


@given(gst.lut_lookup_cases())
def test_lut_lookup_matches_reference(case):
    assert_same(tops.lut_lookup(**torch_case(case)), ops.lut_lookup_reference(**case))


@given(gst.lut_lookup_rows_cases())
def test_lut_lookup_with_rows_matches_reference(case):
    assert_same(tops.lut_lookup(**torch_case(case)), ops.lut_lookup_reference(**case))


@given(mst.shifted_linear_cases())
def test_integer_linear_with_input_shifts_matches_reference(case):
    assert_same(tops.integer_linear(**torch_case(case, keep_numpy=("bias",))), ops.integer_linear_reference(**case))


@given(gst.i_gelu_cases())
def test_i_gelu_matches_reference(case):
    constants = ops.i_gelu_constants(case["scale"])
    assert_same(tops.i_gelu(torch.from_numpy(case["x"]), constants), ops.i_gelu_reference(case["x"], constants))


@given(gst.residual_add_cases())
def test_residual_add_matches_reference(case):
    assert_same(tops.residual_add(**torch_case(case, keep_numpy=("b_multiplier",))), ops.residual_add_reference(**case))


@settings(max_examples=150)
@given(gst.residual_add_cases(wide=True))
def test_residual_add_overflow_decisions_match(case):
    ours, theirs = outcome(tops.residual_add, **torch_case(case)), outcome(ops.residual_add_reference, **case)
    assert ours[0] == theirs[0]
    if ours[0] == "ok":
        assert_same(ours[1], theirs[1])
    else:
        assert ours[1] is theirs[1] is OverflowError


# ------------------------------------------------------------------------------------- the matmul paths


@settings(max_examples=100)
@given(mst.matmul_cases(dtypes=(np.int8, np.int16)), st.sampled_from([2**10, 2**14, 2**20]))
def test_chunked_float64_path_is_exact(case, limit):
    """The CUDA fallback (float64 K-chunks summed in int64), forced on CPU with a small exactness limit."""
    a = torch.from_numpy(case["a"].astype(np.int64)) - case["a_zero_point"]
    b = torch.from_numpy(case["b"].astype(np.int64)) - case["b_zero_point"]
    a_abs, b_abs = int(a.abs().max()), int(b.abs().max())
    want = ops.integer_matmul_reference(**{**case, "bias": None})
    if a_abs * b_abs > limit:
        with pytest.raises(NotImplementedError, match="float64"):
            tops._centred_matmul(a, b, a_abs, b_abs, f64_exact=limit, int64_matmul=False)
    else:
        assert_same(tops._centred_matmul(a, b, a_abs, b_abs, f64_exact=limit, int64_matmul=False), want)
    assert_same(tops._centred_matmul(a, b, a_abs, b_abs, f64_exact=limit, int64_matmul=True), want)


def test_wide_operands_take_the_int64_path_exactly():
    rng = np.random.default_rng(3)
    a = rng.integers(-(2**40), 2**40, (2, 5, 7), dtype=np.int64)
    b = rng.integers(-(2**18), 2**18, (7, 4), dtype=np.int64)
    assert 7 * 2**40 * 2**18 > tops.FLOAT64_EXACT  # float64 would not be exact here
    assert_same(tops.integer_matmul(torch.from_numpy(a), torch.from_numpy(b), a_zero_point=5),
                ops.integer_matmul_reference(a, b, a_zero_point=5))


# ----------------------------------------------------------------------------------- ViT-Ti-sized cases


def _vit_cases(seed=0, batch=2):
    rng = np.random.default_rng(seed)
    tokens, dim, heads, hidden = 197, 192, 3, 768
    return rng, tokens, dim, heads, hidden, batch


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rounding", sorted(ROUNDING_MODES))
def test_vit_tiny_layernorm_requant_residual_equal_the_kernels(device, rounding):
    rng, tokens, dim, heads, hidden, batch = _vit_cases(1)
    q = rng.integers(0, 256, (batch, tokens, dim), dtype=np.uint8)
    q[0, 0] = 77  # a constant row: sigma = 0
    constants = ops.layernorm_constants(rng.uniform(-3, 3, dim), rng.uniform(-1, 1, dim), 0.05)
    ln = dict(zero_point=120, alpha=rng.integers(0, 4, dim), out_zero_point=128, rounding=rounding, **constants._asdict())
    assert_same(tops.ptf_layernorm(tt(q, device), **ln), ops.ptf_layernorm(q, **ln))

    acc = rng.integers(-(2**20), 2**20, (batch, tokens, hidden), dtype=np.int32)
    multiplier = rng.integers(2**30, 2**31 - 1, hidden)
    shift = rng.integers(30, 40, hidden)
    rq = dict(multiplier=multiplier, shift=shift, zero_point=3, qmin=-128, qmax=127, rounding=rounding)
    assert_same(tops.requantize(tt(acc, device), **rq), ops.requantize(acc, **rq))

    a = rng.integers(0, 256, (batch, tokens, dim), dtype=np.uint8)
    b = rng.integers(-128, 128, (batch, tokens, dim), dtype=np.int8)
    ma, mb, k = ops.residual_add_constants(0.03 * 2.0 ** rng.integers(0, 4, dim), 0.02, 0.04)
    ra = dict(a_zero_point=128, b_zero_point=0, a_multiplier=ma, b_multiplier=mb, shift=k, out_zero_point=120,
              rounding=rounding)
    assert_same(tops.residual_add(tt(a, device), tt(b, device), **ra), ops.residual_add(a, b, **ra))


@pytest.mark.parametrize("device", DEVICES)
def test_vit_tiny_softmax_and_attention_equal_the_kernels(device):
    rng, tokens, dim, heads, hidden, batch = _vit_cases(2)
    q = rng.integers(0, 256, (batch, heads, tokens, tokens), dtype=np.uint8)
    q[0, 0, 0] = 9  # equal logits
    mask = rng.random((batch, 1, tokens, tokens)) > 0.1
    mask[1, 0, 5] = False  # a fully masked row
    constants = ops.i_exp_constants(0.08)
    for m in (None, mask):
        kwargs = dict(zero_point=130, constants=constants, mask=m)
        codes = ops.log_int_softmax(q, **kwargs)
        assert_same(tops.log_int_softmax(tt(q, device), **{**kwargs, "mask": tt(m, device)}), codes)
        assert_same(tops.uniform_int_softmax(tt(q, device), **kwargs), ops.uniform_int_softmax(q, **kwargs))
    v = rng.integers(0, 256, (batch, heads, tokens, 64), dtype=np.uint8)
    assert_same(tops.lis_attention_values(tt(codes, device), tt(v, device), v_zero_point=121),
                ops.lis_attention_values(codes, v, v_zero_point=121))
    probs = ops.uniform_int_softmax(q, zero_point=130, constants=constants)
    assert_same(tops.integer_matmul(tt(probs, device), tt(v, device), b_zero_point=121),
                ops.integer_matmul(probs, v, b_zero_point=121))
    k_codes = rng.integers(-128, 128, (batch, heads, 64, tokens), dtype=np.int8)
    q_codes = rng.integers(-128, 128, (batch, heads, tokens, 64), dtype=np.int8)
    assert_same(tops.integer_matmul(tt(q_codes, device), tt(k_codes, device), a_zero_point=-3),
                ops.integer_matmul(q_codes, k_codes, a_zero_point=-3))
    x = -rng.integers(0, 3000, (batch, heads, tokens, tokens))
    assert_same(tops.int_exp(tt(x, device), constants), ops.int_exp(x, constants))


@pytest.mark.parametrize("device", DEVICES)
def test_vit_tiny_linear_gelu_isqrt_equal_the_kernels(device):
    rng, tokens, dim, heads, hidden, batch = _vit_cases(3)
    x = rng.integers(0, 256, (batch, tokens, dim), dtype=np.uint8)
    w = rng.integers(-128, 128, (hidden, dim), dtype=np.int8)
    bias = rng.integers(-(2**31), 2**31, hidden).astype(np.int32)
    acc = ops.integer_linear(x, w, x_zero_point=117, bias=bias)
    assert_same(tops.integer_linear(tt(x, device), tt(w, device), x_zero_point=117, bias=tt(bias, device)), acc)
    h = rng.integers(0, 256, (batch, tokens, hidden), dtype=np.uint8)
    w2 = rng.integers(-128, 128, (dim, hidden), dtype=np.int8)
    assert_same(tops.integer_linear(tt(h, device), tt(w2, device), x_zero_point=3),
                ops.integer_linear(h, w2, x_zero_point=3))
    gelu_constants = ops.i_gelu_constants(2e-4)
    assert_same(tops.i_gelu(tt(acc, device), gelu_constants), ops.i_gelu(acc, gelu_constants))
    table = ops.build_gelu_lut(in_scale=0.05, in_zero_point=100, out_scale=0.03, out_zero_point=10)
    assert_same(tops.lut_lookup(tt(h, device), tt(table, device)), ops.lut_lookup(h, table))
    n = rng.integers(0, 2**63 - 1, 5000, dtype=np.int64)
    n[:4] = [0, 1, 2**62, 2**63 - 1]
    assert_same(tops.isqrt(tt(n, device)), ops.isqrt(n))


# ------------------------------------------------------------------------------------------------ errors


def _lis(**kwargs):
    return tops.log_int_softmax(torch.tensor([[1, 2]]), zero_point=0, constants=ops.i_exp_constants(0.1), **kwargs)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: tops.requantize(torch.tensor([1.5]), 1, 0), TypeError, "requantize: acc must be an integer"),
        (lambda: tops.requantize(torch.tensor([1]), 1, 0, rounding="half_upp"), ValueError, "did you mean 'half_up'"),
        (lambda: tops.requantize(torch.tensor([1, 2]), [1, 2, 3], 0), ValueError, "per-channel vector of length 2"),
        (lambda: tops.requantize(torch.tensor([2**62]), 2**30, 0), OverflowError, "requantize: acc \\* multiplier"),
        (lambda: tops.requantize(torch.tensor([1]), 1, 63), ValueError, "shift holds 63"),
        (lambda: tops.round_shift(torch.tensor([1]), -1, "half_up"), ValueError, "round_shift: shift"),
        (lambda: tops.integer_matmul(torch.ones(2, 3, dtype=torch.int64), torch.ones(2, 3, dtype=torch.int64)),
         ValueError, "integer_matmul: a must have shape"),
        (lambda: tops.integer_matmul(torch.full((1, 4), 2**31), torch.full((4, 1), 2**31)), OverflowError,
         "integer_matmul: the accumulator"),
        (lambda: tops.integer_linear(torch.ones(2, 3, dtype=torch.bool), torch.ones(1, 3, dtype=torch.int8)),
         TypeError, "integer_linear: x must be an integer"),
        (lambda: tops.isqrt(torch.tensor([4, -1])), ValueError, "isqrt: n holds -1"),
        (lambda: tops.int_exp(torch.tensor([1]), ops.i_exp_constants(0.1)), ValueError, "int_exp: x holds 1"),
        (lambda: tops.int_exp(torch.tensor([0]), None), TypeError, "IExpConstants"),
        (lambda: _lis(mask=torch.tensor([1, 0])), TypeError, "mask must be a boolean"),
        (lambda: _lis(mask=torch.tensor([True, False, True])), ValueError, "does not broadcast"),
        (lambda: tops.log_int_softmax(torch.zeros(1, 3000, dtype=torch.int64), zero_point=0,
                                      constants=ops.i_exp_constants(2e-5)), OverflowError, "log_int_softmax: S"),
        (lambda: tops.lis_attention_values(torch.tensor([[17]]), torch.tensor([[1]]), v_zero_point=0), ValueError,
         "codes holds 17"),
        (lambda: tops.lut_lookup(torch.tensor([256]), torch.zeros(256, dtype=torch.int64)), ValueError, "codes holds 256"),
        (lambda: tops.lut_lookup(torch.tensor([1]), torch.zeros(255, dtype=torch.int64)), ValueError, "length 256"),
        (lambda: tops.i_gelu(torch.tensor([2**62]), ops.i_gelu_constants(1e-3)), OverflowError, "i_gelu: x \\* \\(y"),
        (lambda: tops.residual_add(torch.tensor([1]), torch.tensor([1, 2]), a_zero_point=0, b_zero_point=0,
                                   a_multiplier=1, b_multiplier=1, shift=0), ValueError, "same shape"),
        (lambda: tops.ptf_layernorm(torch.tensor([[300, 1]]), zero_point=0, alpha=0, multiplier=1, bias=0, shift=0),
         ValueError, "ptf_layernorm: q holds 300"),
        (lambda: tops.ptf_layernorm(torch.tensor([[3, 1]]), zero_point=0, alpha=0, multiplier=2**31 - 1, bias=2**63 - 2,
                                    shift=0), OverflowError, "ptf_layernorm: n \\* multiplier"),
    ],
)
def test_errors_name_the_op(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_parameters_may_be_numpy_lists_or_ints():
    acc = torch.tensor([[5, -5], [7, 9]], dtype=torch.int32)
    want = ops.requantize_reference(acc.numpy(), np.array([3, 2]), np.array([1, 2]))
    for multiplier, shift in ((np.array([3, 2]), np.array([1, 2])), ([3, 2], [1, 2]), (torch.tensor([3, 2]), [1, 2])):
        assert_same(tops.requantize(acc, multiplier, shift), want)
    assert_same(tops.requantize(acc.numpy(), 3, 1), ops.requantize_reference(acc.numpy(), 3, 1))


@given(hnp.arrays(np.int64, hnp.array_shapes(max_dims=2, max_side=6), elements=ist.int_codes(lo=1, hi=2**63 - 1)))
def test_log_round_over_the_whole_int64_range(r):
    """The msb binary search behind the LIS codes, beyond the 16 codes the softmax tests can observe."""
    from intsim.ops.softmax import log_round_reference

    assert_same(tops._log_round(torch.from_numpy(r)), log_round_reference(r))


# ------------------------------------------------------------------------- one set of checks, every backend

_C = ops.i_exp_constants(0.1)
_RESIDUAL = dict(a_zero_point=0, b_zero_point=0, a_multiplier=1, b_multiplier=1, shift=0)
_MAIN_OPERANDS = {"acc", "a", "b", "x", "weight", "n", "q", "codes", "v", "table"}

# numpy arguments that the numpy op refuses with a ValueError or an OverflowError; the twin must raise the very
# same error, message included (the validation and the proofs are the same functions on both sides)
_REFUSED = [
    ("requantize", dict(acc=np.array([1, 2]), multiplier=np.array([1, 2, 3]), shift=0)),
    ("requantize", dict(acc=np.array([[1, 2]]), multiplier=1, shift=np.array([0, 63]))),
    ("requantize", dict(acc=np.array([1]), multiplier=1, shift=0, zero_point=300)),
    ("requantize", dict(acc=np.array([2**62, 3]), multiplier=2**30, shift=0)),
    ("requantize", dict(acc=np.array([2**32 - 1], dtype=np.uint32), multiplier=2**31 - 1, shift=62, qmin=-(2**31),
                        qmax=2**31 - 1)),
    ("integer_matmul", dict(a=np.ones((2, 3), np.int64), b=np.ones((2, 3), np.int64))),
    ("integer_matmul", dict(a=np.ones((2, 2, 3), np.int8), b=np.ones((3, 3, 4), np.int8))),
    ("integer_matmul", dict(a=np.ones((2, 3), np.int8), b=np.ones((3, 4), np.int8), bias=np.array([0, 0, 2**31, 0]))),
    ("integer_matmul", dict(a=np.full((1, 4), 2**31), b=np.full((4, 1), 2**31))),
    ("integer_linear", dict(x=np.zeros((2, 3), np.uint8), weight=np.zeros((2, 4), np.int8))),
    ("integer_linear", dict(x=np.zeros((2, 3), np.uint8), weight=np.zeros((2, 3), np.int8), x_shift=np.array([0, 16, 0]))),
    ("integer_linear", dict(x=np.array([[2**50, 0]]), weight=np.ones((1, 2), np.int8), x_shift=np.array([15, 0]))),
    ("isqrt", dict(n=np.array([[4, -1]]))),
    ("ptf_layernorm", dict(q=np.array([[300, 1]]), zero_point=0, alpha=0, multiplier=1, bias=0, shift=0)),
    ("ptf_layernorm", dict(q=np.array([[3, 1]]), zero_point=0, alpha=np.array([0, 8]), multiplier=1, bias=0, shift=0)),
    ("ptf_layernorm", dict(q=np.array([[3, 1]]), zero_point=0, alpha=0, multiplier=2**31 - 1, bias=2**63 - 2, shift=0)),
    ("int_exp", dict(x=np.array([[0, 3], [-1, 2]]), constants=_C)),
    ("log_int_softmax", dict(q=np.array([[1, 2]]), zero_point=300, constants=_C)),
    ("log_int_softmax", dict(q=np.array([[1, 2, 3]]), zero_point=0, constants=_C, mask=np.array([True, False]))),
    ("log_int_softmax", dict(q=np.zeros((1, 3000), np.int64), zero_point=0, constants=ops.i_exp_constants(2e-5))),
    ("uniform_int_softmax", dict(q=np.array([[1, 2]]), zero_point=0, constants=_C, out_bits=17)),
    ("uniform_int_softmax", dict(q=np.zeros((1, 3000), np.int64), zero_point=0, constants=ops.i_exp_constants(2e-5))),
    ("lis_attention_values", dict(codes=np.array([[17]]), v=np.array([[1]]), v_zero_point=0)),
    ("lis_attention_values", dict(codes=np.zeros((1, 3), np.int64), v=np.zeros((2, 1), np.int64), v_zero_point=0)),
    ("lis_attention_values", dict(codes=np.zeros((1, 9), np.int64), v=np.full((9, 1), 2**46), v_zero_point=-(2**46))),
    ("lut_lookup", dict(codes=np.array([[0, 255]], np.int16), table=np.zeros((2, 256), np.int64), rows=np.array([0, 2]))),
    ("lut_lookup", dict(codes=np.array([256]), table=np.zeros(256, np.int64))),
    ("lut_lookup", dict(codes=np.array([1]), table=np.zeros(255, np.int64))),
    ("i_gelu", dict(x=np.array([2**62]), constants=ops.i_gelu_constants(1e-3))),
    ("residual_add", dict(a=np.array([1]), b=np.array([1, 2]), **_RESIDUAL)),
    ("residual_add", dict(a=np.array([1, 2]), b=np.array([1, 2]), **{**_RESIDUAL, "shift": np.array([0, 63])})),
    ("residual_add", dict(a=np.array([[2**40, 3]]), b=np.zeros((1, 2), np.int64),
                          **{**_RESIDUAL, "a_multiplier": np.array([2**24, 1]), "b_multiplier": 0})),
]


@pytest.mark.parametrize("parameters", ["numpy", "torch"])
@pytest.mark.parametrize("name, kwargs", _REFUSED, ids=[f"{name}-{i}" for i, (name, _) in enumerate(_REFUSED)])
def test_twins_raise_the_reference_errors_word_for_word(name, kwargs, parameters):
    with pytest.raises((ValueError, OverflowError)) as theirs:
        getattr(ops, f"{name}_reference")(**kwargs)
    with pytest.raises((ValueError, OverflowError)) as kernel:
        getattr(ops, name)(**kwargs)
    keep = () if parameters == "torch" else tuple(set(kwargs) - _MAIN_OPERANDS)
    with pytest.raises(theirs.type) as ours:
        getattr(tops, name)(**torch_case(kwargs, keep_numpy=keep))
    assert kernel.type is theirs.type
    assert str(ours.value) == str(theirs.value).replace(f"{name}_reference:", f"{name}:")


@given(hnp.arrays(st.sampled_from([np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64]),
                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)))
def test_tensor_operands_read_the_same_bounds_as_array_operands(array):
    from intsim.ops._checks import ArrayOperand

    ours, theirs = tops.TensorOperand(torch.from_numpy(array), "x", "test"), ArrayOperand(array)
    assert ours.shape == theirs.shape and ours.dtype_range == theirs.dtype_range
    assert ours.bounds() == theirs.bounds() and ours.column_bounds() == theirs.column_bounds()
    for value in (ours.bounds()[0], ours.bounds()[1]):
        assert ours.index_of(value) == theirs.index_of(value)
