"""``intsim report``: intermediates recomputed from the op inputs, widths against the Program's declarations and the
proven bounds, saturation counts checked against the op kernels run with a range wide enough not to saturate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from golden_helpers import message_lines

from intsim.cli import main
from intsim.golden.report import AccumulatorReport, format_report
from intsim.interpreter import run_program
from intsim.models.digits import digits_heldout
from intsim.ops import ptf_layernorm, requantize, residual_add
from intsim.program import load_program

IMAGES = 16
WIDE = dict(qmin=-(2**31), qmax=2**31 - 1)  # a range no op output reaches: the kernels return unsaturated values


@pytest.fixture(scope="module", params=["lis", "uniform"])
def program_and_report(request):
    program = request.getfixturevalue(f"{request.param}_program")
    pixels = np.array(digits_heldout()[0][:IMAGES])
    return program, pixels, AccumulatorReport(program).run([pixels[:10], pixels[10:]], progress=False)


def _unsaturated(op, inputs) -> np.ndarray:
    """The op's value before saturation, from the kernels themselves (same attributes, a range wide enough)."""
    a = op.attrs
    if op.kind == "Requantize":
        return requantize(inputs[0], inputs[1], inputs[2], zero_point=a["zero_point"], rounding=a["rounding"], **WIDE)
    if op.kind == "ResidualAdd":
        return residual_add(inputs[0], np.broadcast_to(inputs[1], inputs[0].shape), a_zero_point=a["a_zero_point"],
                            b_zero_point=a["b_zero_point"], a_multiplier=inputs[2], b_multiplier=inputs[3],
                            shift=inputs[4], out_zero_point=a["out_zero_point"], rounding=a["rounding"], **WIDE)
    return ptf_layernorm(inputs[0], zero_point=a["zero_point"], alpha=inputs[1], multiplier=inputs[2], bias=inputs[3],
                         shift=inputs[4], out_zero_point=a["out_zero_point"], bits=a["bits"], signed=a["signed"],
                         rounding=a["rounding"], **WIDE)


def test_saturation_counts_and_rounded_ranges_match_the_kernels(program_and_report):
    program, pixels, result = program_and_report
    by_name = {op["name"]: op for op in result["ops"]}
    expected = {}

    def trace(op, inputs, outputs):
        if op.kind in ("Requantize", "ResidualAdd", "LayerNorm"):
            y = _unsaturated(op, inputs).astype(np.int64)
            low, high, lo, hi = expected.get(op.name, (0, 0, None, None))
            lo = int(y.min()) if lo is None else min(lo, int(y.min()))
            hi = int(y.max()) if hi is None else max(hi, int(y.max()))
            expected[op.name] = (low + int((y < op.attrs["qmin"]).sum()), high + int((y > op.attrs["qmax"]).sum()), lo, hi)

    run_program(program, pixels[:10], trace=trace)
    run_program(program, pixels[10:], trace=trace)
    assert len(expected) == sum(op.kind in ("Requantize", "ResidualAdd", "LayerNorm") for op in program.ops)
    clipped = 0
    for name, (low, high, lo, hi) in expected.items():
        op = by_name[name]
        assert (op["saturation"]["low"], op["saturation"]["high"]) == (low, high), name
        rounded = next(q for q in op["quantities"] if q["name"] == "rounded")
        assert (rounded["min"], rounded["max"]) == (lo, hi), name
        clipped += low + high
    assert clipped > 0  # the embedded model does saturate somewhere, so the counts are exercised


def test_widths_respect_declarations_and_proven_bounds(program_and_report):
    program, _, result = program_and_report
    assert result["images"] == IMAGES and result["program_sha256"] == program.sha256()
    assert [op["name"] for op in result["ops"]] == [op.name for op in program.ops]
    for op in result["ops"]:
        for q in op["quantities"]:
            assert q["max_abs"] is not None, (op["name"], q["name"])
            if q["bits_declared"] is not None:
                assert q["bits_needed"] <= q["bits_declared"], (op["name"], q["name"])
            if q["bound"] is not None:
                assert q["max_abs"] <= q["bound"] and q["bits_needed"] <= q["bound_bits"], (op["name"], q["name"])
    assert "over" not in format_report(result)


def test_layernorm_and_softmax_intermediates(program_and_report):
    program, pixels, result = program_and_report
    norm = next(op for op in program.ops if op.kind == "LayerNorm")
    quantities = {q["name"]: q for q in next(o for o in result["ops"] if o["name"] == norm.name)["quantities"]}
    seen = {}
    run_program(program, pixels, trace=lambda op, i, o: seen.setdefault(op.name, i) if op.name == norm.name else None)
    codes, alpha = seen[norm.name][0].astype(np.int64), seen[norm.name][1].astype(np.int64)
    x_hat = (codes - norm.attrs["zero_point"]) << alpha
    assert quantities["x_hat"]["max_abs"] == int(np.abs(x_hat).max())
    assert quantities["S2"]["max"] == int((x_hat * x_hat).sum(axis=-1).max())
    softmax = next(o for o in result["ops"] if o["kind"] in ("LogIntSoftmax", "UniformSoftmax"))
    names = [q["name"] for q in softmax["quantities"]]
    assert names[:3] == ["gap", "e", "S"] and softmax["saturation"]["elements"] > 0
    gap = next(q for q in softmax["quantities"] if q["name"] == "gap")
    assert gap["max"] == 0 and gap["min"] < 0  # x - row max is never positive


def test_cli_writes_table_and_json(lis_program_file, tmp_path, capsys):
    assert main(["report", str(lis_program_file), "--limit", "4", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "blocks.0.norm1" in out and "sigma" in out and "4 images" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["images"] == 4 and len(result["ops"]) == len(load_program(lis_program_file).ops)
    assert main(["report", str(lis_program_file), "--data", str(tmp_path / "none")]) == 2
    lines = message_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "none: no such image file or folder" in lines[0]
