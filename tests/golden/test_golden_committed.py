"""The committed regression set ``golden/``: a fresh regeneration from the committed Program file must be
byte-identical, so any change of semantics shows up as a reviewed diff of ``golden/`` (regenerate with
``python tools/make_golden.py``). That re-quantizing the embedded model still gives the committed Program is
tests/test_reproducible_program.py::test_quantizing_the_embedded_model_reproduces_the_committed_program."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from golden_helpers import COMMITTED, COMMITTED_PROGRAM, REPO

from intsim.golden.cases import takes_rounding
from intsim.golden.manifest import load_schema, read_manifest
from intsim.ops import OPS, ROUNDING_MODES


def _make_golden():
    spec = importlib.util.spec_from_file_location("make_golden", REPO / "tools" / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regeneration_from_the_committed_program_is_byte_identical(tmp_path):
    make_golden = _make_golden()
    assert make_golden.E2E_PROGRAM == COMMITTED_PROGRAM
    make_golden.build(tmp_path)
    differences = make_golden.tree_differences(COMMITTED, tmp_path)
    assert not differences, (f"golden/ differs from a fresh regeneration in {len(differences)} files, e.g. "
                             f"{differences[:5]}; if the change of semantics is intended, run "
                             f"python tools/make_golden.py and review git diff golden/")


def test_build_refuses_a_missing_program(tmp_path, capsys):
    make_golden = _make_golden()
    assert make_golden.main(["--golden", str(tmp_path / "golden")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "digits-fqvit-w8a8a4.intsim is missing" in err[0] and "--requantize" in err[0]
    assert not list((tmp_path / "golden").iterdir())


def _suite_folders():
    for spec in OPS:
        modes = ROUNDING_MODES if takes_rounding(spec.name) else (None,)
        for mode in modes:
            yield spec.name, mode, COMMITTED / "ops" / spec.name / (mode or "")


def test_committed_set_is_complete_and_small():
    e2e = read_manifest(COMMITTED / "e2e")
    assert e2e["generator"] == "intsim golden" and e2e["model"] == "intsim-digits" and len(e2e["images"]) == 1
    for op, mode, folder in _suite_folders():
        manifest = read_manifest(folder)
        assert (manifest["op"], manifest["rounding"]) == (op, mode), folder
        assert all(entry["rounding"] == mode for entry in manifest["ops"]), folder
    for mode in ROUNDING_MODES:
        ties = read_manifest(COMMITTED / "ties" / mode)
        assert ties["rounding"] == mode and ties["model"] == "intsim-ties"
    size = sum(path.stat().st_size for path in COMMITTED.rglob("*") if path.is_file())
    assert size < 6 * 2**20, f"golden/ holds {size / 2**20:.1f} MiB; keep it under 6 MiB"
    tie_size = sum(path.stat().st_size for path in (COMMITTED / "ties").rglob("*") if path.is_file())
    assert tie_size < 2**18, f"golden/ties holds {tie_size / 2**10:.0f} KiB; keep it under 256 KiB"


def test_readme_points_at_files_that_exist():
    readme = (COMMITTED / "README.md").read_text()
    paths = set(re.findall(r"golden/((?:e2e|ops|ties|programs)/[A-Za-z0-9_./-]+\.(?:hex|npy|bin|json|intsim))",
                           readme))
    assert len(paths) >= 3, "golden/README.md should show real file paths in its examples"
    missing = sorted(path for path in paths if not (COMMITTED / path).is_file())
    assert not missing, f"golden/README.md names files that do not exist: {missing}"


def test_every_committed_manifest_follows_the_strict_schema():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(load_schema())
    manifests = sorted(COMMITTED.rglob("manifest.json"))
    assert len(manifests) == 1 + len(list(_suite_folders())) + len(ROUNDING_MODES)
    for path in manifests:
        validator.validate(json.loads(path.read_text()))
