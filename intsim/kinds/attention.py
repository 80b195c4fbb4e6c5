"""Attention kinds: ``AttentionScores`` (q @ k^T per head), the softmaxes (``LogIntSoftmax``, ``UniformSoftmax``)
and attn @ V, one kind per probability code (``AttentionValues``: uniform probabilities, ``LisAttentionValues``:
Log-Int-Softmax codes)."""

from __future__ import annotations

import numpy as np

from intsim import limits
from intsim import op_schema as s
from intsim.kinds.base import DECLARED_INPUT, SIGNED, OpKind, merge_heads, span, split_heads
from intsim.op_schema import Operand, OpSchema, OpView

__all__ = ["KINDS", "exp_constants"]

_EXP_CONSTANTS = (s.int_attribute("x0", (-(2**30), -1)), s.int_attribute("b_int", (-(2**30), 2**30)),
                  s.int_attribute("c_int", (-(2**61), 2**61)), s.int_attribute("n", (0, 62)))  # IExpConstants
_SOFTMAX_INPUT = (s.int_attribute("zero_point", s.INT64), s.int_attribute("bits", (1, s.SOFTMAX_INPUT_BITS)), SIGNED)
_HEADS = s.int_attribute("heads", (1, None))


# ------------------------------------------------------------------------------------------------ rules
def _attention_scores(view: OpView) -> list[tuple]:
    q, k = view.inputs
    batch, queries, channels = s.axes(q, "(batch, tokens, channels)")
    _, keys, k_channels = s.axes(k, "(batch, tokens, channels)")
    if k_channels != channels:
        raise s.operand_error(k, f"{channels} channels (those of {q.name!r})", k_channels)
    heads = s.heads_dividing(view, channels)
    s.zero_point_of(view, "q_zero_point", q)
    s.zero_point_of(view, "k_zero_point", k)
    return [(batch, heads, queries, keys)]


def _log_int_softmax(view: OpView) -> list[tuple]:
    (logits,) = view.inputs
    s.channels(logits)
    s.declared_input(view, logits)
    s.output_holds(view, 0, s.LIS_ZERO_CODE, "the Log-Int-Softmax codes")
    return [logits.shape]


def _uniform_softmax(view: OpView) -> list[tuple]:
    (logits,) = view.inputs
    s.channels(logits)
    s.declared_input(view, logits)
    levels = 2 ** view.attrs["out_bits"] - 1
    full = view.attrs["full_scale"]
    if not all(levels <= value <= s.MAX_FULL_SCALE for value in (full if isinstance(full, (list, tuple)) else [full])):
        raise s.attribute_error("full_scale", f"an int (or one per head) in [2**out_bits - 1, 2**20] = "
                                              f"[{levels}, {s.MAX_FULL_SCALE}]", full)
    if isinstance(full, (list, tuple)):
        _, heads, _, _ = s.axes(logits, "(batch, heads, tokens, tokens)")
        if len(full) != heads:
            raise s.attribute_error("full_scale", f"one int per head: {heads} (the heads axis of {logits.name!r})",
                                    full)
    s.output_holds(view, 0, levels, "the probability codes")
    return [logits.shape]


def _attention_values(view: OpView) -> list[tuple]:
    probs, v = view.inputs
    return [attention_values_shape(view, probs, v)]


def attention_values_shape(view: OpView, probs, v) -> tuple:
    """The checks every ``attn @ V`` kind shares: probabilities ``(B, heads, N, M)`` against ``v (B, M, C)``, the
    ``heads`` attribute, ``heads`` dividing ``C`` and ``v_zero_point``; returns the output shape ``(B, N, C)``."""
    batch, heads, queries, keys = s.axes(probs, "(batch, heads, tokens, tokens)")
    _, tokens, channels = s.axes(v, "(batch, tokens, channels)")
    if heads != view.attrs["heads"]:
        raise s.attribute_error("heads", f"{heads} (the heads axis of {probs.name!r})", view.attrs["heads"])
    if tokens != keys:
        raise s.operand_error(v, f"{keys} tokens (the last axis of {probs.name!r})", tokens)
    s.heads_dividing(view, channels)
    s.zero_point_of(view, "v_zero_point", v)
    return (batch, queries, channels)


# ------------------------------------------------------------------------------------------------ executors
def exp_constants(attrs: dict):
    """The :class:`intsim.ops.softmax.IExpConstants` of a softmax op's attributes."""
    from intsim.ops.softmax import IExpConstants

    return IExpConstants(x0=attrs["x0"], b_int=attrs["b_int"], c_int=attrs["c_int"], n=attrs["n"])


def _execute_scores(be, a, q, k):
    return be.ops.integer_matmul(split_heads(q, a["heads"]), split_heads(k, a["heads"]).swapaxes(-1, -2),
                                 a_zero_point=a["q_zero_point"], b_zero_point=a["k_zero_point"])


def _execute_log_int_softmax(be, a, x):
    return be.ops.log_int_softmax(x, zero_point=a["zero_point"], constants=exp_constants(a), bits=a["bits"],
                                  signed=a["signed"])


def _execute_uniform_softmax(be, a, x):
    return be.ops.uniform_int_softmax(x, zero_point=a["zero_point"], constants=exp_constants(a), bits=a["bits"],
                                      signed=a["signed"], out_bits=a["out_bits"], full_scale=a["full_scale"])


def _execute_values(be, a, probs, v):
    return merge_heads(be.ops.integer_matmul(probs, split_heads(v, a["heads"]), b_zero_point=a["v_zero_point"]))


def _execute_lis_values(be, a, codes, v):
    return merge_heads(be.ops.lis_attention_values(codes, split_heads(v, a["heads"]), v_zero_point=a["v_zero_point"]))


# ------------------------------------------------------------------------------------------------ report
def _scores_report(report, program, op, inputs, outputs):
    from intsim.ops import integer_matmul

    q, k = (np.asarray(a).astype(np.int64) for a in inputs)
    a = op.attrs
    terms = integer_matmul(np.abs(split_heads(q - a["q_zero_point"], a["heads"])),
                           np.abs(split_heads(k - a["k_zero_point"], a["heads"])).swapaxes(-1, -2))
    width = q.shape[-1] // a["heads"]
    bound = width * span(program.tensors[op.inputs[0]], a["q_zero_point"]) * span(program.tensors[op.inputs[1]],
                                                                                  a["k_zero_point"])
    report.add("partial_sum_bound", terms, bound=bound)
    return None


def _values_report(report, program, op, inputs, outputs):
    probs = np.asarray(inputs[0]).astype(np.int64)
    return _values_bound(report, program, op, probs, probs, program.tensors[op.inputs[0]].qmax, inputs[1])


def _lis_values_report(report, program, op, inputs, outputs):
    codes = np.asarray(inputs[0]).astype(np.int64)
    shift = limits.LIS_VALUE_SHIFT
    weights = np.where(codes < limits.LIS_ZERO_CODE, np.int64(1) << (shift - np.minimum(codes, shift)), 0)
    return _values_bound(report, program, op, codes, weights, 1 << shift, inputs[1])


def _values_bound(report, program, op, probs, weights, largest: int, v):
    from intsim.ops import integer_matmul

    a = op.attrs
    v = np.asarray(v).astype(np.int64)
    terms = integer_matmul(weights, np.abs(split_heads(v - a["v_zero_point"], a["heads"])))
    bound = probs.shape[-1] * span(program.tensors[op.inputs[1]], a["v_zero_point"]) * largest
    report.add("partial_sum_bound", terms, bound=bound)
    return None


def _softmax_exp(report, program, op, logits):
    from intsim.ops.softmax import int_exp_reference

    a = op.attrs
    constants = exp_constants(a)
    spec = program.tensors[op.inputs[0]]
    x = np.asarray(logits).astype(np.int64) - a["zero_point"]
    gap = x - x.max(axis=-1, keepdims=True)
    e = int_exp_reference(gap, constants)
    total = e.sum(axis=-1, keepdims=True)
    length = x.shape[-1]
    report.add("gap", gap, bound=spec.qmax - spec.qmin)
    report.add("e", e, bound=constants.e_max, signed=False)
    report.add("S", total, bound=length * constants.e_max, signed=False)
    return e, total, constants.e_max * length


def _log_int_softmax_report(report, program, op, inputs, outputs):
    from intsim.ops.softmax import log_round_reference

    e, total, total_bound = _softmax_exp(report, program, op, inputs[0])
    rounded = np.where(e > 0, (total + (e >> 1)) // np.where(e > 0, e, 1), 1)
    report.add("R", rounded, bound=total_bound, signed=False)
    exponent = log_round_reference(rounded)
    zero = limits.LIS_ZERO_CODE
    codes = np.where((e > 0) & (exponent <= 15), exponent, zero)
    report.count("codes at the ends (0: probability 1, 16: probability 0)", 0, zero, int((codes == 0).sum()),
                 int((codes == zero).sum()), codes.size)
    return codes


def _uniform_softmax_report(report, program, op, inputs, outputs):
    e, total, total_bound = _softmax_exp(report, program, op, inputs[0])
    from intsim.ops.softmax import per_head

    levels, full = 2 ** op.attrs["out_bits"] - 1, op.attrs["full_scale"]
    numerator = e * per_head(full, e.shape) + (total >> 1)
    report.add("numerator", numerator, bound=(total_bound // e.shape[-1]) * max(np.ravel(full)) + (total_bound >> 1),
               signed=False)
    p = np.minimum(numerator // np.maximum(total, 1), levels)
    report.count("codes at the ends of [0, 2**out_bits - 1]", 0, levels, int((p == 0).sum()), int((p == levels).sum()),
                 p.size)
    return p


_VALUES_INPUTS = (Operand("probs"), Operand("v"))
_VALUES_ATTRIBUTES = (_HEADS, s.int_attribute("v_zero_point", s.INT64))

KINDS = (
    OpKind("AttentionScores",
           OpSchema("AttentionScores", (Operand("q"), Operand("k")),
                    (_HEADS, s.int_attribute("q_zero_point", s.INT64), s.int_attribute("k_zero_point", s.INT64)),
                    _attention_scores,
                    checks="q, k (B, N, C); heads divides C; zero points within q's and k's declared ranges"),
           execute=_execute_scores, function="integer_matmul",
           summary="q (B,N,C), k (B,N,C) -> int64 acc (B,H,N,N) per head",
           intermediates=("partial_sum_bound",), recompute=_scores_report),
    OpKind("LogIntSoftmax",
           OpSchema("LogIntSoftmax", (Operand("logits"),), (*_SOFTMAX_INPUT, *_EXP_CONSTANTS), _log_int_softmax,
                    checks=f"{DECLARED_INPUT}; the output holds 0..16"),
           execute=_execute_log_int_softmax, function="log_int_softmax",
           summary="logits (B,H,N,N) -> Log-Int-Softmax codes (0..15: probability 2**-code, 16: 0)",
           intermediates=("gap", "e", "S", "R"), recompute=_log_int_softmax_report),
    OpKind("UniformSoftmax",
           OpSchema("UniformSoftmax", (Operand("logits"),),
                    (*_SOFTMAX_INPUT, *_EXP_CONSTANTS, s.int_attribute("out_bits", (1, s.SOFTMAX_OUT_BITS)),
                     s.int_or_ints_attribute("full_scale", (1, s.MAX_FULL_SCALE))),
                    _uniform_softmax,
                    checks=f"{DECLARED_INPUT}; 2**out_bits - 1 <= full_scale (an int, or one per head); the output "
                           "holds 0..2**out_bits - 1"),
           execute=_execute_uniform_softmax, function="uniform_int_softmax",
           summary="logits (B,H,N,N) -> probability codes (full_scale: the code of probability 1; one per head "
                   "or one for all)",
           intermediates=("gap", "e", "S", "numerator"), recompute=_uniform_softmax_report),
    OpKind("AttentionValues",
           OpSchema("AttentionValues", _VALUES_INPUTS, _VALUES_ATTRIBUTES, _attention_values,
                    checks="probs (B, heads, N, M), v (B, M, C); heads divides C; v_zero_point within v's declared "
                           "range"),
           execute=_execute_values, function="integer_matmul",
           summary="probability codes (B,H,N,N), v (B,N,C) -> int64 acc (B,N,C), heads merged: sum of p * (v - zp)",
           intermediates=("partial_sum_bound",), recompute=_values_report),
    OpKind("LisAttentionValues",
           OpSchema("LisAttentionValues", _VALUES_INPUTS, _VALUES_ATTRIBUTES, _attention_values,
                    checks="probs (B, heads, N, M) Log-Int-Softmax codes, v (B, M, C); heads divides C; "
                           "v_zero_point within v's declared range"),
           execute=_execute_lis_values, function="lis_attention_values",
           summary="Log-Int-Softmax codes A (B,H,N,N), v (B,N,C) -> int64 acc (B,N,C), heads merged: sum of "
                   "(v - zp) << (15 - A) (code 16: no term)",
           intermediates=("partial_sum_bound",), recompute=_lis_values_report),
)
