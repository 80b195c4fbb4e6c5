"""``intsim vectors``: every op of intsim.ops gets a suite that replays through its reference from the files and
the manifest alone; the corner cases are what their labels say (checked against exact arithmetic); determinism."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from golden_helpers import message_lines, tree_bytes

from intsim.cli import main
from intsim.golden.cases import SUITES
from intsim.golden.manifest import read_manifest
from intsim.golden.vectors import build_cases, load_cases, write_vectors
from intsim.ops import OPS, ZERO_CODE
from intsim.ops.softmax import log_round_reference
from intsim.testing.oracles import exact_round

MODES = ("half_up", "half_even", "half_away")


def test_every_registered_op_has_a_suite():
    assert set(SUITES) == {spec.name for spec in OPS}


@pytest.fixture(scope="module")
def suites(tmp_path_factory):
    """Every op's suite (2 random cases) written once, in all three formats."""
    root = tmp_path_factory.mktemp("vectors")
    for spec in OPS:
        write_vectors(spec.name, root / spec.name, count=2, seed=1, progress=False)
    return root


@pytest.mark.parametrize("fmt", ["npy", "hex", "bin"])
def test_suites_replay_through_the_reference_from_files_and_manifest(suites, fmt):
    for spec in OPS:
        cases = load_cases(suites / spec.name, fmt)
        manifest = read_manifest(suites / spec.name)
        assert manifest["op"] == spec.name and len(cases) == len(manifest["cases"]) >= 5
        assert [c["label"] for c in manifest["cases"]][-2:] == ["random", "random"]
        for entry, kwargs, expected in cases:
            assert entry["kind"] == spec.name
            np.testing.assert_array_equal(spec.reference(**kwargs), expected, err_msg=f"{spec.name} {entry['name']}")


def _outputs(op: str) -> dict[str, tuple[dict, np.ndarray]]:
    spec = next(s for s in OPS if s.name == op)
    return {case.label: (case.kwargs, np.asarray(spec.kernel(**case.kwargs))) for case in build_cases(op, 0, 0)}


def test_rounding_ties_follow_exact_arithmetic_in_every_mode():
    requant, residual = _outputs("requantize"), _outputs("residual_add")
    for mode in MODES:
        kwargs, out = requant[f"ties_{mode}"]
        acc = kwargs["acc"].reshape(-1)
        ties = [i for i, x in enumerate(acc) if x % 4 == 2]
        assert len(ties) >= 8  # exact ties of acc / 4, of both signs
        assert out.reshape(-1).tolist() == [exact_round(Fraction(int(x), 4), mode) for x in acc]
        kwargs, out = residual[f"ties_{mode}"]
        total = (kwargs["a"].astype(int) - 128 + kwargs["b"].astype(int)).reshape(-1)
        assert out.reshape(-1).tolist() == [exact_round(Fraction(int(t), 2), mode) for t in total]
    assert requant["ties_half_up"][1].tolist() != requant["ties_half_even"][1].tolist()
    layernorm = _outputs("ptf_layernorm")
    for mode in MODES:
        kwargs, out = layernorm[f"ties_{mode}"]  # zero-variance rows: out = round(bias / 2**4)
        assert out[0].tolist() == [exact_round(Fraction(int(b), 16), mode) for b in kwargs["bias"]]


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
