"""AdaLog (log2-domain) kinds: ``LogEncode`` (uniform codes -> log codes by thresholds), ``LogAttentionValues``
(attn @ V for log-coded probabilities), ``AsymmetricLinear`` (per-row weight zero points) and ``LogLinear`` (a
linear over log-coded inputs, e.g. the post-GELU activations of an fc2).

The log codes are ``0..L`` with ``L = 2**b`` the zero code; the decode tables ``shift_table`` (``SH``) and
``mantissa_table`` (``M``) give the weight ``W[c] = M[c] << (max_shift - SH[c])`` (``W[L] = 0``); see
:mod:`intsim.ops.logquant` and ``docs/semantics.md``.
"""

from __future__ import annotations

import numpy as np

from intsim import limits
from intsim import op_schema as s
from intsim.kinds.base import OpKind, linear_partial_sum_bound, max_abs, merge_heads, span, split_heads
from intsim.kinds.attention import attention_values_shape
from intsim.op_schema import Operand, OpSchema, OpView

__all__ = ["KINDS"]

LOG_MAX_BITS = 8  # intsim.ops.logquant.LOG_MAX_BITS (tables of 2..256 entries)
MAX_LOG_SHIFT = 62  # W = M << (max_shift - SH) must fit int64 with M >= 1
_MAX_SHIFT = s.int_attribute("max_shift", (0, MAX_LOG_SHIFT))
_NON_NEGATIVE = (0, limits.INT64_MAX)
_SHIFT_TABLE = Operand("shift_table", constant=True, values=(0, MAX_LOG_SHIFT))
_MANTISSA_TABLE = Operand("mantissa_table", constant=True, values=_NON_NEGATIVE)


# ------------------------------------------------------------------------------------------------ rules
def _table_length(table: s.OperandView, what: str) -> int:
    if len(table.shape) != 1 or table.shape[0] is None or table.shape[0] < 2 or table.shape[0] > 2**LOG_MAX_BITS \
            or table.shape[0] & (table.shape[0] - 1):
        raise s.operand_error(table, f"shape (2**b,), b in 1..{LOG_MAX_BITS} ({what})", f"shape {s.shape_text(table.shape)}")
    return table.shape[0]


def _log_tables(view: OpView, shift: s.OperandView, mantissa: s.OperandView) -> int:
    """The decode tables: same shape (2**b,), shifts within [0, max_shift]; returns L = 2**b (the zero code)."""
    length = _table_length(shift, "one shift per code")
    s.shape_is(mantissa, (length,), "one mantissa per code, like the shift table")
    if shift.bounds is not None and shift.bounds[1] > view.attrs["max_shift"]:
        raise s.attribute_error("max_shift", f"an int >= max(shift_table) = {shift.bounds[1]}",
                                view.attrs["max_shift"])
    return length


def _log_codes(operand: s.OperandView, zero: int) -> None:
    """An operand of log codes 0..zero: its declared range starts at 0 (unsigned)."""
    if operand.signed:
        raise s.operand_error(operand, f"unsigned log codes 0..{zero}", f"{operand.describe()}")


def _log_encode(view: OpView) -> list[tuple]:
    x, thresholds = view.inputs
    levels = _table_length(thresholds, "one threshold per code, non-increasing")
    if x.signed:
        raise s.operand_error(x, "non-negative (unsigned) codes", x.describe())
    s.output_holds(view, 0, levels, "the log codes")
    return [x.shape]


def _log_attention_values(view: OpView) -> list[tuple]:
    probs, v, shift, mantissa = view.inputs
    zero = _log_tables(view, shift, mantissa)
    shape = attention_values_shape(view, probs, v)
    _log_codes(probs, zero)
    return [shape]


def _linear_shapes(x: s.OperandView, weight: s.OperandView, weight_zero_point: s.OperandView,
                   bias: s.OperandView) -> int:
    outputs, inputs = s.axes(weight, "(N, K)")
    if s.channels(x) != inputs:
        raise s.operand_error(x, f"a last axis of K = {inputs} (the weight {weight.name!r} is {outputs} x {inputs})",
                              f"shape {s.shape_text(x.shape)}")
    s.shape_is(weight_zero_point, (outputs,), "N, one zero point per output channel")
    s.shape_is(bias, (outputs,), "N, one per output channel")
    return outputs


def _asymmetric_linear(view: OpView) -> list[tuple]:
    x, weight, weight_zero_point, bias, *x_shift = view.inputs
    outputs = _linear_shapes(x, weight, weight_zero_point, bias)
    for shift in x_shift:
        s.shape_is(shift, (s.channels(x),), "K, one per input channel")
    s.zero_point_of(view, "x_zero_point", x)
    return [x.shape[:-1] + (outputs,)]


def _log_linear(view: OpView) -> list[tuple]:
    x, weight, weight_zero_point, bias, shift, mantissa = view.inputs
    outputs = _linear_shapes(x, weight, weight_zero_point, bias)
    _log_codes(x, _log_tables(view, shift, mantissa))
    return [x.shape[:-1] + (outputs,)]


# ------------------------------------------------------------------------------------------------ executors
def _execute_log_encode(be, a, x, thresholds):
    return be.ops.log_encode(x, thresholds)


def _execute_log_values(be, a, codes, v, shift, mantissa):
    return merge_heads(be.ops.log_attention_values(codes, split_heads(v, a["heads"]), shift, mantissa,
                                                   v_zero_point=a["v_zero_point"], max_shift=a["max_shift"]))


def _execute_asymmetric_linear(be, a, x, weight, weight_zero_point, bias, x_shift=None):
    return be.ops.asymmetric_linear(x, weight, weight_zero_point, bias, x_zero_point=a["x_zero_point"],
                                    x_shift=x_shift)


def _execute_log_linear(be, a, x, weight, weight_zero_point, bias, shift, mantissa):
    return be.ops.log_linear(x, weight, weight_zero_point, bias, shift, mantissa, max_shift=a["max_shift"])


# ------------------------------------------------------------------------------------------------ report
def _weights(shift, mantissa, max_shift) -> np.ndarray:
    from intsim.ops.logquant import log_weight_table

    return log_weight_table(shift, mantissa, max_shift)


def _log_encode_report(report, program, op, inputs, outputs):
    x = np.asarray(inputs[0]).astype(np.int64)
    thresholds = np.asarray(inputs[1]).astype(np.int64)
    levels = thresholds.shape[0]
    below = (x[..., None] < thresholds).sum(axis=-1)  # #{k : x < T_k}, a tie x == T_k not counted
    report.add("thresholds_above", below, bound=levels, signed=False)
    report.count(f"codes at the ends (0: x >= T_0, {levels}: the zero code)", 0, levels, int((below == 0).sum()),
                 int((below == levels).sum()), below.size)
    return below


def _log_values_report(report, program, op, inputs, outputs):
    from intsim.ops import integer_matmul

    codes = np.asarray(inputs[0]).astype(np.int64)
    a = op.attrs
    table = _weights(inputs[2], inputs[3], a["max_shift"])
    v = np.asarray(inputs[1]).astype(np.int64)
    terms = integer_matmul(table[codes], np.abs(split_heads(v - a["v_zero_point"], a["heads"])))
    bound = codes.shape[-1] * span(program.tensors[op.inputs[1]], a["v_zero_point"]) * int(table.max())
    report.add("partial_sum_bound", terms, bound=bound)
    return None


def _centred_weight(weight, weight_zero_point) -> np.ndarray:
    return np.abs(np.asarray(weight).astype(np.int64) - np.asarray(weight_zero_point).astype(np.int64)[:, None])


def _asymmetric_linear_report(report, program, op, inputs, outputs):
    from intsim.ops import integer_matmul
    from intsim.ops.matmul import shifted_linear_input

    x, weight, weight_zero_point, bias = inputs[:4]
    shift = np.asarray(inputs[4]).astype(np.int64) if len(inputs) > 4 else None
    zp = op.attrs["x_zero_point"]
    centred = _centred_weight(weight, weight_zero_point)
    bias = np.asarray(bias).astype(np.int64)
    operand, operand_zp = shifted_linear_input(np.asarray(x), zp, shift)  # with shifts: (x - zp) << shift, zp 0
    x = operand.astype(np.int64)
    rows = np.abs(x - operand_zp).reshape(-1, x.shape[-1])
    terms = integer_matmul(rows, np.ascontiguousarray(centred.T)).reshape(x.shape[:-1] + (centred.shape[0],))
    bound = linear_partial_sum_bound(span(program.tensors[op.inputs[0]], zp), centred, shift) + max_abs(bias)
    report.add("partial_sum_bound", terms + np.abs(bias), bound=bound)
    return None


def _log_linear_report(report, program, op, inputs, outputs):
    from intsim.ops import integer_matmul

    x, weight, weight_zero_point, bias, shift, mantissa = inputs
    table = _weights(shift, mantissa, op.attrs["max_shift"])
    centred = _centred_weight(weight, weight_zero_point)
    bias = np.asarray(bias).astype(np.int64)
    x = np.asarray(x).astype(np.int64)
    rows = table[x.reshape(-1, x.shape[-1])]
    terms = integer_matmul(rows, np.ascontiguousarray(centred.T)).reshape(x.shape[:-1] + (centred.shape[0],))
    bound = centred.shape[1] * int(table.max()) * max_abs(centred) + max_abs(bias)
    report.add("partial_sum_bound", terms + np.abs(bias), bound=bound)
    return None


_TABLE_CHECKS = "shift_table, mantissa_table (2**b,), b in 1..8, max(shift_table) <= max_shift"

KINDS = (
    OpKind("LogEncode",
           OpSchema("LogEncode", (Operand("x"), Operand("thresholds", constant=True, values=s.INT64)), (),
                    _log_encode,
                    checks="thresholds (2**b,), b in 1..8 (non-increasing: checked by the op); x unsigned; the "
                           "output holds 0..2**b"),
           execute=_execute_log_encode, function="log_encode",
           summary="codes x >= 0 (any shape, e.g. the 16-bit softmax codes (B,H,N,N)), thresholds T (L,) -> log codes "
                   "#{k : x < T_k} in 0..L (L = 2**b: the zero code; a tie x == T_k takes the lower code)",
           intermediates=("thresholds_above",), recompute=_log_encode_report),
    OpKind("LogAttentionValues",
           OpSchema("LogAttentionValues", (Operand("probs"), Operand("v"), _SHIFT_TABLE, _MANTISSA_TABLE),
                    (s.int_attribute("heads", (1, None)), s.int_attribute("v_zero_point", s.INT64), _MAX_SHIFT),
                    _log_attention_values,
                    checks=f"probs (B, heads, N, M) unsigned log codes, v (B, M, C); heads divides C; v_zero_point "
                           f"within v's declared range; {_TABLE_CHECKS}"),
           execute=_execute_log_values, function="log_attention_values",
           summary="log codes c (B,H,N,M), v (B,M,C), SH, M tables -> int64 acc (B,N,C), heads merged: sum of "
                   "W[c] * (v - zp), W[c] = M[c] << (max_shift - SH[c]) (code 2**b: no term)",
           intermediates=("partial_sum_bound",), recompute=_log_values_report),
    OpKind("AsymmetricLinear",
           OpSchema("AsymmetricLinear", (Operand("x"), Operand("weight", constant=True),
                                         Operand("weight_zero_point", constant=True, values=s.INT32),
                                         Operand("bias", constant=True, values=s.INT32),
                                         Operand("x_shift", constant=True, values=s.INPUT_SHIFT, optional=True)),
                    (s.int_attribute("x_zero_point", s.INT64),), _asymmetric_linear,
                    checks="weight (N, K), x (..., K), weight_zero_point (N,), bias (N,), x_shift (K,); x_zero_point "
                           "within x's declared range"),
           execute=_execute_asymmetric_linear, function="asymmetric_linear",
           summary="x (...,K), weight (N,K) unsigned codes, weight_zero_point (N,), bias (N,)[, x_shift (K,)] -> "
                   "int64 acc (...,N): sum of ((x - x_zp) << x_shift) * (w - wzp_n) + bias",
           intermediates=("partial_sum_bound",), recompute=_asymmetric_linear_report),
    OpKind("LogLinear",
           OpSchema("LogLinear", (Operand("x"), Operand("weight", constant=True),
                                  Operand("weight_zero_point", constant=True, values=s.INT32),
                                  Operand("bias", constant=True, values=s.INT64), _SHIFT_TABLE, _MANTISSA_TABLE),
                    (_MAX_SHIFT,), _log_linear,
                    checks=f"weight (N, K), x (..., K) unsigned log codes, weight_zero_point (N,), bias (N,); "
                           f"{_TABLE_CHECKS}"),
           execute=_execute_log_linear, function="log_linear",
           summary="log codes x (...,K), weight (N,K), weight_zero_point (N,), bias (N,) int64, SH, M tables -> "
                   "int64 acc (...,N): sum of W[x] * (w - wzp_n) + bias",
           intermediates=("partial_sum_bound",), recompute=_log_linear_report),
)
