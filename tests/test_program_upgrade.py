"""Format 5 split attn @ V by probability code: Programs of format 4 (and 3) still load, upgraded.

A format-4 file's checksums are verified on the structure as stored; then ``AttentionValues`` with
``probs: "lis"`` becomes ``LisAttentionValues``, with ``probs: "uniform"`` stays ``AttentionValues``, and the
attribute is dropped. The upgraded Program runs exactly as the format-5 one does.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from intsim.program import (
    FORMAT_VERSION,
    Op,
    Program,
    ProgramError,
    UncheckedProgramWarning,
    constant_sha256,
    load_program,
    save_program,
)

COMMITTED_PROGRAM = Path(__file__).resolve().parents[1] / "golden" / "programs" / "digits-fqvit-w8a8a4.intsim"
_OLD_KIND = {"LisAttentionValues": ("AttentionValues", "lis"), "AttentionValues": ("AttentionValues", "uniform")}


def downgraded(program: Program) -> Program:
    """``program`` as format 4 wrote it: attn @ V as ``AttentionValues`` with a ``probs`` attribute."""
    ops = []
    for op in program.ops:
        if op.kind in _OLD_KIND:
            kind, probs = _OLD_KIND[op.kind]
            op = dataclasses.replace(op, kind=kind, attrs={**op.attrs, "probs": probs})
        ops.append(op)
    return dataclasses.replace(program, ops=ops)


def write_old_format(program: Program, path: Path, version: int = 4, *, sha256: str | None = None) -> Path:
    """Write ``program`` (not validated: old kinds) with the envelope of format ``version`` (3: no checksums)."""
    from safetensors.numpy import save

    envelope = {"format": "intsim-program", "program": json.loads(program.structure_json()), "version": version}
    if version >= 4:
        envelope["constants_sha256"] = {name: constant_sha256(name, a) for name, a in program.constants.items()}
        envelope["sha256"] = sha256 or program.sha256()
    header = json.dumps(envelope, sort_keys=True, separators=(",", ":"))
    path.write_bytes(save({n: np.ascontiguousarray(a) for n, a in program.constants.items()}, metadata={"intsim": header}))
    return path


@pytest.fixture(scope="module")
def current() -> Program:
    return load_program(COMMITTED_PROGRAM)


def test_the_committed_program_is_format_5(current):
    data = COMMITTED_PROGRAM.read_bytes()
    envelope = json.loads(json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])["__metadata__"]["intsim"])
    assert FORMAT_VERSION == 5 and envelope["version"] == 5
    assert {op.kind for op in current.ops} >= {"LogIntSoftmax", "LisAttentionValues"}
    assert all("probs" not in op.attrs for op in current.ops)


def test_a_format_4_program_loads_upgraded_and_runs_the_same(current, tmp_path):
    from intsim.interpreter import run_program
    from intsim.models.digits import digits_heldout

    old = downgraded(current)
    assert {op.kind for op in old.ops} & {"LisAttentionValues"} == set()
    path = write_old_format(old, tmp_path / "v4.intsim")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checked format: no warning
        upgraded = load_program(path)
    assert [(op.kind, op.attrs) for op in upgraded.ops] == [(op.kind, op.attrs) for op in current.ops]
    assert upgraded.sha256() == current.sha256() != old.sha256()
    pixels = np.array(digits_heldout()[0][:2])
    np.testing.assert_array_equal(run_program(upgraded, pixels), run_program(current, pixels))
    resaved = save_program(upgraded, tmp_path / "v5.intsim")
    assert resaved.read_bytes() == save_program(current, tmp_path / "again.intsim").read_bytes()


def test_a_uniform_format_4_program_keeps_attention_values(current, tmp_path):
    uniform = [dataclasses.replace(op, kind="AttentionValues", attrs={**op.attrs, "probs": "uniform"})
               if op.kind == "LisAttentionValues" else op for op in current.ops]
    program = dataclasses.replace(current, ops=uniform)
    with pytest.raises(ProgramError):  # format 5 has no probs attribute: only the loader upgrades
        dataclasses.replace(current, ops=uniform).validate()
    upgraded = load_program(write_old_format(program, tmp_path / "v4u.intsim"))
    assert {op.kind for op in upgraded.ops if op.name.endswith("attn.values")} == {"AttentionValues"}
    assert all("probs" not in op.attrs for op in upgraded.ops)


def test_format_4_checksums_are_verified_on_the_stored_form(current, tmp_path):
    old = downgraded(current)
    # the Program hash of the upgraded structure is not the one a format-4 file records
    path = write_old_format(old, tmp_path / "wrong-hash.intsim", sha256=current.sha256())
    with pytest.raises(ProgramError, match="Program checksum mismatch"):
        load_program(path)
    edited = dataclasses.replace(old, ops=[dataclasses.replace(op, attrs={**op.attrs, "heads": 2})
                                           if op.name == "blocks.0.attn.values" else op for op in old.ops])
    path = write_old_format(edited, tmp_path / "edited.intsim", sha256=old.sha256())
    with pytest.raises(ProgramError, match="Program checksum mismatch"):
        load_program(path)
    bad = dataclasses.replace(old, ops=[dataclasses.replace(op, attrs={**op.attrs, "probs": "log"})
                                        if op.name == "blocks.0.attn.values" else op for op in old.ops])
    with pytest.raises(ProgramError, match=r"op 'blocks.0.attn.values' \(AttentionValues, format 4\): attribute "
                                           r"'probs': expected one of 'lis', 'uniform', got 'log'"):
        load_program(write_old_format(bad, tmp_path / "bad.intsim"))


def test_format_5_refuses_the_probs_attribute(current, tmp_path):
    path = write_old_format(downgraded(current), tmp_path / "v5-with-probs.intsim", version=5)
    with pytest.raises(ProgramError, match=r"\(AttentionValues\): unknown attribute 'probs'"):
        load_program(path)


def test_a_format_3_program_loads_upgraded_with_one_warning(current, tmp_path):
    path = write_old_format(downgraded(current), tmp_path / "v3.intsim", version=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        upgraded = load_program(path)
    assert [w.category for w in caught] == [UncheckedProgramWarning]
    assert upgraded.sha256() == current.sha256()


def test_op_kinds_of_a_program_built_in_python_are_not_upgraded(current):
    """The upgrade is a loader step: a Program built in memory with the old attribute is refused by validate."""
    op = next(op for op in current.ops if op.kind == "LisAttentionValues")
    old = Op("AttentionValues", op.name, op.inputs, op.outputs, {**op.attrs, "probs": "lis"})
    program = dataclasses.replace(current, ops=[old if o is op else o for o in current.ops])
    with pytest.raises(ProgramError, match="unknown attribute 'probs'"):
        program.validate()


def test_a_bad_format_4_program_is_one_line_of_every_command(current, tmp_path, capsys):
    from intsim.cli import main

    bad = dataclasses.replace(current, ops=[dataclasses.replace(op, kind="AttentionValues", attrs={**op.attrs,
                                                                                               "probs": "log"})
                                            if op.kind == "LisAttentionValues" else op for op in current.ops])
    path = write_old_format(bad, tmp_path / "bad.intsim")
    assert main(["report", str(path), "--limit", "1"]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"intsim report: error: {path}: op 'blocks.0.attn.values'"), lines
    assert "'probs': expected one of 'lis', 'uniform', got 'log'" in lines[0] and captured.out == ""
