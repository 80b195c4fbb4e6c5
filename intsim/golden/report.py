"""``intsim report``: the accumulator-width report. For every op of a Program run on images: the largest |value|
each accumulator and intermediate reached, the bits that needs, the bits the Program declares (or the bound the
op proves from the declared input widths and the constants), and saturation counts at each end.

The interpreter's trace shows op inputs and outputs only; the intermediates inside an op (a requantization's
product, LayerNorm's ``S1``/``S2``/``D``/``sigma``/reciprocal, softmax's exp values and row sums, a residual add's
two terms, ...) are recomputed from the op's inputs by its kind's ``recompute`` (:mod:`intsim.kinds`), step by
step as ``docs/semantics.md`` states them, with the same public helpers as the references
(``rounding_shift_right_reference``, ``int_exp_reference``, ``log_round_reference``; LayerNorm's steps come from
``intsim.ops.layernorm.layernorm_steps``, which its reference itself runs). Each recomputation ends in the op's
output, which must equal the traced one (``RuntimeError`` otherwise), so the report cannot drift from the semantics
unnoticed.

Quantities (all exact integers; floats only in the printed table): each op kind's ``intermediates`` and its
``recompute`` function in the registry :mod:`intsim.kinds` (the table of ``docs/program.md`` lists them), e.g.
    Linear, AttentionScores, (Lis)AttentionValues   ``partial_sum_bound``: per output element, the sum of |terms|
        (+ |bias|), which bounds every partial sum in any accumulation order (two's complement wraps back, so the
        output's width is what an accumulator needs; this is for information)
    Requantize        ``product = acc * M``, ``rounded = round_shift(product, k) + zp`` (before saturation)
    ResidualAdd       ``a_term``, ``b_term``, ``sum``, ``rounded``
    LayerNorm         ``x_hat``, ``S1``, ``S2``, ``D``, ``sigma``, ``inv``, ``t``, ``t_inv``, ``n``, ``affine``, ``rounded``
    LogIntSoftmax     ``gap = x - max``, ``e``, ``S``, ``R``; UniformSoftmax ``gap``, ``e``, ``S``, ``numerator``
    Lut               ``index = x - qmin``
Saturation: Requantize, ResidualAdd, LayerNorm count values of ``rounded`` below ``qmin`` / above ``qmax``
(``clipped``); the softmaxes count output codes at the ends of their range (Log-Int-Softmax: 0 = probability 1
and 16 = probability 0; uniform: 0 and ``2**out_bits - 1``). A kind without a ``recompute`` shows its outputs only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from intsim.golden.formats import width_of_range
from intsim.kinds.registry import get_op_kind
from intsim.program import Program

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


class AccumulatorReport:
    """Collects the report over batches: pass :meth:`trace` as the interpreter's trace hook."""

    def __init__(self, program: Program):
        self.program = program
        self.ops = {op.name: OpReport(op.name, op.kind) for op in program.ops}
        self.images = 0

    def trace(self, op, inputs, outputs) -> None:
        report = self.ops[op.name]
        recompute = get_op_kind(op.kind).recompute
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
