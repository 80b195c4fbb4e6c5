"""golden/ties/<mode>/: a hand-built Program whose LayerNorm, Requantize and ResidualAdd outputs are exact ties, so
a DUT that rounds another way fails, and ``intsim diff`` names the first op with a tie and a tie element. Also the
tie construction itself (:mod:`intsim.golden.ties`), checked with exact rationals."""

from __future__ import annotations

import math
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from golden_helpers import (
    COMMITTED,
    distinguishing_ties,
    exact_values,
    expected_codes,
    read_roles,
    tie_classes,
)

from intsim.golden.diff import diff_trees
from intsim.golden.manifest import read_manifest
from intsim.golden.ties import TIE_SOURCE, is_tie, tie_operand, tie_pixels, tie_program
from intsim.golden.writer import write_golden
from intsim.ops import ROUNDING_MODES

ROUNDING_KINDS = ("LayerNorm", "Requantize", "ResidualAdd")


def _tie_elements(folder: Path, manifest: dict, entry: dict) -> tuple[np.ndarray, np.ndarray]:
    """(exact values, distinguishing-tie mask) of one rounding op of a golden tree."""
    values = exact_values(entry["kind"], read_roles(folder, manifest, entry["inputs"]), entry["attrs"])
    return values, distinguishing_ties(entry["kind"], values, entry["attrs"])


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_every_rounding_op_output_of_the_committed_tie_tree_is_an_exact_tie(mode):
    folder = COMMITTED / "ties" / mode
    manifest = read_manifest(folder)
    assert manifest["program_sha256"] == tie_program(mode).sha256() and manifest["rounding"] == mode
    rounding_ops = [entry for entry in manifest["ops"] if entry["rounding"] is not None]
    assert [entry["kind"] for entry in rounding_ops] == list(ROUNDING_KINDS)
    for entry in rounding_ops:
        values, ties = _tie_elements(folder, manifest, entry)
        out = read_roles(folder, manifest, entry["outputs"])["out"]
        np.testing.assert_array_equal(out, expected_codes(entry["kind"], values, entry["attrs"], mode))
        classes = tie_classes(values, ties)
        assert ties.all() and ties.size >= 128, (entry["name"], int(ties.sum()))
        assert len(classes) == 4 and min(classes.values()) >= 8, (entry["name"], classes)


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_a_dut_rounding_another_way_is_caught_at_the_first_op_with_a_tie(mode, tmp_path):
    golden = COMMITTED / "ties" / mode
    manifest = read_manifest(golden)
    first_tie_op = next(entry for entry in manifest["ops"]
                        if entry["rounding"] is not None and _tie_elements(golden, manifest, entry)[1].any())
    values, ties = _tie_elements(golden, manifest, first_tie_op)
    for other in ROUNDING_MODES:
        if other == mode:
            continue
        regenerated = tmp_path / other
        write_golden(tie_program(other), [(TIE_SOURCE, tie_pixels())], regenerated, progress=False)
        dut = tmp_path / f"dut_{other}"  # what a DUT rounding the `other` way dumps: the files, no manifest
        shutil.copytree(regenerated, dut, ignore=shutil.ignore_patterns("manifest.json"))
        result = diff_trees(golden, dut)
        first = result["first_mismatch"]
        assert first is not None and first["op"] == first_tie_op["name"] == "norm", (mode, other, first)
        index = tuple(first["index"])
        assert ties[index], f"{mode} vs {other}: first differing element {index} is no tie"
        value = values[index]
        assert value - math.floor(value) == Fraction(1, 2)
        assert (first["golden"], first["dut"]) == tuple(
            int(expected_codes("LayerNorm", np.array([value], dtype=object), first_tie_op["attrs"], m)[0])
            for m in (mode, other)), value


def test_the_tie_programs_are_deterministic_and_differ_only_in_rounding():
    programs = {mode: tie_program(mode) for mode in ROUNDING_MODES}
    assert tie_program("half_even").sha256() == programs["half_even"].sha256()
    first, *others = programs.values()
    for program in others:
        assert program.constants.keys() == first.constants.keys()
        assert all(np.array_equal(program.constants[name], first.constants[name]) for name in first.constants)
        assert [(op.kind, op.name, op.inputs, op.outputs) for op in program.ops] == \
               [(op.kind, op.name, op.inputs, op.outputs) for op in first.ops]
        assert [{k: v for k, v in op.attrs.items() if k != "rounding"} for op in program.ops] == \
               [{k: v for k, v in op.attrs.items() if k != "rounding"} for op in first.ops]
    assert tie_pixels().dtype == np.uint8 and tie_pixels().shape == (3, 8, 8)


@pytest.mark.parametrize("base,multiplier,shift", [(0, 1, 1), (0, 3 << 29, 32), (17 * (15 << 20), 1 << 20, 24),
                                                   (-5 * (33 << 25), -(3 << 25), 30), (0, 1 << 30, 40)])
def test_tie_operand_solves_exactly_near_the_target(base, multiplier, shift):
    for target in (-9, -2, 0, 3, 1000):
        y = tie_operand(base, multiplier, shift, target)
        value = Fraction(base + y * multiplier, 2**shift)
        assert is_tie(base + y * multiplier, shift) and value - (value.numerator // value.denominator) == Fraction(1, 2)
        assert abs(value - target - Fraction(1, 2)) <= Fraction(abs(multiplier), 2 * math.gcd(multiplier, 2**shift))
    with pytest.raises(ValueError, match="no y makes"):
        tie_operand(1, 2, 3, 0)  # 1 + 2y is odd: never 4 mod 8
