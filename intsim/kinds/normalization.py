"""``LayerNorm`` (integer LayerNorm over power-of-two channel factors) and ``Lut`` (table lookup)."""

from __future__ import annotations

import numpy as np

from intsim import op_schema as s
from intsim.kinds.base import DECLARED_INPUT, MULTIPLIER, OUTPUT_CODES, ROUNDING, SHIFT, SIGNED, OpKind, clipped, \
    shifted_bound, span
from intsim.op_schema import Operand, OpSchema, OpView

__all__ = ["KINDS"]


def _layernorm(view: OpView) -> list[tuple]:
    x, *constants = view.inputs
    channels = s.channels(x)
    if channels > s.LAYERNORM_MAX_CHANNELS:
        raise s.operand_error(x, f"at most {s.LAYERNORM_MAX_CHANNELS} channels", channels)
    for constant in constants:
        s.per_channel(constant, channels, x)
    s.declared_input(view, x)
    s.output_codes(view, "out_zero_point")
    return [x.shape]


def _lut(view: OpView) -> list[tuple]:
    x, table, *rows = view.inputs
    entries = 2 ** view.attrs["bits"]
    if rows:
        count, _ = s.axes(table, "(rows, entries)")
        s.shape_is(table, (count, entries), f"R tables of 2**bits = {entries} entries")
        s.shape_is(rows[0], (s.channels(x),), f"C, one table row per channel of {x.name!r}")
        low, high = rows[0].bounds
        if low < 0 or high >= count:
            raise s.operand_error(rows[0], f"rows in [0, {count - 1}] (the tables of {table.name!r})",
                                  f"value {low if low < 0 else high}")
    else:
        s.shape_is(table, (entries,), f"2**bits = {entries} entries")
    s.declared_input(view, x)
    s.output_holds(view, *table.bounds, f"the entries of {table.name!r}")
    return [x.shape]


def _execute_layernorm(be, a, x, alpha, multiplier, bias, shift):
    return be.ops.ptf_layernorm(x, zero_point=a["zero_point"], alpha=alpha, multiplier=multiplier, bias=bias,
                                shift=shift, out_zero_point=a["out_zero_point"], qmin=a["qmin"], qmax=a["qmax"],
                                bits=a["bits"], signed=a["signed"], rounding=a["rounding"])


def _execute_lut(be, a, x, table, rows=None):
    return be.ops.lut_lookup(x, table, bits=a["bits"], signed=a["signed"], rows=rows)


_LAYERNORM_STEPS = ("x_hat", "S1", "S2", "D", "sigma", "inv", "t", "t_inv", "n", "affine", "rounded")


def _layernorm_report(report, program, op, inputs, outputs):
    from intsim.ops.layernorm import NORM_FRACTION_BITS, RECIPROCAL_BITS, layernorm_steps, normalized_bound

    q, alpha, multiplier, bias, shift = (np.asarray(v).astype(np.int64) for v in inputs)
    a = op.attrs
    channels = q.shape[-1]
    x_bound = span(program.tensors[op.inputs[0]], a["zero_point"]) << int(alpha.max())
    n_bound = normalized_bound(channels)
    affine_bound = n_bound * np.abs(multiplier.astype(object)) + np.abs(bias.astype(object))
    steps = layernorm_steps(q, a["zero_point"], alpha, multiplier, bias, shift, a["out_zero_point"], a["rounding"])
    bounds = {
        "x_hat": (x_bound, True), "S1": (channels * x_bound, True), "S2": (channels * x_bound**2, False),
        "D": ((channels * x_bound) ** 2, False), "sigma": (channels * x_bound, False),
        "inv": (1 << RECIPROCAL_BITS, False), "t": (2 * channels * x_bound, True),
        "t_inv": (n_bound << (RECIPROCAL_BITS - NORM_FRACTION_BITS), True), "n": (n_bound, True),
        "affine": (int(np.max(affine_bound)), True),
        "rounded": (shifted_bound(affine_bound, shift) + abs(a["out_zero_point"]), True),
    }
    for name in _LAYERNORM_STEPS:
        bound, signed = bounds[name]
        report.add(name, steps[name], bound=bound, signed=signed)
    return clipped(report, steps["rounded"], a)


def _lut_report(report, program, op, inputs, outputs):
    a = op.attrs
    qmin = s.int_range(a["bits"], a["signed"])[0]
    report.add("index", np.asarray(inputs[0]).astype(np.int64) - qmin, bound=2 ** a["bits"] - 1, signed=False)
    return None


KINDS = (
    OpKind("LayerNorm",
           OpSchema("LayerNorm", (Operand("x"), Operand("alpha", constant=True, values=s.PTF_ALPHA), MULTIPLIER,
                                  Operand("bias", constant=True), SHIFT),
                    (s.int_attribute("zero_point", s.INT64), s.int_attribute("out_zero_point", s.INT32),
                     *OUTPUT_CODES, s.int_attribute("bits", (1, s.LAYERNORM_INPUT_BITS)), SIGNED, ROUNDING),
                    _layernorm,
                    checks=f"C <= 2**14; constants (1,) or (C,); {DECLARED_INPUT}; qmin <= out_zero_point <= qmax "
                           "within the output's declared range"),
           execute=_execute_layernorm, function="ptf_layernorm",
           summary="x, alpha, multiplier, bias, shift -> codes (the input's channel c scaled by 2**alpha[c])",
           intermediates=_LAYERNORM_STEPS, recompute=_layernorm_report),
    OpKind("Lut",
           OpSchema("Lut", (Operand("x"), Operand("table", constant=True), Operand("rows", constant=True,
                                                                                  optional=True)),
                    (s.int_attribute("bits", (1, s.LUT_BITS)), SIGNED), _lut,
                    checks="table (2**bits,), or (R, 2**bits) with rows (C,) in [0, R); bits/signed hold x's "
                           "declared range; the output holds the table's values"),
           execute=_execute_lut, function="lut_lookup",
           summary="x, table[, rows (C,)] -> codes (with rows: a 2-D table, row rows[c] for channel c)",
           intermediates=("index",), recompute=_lut_report),
)
