"""``intsim report``: the accumulator-width report. For every op of a Program run on images: the largest |value|
each accumulator and intermediate reached, the bits that needs, the bits the Program declares (or the bound the
op proves from the declared input widths and the constants), and saturation counts at each end.

The interpreter's trace shows op inputs and outputs only; the intermediates inside an op (a requantization's
product, LayerNorm's ``S1``/``S2``/``D``/``sigma``/reciprocal, softmax's exp values and row sums, a residual add's
two terms, ...) are recomputed here from the op's inputs, step by step as ``docs/semantics.md`` states them, with
the same public helpers as the references (``rounding_shift_right_reference``, ``int_exp_reference``,
``log_round_reference``; LayerNorm's steps come from ``intsim.ops.layernorm.layernorm_steps``, which its reference
itself runs). Each recomputation ends in the op's output, which must equal
the traced one (``RuntimeError`` otherwise), so the report cannot drift from the semantics unnoticed.

Quantities (all exact integers; floats only in the printed table):
    Linear, AttentionScores, AttentionValues   the accumulator is the op's output; ``partial_sum_bound``: per
        output element, the sum of |terms| (+ |bias|), which bounds every partial sum in any accumulation order
        (two's complement wraps back, so the output's width is what an accumulator needs; this is for information)
    Requantize        ``product = acc * M``, ``rounded = round_shift(product, k) + zp`` (before saturation)
    ResidualAdd       ``a_term``, ``b_term``, ``sum``, ``rounded``
    LayerNorm         ``x_hat``, ``S1``, ``S2``, ``D``, ``sigma``, ``inv``, ``t``, ``t_inv``, ``n``, ``affine``, ``rounded``
    LogIntSoftmax     ``gap = x - max``, ``e``, ``S``, ``R``; UniformSoftmax ``gap``, ``e``, ``S``, ``numerator``
    Lut               ``index = x - qmin``
Saturation: Requantize, ResidualAdd, LayerNorm count values of ``rounded`` below ``qmin`` / above ``qmax``
(``clipped``); the softmaxes count output codes at the ends of their range (LIS: 0 = probability 1 and 16 =
probability 0; uniform: 0 and ``2**out_bits - 1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from intsim.golden.formats import width_of_range
from intsim.ops import ZERO_CODE, integer_matmul
from intsim.ops.layernorm import NORM_FRACTION_BITS, RECIPROCAL_BITS, layernorm_steps, normalized_bound
from intsim.ops.matmul import shifted_linear_input
from intsim.ops.rounding import rounding_shift_right_reference
from intsim.ops.softmax import LIS_VALUE_SHIFT, IExpConstants, int_exp_reference, log_round_reference
from intsim.program import Program, TensorSpec

__all__ = ["AccumulatorReport", "format_report"]


@dataclass
class Quantity:
    """Running range of one accumulator or intermediate; ``declared``: the Program's width, ``bound``: proven."""

    signed: bool = True  # False for quantities that cannot be negative (sums of squares, exp values, ...)
    low: int | None = None
    high: int | None = None
    declared: tuple[int, bool] | None = None
    bound: int | None = None

    def update(self, array) -> None:
        array = np.asarray(array)
        if array.size:
            low, high = int(array.min()), int(array.max())
            self.low = low if self.low is None else min(self.low, low)
            self.high = high if self.high is None else max(self.high, high)

    def _width(self, low: int, high: int) -> int:
        return width_of_range(min(low, -1) if self.signed else low, high)[0]

    def as_json(self, name: str) -> dict:
        reached = self.low is not None
        return {
            "name": name, "signed": self.signed, "min": self.low, "max": self.high,
            "max_abs": max(abs(self.low), abs(self.high)) if reached else None,
            "bits_needed": self._width(self.low, self.high) if reached else None,
            "bits_declared": self.declared and self.declared[0], "bound": self.bound,
            "bound_bits": None if self.bound is None else self._width(-self.bound if self.signed else 0, self.bound),
        }


@dataclass
class OpReport:
    name: str
    kind: str
    quantities: dict[str, Quantity] = field(default_factory=dict)
    saturation: dict | None = None  # {"meaning", "low_code", "high_code", "low", "high", "elements"}

    def add(self, name: str, array, *, declared=None, bound=None, signed=True) -> None:
        if declared is not None:
            signed = declared[1]
        quantity = self.quantities.setdefault(name, Quantity(signed=signed, declared=declared, bound=bound))
        quantity.update(array)

    def count(self, meaning: str, low_code: int, high_code: int, low: int, high: int, elements: int) -> None:
        if self.saturation is None:
            self.saturation = {"meaning": meaning, "low_code": low_code, "high_code": high_code, "low": 0, "high": 0,
                               "elements": 0}
        self.saturation["low"] += low
        self.saturation["high"] += high
        self.saturation["elements"] += elements


# ------------------------------------------------------------------------------------------------ helpers
def _span(spec: TensorSpec, zero_point: int) -> int:
    """The largest ``|code - zero_point|`` over the declared code range."""
    return max(zero_point - spec.qmin, spec.qmax - zero_point)


def _max_abs(array) -> int:
    array = np.asarray(array)
    return max(abs(int(array.min())), abs(int(array.max()))) if array.size else 0


def _shifted_bound(value_bound: np.ndarray, shift: np.ndarray) -> int:
    """The largest ``|round_shift(v, k)|`` for ``|v| <= value_bound`` (per channel, exact Python ints)."""
    bounds = np.broadcast_arrays(np.asarray(value_bound, dtype=object), np.asarray(shift, dtype=object))
    return max(((int(v) + ((1 << int(k)) >> 1)) >> int(k)) for v, k in zip(bounds[0].ravel(), bounds[1].ravel()))


def _clipped(report: OpReport, rounded: np.ndarray, attrs: dict) -> np.ndarray:
    qmin, qmax = attrs["qmin"], attrs["qmax"]
    report.count("clipped", qmin, qmax, int((rounded < qmin).sum()), int((rounded > qmax).sum()), rounded.size)
    return np.clip(rounded, qmin, qmax)


def _heads(x: np.ndarray, heads: int) -> np.ndarray:
    batch, tokens, channels = x.shape
    return x.reshape(batch, tokens, heads, channels // heads).swapaxes(1, 2)


# ----------------------------------------------------------------------------------------- per op kind
def _linear(report, program, op, inputs, outputs):
    x, weight, bias = (np.asarray(a) for a in inputs[:3])
    zp = op.attrs["x_zero_point"]
    spec = program.tensors[op.inputs[0]]
    shift = np.asarray(inputs[3]).astype(np.int64) if len(inputs) > 3 else None
    operand, operand_zp = shifted_linear_input(x, zp, shift)  # with shifts: (x - zp) << shift, zero point 0
    terms = integer_matmul(np.abs(operand.astype(np.int64) - operand_zp), np.abs(weight.astype(np.int64)).T)
    if shift is None:
        bound = weight.shape[1] * _span(spec, zp) * _max_abs(weight)
    else:  # each input channel's span times its factor, times the largest |weight| of its column
        bound = _span(spec, zp) * int((np.abs(weight.astype(np.int64)).max(axis=0, initial=0) << shift).sum())
    report.add("partial_sum_bound", terms + np.abs(bias.astype(np.int64)), bound=bound + _max_abs(bias))
    return None


def _attention_scores(report, program, op, inputs, outputs):
    q, k = (np.asarray(a).astype(np.int64) for a in inputs)
    a = op.attrs
    terms = integer_matmul(np.abs(_heads(q - a["q_zero_point"], a["heads"])),
                           np.abs(_heads(k - a["k_zero_point"], a["heads"])).swapaxes(-1, -2))
    width = q.shape[-1] // a["heads"]
    bound = width * _span(program.tensors[op.inputs[0]], a["q_zero_point"]) * _span(program.tensors[op.inputs[1]],
                                                                                    a["k_zero_point"])
    report.add("partial_sum_bound", terms, bound=bound)
    return None


def _attention_values(report, program, op, inputs, outputs):
    probs, v = np.asarray(inputs[0]).astype(np.int64), np.asarray(inputs[1]).astype(np.int64)
    a = op.attrs
    if a["probs"] == "lis":
        weights = np.where(probs < ZERO_CODE, np.int64(1) << (LIS_VALUE_SHIFT - np.minimum(probs, LIS_VALUE_SHIFT)), 0)
        largest = 1 << LIS_VALUE_SHIFT
    else:
        weights, largest = probs, program.tensors[op.inputs[0]].qmax
    terms = integer_matmul(weights, np.abs(_heads(v - a["v_zero_point"], a["heads"])))
    bound = probs.shape[-1] * _span(program.tensors[op.inputs[1]], a["v_zero_point"]) * largest
    report.add("partial_sum_bound", terms, bound=bound)
    return None


def _requantize(report, program, op, inputs, outputs):
    acc, multiplier, shift = (np.asarray(a).astype(np.int64) for a in inputs)
    a = op.attrs
    acc_bound = max(-program.tensors[op.inputs[0]].qmin, program.tensors[op.inputs[0]].qmax)
    product = acc * multiplier
    report.add("product", product, bound=acc_bound * _max_abs(multiplier))
    rounded = rounding_shift_right_reference(product, shift, a["rounding"]) + a["zero_point"]
    report.add("rounded", rounded,
               bound=_shifted_bound(acc_bound * np.abs(multiplier.astype(object)), shift) + abs(a["zero_point"]))
    return _clipped(report, rounded, a)


def _residual_add(report, program, op, inputs, outputs):
    x, y, a_multiplier, b_multiplier, shift = (np.asarray(v).astype(np.int64) for v in inputs)
    a = op.attrs
    y = np.broadcast_to(y, x.shape)
    a_span = _span(program.tensors[op.inputs[0]], a["a_zero_point"])
    b_span = _span(program.tensors[op.inputs[1]], a["b_zero_point"])
    a_term, b_term = (x - a["a_zero_point"]) * a_multiplier, (y - a["b_zero_point"]) * b_multiplier
    total = a_term + b_term
    sum_bound = a_span * np.abs(a_multiplier.astype(object)) + b_span * np.abs(b_multiplier.astype(object))
    report.add("a_term", a_term, bound=a_span * _max_abs(a_multiplier))
    report.add("b_term", b_term, bound=b_span * _max_abs(b_multiplier))
    report.add("sum", total, bound=int(np.max(sum_bound)))
    rounded = rounding_shift_right_reference(total, shift, a["rounding"]) + a["out_zero_point"]
    report.add("rounded", rounded, bound=_shifted_bound(sum_bound, shift) + abs(a["out_zero_point"]))
    return _clipped(report, rounded, a)


def _layernorm(report, program, op, inputs, outputs):
    q, alpha, multiplier, bias, shift = (np.asarray(v).astype(np.int64) for v in inputs)
    a = op.attrs
    channels = q.shape[-1]
    x_bound = _span(program.tensors[op.inputs[0]], a["zero_point"]) << int(alpha.max())
    n_bound = normalized_bound(channels)
    affine_bound = n_bound * np.abs(multiplier.astype(object)) + np.abs(bias.astype(object))
    steps = layernorm_steps(q, a["zero_point"], alpha, multiplier, bias, shift, a["out_zero_point"], a["rounding"])
    rounded = steps["rounded"]
    for name, bound, signed in (
        ("x_hat", x_bound, True), ("S1", channels * x_bound, True), ("S2", channels * x_bound**2, False),
        ("D", (channels * x_bound) ** 2, False), ("sigma", channels * x_bound, False),
        ("inv", 1 << RECIPROCAL_BITS, False), ("t", 2 * channels * x_bound, True),
        ("t_inv", n_bound << (RECIPROCAL_BITS - NORM_FRACTION_BITS), True), ("n", n_bound, True),
        ("affine", int(np.max(affine_bound)), True),
        ("rounded", _shifted_bound(affine_bound, shift) + abs(a["out_zero_point"]), True),
    ):
        value = steps[name]
        report.add(name, value, bound=bound, signed=signed)
    return _clipped(report, rounded, a)


def _softmax_exp(report, program, op, logits):
    a = op.attrs
    constants = IExpConstants(x0=a["x0"], b_int=a["b_int"], c_int=a["c_int"], n=a["n"])
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


def _log_int_softmax(report, program, op, inputs, outputs):
    e, total, total_bound = _softmax_exp(report, program, op, inputs[0])
    rounded = np.where(e > 0, (total + (e >> 1)) // np.where(e > 0, e, 1), 1)
    report.add("R", rounded, bound=total_bound, signed=False)
    exponent = log_round_reference(rounded)
    codes = np.where((e > 0) & (exponent <= 15), exponent, ZERO_CODE)
    report.count("codes at the ends (0: probability 1, 16: probability 0)", 0, ZERO_CODE, int((codes == 0).sum()),
                 int((codes == ZERO_CODE).sum()), codes.size)
    return codes


def _uniform_softmax(report, program, op, inputs, outputs):
    e, total, total_bound = _softmax_exp(report, program, op, inputs[0])
    levels, full = 2 ** op.attrs["out_bits"] - 1, op.attrs["full_scale"]
    numerator = e * full + (total >> 1)
    report.add("numerator", numerator, bound=(total_bound // e.shape[-1]) * full + (total_bound >> 1), signed=False)
    p = np.minimum(numerator // np.maximum(total, 1), levels)
    report.count("codes at the ends of [0, 2**out_bits - 1]", 0, levels, int((p == 0).sum()), int((p == levels).sum()),
                 p.size)
    return p


def _lut(report, program, op, inputs, outputs):
    a = op.attrs
    qmin = -(2 ** (a["bits"] - 1)) if a["signed"] else 0
    report.add("index", np.asarray(inputs[0]).astype(np.int64) - qmin, bound=2 ** a["bits"] - 1, signed=False)
    return None


_INTERMEDIATES = {
    "Linear": _linear, "AttentionScores": _attention_scores, "AttentionValues": _attention_values,
    "Requantize": _requantize, "ResidualAdd": _residual_add, "LayerNorm": _layernorm,
    "LogIntSoftmax": _log_int_softmax, "UniformSoftmax": _uniform_softmax, "Lut": _lut,
}


class AccumulatorReport:
    """Collects the report over batches: pass :meth:`trace` as the interpreter's trace hook."""

    def __init__(self, program: Program):
        self.program = program
        self.ops = {op.name: OpReport(op.name, op.kind) for op in program.ops}
        self.images = 0

    def trace(self, op, inputs, outputs) -> None:
        report = self.ops[op.name]
        recompute = _INTERMEDIATES.get(op.kind)
        expected = recompute(report, self.program, op, inputs, outputs) if recompute else None
        if expected is not None and not np.array_equal(expected, np.asarray(outputs[0])):
            raise RuntimeError(f"intsim report: the recomputed intermediates of op {op.name!r} ({op.kind}) do not give "
                               f"its output; report.py has drifted from docs/semantics.md")
        for name, value in zip(op.outputs, outputs):
            spec = self.program.tensors[name]
            report.add(f"output {name}", value, declared=(spec.bits, spec.signed))

    def run(self, batches, progress: bool = True) -> dict:
        """Run every uint8 pixel batch through the Program with this trace; return :meth:`as_json`."""
        from tqdm.auto import tqdm

        from intsim.interpreter import run_program

        for pixels in tqdm(batches, desc="report", unit="batch", disable=not progress):
            run_program(self.program, pixels, trace=self.trace)
            self.images += len(pixels)
        if not self.images:
            raise ValueError("intsim report: no images")
        return self.as_json()

    def as_json(self) -> dict:
        return {
            "program_sha256": self.program.sha256(), "images": self.images,
            "ops": [{"name": r.name, "kind": r.kind, "saturation": r.saturation,
                     "quantities": [q.as_json(name) for name, q in r.quantities.items()]} for r in self.ops.values()],
        }


def format_report(result: dict) -> str:
    """The human-readable table: one line per quantity, op by op; 'over' marks a quantity needing more bits than
    declared (or than its proven bound)."""
    header = f"{'op':<30} {'kind':<15} {'quantity':<34} {'max |value|':>20} {'bits':>5} {'declared':>8} {'bound':>6}  saturation"
    lines = [header]
    for op in result["ops"]:
        saturation = op["saturation"]
        sat_text = ""
        if saturation:
            total = saturation["elements"] or 1
            sat_text = (f"{saturation['low']} at {saturation['low_code']} / {saturation['high']} at "
                        f"{saturation['high_code']} of {saturation['elements']} ({100 * (saturation['low'] + saturation['high']) / total:.2f} %)")
        for index, q in enumerate(op["quantities"]):
            if q["max_abs"] is None:
                continue
            bits = f"{q['bits_needed']}{'s' if q['signed'] else 'u'}"
            limit = q["bits_declared"] or q["bound_bits"]
            flag = " over" if limit is not None and q["bits_needed"] > limit else ""
            lines.append(f"{op['name'] if index == 0 else '':<30} {op['kind'] if index == 0 else '':<15} "
                         f"{q['name']:<34} {q['max_abs']:>20} {bits:>5} {q['bits_declared'] or '':>8} "
                         f"{q['bound_bits'] or '':>6}  {sat_text if index == 0 else ''}{flag}".rstrip())
    lines.append("")
    lines.append(f"{result['images']} images; bits: the width the reached range needs (s: signed); declared: the "
                 f"Program's width; bound: the width of the bound the op proves")
    return "\n".join(lines)
