"""The first-contact cases, each through the real CLI in a subprocess (``python -m intsim.cli``), as a user meets
them: the exit status, the message, and what is on disk afterwards. One test per case of the bad-input table."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_cli_signals import as_in_a_terminal  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digit-4.png"
INTSIM = [sys.executable, "-m", "intsim.cli"]
_PROGRESS = re.compile(r"\d+%\||it/s|img/s|batch/s")


def intsim(*args, cwd, check_status=None):
    done = subprocess.run([*INTSIM, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)
    if check_status is not None:
        assert done.returncode == check_status, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    return done


def messages(stderr: str) -> list[str]:
    """stderr lines that are neither progress bars nor notes."""
    return [line for line in re.split(r"[\r\n]", stderr)
            if line.strip() and not _PROGRESS.search(line) and ": note: " not in line]


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if ".partial" in path.name)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with the embedded model's Program and its golden tree (one image)."""
    root = tmp_path_factory.mktemp("first_contact")
    intsim("quantize", "-o", "digits.intsim", "-j", "0", cwd=root, check_status=0)
    intsim("golden", "digits.intsim", "-o", "golden", cwd=root, check_status=0)
    return root


def test_a_16_bit_grayscale_png_is_read_as_its_picture(workdir, tmp_path):
    gray = np.asarray(Image.open(EXAMPLE).convert("L"), dtype=np.uint16) * 257  # the same picture on 16 bits
    Image.fromarray(gray.astype(np.uint16)).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    done = intsim("run", workdir / "digits.intsim", tmp_path / "gray16.png", cwd=tmp_path, check_status=0)
    assert "class 4" in next(line for line in done.stdout.splitlines() if line.strip().startswith("1."))


def test_a_label_beyond_the_models_classes_is_refused(workdir, tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    shutil.copy(EXAMPLE, tmp_path / "data" / "images" / "a.png")
    with open(tmp_path / "data" / "labels.csv", "w", newline="") as stream:
        csv.writer(stream).writerows([["file", "label"], ["a.png", "5000"]])
    done = intsim("check", workdir / "digits.intsim", "--data", "data", "--json", "out.json", cwd=tmp_path,
                  check_status=2)
    (line,) = messages(done.stderr)
    assert "labels.csv" in line and "5000" in line and "0..9" in line, line
    assert not (tmp_path / "out.json").exists()


def test_a_dut_tree_with_missing_files_is_not_all_agree(workdir, tmp_path):
    golden = workdir / "golden"
    files = sorted(path for path in golden.rglob("*.npy"))
    for path in files[:3]:
        target = tmp_path / "dut" / path.relative_to(golden)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    done = intsim("diff", golden, "dut", cwd=tmp_path, check_status=1)
    assert "incomplete DUT" in done.stdout and "--subset" in done.stdout, done.stdout[-1500:]
    intsim("diff", golden, "dut", "--subset", cwd=tmp_path, check_status=0)


def test_a_dut_value_outside_its_declared_width_is_named_as_such(workdir, tmp_path):
    """The table's case: ``3fffff`` in a 22-bit signed hex file (six digits hold 24 bits)."""
    import json

    golden = workdir / "golden"
    shutil.copytree(golden, tmp_path / "dut")
    tensors = json.loads((golden / "manifest.json").read_text())["tensors"]
    name, spec = next((name, spec) for name, spec in tensors.items() if spec["bits"] == 22 and spec["signed"])
    hex_file = tmp_path / "dut" / spec["files"]["hex"][0]
    lines = hex_file.read_text().splitlines()
    lines[0] = "3fffff"
    hex_file.write_text("\n".join(lines) + "\n")
    done = intsim("diff", golden, "dut", cwd=tmp_path, check_status=1)
    assert "outside the declared 22-bit signed range" in done.stdout + done.stderr, done.stdout[-1500:]


def test_the_diff_of_two_trees_is_a_table_per_op(workdir, tmp_path):
    golden = workdir / "golden"
    done = intsim("diff", golden, golden, cwd=tmp_path, check_status=0)
    files = sum(1 for path in golden.rglob("*") if path.is_file())
    assert len(done.stdout.splitlines()) < files / 2, len(done.stdout.splitlines())
    verbose = intsim("diff", golden, golden, "--verbose", cwd=tmp_path, check_status=0)
    assert len(verbose.stdout.splitlines()) > len(done.stdout.splitlines())


def test_diff_into_a_closed_pipe_is_quiet(workdir, tmp_path):
    golden = workdir / "golden"
    done = subprocess.run(f"{sys.executable} -m intsim.cli diff {golden} {golden} --verbose | head -1", shell=True,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "Broken pipe" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_golden_refuses_a_tree_larger_than_its_limit(workdir, tmp_path):
    done = intsim("golden", workdir / "digits.intsim", "--limit", "50", "--max-size", "1K", "-o", "big", cwd=tmp_path,
                  check_status=2)
    (line,) = messages(done.stderr)
    assert "--limit" in line and "--max-size" in line, line
    assert not (tmp_path / "big").exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_golden_interrupted_leaves_nothing_and_says_one_line(workdir, tmp_path, signum, status):
    process = subprocess.Popen([*INTSIM, "golden", str(workdir / "digits.intsim"), "--limit", "300", "-o", "tree"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=as_in_a_terminal)
    deadline = time.monotonic() + 120
    while not leftovers(tmp_path) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the staging folder exists: the tree is being written
    assert process.poll() is None, "golden ended before it could be interrupted"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr[-2000:]
    (line,) = messages(stderr)
    assert "interrupted" in line and "Traceback" not in stderr
    assert not (tmp_path / "tree").exists() and not leftovers(tmp_path)


def test_an_unwritable_output_is_refused_before_any_work(tmp_path):
    start = time.monotonic()
    done = intsim("quantize", "-o", "/proc/intsim-test/out.intsim", cwd=tmp_path, check_status=2)
    (line,) = messages(done.stderr)
    assert "--output" in line and "/proc" in line, line
    assert "calibrat" not in done.stderr and time.monotonic() - start < 60


def test_first_eval_says_what_it_runs_on_and_what_the_rows_mean(tmp_path):
    done = intsim("eval", "--limit", "32", "-j", "0", cwd=tmp_path, check_status=0)
    assert "compile on first use" in done.stderr
    assert "embedded digits" in done.stdout and "fakequant = " in done.stdout


def test_quantize_says_when_calibration_ends_and_writes_an_ordinary_file(tmp_path):
    done = intsim("quantize", "-o", "d.intsim", "-j", "0", cwd=tmp_path, check_status=0)
    assert "calibration pass done" in done.stderr
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "d.intsim").stat().st_mode) == 0o666 & ~mask


@pytest.mark.realdata
def test_weights_of_another_architecture_are_named(shared_data, tmp_path):
    weights = shared_data / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
    done = intsim("quantize", "-m", "deit_tiny_patch16_224", "-w", weights, "--calib", shared_data / "imagenet-calib-256",
                  "--calib-limit", "1", "-b", "1", "-o", "deit.intsim", cwd=tmp_path, check_status=0)
    warning = [line for line in messages(done.stderr) if "warning" in line]
    assert warning and "vit_tiny_patch16_224" in warning[0] and "deit_tiny_patch16_224" in warning[0], done.stderr
