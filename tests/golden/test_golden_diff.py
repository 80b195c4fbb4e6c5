"""``intsim diff``: a single flipped bit in any op's output is reported at exactly that op, for every op kind;
equal trees give exit 0; every bad input gives exit 2 with one line naming the file (and line)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from golden_helpers import message_lines

from intsim.cli import main
from intsim.golden.manifest import read_manifest
from intsim.kinds import BUILTIN_KINDS


def _npy_dut(golden: Path, dut: Path) -> Path:
    """A DUT holding only the npy files of ``golden`` (a DUT may hold any subset)."""
    for path in golden.rglob("*.npy"):
        target = dut / path.relative_to(golden)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return dut


def _diff(golden, dut, tmp_path, capsys) -> tuple[int, dict]:
    report = tmp_path / "diff.json"
    status = main(["diff", str(golden), str(dut), "--json", str(report)])
    capsys.readouterr()
    return status, json.loads(report.read_text())


def _first_op_of_each_kind(manifest: dict) -> dict[str, dict]:
    found = {}
    for op in manifest["ops"]:
        found.setdefault(op["kind"], op)
    return found


def test_a_flipped_bit_is_reported_at_exactly_that_op_for_every_op_kind(lis_golden, uniform_golden, adalog_golden,
                                                                       tmp_path, capsys):
    covered = set()
    rng = np.random.default_rng(0)
    for golden in (lis_golden, uniform_golden, adalog_golden):  # UniformSoftmax, then the log-domain kinds
        manifest = read_manifest(golden)
        dut = _npy_dut(golden, tmp_path / f"dut_{golden.parent.name}")
        for kind, op in _first_op_of_each_kind(manifest).items():
            if kind in covered:
                continue
            tensor = list(op["outputs"].values())[-1]
            path = dut / manifest["tensors"][tensor]["files"]["npy"][0]
            original = path.read_bytes()
            array = np.load(path)
            index = tuple(int(rng.integers(side)) for side in array.shape)
            array[index] ^= 1
            np.save(path, array)
            status, result = _diff(golden, dut, tmp_path, capsys)
            path.write_bytes(original)
            assert status == 1, kind
            first = result["first_mismatch"]
            assert (first["op"], first["tensor"], first["role"]) == (op["name"], tensor, "output"), kind
            assert tuple(first["index"]) == index and abs(first["dut"] - first["golden"]) == 1
            assert result["differing_files"] == 1
            row = next(c for c in result["comparisons"] if c["mismatches"])
            assert (row["mismatches"], row["max_abs_delta"], row["above"] + row["below"]) == (1, 1, 1)
            covered.add(kind)
    assert covered == set(BUILTIN_KINDS)  # every op kind of the Program vocabulary


def test_equal_trees_exit_0_and_hex_and_bin_flips_are_found(lis_golden, tmp_path, capsys):
    dut = Path(shutil.copytree(lis_golden, tmp_path / "dut"))
    status, result = _diff(lis_golden, dut, tmp_path, capsys)
    assert status == 0 and result["first_mismatch"] is None
    assert result["compared_files"] == sum(len(p) for r in read_manifest(lis_golden)["tensors"].values()
                                           for p in r["files"].values())
    # a bit flipped in a hex line of one op and in a binary lane of a later one: the hex op is named first
    tensors = read_manifest(lis_golden)["tensors"]
    hex_path = dut / tensors["blocks.2.norm1"]["files"]["hex"][0]
    lines = hex_path.read_text().splitlines()
    lines[3] = f"{int(lines[3], 16) ^ 0x10:02x}"
    hex_path.write_text("\n".join(lines) + "\n")
    bin_path = dut / tensors["head.acc"]["files"]["bin"][0]
    data = bytearray(bin_path.read_bytes())
    data[4] ^= 0x80
    bin_path.write_bytes(bytes(data))
    status, result = _diff(lis_golden, dut, tmp_path, capsys)
    assert status == 1 and result["differing_files"] == 2
    first = result["first_mismatch"]
    assert (first["op"], first["format"], first["index"]) == ("blocks.2.norm1", "hex", [0, 3])
    head = next(c for c in result["comparisons"] if c["path"] == tensors["head.acc"]["files"]["bin"][0])
    assert head["mismatches"] == 1 and head["max_abs_delta"] == 128 and head["first_index"] == [1]


def test_table_names_the_first_mismatch(lis_golden, tmp_path, capsys):
    dut = tmp_path / "dut"
    (dut / "img0000").mkdir(parents=True)
    path = read_manifest(lis_golden)["tensors"]["embed.patches"]["files"]["npy"][0]
    array = np.load(lis_golden / path)
    array[0, 0] += 1
    np.save(dut / path, array)
    assert main(["diff", str(lis_golden), str(dut)]) == 1
    out = capsys.readouterr().out
    assert "compared 1 files, 1 differ" in out
    assert "first mismatch: op embed.add_pos (output embed.patches of img0000, npy) at index (0, 0)" in out


def _write_bad(case: str, golden: Path, dut: Path) -> tuple[Path, Path, str]:
    """Prepare a bad-input case; return (golden, dut, expected message part)."""
    dut.mkdir()
    (dut / "img0000").mkdir()
    manifest = json.loads((golden / "manifest.json").read_text())
    norm = manifest["tensors"]["blocks.0.norm1"]["files"]  # (17, 64) uint8 codes
    logits = manifest["tensors"]["head.acc"]["files"]  # (10,) int32
    if case == "no_dut":
        shutil.rmtree(dut)
        return golden, dut, f"{dut}: no such DUT folder"
    if case == "no_golden_files":
        (dut / "img0000/unrelated.npy").write_bytes(b"")
        return golden, dut, "holds none of the"
    if case == "no_manifest":
        return dut, dut, "no manifest"
    if case == "old_schema":  # a tree written before roles (schema version 1)
        old = dut.parent / "old_golden"
        old.mkdir()
        (old / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 1}))
        return old, dut, "manifest schema version 1, but this intsim reads version 2; regenerate the tree"
    if case == "wrong_shape":
        np.save(dut / norm["npy"][0], np.zeros((16, 64), dtype=np.uint8))
        return golden, dut, f"{norm['npy'][0]}: shape (16, 64), expected (17, 64)"
    if case == "malformed_hex":
        lines = (golden / norm["hex"][0]).read_text().splitlines()
        lines[6] = "0xzz"
        (dut / norm["hex"][0]).write_text("\n".join(lines) + "\n")
        return golden, dut, f"{norm['hex'][0]}: line 7: '0xzz' is not 1 to 2 hex digits"
    if case == "short_bin":
        (dut / logits["bin"][0]).write_bytes(b"\x00" * 12)
        return golden, dut, f"{logits['bin'][0]}: 12 bytes, expected 10 elements of 4 bytes"
    shutil.copyfile(golden / logits["npy"][0], dut / logits["npy"][0])
    if case == "other_program":
        manifest["program_sha256"] = "0" * 64
        expected = "is of another Program"
    else:  # missing_listed_file: a DUT manifest listing files the DUT does not have
        expected = "missing (listed in"
    (dut / "manifest.json").write_text(json.dumps(manifest))
    return golden, dut, expected


@pytest.mark.parametrize("case", ["no_dut", "no_golden_files", "no_manifest", "old_schema", "wrong_shape",
                                  "malformed_hex", "short_bin", "other_program", "missing_listed_file"])
def test_bad_input_exits_2_with_one_line_naming_the_file(lis_golden, tmp_path, capsys, case):
    golden, dut, expected = _write_bad(case, lis_golden, tmp_path / "dut")
    assert main(["diff", str(golden), str(dut), "--json", str(tmp_path / "d.json")]) == 2
    lines = message_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("intsim diff: error:") and expected in lines[0], lines
    assert not (tmp_path / "d.json").exists()


def test_a_modified_golden_file_is_refused(lis_golden, tmp_path, capsys):
    golden = Path(shutil.copytree(lis_golden, tmp_path / "golden"))
    dut = _npy_dut(golden, tmp_path / "dut")
    path = golden / read_manifest(golden)["tensors"]["head.acc"]["files"]["npy"][0]
    array = np.load(path)
    array[0] += 1
    np.save(path, array)
    assert main(["diff", str(golden), str(dut)]) == 2
    assert "does not match the SHA-256" in capsys.readouterr().err
