"""Integer MAC and rescaling kinds: ``Linear``, ``Requantize``, ``ResidualAdd``."""

from __future__ import annotations

import numpy as np

from intsim import op_schema as s
from intsim.kinds.base import (MULTIPLIER, OUTPUT_CODES, ROUNDING, SHIFT, OpKind, clipped, linear_partial_sum_bound,
                               max_abs, shifted_bound, span)
from intsim.op_schema import Operand, OpSchema, OpView

__all__ = ["KINDS"]


# ------------------------------------------------------------------------------------------------ rules
def _linear(view: OpView) -> list[tuple]:
    x, weight, bias, *x_shift = view.inputs
    outputs, inputs = s.axes(weight, "(N, K)")
    if s.channels(x) != inputs:
        raise s.operand_error(x, f"a last axis of K = {inputs} (the weight {weight.name!r} is {outputs} x {inputs})",
                              f"shape {s.shape_text(x.shape)}")
    s.shape_is(bias, (outputs,), "N, one per output channel")
    for shift in x_shift:
        s.shape_is(shift, (inputs,), "K, one per input channel")
    s.zero_point_of(view, "x_zero_point", x)
    return [x.shape[:-1] + (outputs,)]


def _requantize(view: OpView) -> list[tuple]:
    acc, multiplier, shift = view.inputs
    channels = s.channels(acc)
    for constant in (multiplier, shift):
        s.per_channel(constant, channels, acc)
    s.output_codes(view, "zero_point")
    return [acc.shape]


def _residual_add(view: OpView) -> list[tuple]:
    a, b, *constants = view.inputs
    if len(b.shape) > len(a.shape) or any(sb not in (sa, 1) for sa, sb in zip(a.shape[::-1], b.shape[::-1])):
        raise s.operand_error(b, f"a shape that broadcasts to {s.shape_text(a.shape)} (the shape of {a.name!r})",
                              f"shape {s.shape_text(b.shape)}")
    channels = s.channels(a)
    for constant in constants:
        s.per_channel(constant, channels, a)
    s.zero_point_of(view, "a_zero_point", a)
    s.zero_point_of(view, "b_zero_point", b)
    s.output_codes(view, "out_zero_point")
    return [a.shape]


# ------------------------------------------------------------------------------------------------ executors
def _execute_linear(be, a, x, weight, bias, x_shift=None):
    return be.ops.integer_linear(x, weight, x_zero_point=a["x_zero_point"], bias=bias, x_shift=x_shift)


def _execute_requantize(be, a, acc, multiplier, shift):
    return be.ops.requantize(acc, multiplier, shift, zero_point=a["zero_point"], qmin=a["qmin"], qmax=a["qmax"],
                             rounding=a["rounding"])


def _execute_residual_add(be, a, x, y, a_multiplier, b_multiplier, shift):
    return be.ops.residual_add(x, be.broadcast_to(y, x.shape), a_zero_point=a["a_zero_point"],
                               b_zero_point=a["b_zero_point"], a_multiplier=a_multiplier, b_multiplier=b_multiplier,
                               shift=shift, out_zero_point=a["out_zero_point"], qmin=a["qmin"], qmax=a["qmax"],
                               rounding=a["rounding"])


# ------------------------------------------------------------------------------------------------ report
def _linear_report(report, program, op, inputs, outputs):
    from intsim.ops import integer_matmul
    from intsim.ops.matmul import shifted_linear_input

    x, weight, bias = (np.asarray(a) for a in inputs[:3])
    zp = op.attrs["x_zero_point"]
    spec = program.tensors[op.inputs[0]]
    shift = np.asarray(inputs[3]).astype(np.int64) if len(inputs) > 3 else None
    operand, operand_zp = shifted_linear_input(x, zp, shift)  # with shifts: (x - zp) << shift, zero point 0
    terms = integer_matmul(np.abs(operand.astype(np.int64) - operand_zp), np.abs(weight.astype(np.int64)).T)
    bound = linear_partial_sum_bound(span(spec, zp), np.abs(weight.astype(np.int64)), shift)
    report.add("partial_sum_bound", terms + np.abs(bias.astype(np.int64)), bound=bound + max_abs(bias))
    return None


def _requantize_report(report, program, op, inputs, outputs):
    from intsim.ops.rounding import rounding_shift_right_reference

    acc, multiplier, shift = (np.asarray(a).astype(np.int64) for a in inputs)
    a = op.attrs
    acc_bound = max(-program.tensors[op.inputs[0]].qmin, program.tensors[op.inputs[0]].qmax)
    product = acc * multiplier
    report.add("product", product, bound=acc_bound * max_abs(multiplier))
    rounded = rounding_shift_right_reference(product, shift, a["rounding"]) + a["zero_point"]
    report.add("rounded", rounded,
               bound=shifted_bound(acc_bound * np.abs(multiplier.astype(object)), shift) + abs(a["zero_point"]))
    return clipped(report, rounded, a)


def _residual_add_report(report, program, op, inputs, outputs):
    from intsim.ops.rounding import rounding_shift_right_reference

    x, y, a_multiplier, b_multiplier, shift = (np.asarray(v).astype(np.int64) for v in inputs)
    a = op.attrs
    y = np.broadcast_to(y, x.shape)
    a_span = span(program.tensors[op.inputs[0]], a["a_zero_point"])
    b_span = span(program.tensors[op.inputs[1]], a["b_zero_point"])
    a_term, b_term = (x - a["a_zero_point"]) * a_multiplier, (y - a["b_zero_point"]) * b_multiplier
    total = a_term + b_term
    sum_bound = a_span * np.abs(a_multiplier.astype(object)) + b_span * np.abs(b_multiplier.astype(object))
    report.add("a_term", a_term, bound=a_span * max_abs(a_multiplier))
    report.add("b_term", b_term, bound=b_span * max_abs(b_multiplier))
    report.add("sum", total, bound=int(np.max(sum_bound)))
    rounded = rounding_shift_right_reference(total, shift, a["rounding"]) + a["out_zero_point"]
    report.add("rounded", rounded, bound=shifted_bound(sum_bound, shift) + abs(a["out_zero_point"]))
    return clipped(report, rounded, a)


KINDS = (
    OpKind("Linear",
           OpSchema("Linear", (Operand("x"), Operand("weight", constant=True),
                               Operand("bias", constant=True, values=s.INT32),
                               Operand("x_shift", constant=True, values=s.INPUT_SHIFT, optional=True)),
                    (s.int_attribute("x_zero_point", s.INT64),), _linear,
                    checks="weight (N, K), x (..., K), bias (N,), x_shift (K,); x_zero_point within x's declared "
                           "range"),
           execute=_execute_linear, function="integer_linear",
           summary="x (...,K), weight (N,K), bias (N,)[, x_shift (K,)] -> int64 acc (with x_shift: the input "
                   "(x - zp) << x_shift per channel)",
           intermediates=("partial_sum_bound",), recompute=_linear_report),
    OpKind("Requantize",
           OpSchema("Requantize", (Operand("acc"), MULTIPLIER, SHIFT),
                    (s.int_attribute("zero_point", s.INT32), *OUTPUT_CODES, ROUNDING), _requantize,
                    checks="multiplier, shift (1,) or (C,); qmin <= zero_point <= qmax within the output's declared "
                           "range"),
           execute=_execute_requantize, function="requantize", summary="acc, multiplier, shift -> codes",
           intermediates=("product", "rounded"), recompute=_requantize_report),
    OpKind("ResidualAdd",
           OpSchema("ResidualAdd", (Operand("a"), Operand("b"),
                                    Operand("a_multiplier", constant=True, values=s.MULTIPLIER),
                                    Operand("b_multiplier", constant=True, values=s.MULTIPLIER), SHIFT),
                    (s.int_attribute("a_zero_point", s.INT32), s.int_attribute("b_zero_point", s.INT32),
                     s.int_attribute("out_zero_point", s.INT32), *OUTPUT_CODES, ROUNDING), _residual_add,
                    checks="b broadcasts to a; constants (1,) or (C,); a/b zero points within a's/b's declared "
                           "ranges; qmin <= out_zero_point <= qmax within the output's declared range"),
           execute=_execute_residual_add, function="residual_add",
           summary="a, b (b broadcast to a), a_multiplier, b_multiplier, shift -> codes",
           intermediates=("a_term", "b_term", "sum", "rounded"), recompute=_residual_add_report),
)
