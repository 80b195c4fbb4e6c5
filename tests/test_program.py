"""The Program container: save/load round trip, hash stability, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest

from intsim.program import FORMAT_VERSION, Op, Program, ProgramError, TensorSpec, load_program, save_program


def tiny_program() -> Program:
    return Program(
        ops=[Op("Requantize", "head.requant", ["x", "m", "k"], ["y"], dict(zero_point=3, qmin=0, qmax=255,
                                                                            rounding="half_up"))],
        tensors={
            "x": TensorSpec(bits=32, signed=True, kind="input", shape=[4]),
            "m": TensorSpec(bits=32, signed=True, kind="constant", shape=[4]),
            "k": TensorSpec(bits=3, signed=False, kind="constant", shape=[1]),
            "y": TensorSpec(bits=8, signed=False, zero_point=3, scale=0.5, kind="output", shape=[4]),
        },
        constants={"m": np.array([1, 2, 3, 4], dtype=np.int32), "k": np.array([3], dtype=np.uint8)},
        metadata={"model": "tiny"},
    )


def test_round_trip_keeps_structure_constants_and_hash(tmp_path):
    program = tiny_program()
    path = save_program(program, tmp_path / "p.intsim")
    loaded = load_program(path)
    assert loaded.sha256() == program.sha256()
    assert loaded.ops == program.ops and loaded.tensors == program.tensors and loaded.metadata == program.metadata
    np.testing.assert_array_equal(loaded.constants["m"], program.constants["m"])
    assert loaded.constants["m"].dtype == np.int32


def test_two_saves_are_byte_identical(tmp_path):
    a = save_program(tiny_program(), tmp_path / "a.intsim").read_bytes()
    b = save_program(tiny_program(), tmp_path / "b.intsim").read_bytes()
    assert a == b


def test_hash_changes_with_any_constant_bit():
    program = tiny_program()
    before = program.sha256()
    program.constants["m"] = program.constants["m"] ^ np.array([0, 0, 1, 0], dtype=np.int32)
    assert program.sha256() != before


def test_truncated_file_is_named(tmp_path):
    path = save_program(tiny_program(), tmp_path / "p.intsim")
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ProgramError, match=r"p\.intsim: not a readable Program file"):
        load_program(path)


def test_other_version_is_named(tmp_path):
    path = save_program(tiny_program(), tmp_path / "p.intsim")
    data = path.read_bytes().replace(f'\\"version\\":{FORMAT_VERSION}}}'.encode(), b'\\"version\\":9}')
    path.write_bytes(data)
    with pytest.raises(ProgramError, match="format version 9"):
        load_program(path)


def test_missing_file_and_foreign_safetensors(tmp_path):
    with pytest.raises(ProgramError, match="no such Program file"):
        load_program(tmp_path / "absent.intsim")
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, dtype=np.int8)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ProgramError, match="not an intsim Program"):
        load_program(tmp_path / "w.safetensors")


def test_validate_rejects_reads_before_writes_and_float_constants():
    program = tiny_program()
    program.ops.insert(0, Op("Requantize", "early", ["y"], ["x"], {}))
    with pytest.raises(ProgramError, match="reads 'y' before any op writes it"):
        program.validate()
    program = tiny_program()
    program.constants["m"] = np.zeros(4, dtype=np.float32)
    with pytest.raises(ProgramError, match="integers only"):
        program.validate()


def test_failed_save_leaves_no_partial_file(tmp_path):
    program = tiny_program()
    program.tensors["ghost"] = TensorSpec(bits=8, signed=True, kind="constant")
    with pytest.raises(ProgramError):
        save_program(program, tmp_path / "p.intsim")
    assert list(tmp_path.iterdir()) == []
