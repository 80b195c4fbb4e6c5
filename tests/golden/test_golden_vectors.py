"""``intsim vectors``: every op of intsim.ops gets a suite that replays through its reference from the files and
the manifest alone; the corner cases are what their labels say (checked against exact arithmetic); determinism."""

from __future__ import annotations

import numpy as np
import pytest
from golden_helpers import (
    COMMITTED,
    distinguishing_ties,
    exact_values,
    expected_codes,
    message_lines,
    read_roles,
    tie_classes,
    tree_bytes,
)

from intsim.cli import main
from intsim.golden.cases import SUITES, takes_rounding
from intsim.golden.manifest import INPUT_ROLES, read_manifest
from intsim.golden.vectors import build_cases, load_cases, write_vectors
from intsim.ops import OPS, ROUNDING_MODES, ZERO_CODE
from intsim.ops.softmax import log_round_reference

MODES = tuple(ROUNDING_MODES)


def test_every_registered_op_has_a_suite():
    assert set(SUITES) == {spec.name for spec in OPS}


@pytest.fixture(scope="module")
def suites(tmp_path_factory):
    """Every op's suite (2 random cases; an op that rounds: half_even) written once, in all three formats."""
    root = tmp_path_factory.mktemp("vectors")
    for spec in OPS:
        mode = "half_even" if takes_rounding(spec.name) else None
        write_vectors(spec.name, root / spec.name, count=2, seed=1, rounding=mode, progress=False)
    return root


@pytest.mark.parametrize("fmt", ["npy", "hex", "bin"])
def test_suites_replay_through_the_reference_from_files_and_manifest(suites, fmt):
    for spec in OPS:
        cases = load_cases(suites / spec.name, fmt)
        manifest = read_manifest(suites / spec.name)
        assert manifest["op"] == spec.name and len(cases) == len(manifest["cases"]) >= 5
        assert [c["label"] for c in manifest["cases"]][-2:] == ["random", "random"]
        for entry, kwargs, expected in cases:
            assert (entry["kind"], entry["function"]) == (SUITES[spec.name].kind, spec.name)
            assert entry["rounding"] == manifest["rounding"] == kwargs.get("rounding")
            np.testing.assert_array_equal(spec.reference(**kwargs), expected, err_msg=f"{spec.name} {entry['name']}")


def test_suites_use_the_program_kinds_roles_and_zero_points(suites):
    """One vocabulary with golden/e2e: Program kinds and roles, and each operand's zero point on its record."""
    for spec in OPS:
        manifest = read_manifest(suites / spec.name)
        suite = SUITES[spec.name]
        for entry in manifest["ops"]:
            if entry["kind"] in INPUT_ROLES:
                assert set(entry["inputs"]) - {"mask"} <= set(INPUT_ROLES[entry["kind"]]), entry["name"]  # + suite mask
            assert entry["outputs"] == {"out": f"{entry['name']}.out"}
            for argument, attribute in suite.zero_points.items():
                role = "out" if argument == "out" else suite.role(argument)
                name = entry["outputs"]["out"] if role == "out" else entry["inputs"][role]
                assert manifest["tensors"][name]["zero_point"] == entry["attrs"][attribute], (name, attribute)
    lis = read_manifest(suites / "log_int_softmax")["ops"][0]
    assert set(lis["attrs"]) >= {"x0", "b_int", "c_int", "n", "zero_point"}  # the Program's LogIntSoftmax attributes
    with pytest.raises(ValueError, match="isqrt does not round"):
        build_cases("isqrt", 0, 0, "half_up")
    with pytest.raises(ValueError, match="unknown rounding mode 'nearest'"):
        build_cases("requantize", 0, 0, "nearest")


ROUNDING_SUITES = [(op, mode) for op in ("requantize", "residual_add", "ptf_layernorm") for mode in ROUNDING_MODES]


@pytest.mark.parametrize("op,mode", ROUNDING_SUITES)
def test_committed_tie_cases_hold_32_exact_ties_of_every_class(op, mode):
    """Counted with exact rationals from the committed files: at least 32 ties, of both signs and floor parities,
    unsaturated in every mode; every output of the case is the exact rounding; another mode changes it."""
    assert takes_rounding(op)
    folder = COMMITTED / "ops" / op / mode
    manifest = read_manifest(folder)
    entry = next(e for e in manifest["ops"] if e["name"].endswith(f"_ties_{mode}"))
    values = exact_values(entry["kind"], read_roles(folder, manifest, entry["inputs"]), entry["attrs"])
    out = read_roles(folder, manifest, entry["outputs"])["out"]
    np.testing.assert_array_equal(out, expected_codes(entry["kind"], values, entry["attrs"], mode))
    ties = distinguishing_ties(entry["kind"], values, entry["attrs"])
    classes = tie_classes(values, ties)
    assert ties.sum() >= 32 and len(classes) == 4 and min(classes.values()) >= 4, (op, mode, classes)
    for other in ROUNDING_MODES:
        if other != mode:
            assert (expected_codes(entry["kind"], values, entry["attrs"], other) != out).any(), (mode, other)


def test_every_op_that_rounds_has_one_suite_per_mode():
    rounding = {spec.name for spec in OPS if takes_rounding(spec.name)}
    assert rounding == {"requantize", "residual_add", "ptf_layernorm"}
    assert {op for op, _ in ROUNDING_SUITES} == rounding
    for op in rounding:
        for mode in MODES:
            cases = build_cases(op, 2, 0, mode)
            assert cases[0].label == f"ties_{mode}" and all(case.kwargs["rounding"] == mode for case in cases)
    same = [np.asarray(case.kwargs[SUITES["requantize"].inputs[0]]).tolist() for mode in MODES
            for case in build_cases("requantize", 2, 0, mode)[-2:]]
    assert same[0:2] == same[2:4] == same[4:6]  # the random cases of the modes differ only in their rounding


def _outputs(op: str) -> dict[str, tuple[dict, np.ndarray]]:
    spec = next(s for s in OPS if s.name == op)
    mode = {"rounding": "half_up"} if takes_rounding(op) else {}
    return {case.label: (case.kwargs, np.asarray(spec.kernel(**case.kwargs))) for case in build_cases(op, 0, 0, **mode)}


def test_saturation_corners_reach_both_ends():
    for op in ("requantize", "residual_add", "ptf_layernorm"):
        kwargs, out = _outputs(op)["saturation_both_ends"]
        assert out.min() == kwargs["qmin"] and out.max() == kwargs["qmax"], op


def test_layernorm_zero_variance_rows_are_constant_per_channel():
    for label in ("zero_variance_rows", "single_channel"):
        kwargs, out = _outputs("ptf_layernorm")[label]
        assert (out == out[0]).all(), label


def test_softmax_corner_rows():
    lis, uniform = _outputs("log_int_softmax"), _outputs("uniform_int_softmax")
    kwargs, codes = lis["equal_rows_lengths_1_to_48"]
    lengths = kwargs["mask"].sum(axis=1)
    for row, length in zip(codes, lengths):
        assert (row[:length] == log_round_reference(np.array([length]))[0]).all() and (row[length:] == ZERO_CODE).all()
    _, p = uniform["equal_rows_lengths_1_to_48"]
    assert p[1, :2].tolist() == [128, 128]  # 255 / 2 = 127.5: the tie goes up
    for name, outputs, top, rest in (("lis", lis, 0, ZERO_CODE), ("uniform", uniform, 255, 0)):
        kwargs, out = outputs["one_hot_rows"]
        hot = kwargs["q"] == kwargs["q"].max(axis=1, keepdims=True)
        assert (out[hot] == top).all() and (out[~hot] == rest).all(), name
        kwargs, out = outputs["masked_rows_one_fully_masked"]
        assert (out[3] == rest).all() and (out[~kwargs["mask"]] == rest).all(), name


def test_two_runs_are_identical_and_the_seed_matters(tmp_path):
    for name in ("a", "b"):
        write_vectors("residual_add", tmp_path / name, count=3, seed=7, progress=False)
    write_vectors("residual_add", tmp_path / "c", count=3, seed=8, progress=False)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b") != tree_bytes(tmp_path / "c")


def test_cli_and_bad_input(tmp_path, capsys):
    assert main(["vectors", "isqrt", "--count", "1", "--formats", "hex", "-o", str(tmp_path / "v")]) == 0
    assert "isqrt vectors" in capsys.readouterr().out
    assert {p.suffix for p in (tmp_path / "v").rglob("*.*")} == {".hex", ".json"}
    for args, expected in ((["requantise"], "unknown op 'requantise' (did you mean 'requantize'?)"),
                           (["isqrt", "--count", "-1"], "--count and --seed must be at least 0"),
                           (["isqrt"], "exists and is not an empty folder")):
        assert main(["vectors", *args, "-o", str(tmp_path / "v")]) == 2
        lines = message_lines(capsys.readouterr().err)
        assert len(lines) == 1 and expected in lines[0], lines
