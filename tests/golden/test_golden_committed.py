"""The committed regression set ``golden/``: a fresh regeneration must be byte-identical, so any change of semantics
shows up as a reviewed diff of ``golden/`` (regenerate with ``python tools/make_golden.py``)."""

from __future__ import annotations

import importlib.util
import re

import pytest
from golden_helpers import COMMITTED, REPO

from intsim.golden.manifest import read_manifest
from intsim.ops import OPS


def _make_golden():
    spec = importlib.util.spec_from_file_location("make_golden", REPO / "tools" / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regeneration_is_byte_identical_to_the_committed_set(tmp_path):
    pytest.importorskip("torch")
    make_golden = _make_golden()
    make_golden.build(tmp_path)
    differences = make_golden.tree_differences(COMMITTED, tmp_path)
    assert not differences, (f"golden/ differs from a fresh regeneration in {len(differences)} files, e.g. "
                             f"{differences[:5]}; if the change of semantics is intended, run "
                             f"python tools/make_golden.py and review git diff golden/")


def test_committed_set_is_complete_and_small():
    e2e = read_manifest(COMMITTED / "e2e")
    assert e2e["generator"] == "intsim golden" and e2e["model"] == "intsim-digits" and len(e2e["images"]) == 1
    for spec in OPS:
        assert read_manifest(COMMITTED / "ops" / spec.name)["op"] == spec.name
    size = sum(path.stat().st_size for path in COMMITTED.rglob("*") if path.is_file())
    assert size < 5 * 2**20, f"golden/ holds {size / 2**20:.1f} MiB; keep it under 5 MiB"


def test_readme_points_at_files_that_exist():
    readme = (COMMITTED / "README.md").read_text()
    paths = set(re.findall(r"golden/((?:e2e|ops)/[A-Za-z0-9_./-]+\.(?:hex|npy|bin|json))", readme))
    assert len(paths) >= 3, "golden/README.md should show real file paths in its examples"
    missing = sorted(path for path in paths if not (COMMITTED / path).is_file())
    assert not missing, f"golden/README.md names files that do not exist: {missing}"
