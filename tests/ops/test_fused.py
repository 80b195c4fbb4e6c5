"""The interpreter's fused fast paths (intsim.ops.fused) equal the composition of the registered ops' references.

Each fused function is compared with the numpy references of the ops it replaces, on hypothesis-drawn operands
and parameters (zero points, per-channel multipliers and shifts, rounding modes, code ranges, softmax scales);
with the thread count changed; and through the interpreter (fused run == op-by-op run == traced run).
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from intsim.ops import (
    i_exp_constants,
    integer_linear_reference,
    integer_matmul_reference,
    lis_attention_values_reference,
    log_int_softmax_reference,
    lut_lookup_reference,
    requantize_reference,
    residual_add_reference,
    uniform_int_softmax_reference,
)
from intsim.ops.fused import attention, linear_requantize, linear_residual_add
from intsim.ops.logquant import (
    adalog_mantissa_table,
    adalog_shift_table,
    adalog_thresholds,
    log_attention_values_reference,
    log_encode_reference,
    max_log_shift,
)
from intsim.testing.strategies import int_arrays, rounding_modes

SHIFTS = st.integers(20, 40)  # with 31-bit multipliers: gains around 2**-9 .. 2**11, codes neither all 0 nor all saturated


@st.composite
def requant_params(draw, channels: int, *, per_channel=True):
    """Keyword arguments of requantize: per-channel (or single) multipliers and shifts, a code range, a zero point."""
    size = draw(st.sampled_from([1, channels])) if per_channel else 1
    bits, signed = draw(st.sampled_from([(8, False), (8, True), (4, False), (16, True)]))
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return dict(
        multiplier=np.array(draw(st.lists(st.integers(-(2**31) + 1, 2**31 - 1), min_size=size, max_size=size))),
        shift=np.array(draw(st.lists(SHIFTS, min_size=size, max_size=size))),
        zero_point=draw(st.integers(qmin, qmax)),
        qmin=qmin,
        qmax=qmax,
        rounding=draw(rounding_modes()),
    )


@st.composite
def linear_cases(draw):
    rows, k, n = draw(st.integers(1, 300)), draw(st.integers(1, 40)), draw(st.integers(1, 12))
    x = draw(int_arrays(bits=8, signed=False, shape=(rows, k)))
    weight = draw(int_arrays(bits=8, signed=True, shape=(n, k)))
    bias = draw(st.none() | int_arrays(bits=20, signed=True, shape=(n,)))
    return dict(x=x, weight=weight, x_zero_point=draw(st.integers(0, 255)), bias=bias)


@given(linear_cases(), st.data())
def test_linear_requantize_equals_requantize_of_linear(case, data):
    n = case["weight"].shape[0]
    cut = data.draw(st.integers(0, n), label="split point")
    sizes = [size for size in (cut, n - cut) if size] if data.draw(st.booleans(), label="two parts") else [n]
    parts = [data.draw(requant_params(size), label="part") for size in sizes]
    rounding = parts[0]["rounding"]
    for part in parts:  # the fused path needs one rounding mode and one output dtype
        part.update(rounding=rounding, qmin=parts[0]["qmin"], qmax=parts[0]["qmax"],
                    zero_point=min(max(part["zero_point"], parts[0]["qmin"]), parts[0]["qmax"]))
    if len(parts) > 1:
        for part, size in zip(parts, sizes):
            part["multiplier"] = np.resize(part["multiplier"], size)
            part["shift"] = np.resize(part["shift"], size)
    got = linear_requantize(**case, parts=parts)
    assert got is not None, "uint8 x int8 products must take the fused path"
    acc = integer_linear_reference(**case)
    start = 0
    for part, size, codes in zip(parts, sizes, got):
        want = requantize_reference(acc[..., start : start + size], **part)
        assert codes.dtype == want.dtype
        np.testing.assert_array_equal(codes, want)
        start += size


@given(linear_cases(), st.data())
def test_linear_requantize_lookup_equals_lut_of_requantize_of_linear(case, data):
    n = case["weight"].shape[0]
    part = data.draw(requant_params(n), label="part")
    bits, signed = data.draw(st.sampled_from([(8, False), (8, True), (4, False), (10, True)]), label="table code range")
    table_qmin = -(2 ** (bits - 1)) if signed else 0
    table_qmax = table_qmin + 2**bits - 1
    part.update(qmin=max(part["qmin"], table_qmin), qmax=min(part["qmax"], table_qmax))
    assume(part["qmin"] <= part["qmax"])
    part["zero_point"] = min(max(part["zero_point"], part["qmin"]), part["qmax"])
    table = data.draw(int_arrays(bits=data.draw(st.sampled_from([8, 16, 20]), label="table bits"), signed=True,
                                 shape=(2**bits,)), label="table")
    lut = dict(table=table, bits=bits, signed=signed)
    (got,) = linear_requantize(**case, parts=[part], lut=lut)
    want = lut_lookup_reference(requantize_reference(integer_linear_reference(**case), **part), **lut)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_linear_requantize_lookup_declines_codes_outside_the_table_and_raises_its_errors():
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    weight = np.ones((2, 4), dtype=np.int8)
    part = dict(multiplier=[2**30], shift=[31], qmin=0, qmax=255)
    assert linear_requantize(x, weight, parts=[part], lut=dict(table=np.arange(16), bits=4, signed=False)) is None
    with pytest.raises(ValueError, match="lut_lookup: table must be 1-D with one entry per 8-bit code"):
        linear_requantize(x, weight, parts=[part], lut=dict(table=np.arange(16), bits=8, signed=False))


@given(linear_cases(), st.data())
def test_linear_residual_add_equals_residual_add_of_linear(case, data):
    acc = integer_linear_reference(**case)
    channels = acc.shape[-1]
    residual = data.draw(int_arrays(bits=8, signed=False, shape=acc.shape), label="residual")
    params = dict(
        a_zero_point=data.draw(st.integers(0, 255)), b_zero_point=data.draw(st.integers(-100, 100)),
        a_multiplier=np.array(data.draw(st.lists(st.integers(-(2**31) + 1, 2**31 - 1), min_size=channels,
                                                 max_size=channels))),
        b_multiplier=np.array(data.draw(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=1))),
        shift=np.array(data.draw(st.lists(st.integers(28, 45), min_size=channels, max_size=channels))),
        out_zero_point=data.draw(st.integers(0, 255)), qmin=0, qmax=255, rounding=data.draw(rounding_modes()),
    )
    got = linear_residual_add(**case, residual=residual, **params)
    assert got is not None
    want = residual_add_reference(residual, acc, **params)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def _heads(x, heads):
    batch, tokens, channels = x.shape
    return x.reshape(batch, tokens, heads, channels // heads).swapaxes(1, 2)


def attention_reference(q, k, v, *, heads, q_zero_point, k_zero_point, logits, softmax, values, context):
    """The interpreter's op sequence, op by op, with the numpy references."""
    scores = integer_matmul_reference(_heads(q, heads), _heads(k, heads).swapaxes(-1, -2), a_zero_point=q_zero_point,
                                      b_zero_point=k_zero_point)
    logit_codes = requantize_reference(scores, **logits)
    args = {key: value for key, value in softmax.items() if key != "kind"}
    if softmax["kind"] == "lis":
        probs = log_int_softmax_reference(logit_codes, **args)
        acc = lis_attention_values_reference(probs, _heads(v, heads), v_zero_point=values["v_zero_point"])
    elif values.get("log_encode") is None:
        probs = uniform_int_softmax_reference(logit_codes, **args)
        acc = integer_matmul_reference(probs, _heads(v, heads), b_zero_point=values["v_zero_point"])
    else:  # UniformSoftmax -> LogEncode -> LogAttentionValues
        encode = values["log_encode"]
        codes = log_encode_reference(uniform_int_softmax_reference(logit_codes, **args), encode["thresholds"])
        acc = log_attention_values_reference(codes, _heads(v, heads), encode["shift"], encode["mantissa"],
                                             v_zero_point=values["v_zero_point"], max_shift=encode["max_shift"])
    batch, _, tokens, width = acc.shape
    return requantize_reference(acc.swapaxes(1, 2).reshape(batch, tokens, heads * width), **context)


@st.composite
def attention_cases(draw):
    batch, tokens, heads, width = (draw(st.integers(1, 3)), draw(st.integers(1, 24)), draw(st.integers(1, 3)),
                                   draw(st.integers(1, 16)))
    channels = heads * width
    qkv = draw(int_arrays(bits=8, signed=False, shape=(batch, tokens, 3 * channels)))
    q, k, v = qkv[..., :channels], qkv[..., channels : 2 * channels], qkv[..., 2 * channels :]  # views, as in a ViT
    kind = draw(st.sampled_from(["lis", "uniform"]))
    logits = draw(requant_params(tokens))
    logits.update(qmin=0, qmax=255, zero_point=draw(st.integers(0, 255)))
    softmax = dict(kind=kind, zero_point=draw(st.integers(0, 255)), bits=8, signed=False,
                   constants=i_exp_constants(draw(st.floats(0.02, 0.5))))
    if kind == "uniform":
        softmax["out_bits"] = draw(st.integers(1, 8))
        levels = 2 ** softmax["out_bits"] - 1
        softmax["full_scale"] = draw(st.none() | st.integers(levels, 4 * levels + 3)  # None: 2**out_bits - 1
                                     | st.lists(st.integers(levels, 4 * levels + 3), min_size=heads, max_size=heads))
    context = draw(requant_params(channels))
    context["shift"] = np.array([draw(st.integers(30, 50)) for _ in context["shift"]])
    return dict(q=q, k=k, v=v, heads=heads, q_zero_point=draw(st.integers(0, 255)),
                k_zero_point=draw(st.integers(0, 255)), logits=logits, softmax=softmax,
                values=dict(v_zero_point=draw(st.integers(0, 255))), context=context)


@st.composite
def log_encoders(draw, levels: int):
    """``values["log_encode"]`` of an AdaLog post-softmax quantizer over uniform codes ``0..levels``: the exact
    thresholds of ``bits, q`` and a ratio (the log quantizer's scale over the uniform step: its largest level at
    1/16 .. 1 of the softmax's full scale), its decode tables."""
    bits, q = draw(st.integers(1, 4)), draw(st.integers(10, 137))
    ratio = draw(st.floats(1 / 16, 1.0)) * levels
    shift = adalog_shift_table(bits, q)
    extra = draw(st.integers(0, 3))
    return dict(thresholds=adalog_thresholds(bits, q, ratio), shift=shift, mantissa=adalog_mantissa_table(bits, q),
                max_shift=max_log_shift(shift) + extra)


@given(attention_cases())
def test_attention_equals_the_op_sequence(case):
    got = attention(**case)
    assert got is not None, "uint8 codes with 8-bit logits must take the fused path"
    want = attention_reference(**case)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@given(attention_cases(), st.data())
def test_attention_with_wide_values_equals_the_op_sequence(case, data):
    # int16 values up to 2**10: a LIS row whose weights sum beyond 2**14 has float32 sums that are not proved
    # exact, and the kernel sums those rows again in int64
    v = data.draw(int_arrays(lo=-(2**10), hi=2**10, dtype=np.int16, shape=case["v"].shape), label="v")
    case = dict(case, v=v, values=dict(v_zero_point=data.draw(st.integers(-(2**10), 2**10), label="v_zero_point")))
    got = attention(**case)
    assert got is not None
    np.testing.assert_array_equal(got, attention_reference(**case))


@given(attention_cases(), st.data())
def test_log_encoded_attention_equals_the_op_sequence(case, data):
    # UniformSoftmax -> LogEncode -> LogAttentionValues (AdaLog after the softmax): the fused kernel encodes each
    # probability code through one table W[log_encode(p)]; wide tables (q up to 137, shifts up to 25 and more)
    # take the float64 carrier, and context accumulators beyond int32 are taken when requantize's proof allows
    softmax = dict(case["softmax"], kind="uniform", out_bits=data.draw(st.integers(1, 16), label="out_bits"))
    softmax["full_scale"] = 2 ** softmax["out_bits"] - 1
    encode = data.draw(log_encoders(softmax["full_scale"]), label="log_encode")
    case = dict(case, softmax=softmax, values=dict(case["values"], log_encode=encode))
    try:
        want = attention_reference(**case)
    except OverflowError:  # the context requantize refuses this accumulator: the fused kernel must decline
        assert attention(**case) is None
        return
    got = attention(**case)
    if got is None:  # declined only where the static bound is beyond requantize's proof (the data was within)
        from intsim.ops.fused import requantize_fits
        from intsim.ops.logquant import log_weight_table
        from intsim.ops.requant import check_requantize_parameters

        tokens = case["q"].shape[1]
        weights = log_weight_table(encode["shift"], encode["mantissa"], encode["max_shift"])
        bound = tokens * int(weights.max()) * int(np.abs(case["v"].astype(np.int64) - case["values"]["v_zero_point"]).max())
        assert not requantize_fits(bound, check_requantize_parameters(case["v"].shape, **case["context"]))
        return
    np.testing.assert_array_equal(got, want)


def test_log_encoded_attention_with_wide_tables_takes_float64_and_is_exact():
    # q = 60, 4 bits: decode weights up to 2**28.9: float32 products of such weights with uint8 values are not
    # exact, the kernel carries attn @ V in float64 (every row exact there) and equals the op sequence
    rng = np.random.default_rng(3)
    tokens, heads, width = 20, 2, 8
    qkv = rng.integers(0, 256, size=(2, tokens, 3 * heads * width)).astype(np.uint8)
    q, k, v = np.split(qkv, 3, axis=-1)
    shift = adalog_shift_table(4, 60)
    encode = dict(thresholds=adalog_thresholds(4, 60, 2**16 - 1), shift=shift, mantissa=adalog_mantissa_table(4, 60),
                  max_shift=max_log_shift(shift))
    from intsim.ops.logquant import log_weight_table

    assert int(log_weight_table(shift, encode["mantissa"], encode["max_shift"]).max()) * 255 > 2**24
    case = dict(heads=heads, q_zero_point=128, k_zero_point=128,
                logits=dict(multiplier=[2**30], shift=[42], qmin=0, qmax=255),
                softmax=dict(kind="uniform", zero_point=128, bits=8, signed=False, constants=i_exp_constants(0.1),
                             out_bits=16, full_scale=2**16 - 1),
                values=dict(v_zero_point=0, log_encode=encode),
                context=dict(multiplier=[3], shift=[20], qmin=-(2**31), qmax=2**31 - 1))
    got = attention(q, k, v, **case)
    assert got is not None
    np.testing.assert_array_equal(got, attention_reference(q, k, v, **case))


def test_attention_sums_rows_whose_float32_sum_is_not_proved_exact_in_int64():
    # one key takes probability ~1 (weight 2**15), seven keys ~2**-15 (weight 1): with values near 2**11 a row sums
    # to about 2**26 plus a small number that float32 cannot hold there; the kernel must sum that row in int64
    tokens = 8
    q = np.full((1, tokens, 1), 255, dtype=np.uint8)
    k = np.array([255] + [0] * (tokens - 1), dtype=np.uint8).reshape(1, tokens, 1)
    v = np.array([2047, 1, 3, 5, 7, 9, 11, 13], dtype=np.int16).reshape(1, tokens, 1)
    logit_shift = 30 + 9  # score 65025 -> logit 127; the other keys 0: a gap of 127 codes of scale 0.08
    case = dict(heads=1, q_zero_point=0, k_zero_point=0,
                logits=dict(multiplier=[2**30], shift=[logit_shift], qmin=0, qmax=255),
                softmax=dict(kind="lis", zero_point=0, bits=8, signed=False, constants=i_exp_constants(0.08)),
                values=dict(v_zero_point=0), context=dict(multiplier=[2**30], shift=[30], qmin=-(2**31), qmax=2**31 - 1))
    want = attention_reference(q, k, v, **case)
    total = int(want[0, 0, 0])  # with context multiplier 2**30 >> 30: the sum itself
    assert int(np.float32(total)) != total  # not a float32 value: the int64 path was needed
    np.testing.assert_array_equal(attention(q, k, v, **case), want)


@settings(max_examples=10)
@given(attention_cases(), linear_cases())
def test_fused_results_do_not_depend_on_the_thread_count(attention_case, linear_case):
    part = dict(multiplier=np.array([2**30]), shift=np.array([30]), zero_point=0, qmin=-128, qmax=127)
    previous = numba.get_num_threads()
    try:
        results = []
        for threads in sorted({1, previous}):
            numba.set_num_threads(threads)
            results.append((attention(**attention_case), linear_requantize(**linear_case, parts=[part])[0]))
    finally:
        numba.set_num_threads(previous)
    for got in results[1:]:
        np.testing.assert_array_equal(got[0], results[0][0])
        np.testing.assert_array_equal(got[1], results[0][1])


def test_fast_path_declines_wide_operands_and_raises_the_ops_errors():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(4, 8)).astype(np.uint8)
    wide = rng.integers(-(2**30), 2**30, size=(3, 8)).astype(np.int32)  # K * 255 * 2**30 * 2**30 beyond int64
    part = dict(multiplier=np.array([2**30]), shift=np.array([40]))
    assert linear_requantize(x, wide, parts=[part]) is None  # requantize would have to check the accumulator
    with pytest.raises(ValueError, match="requantize: unknown rounding mode 'half_down'"):
        linear_requantize(x, wide[:, :8].astype(np.int8), parts=[dict(part, rounding="half_down")])
    with pytest.raises(ValueError, match="integer_linear: x must have shape"):
        linear_requantize(x, wide[:, :5], parts=[part])
    too_wide = rng.integers(-(2**50), 2**50, size=(3, 8)).astype(np.int64)  # A * B > 2**53: int64 loops, no float carrier
    assert linear_requantize(x, too_wide, parts=[dict(part, multiplier=np.array([1]))]) is None
    qkv = rng.integers(0, 256, size=(1, 5, 6)).astype(np.uint8)
    case = dict(heads=1, q_zero_point=0, k_zero_point=0, logits=dict(multiplier=[2**30], shift=[40], qmin=0, qmax=255),
                softmax=dict(kind="lis", zero_point=0, bits=8, signed=False, constants=i_exp_constants(0.1)),
                values=dict(v_zero_point=0), context=dict(multiplier=[2**30], shift=[40], qmin=0, qmax=255))
    wide_q = qkv[..., :2].astype(np.int32) << 20  # scores beyond int32
    assert attention(wide_q, wide_q, qkv[..., :2], **case) is None
    uniform = dict(case, softmax=dict(kind="uniform", zero_point=0, bits=8, signed=False,
                                      constants=i_exp_constants(0.1), out_bits=1))
    one_token = qkv[:, :1]
    wide_v = one_token[..., 4:].astype(np.int32) + 2**25  # an int32 accumulator, but values float32 cannot hold
    assert attention(one_token[..., :2], one_token[..., 2:4], wide_v, **uniform) is None
    narrow = dict(case, softmax=dict(case["softmax"], bits=4))  # int8 logits outside the softmax's 4-bit range
    assert attention(qkv[..., :2], qkv[..., 2:4], qkv[..., 4:], **narrow) is None
    with pytest.raises(ValueError, match="log_int_softmax: zero_point = 300"):
        attention(qkv[..., :2], qkv[..., 2:4], qkv[..., 4:], **dict(case, softmax=dict(case["softmax"], zero_point=300)))


def test_linear_requantize_with_wide_operands_takes_float64_and_is_exact():
    # int32 codes up to 2**24 against int8 weights: K * A * B beyond 2**24 (no float32 chunk of >= 64 either), a
    # float64 product; the accumulator beyond int32 but requantize's proof holds for a 2**20 multiplier
    rng = np.random.default_rng(5)
    x = rng.integers(2**23, 2**24, size=(70, 200)).astype(np.int32)
    weight = rng.integers(0, 128, size=(6, 200)).astype(np.int8)
    part = dict(multiplier=np.array([2**20] * 6), shift=np.array([40] * 6), qmin=-(2**31), qmax=2**31 - 1)
    (got,) = linear_requantize(x, weight, bias=np.arange(6), parts=[part])
    want = requantize_reference(integer_linear_reference(x, weight, bias=np.arange(6)), **part)
    assert np.abs(integer_linear_reference(x, weight)).max() > 2**31
    np.testing.assert_array_equal(got, want)


def _count_fused_calls(monkeypatch) -> list[tuple[str, bool]]:
    """Record ``(name, took the fast path)`` for every call of the three fused kernels from now on."""
    import intsim.ops.fused as fused

    taken = []
    for name in ("attention", "linear_requantize", "linear_residual_add"):
        def counted(*args, _original=getattr(fused, name), _name=name, **kwargs):
            result = _original(*args, **kwargs)
            taken.append((_name, result is not None))
            return result
        monkeypatch.setattr(fused, name, counted)
    return taken


@pytest.mark.parametrize("config_name", ["fqvit-w8a8a4", "fqvit-w8a8a8"])
def test_interpreter_fused_run_equals_op_by_op_and_traced_runs(config_name, monkeypatch):
    pytest.importorskip("torch")
    from intsim.evaluate import quantize
    from intsim.interpreter import _fusions, run_program
    from intsim.models.digits import digits_heldout
    from intsim.quant.configs import make_config

    _, program = quantize(None, None, None, make_config(config_name), workers=0)
    kinds = {(program.ops[start].kind, count) for start, (count, _) in _fusions(program).items()}
    assert {("Linear", 2), ("Linear", 3), ("Linear", 5), ("AttentionScores", 4)} <= kinds  # every pattern occurs in a ViT (the softmax reads the scores)
    pixels = np.array(digits_heldout()[0][:16])
    seen = []
    traced = run_program(program, pixels, trace=lambda op, inputs, outputs: seen.append(op.name))
    assert seen == [op.name for op in program.ops]  # the trace hook still sees every op
    taken = _count_fused_calls(monkeypatch)
    np.testing.assert_array_equal(run_program(program, pixels), traced)
    assert {name for name, took in taken if took} == {"attention", "linear_requantize", "linear_residual_add"}
    np.testing.assert_array_equal(run_program(program, pixels, fuse=False), traced)


def test_interpreter_fuses_adalog_programs_and_equals_op_by_op_and_traced_runs(monkeypatch):
    # AsymmetricLinear and LogLinear run as plain linears (centred weight, gathered log weights) in every linear
    # fusion; UniformSoftmax -> LogEncode -> LogAttentionValues in the attention kernel
    pytest.importorskip("torch")
    from intsim.evaluate import quantize
    from intsim.interpreter import _fusions, run_program
    from intsim.models.digits import digits_heldout
    from intsim.quant.configs import make_config

    _, program = quantize(None, None, None, make_config("adalog-w4a4", search_rounds=1, search_steps=1), workers=0)
    groups = {tuple(op.kind for op in program.ops[start : start + count]) for start, (count, _) in _fusions(program).items()}
    assert {("AsymmetricLinear", "Split", "Requantize", "Requantize", "Requantize"), ("AsymmetricLinear", "ResidualAdd"),
            ("AsymmetricLinear", "Requantize", "Lut"), ("LogLinear", "ResidualAdd"),
            ("AttentionScores", "UniformSoftmax", "LogEncode", "LogAttentionValues", "Requantize")} <= groups
    pixels = np.array(digits_heldout()[0][:16])
    traced = run_program(program, pixels, trace=lambda op, inputs, outputs: None)
    taken = _count_fused_calls(monkeypatch)
    np.testing.assert_array_equal(run_program(program, pixels), traced)
    assert all(took for _, took in taken) and {name for name, _ in taken} == {"attention", "linear_requantize",
                                                                              "linear_residual_add"}
    np.testing.assert_array_equal(run_program(program, pixels, fuse=False), traced)
