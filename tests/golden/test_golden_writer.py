"""``intsim golden``: the tree, the manifest (schema, hashes, program order), the formats, determinism across runs
and numba thread counts, and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from golden_helpers import message_lines, tree_bytes

from intsim.cli import main
from intsim.golden.formats import read_tensor
from intsim.golden.manifest import INPUT_ROLES, load_schema, read_manifest
from intsim.interpreter import run_program
from intsim.models.digits import digits_heldout


def test_manifest_follows_the_shipped_schema(lis_golden):
    jsonschema = pytest.importorskip("jsonschema")
    manifest = json.loads((lis_golden / "manifest.json").read_text())
    jsonschema.Draft202012Validator.check_schema(load_schema())
    jsonschema.Draft202012Validator(load_schema()).validate(manifest)
    op, record = manifest["ops"][0], next(iter(manifest["tensors"].values()))
    for broken in (dict(manifest, ops=[{**op, "step": 0}]),
                   dict(manifest, ops=[{**op, "inputs": list(op["inputs"].values())}]),  # by position: refused
                   dict(manifest, ops=[{**op, "rounding": "nearest"}]),
                   dict(manifest, ops=[{**op, "extra": 1}]),
                   dict(manifest, tensors={"t": {**record, "role": "x"}}),
                   dict(manifest, layout={key: text for key, text in manifest["layout"].items() if key != "roles"}),
                   dict(manifest, schema_version=1)):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, load_schema())


def test_tree_holds_every_op_input_output_and_param(lis_program, lis_golden):
    manifest = read_manifest(lis_golden)
    assert manifest["program_sha256"] == lis_program.sha256()
    assert manifest["rounding"] == lis_program.metadata["rounding"] and manifest["formats"] == ["npy", "hex", "bin"]
    assert [op["name"] for op in manifest["ops"]] == [op.name for op in lis_program.ops]
    assert [op["step"] for op in manifest["ops"]] == list(range(1, len(lis_program.ops) + 1))
    written = {name for op in lis_program.ops for name in (*op.inputs, *op.outputs)}
    assert set(manifest["tensors"]) == written | set(lis_program.constants)
    for entry, op in zip(manifest["ops"], lis_program.ops):
        roles = INPUT_ROLES[op.kind]
        assert entry["inputs"] == dict(zip(roles, op.inputs)) and entry["attrs"] == op.attrs  # by role, in order
        assert list(entry["outputs"].values()) == op.outputs
        assert entry["params"] == [role for role, name in zip(roles, op.inputs) if name in lis_program.constants]
        assert entry["rounding"] == op.attrs.get("rounding")
        for role, values in entry["param_values"].items():
            assert values == lis_program.constants[entry["inputs"][role]].reshape(-1).tolist()
    luts = [op for op in manifest["ops"] if op["kind"] == "Lut"]
    for op in luts:  # the LUT contents inline: one table, or one per row of a per-channel Lut (row-major)
        rows = 1 + (max(op["param_values"]["rows"]) if "rows" in op["params"] else 0)
        assert len(op["param_values"]["table"]) == 256 * rows


def test_every_rounding_op_names_its_function_and_mode(lis_golden):
    manifest = read_manifest(lis_golden)
    functions = {op["kind"]: op["function"] for op in manifest["ops"]}
    assert functions["Requantize"] == "requantize" and functions["LayerNorm"] == "ptf_layernorm"
    assert functions["LisAttentionValues"] == "lis_attention_values" and functions["Split"] is None
    assert "AttentionValues" not in functions  # format 5: the LIS attn @ V is a kind of its own
    rounding_ops = [op for op in manifest["ops"] if "rounding" in op["attrs"]]
    assert {op["kind"] for op in rounding_ops} == {"Requantize", "ResidualAdd", "LayerNorm"}
    assert {op["rounding"] for op in rounding_ops} == {manifest["rounding"]}
    for rule in ("roles", "per_channel", "broadcast", "zero_points", "rounding", "batch_axis", "element_order"):
        assert manifest["layout"][rule], rule


def test_files_match_manifest_hashes_and_formats_agree(lis_golden, lis_program):
    manifest = read_manifest(lis_golden)
    listed = set()
    for name, record in manifest["tensors"].items():
        arrays = {}
        for fmt, paths in record["files"].items():
            (path,) = paths
            listed.add(path)
            data = (lis_golden / path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == record["sha256"][fmt][0], path
            arrays[fmt] = read_tensor(lis_golden / path, fmt, shape=record["shape"], bits=record["bits"],
                                      signed=record["signed"])
        np.testing.assert_array_equal(arrays["hex"], arrays["npy"], err_msg=name)
        np.testing.assert_array_equal(arrays["bin"], arrays["npy"], err_msg=name)
        spec = lis_program.tensors[name]
        assert (record["bits"], record["signed"], record["zero_point"]) == (spec.bits, spec.signed, spec.zero_point)
        if name in lis_program.constants:
            np.testing.assert_array_equal(arrays["npy"], lis_program.constants[name])
    on_disk = {str(p.relative_to(lis_golden)) for p in lis_golden.rglob("*") if p.is_file()}
    assert on_disk == listed | {"manifest.json"}


def test_per_image_outputs_are_the_interpreter_outputs_in_program_order(lis_golden, lis_program):
    manifest = read_manifest(lis_golden)
    traced = {}
    pixels = digits_heldout()[0][:1]
    run_program(lis_program, pixels, trace=lambda op, i, o: traced.update(zip(op.outputs, [np.array(x) for x in o])))
    for name, array in traced.items():
        path = lis_golden / manifest["tensors"][name]["files"]["npy"][0]
        np.testing.assert_array_equal(np.load(path), array[0], err_msg=name)
    np.testing.assert_array_equal(np.load(lis_golden / "img0000" / "000_pixels.npy"), pixels[0])
    listing = sorted(p.name for p in (lis_golden / "img0000").glob("*.npy"))
    steps = [manifest["tensors"][name]["step"] for name in ["pixels", *traced]]
    assert steps == sorted(steps)  # the trace order is program order ...
    assert [int(name.split("_", 1)[0]) for name in listing] == sorted(steps)  # ... and so is ls


def test_two_runs_and_thread_counts_write_identical_trees(lis_program_file, tmp_path):
    """Two processes with NUMBA_NUM_THREADS=1 and 2, each writing a golden tree and a vector suite."""
    trees = []
    for threads in (1, 2):
        out = tmp_path / f"threads{threads}"
        script = ("import sys; from intsim.cli import main; "
                  f"sys.exit(main(['golden', {str(lis_program_file)!r}, '-o', {str(out / 'g')!r}]) or "
                  f"main(['vectors', 'ptf_layernorm', '--count', '3', '-o', {str(out / 'v')!r}]))")
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
        subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
        trees.append(tree_bytes(out))
    assert trees[0] == trees[1] and len(trees[0]) > 700
    assert main(["golden", str(lis_program_file), "-o", str(tmp_path / "again")]) == 0  # in-process, third run
    assert tree_bytes(tmp_path / "again") == {k[2:]: v for k, v in trees[0].items() if k.startswith("g/")}


def test_formats_option_and_several_images(lis_program_file, tmp_path, capsys):
    from PIL import Image

    images = digits_heldout()[0]
    folder = tmp_path / "images"
    folder.mkdir()
    for index in (0, 1, 2):
        Image.fromarray(np.ascontiguousarray(images[index].transpose(1, 2, 0))).save(folder / f"d{index}.png")
    assert main(["golden", str(lis_program_file), "--data", str(folder), "--limit", "2", "--formats", "hex",
                 "-o", str(tmp_path / "g")]) == 0
    manifest = read_manifest(tmp_path / "g")
    assert manifest["images"] == [{"dir": "img0000", "source": "d0.png"}, {"dir": "img0001", "source": "d1.png"}]
    assert {p.suffix for p in (tmp_path / "g").rglob("*.*") if p.name != "manifest.json"} == {".hex"}
    record = manifest["tensors"]["head.acc"]
    step = next(op["step"] for op in manifest["ops"] if op["outputs"] == {"out": "head.acc"})
    assert record["files"]["hex"] == [f"img0000/{step:03d}_head.acc.hex", f"img0001/{step:03d}_head.acc.hex"]
    assert "2 image(s)" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["exists", "formats", "program", "data", "wrong_size"])
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(lis_program_file, tmp_path, capsys, monkeypatch, case):
    output = tmp_path / "out"
    args = ["golden", str(lis_program_file), "-o", str(output)]
    if case == "exists":
        output.mkdir()
        (output / "keep.txt").write_text("x")
        expected = "exists and is not an empty folder"
    elif case == "formats":
        args += ["--formats", "npy,vcd"]
        expected = "--formats 'npy,vcd'"
    elif case == "program":
        args[1] = str(tmp_path / "missing.intsim")
        expected = "missing.intsim: no such Program file"
    elif case == "data":
        args += ["--data", str(tmp_path / "nowhere")]
        expected = "nowhere: no such image file or folder"
    else:  # a Program that wants larger images than the digits (no valid file says so: patched in at loading)
        from intsim.program import load_program

        program = load_program(lis_program_file)
        program.tensors["pixels"].shape = [3, 16, 16]
        monkeypatch.setattr("intsim.program.load_program", lambda path: program)
        expected = "--data is required"
    assert main(args) == 2
    lines = message_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("intsim golden: error:") and expected in lines[0], lines
    assert not list(tmp_path.glob(".*partial"))
    assert case == "exists" or not output.exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_real_vit_tiny_golden_set_and_self_diff(shared_data, tmp_path, capsys):
    """The issue's measurement on the real ViT-Ti, one validation image: every op written, the tree diffs clean."""
    program = tmp_path / "vitti.intsim"
    assert main(["quantize", "-m", "vit_tiny_patch16_224", "-w",
                 str(shared_data / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"), "--calib",
                 str(shared_data / "imagenet-calib-256"), "--calib-limit", "32", "-c", "fqvit-w8a8a8", "-j", "0",
                 "-o", str(program)]) == 0
    golden = tmp_path / "g"
    assert main(["golden", str(program), "--data", str(shared_data / "imagenet-val-500"), "--limit", "1",
                 "-o", str(golden)]) == 0
    manifest = read_manifest(golden)
    assert len(manifest["ops"]) > 200 and manifest["images"][0]["source"].startswith("images/")
    assert main(["diff", str(golden), str(golden)]) == 0
    assert "0 differ" in capsys.readouterr().out


def test_docs_show_the_roles_table_of_the_registry():
    from golden_helpers import REPO

    from intsim.golden.manifest import roles_table

    assert roles_table() in (REPO / "docs" / "golden.md").read_text(), \
        "regenerate: python -c 'from intsim.golden.manifest import roles_table; print(roles_table())'"
