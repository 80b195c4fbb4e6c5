"""Bad input and interrupted runs of the golden commands: an incomplete DUT is named (``--subset`` to accept it), a DUT
value outside its declared width is reported as such, the diff prints one row per op, a closed stdout ends the
printing quietly, ``intsim golden`` refuses an oversized tree and an unwritable output before any work, and the
staging folder goes away on any exception."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from golden_helpers import REPO, message_lines

from intsim.cli import main
from intsim.golden.manifest import read_manifest


def _full_dut(golden: Path, dut: Path) -> Path:
    return Path(shutil.copytree(golden, dut, ignore=shutil.ignore_patterns("manifest.json")))


def _tensor_files(golden: Path) -> int:
    return sum(len(next(iter(record["files"].values()))) for record in read_manifest(golden)["tensors"].values())


# ------------------------------------------------------------------------------------------- 1. missing DUT files
def test_a_dut_holding_3_files_is_incomplete_unless_subset(lis_golden, tmp_path, capsys):
    dut = tmp_path / "dut"
    tensors = read_manifest(lis_golden)["tensors"]
    chosen = [tensors[name]["files"]["npy"][0] for name in ("pixels", "embed.patches", "logits")]
    for relative in chosen:
        (dut / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lis_golden / relative, dut / relative)
    total = _tensor_files(lis_golden)

    assert main(["diff", str(lis_golden), str(dut), "--json", str(tmp_path / "d.json")]) == 1
    out = capsys.readouterr().out
    assert f"incomplete DUT: {total - 3} of {total} golden tensor files have no DUT file" in out
    assert "--subset" in out and "\nverdict: incomplete DUT\nwrote " in out
    assert "all agree" not in out
    result = json.loads((tmp_path / "d.json").read_text())
    assert len(result["missing"]) == total - 3 and result["first_mismatch"] is None and not result["subset"]

    assert main(["diff", str(lis_golden), str(dut), "--subset"]) == 0
    out = capsys.readouterr().out
    assert f"skipped (--subset): {total - 3} of {total} golden tensor files" in out
    assert out.rstrip().endswith(f"verdict: all agree ({total - 3} skipped)")


def test_a_complete_dut_in_one_format_is_not_incomplete(lis_golden, tmp_path, capsys):
    dut = tmp_path / "dut"
    for path in lis_golden.rglob("*.hex"):
        target = dut / path.relative_to(lis_golden)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    assert main(["diff", str(lis_golden), str(dut)]) == 0
    out = capsys.readouterr().out
    assert "incomplete" not in out and "skipped" not in out and out.rstrip().endswith("verdict: all agree")


# ------------------------------------------------------------------------------ 2. values outside the declared width
def _wide_tensor(manifest: dict) -> tuple[str, dict]:
    return next((name, record) for name, record in manifest["tensors"].items()
                if record["bits"] == 22 and record["signed"] and record["kind"] != "constant")


def test_a_hex_value_outside_the_declared_width_is_named(lis_golden, tmp_path, capsys):
    dut = _full_dut(lis_golden, tmp_path / "dut")
    name, record = _wide_tensor(read_manifest(lis_golden))
    path = record["files"]["hex"][0]
    lines = (dut / path).read_text().splitlines()
    lines[5] = "3fffff"  # 4194303: fits the 6 hex digits, not 22 signed bits
    (dut / path).write_text("\n".join(lines) + "\n")
    assert main(["diff", str(lis_golden), str(dut), "--json", str(tmp_path / "d.json")]) == 1
    out = capsys.readouterr().out
    index = tuple(int(i) for i in np.unravel_index(5, record["shape"]))
    expected = (f"out of range: {path}: line 6, element 5 (index {index}) is 4194303 (hex 3fffff), outside the "
                f"declared 22-bit signed range [-2097152, 2097151] of tensor {name}")
    assert expected in out, out
    (entry,) = json.loads((tmp_path / "d.json").read_text())["out_of_range"]
    assert (entry["path"], entry["element"], entry["value"], entry["elements"]) == (path, 5, 4194303, 1)


def test_an_npy_value_outside_the_declared_width_is_named(lis_golden, tmp_path, capsys):
    dut = _full_dut(lis_golden, tmp_path / "dut")
    manifest = read_manifest(lis_golden)
    record = manifest["tensors"]["blocks.0.norm1"]  # uint8 codes, 8 bits unsigned
    path = record["files"]["npy"][0]
    array = np.load(dut / path).astype(np.int16)
    array[1, 2] = 256
    array[3, 4] = -1
    np.save(dut / path, array)
    assert main(["diff", str(lis_golden), str(dut)]) == 1
    out = capsys.readouterr().out
    element = 1 * record["shape"][1] + 2
    assert (f"out of range: {path}: element {element} (index (1, 2)) is 256, outside the declared 8-bit unsigned "
            f"range [0, 255] of tensor blocks.0.norm1; 2 elements of this file are outside it") in out, out
    assert "verdict: DUT differs" in out


# ------------------------------------------------------------------------------------- 3. one row per op, --verbose
def test_the_diff_prints_one_row_per_op_and_verbose_one_per_file(lis_golden, tmp_path, capsys):
    dut = _full_dut(lis_golden, tmp_path / "dut")
    manifest = read_manifest(lis_golden)
    path = manifest["tensors"]["blocks.1.norm1"]["files"]["npy"][0]
    array = np.load(dut / path)
    array[0, 3] ^= 1
    np.save(dut / path, array)
    assert main(["diff", str(lis_golden), str(dut)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) < len(manifest["ops"]) + 12  # a header, one row per op (and the input), the verdict
    marked = [line for line in lines if line.startswith("=>")]
    assert len(marked) == 2 and marked[0].split()[1:5] == ["blocks.1.norm1", "LayerNorm", "15", "1"]
    assert "blocks.1.norm1 of img0000 (npy) at (0, 3)" in marked[0]
    assert marked[1] == "=> marks the first op that differs: blocks.1.norm1"
    rows = {line.split()[0]: line.split() for line in lines[1:] if line.startswith("  ")}
    qkv = next(op for op in manifest["ops"] if op["name"] == "blocks.1.attn.qkv")
    assert rows["blocks.1.attn.qkv"][1:4] == ["Linear", str(3 * (1 + len(qkv["params"]))), "0"]  # output + params
    assert "first mismatch: op blocks.1.norm1" in lines[-2] and lines[-1] == "verdict: DUT differs"

    assert main(["diff", str(lis_golden), str(dut), "--verbose"]) == 1
    verbose = capsys.readouterr().out.splitlines()
    compared = sum(len(p) for r in manifest["tensors"].values() for p in r["files"].values())
    assert len(verbose) == 1 + compared + 1 + 3  # header, files, blank, compared / first mismatch / verdict


# --------------------------------------------------------------------------------------------- 4. a closed stdout
def _pipe_into_head(arguments: list[str]) -> tuple[int, str, bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = subprocess.Popen([sys.executable, "-m", "intsim.cli", *arguments], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=REPO, env=env)
    head = subprocess.Popen(["head", "-1"], stdin=command.stdout, stdout=subprocess.PIPE)
    command.stdout.close()  # head alone reads it: when head exits, the pipe is closed
    first, _ = head.communicate(timeout=300)
    _, err = command.communicate(timeout=300)
    return command.returncode, err.decode(), first


@pytest.mark.parametrize("differ", [False, True])
def test_diff_into_head_is_quiet_and_keeps_the_verdict(lis_golden, tmp_path, differ):
    dut = _full_dut(lis_golden, tmp_path / "dut")
    if differ:
        path = read_manifest(lis_golden)["tensors"]["head.acc"]["files"]["npy"][0]
        array = np.load(dut / path)
        array[0] += 1
        np.save(dut / path, array)
    report = tmp_path / "d.json"
    status, err, first = _pipe_into_head(["diff", str(lis_golden), str(dut), "--verbose", "--json", str(report)])
    assert first.split()[0] == b"tensor" and status == (1 if differ else 0), (status, err)
    assert "Broken pipe" not in err and "Traceback" not in err and "Exception ignored" not in err, err
    assert json.loads(report.read_text())["compared_files"] > 700  # the work finished after the reader left


def test_vectors_into_head_is_quiet(tmp_path):
    status, err, first = _pipe_into_head(["vectors", "isqrt", "--count", "1", "-o", str(tmp_path / "v")])
    assert status == 0 and first.startswith(b"wrote") and "Broken pipe" not in err, err


# ---------------------------------------------------------------------------- 5. the size estimate and --max-size
def test_the_estimate_is_exact_for_the_tensor_files(lis_program, lis_golden):
    from intsim.golden.writer import estimate_golden_bytes

    estimate = estimate_golden_bytes(lis_program, 1)
    files = sum(p.stat().st_size for p in lis_golden.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert estimate["params"] + estimate["per_image"] == files
    manifest = (lis_golden / "manifest.json").stat().st_size
    assert manifest / 2 < estimate["manifest"] < manifest * 2
    hex_only = estimate_golden_bytes(lis_program, 500, ("hex",))
    assert hex_only["total"] > 400 * hex_only["per_image"]


def test_golden_refuses_a_tree_above_max_size_before_writing(lis_program_file, tmp_path, capsys, monkeypatch):
    import intsim.golden.writer as writer

    def no_writing(*args, **kwargs):
        raise AssertionError("write_golden was called")

    monkeypatch.setattr(writer, "write_golden", no_writing)
    output = tmp_path / "g"
    assert main(["golden", str(lis_program_file), "--limit", "3", "-o", str(output), "--max-size", "100K"]) == 2
    (line,) = message_lines(capsys.readouterr().err)
    assert line.startswith(f"intsim golden: error: --output {output} would hold about ")
    assert "(3 images x " in line and "above --max-size 100.0 KiB" in line
    assert "--limit" in line and "--max-size" in line.split("above --max-size")[1]
    assert not output.exists() and not list(tmp_path.iterdir())


def test_max_size_none_and_bad_values(lis_program_file, tmp_path, capsys):
    from intsim.golden.writer import DEFAULT_MAX_BYTES, parse_size

    assert DEFAULT_MAX_BYTES == parse_size("2G") == 2 * 2**30 and parse_size("none") is None
    assert parse_size("1.5M") == 3 * 2**19 and parse_size("123") == 123
    assert main(["golden", str(lis_program_file), "-o", str(tmp_path / "g"), "--max-size", "lots"]) == 2
    (line,) = message_lines(capsys.readouterr().err)
    assert line.startswith("intsim golden: error: --max-size 'lots': expected a size such as 500M")
    assert main(["golden", str(lis_program_file), "-o", str(tmp_path / "g"), "--max-size", "none",
                 "--formats", "npy"]) == 0
    assert (tmp_path / "g" / "manifest.json").is_file()


# ------------------------------------------------------------------------- 6. the staging folder on any exception
class _SignalRaised(BaseException):
    """What a signal handler raises (like the CLI's SIGTERM handler)."""


def _raise_from_a_signal():
    def handler(number, frame):
        raise _SignalRaised(f"signal {number}")

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)  # the handler runs (and raises) in this thread, right after
        for _ in range(1000):
            pass
        raise AssertionError("the signal handler did not run")
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit, _SignalRaised, "signal"])
def test_no_staging_folder_is_left_by_any_exception(lis_program, tmp_path, monkeypatch, raised):
    from intsim.golden.cli import load_images
    from intsim.golden.tree import TreeWriter
    from intsim.golden.writer import write_golden

    original, calls = TreeWriter.add, []

    def add(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls.append(self.staging)
        assert self.staging.is_dir() and any(self.staging.rglob("*.npy"))
        if len(calls) == 50:  # in the middle of the per-image tensors
            if raised == "signal":
                _raise_from_a_signal()
            raise raised("interrupted")

    monkeypatch.setattr(TreeWriter, "add", add)
    expected = _SignalRaised if raised == "signal" else raised
    with pytest.raises(expected):
        write_golden(lis_program, load_images(lis_program, None, 1), tmp_path / "golden", progress=False)
    assert len(calls) == 50 and not calls[-1].exists()
    assert list(tmp_path.iterdir()) == []  # no .golden.*.partial, no golden


# ---------------------------------------------------------------------------------- 7. an unwritable output folder
def test_golden_into_a_read_only_folder_fails_at_once_naming_it(lis_program_file, tmp_path, capsys, monkeypatch):
    import intsim.cli_common
    import intsim.golden.tree as tree

    parent = tmp_path / "readonly"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if os.access(parent, os.W_OK):  # root: permissions do not stop it; simulate what they do for a user
            real_access = os.access
            monkeypatch.setattr(tree.os, "access", lambda path, mode: Path(path) != parent and real_access(path, mode))

        def no_work(*args, **kwargs):
            raise AssertionError("the Program was loaded before the output was checked")

        monkeypatch.setattr(intsim.cli_common, "load_program_argument", no_work)
        output = parent / "g"
        assert main(["golden", str(lis_program_file), "-o", str(output)]) == 2
        (line,) = message_lines(capsys.readouterr().err)
        assert line == (f"intsim golden: error: --output {output}: cannot create it, folder {parent} is not "
                        f"writable (permission denied); choose another --output or make {parent} writable")
        assert ".partial" not in line and list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_diff_json_into_a_read_only_folder_is_refused_before_comparing(lis_golden, tmp_path, capsys, monkeypatch):
    import intsim.golden.cli as cli
    import intsim.golden.diff as diff

    parent = tmp_path / "readonly"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if os.access(parent, os.W_OK):  # root
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != parent and real_access(path, mode))
        monkeypatch.setattr(diff, "diff_trees", lambda *a, **k: (_ for _ in ()).throw(AssertionError("compared")))
        report = parent / "sub" / "d.json"
        assert main(["diff", str(lis_golden), str(lis_golden), "--json", str(report)]) == 2
        (line,) = message_lines(capsys.readouterr().err)
        # (intsim.cli_common.check_output may refuse it first, in its own words)
        assert line.startswith(f"intsim diff: error: --json {report}: ") and f"{parent} is not writable" in line
    finally:
        parent.chmod(0o755)
    cli._check_json_output(str(tmp_path / "new" / "folders" / "d.json"))  # missing folders are created later: fine
