"""The ``intsim`` command, called in-process through :func:`intsim.cli.main`.

The happy path on the embedded digits ViT (quantize -> run -> check --json -> eval --json, ``ops``), and every
bad input of the issue: exit status 2, one stderr line naming the file or option, no traceback, and no output
file (nor a ``.partial`` leftover) created.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from PIL import Image  # noqa: E402

from intsim.cli import main  # noqa: E402
from intsim.evaluate import quantize  # noqa: E402
from intsim.interpreter import run_program  # noqa: E402
from intsim.models.digits import digits_heldout  # noqa: E402
from intsim.program import FORMAT_VERSION, load_program, save_program  # noqa: E402
from intsim.quant.configs import CONFIGS, make_config  # noqa: E402

_PROGRESS = re.compile(r"\[\d+:\d\d")  # a tqdm bar: "name:  50%|...| 1/2 [00:00<00:00, ...]"


def message_lines(err: str) -> list[str]:
    """The stderr lines that are not progress bars (tqdm redraws with carriage returns) nor notes (``intsim CMD:
    note: ...``: which preprocessing is applied, the first-use JIT compilation)."""
    return [line for line in re.split(r"[\r\n]", err)
            if line.strip() and not _PROGRESS.search(line) and not re.match(r"intsim \w+: note: ", line)]


def write_png(path: Path, pixels: np.ndarray) -> Path:
    """uint8 (3, H, W) -> a lossless PNG (decodes to exactly these pixels)."""
    Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0))).save(path)
    return path


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def digits_program_file(tmp_path_factory) -> Path:
    """A valid Program of the embedded digits model (fqvit-w8a8a4), written once for the module."""
    _, program = quantize(None, None, None, make_config("fqvit-w8a8a4"), workers=0)
    return save_program(program, tmp_path_factory.mktemp("program") / "digits.intsim")


@pytest.fixture(scope="module")
def deit_tiny_weights(tmp_path_factory) -> Path:
    """Random deit_tiny-shaped weights (192 wide) as safetensors: they fit vit_tiny, not vit_small."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False)
    path = tmp_path_factory.mktemp("weights") / "deit_tiny.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(path))
    return path


# ---------------------------------------------------------------------------------------- happy path
def test_quantize_run_check_eval_on_the_embedded_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["quantize", "-o", "d.intsim", "-j", "0"]) == 0
    out, err = capsys.readouterr()
    # the bar reaches 100 % before the quantizers are fixed: one line says what happens next
    assert "calibration pass done: fixing the quantizers and exporting the Program..." in err
    program = load_program("d.intsim")
    assert f"sha256 {program.sha256()[:16]}" in out and "config fqvit-w8a8a4" in out
    assert program.metadata["model"] == "intsim-digits"

    # run: the printed top-1 class and logit are the interpreter's on the same (losslessly stored) pixels
    images, labels = digits_heldout()
    pixels = np.array(images[:3])
    paths = [str(write_png(tmp_path / f"digit{i}.png", p)) for i, p in enumerate(pixels)]
    assert main(["run", "d.intsim", *paths]) == 0
    out = capsys.readouterr().out
    logits = run_program(program, pixels)
    top1 = [(int(c), int(v)) for c, v in re.findall(r"^\s+1\. class (\d+)\s+logit\s+(-?\d+)", out, re.MULTILINE)]
    assert top1 == [(int(row.argmax()), int(row.max())) for row in logits]
    assert all(path in out for path in paths)
    assert len(re.findall(r"^\s+5\. class", out, re.MULTILINE)) == 3

    # check --json: the interpreter equals the exact twins at every op output
    assert main(["check", "d.intsim", "--limit", "64", "-j", "0", "--json", "check.json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(Path("check.json").read_text())
    assert result["exact_match_rate"] == 1.0
    assert result["points"] == sum(len(op.outputs) for op in program.ops)
    assert result["images"] == 64
    assert 0.9 <= result["top1_agreement"] <= 1.0  # a fraction here (eval reports percentages)
    assert all(row["exact_match_rate"] == 1.0 for row in result["per_point"].values())
    assert "exact_match_rate 1.000000" in out

    # eval --json: the integer top-1 is the one of this (deterministically re-made) Program
    assert main(["eval", "--limit", "64", "-j", "0", "--json", "eval.json"]) == 0
    result = json.loads(Path("eval.json").read_text())
    assert result["images"] == 64 and result["config"] == "fqvit-w8a8a4"
    for name in ("float", "fakequant", "integer"):
        assert 0.0 <= result[name]["top1"] <= result[name]["top5"] <= 100.0
    integer_logits = np.concatenate([run_program(program, np.array(images[i : i + 32])) for i in (0, 32)])
    assert result["integer"]["top1"] == 100.0 * int((integer_logits.argmax(axis=1) == labels[:64]).sum()) / 64
    assert result["float"]["top1"] >= 95.0
    assert not list(tmp_path.glob(".*partial"))


def test_quantize_generic_widths_and_rounding_are_recorded(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["quantize", "-o", "g.intsim", "-j", "0", "--wbits", "6", "--abits", "6", "--softmax", "uniform_softmax",
            "--attn-bits", "6", "--rounding", "half_even"]
    assert main(args) == 0
    config = load_program("g.intsim").metadata["config"]
    points = [config[kind] for kind in ("weights", "post_layernorm", "post_softmax", "residual")]
    assert points == [{"quantizer": "symmetric_channel", "bits": 6}, {"quantizer": "uniform", "bits": 6},
                      {"quantizer": "uniform_softmax", "bits": 6}, {"quantizer": "ptf", "bits": 6}]
    assert config["rounding"] == "half_even"
    assert config["name"] in capsys.readouterr().out


def test_ops_lists_every_registered_op(capsys):
    from intsim.ops import OPS

    assert main(["ops"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(OPS)
    for line, spec in zip(lines, OPS):
        assert line.split()[0] == spec.name and spec.reference.__name__ in line


def test_eval_says_what_it_ran_on_and_what_the_rows_mean(capsys):
    assert main(["eval", "--limit", "32", "-j", "0"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "model the embedded digits ViT, images the embedded held-out digits"
    assert lines[1].startswith("pipeline") and "(32 images, config fqvit-w8a8a4)" in lines[1]
    assert [line.split()[0] for line in lines[2:5]] == ["float", "fakequant", "integer"]
    assert lines[5] == "fakequant = float32 fake-quant model (fast); integer = the Program on the integer interpreter"
    # before the first batch: why the first run waits (numba compiles its kernels once)
    jit = [line for line in re.split(r"[\r\n]", err) if "compile on first use" in line]
    assert jit == ["intsim eval: note: the integer kernels (numba) compile on first use, which can take ~15 s; "
                   "they are cached afterwards"]
    assert err.index("compile on first use") < err.index("evaluating")


def test_every_numeric_option_says_what_it_accepts():
    """The help of every integer option of quantize / eval / check names the values that are accepted."""
    import argparse

    from intsim.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    expected = {"--calib-limit": "at least 1", "--limit": "at least 1", "--batch-size": "at least 1",
                "--workers": "0:", "--wbits": "2..8", "--abits": "2..8", "--attn-bits": "uniform_softmax: 2..8"}
    seen = set()
    for name in ("quantize", "eval", "check"):
        for action in commands.choices[name]._actions:
            if action.type is int:
                option = action.option_strings[-1]
                assert option in expected, option
                assert expected[option] in (action.help or ""), (name, option, action.help)
                seen.add(option)
    assert seen == set(expected)


# ------------------------------------------------------------------------------- unwritable outputs
@pytest.fixture
def read_only_folder(tmp_path, monkeypatch):
    """A folder with mode 0555. Root may write in it anyway: then ``os.access`` is made to answer as it does for
    any other user (the probe file is covered by its own test)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root
        import intsim.cli_common

        real = os.access

        def access(path, mode, *args, **kwargs):
            if Path(path).resolve() == folder.resolve() and mode & os.W_OK:
                return False
            return real(path, mode, *args, **kwargs)

        monkeypatch.setattr(intsim.cli_common.os, "access", access)
    yield folder
    folder.chmod(0o755)


@pytest.mark.parametrize("argv, option", [(["quantize", "-o", "readonly/out.intsim"], "--output"),
                                          (["quantize", "-o", "readonly/new/out.intsim"], "--output"),
                                          (["eval", "--json", "readonly/eval.json"], "--json")],
                         ids=["quantize-output", "quantize-output-subfolder-to-create", "eval-json"])
def test_output_in_a_read_only_folder_is_refused_before_any_work(argv, option, read_only_folder, monkeypatch, capsys):
    import intsim.evaluate

    monkeypatch.chdir(read_only_folder.parent)
    monkeypatch.setattr(intsim.evaluate, "quantize", lambda *a, **k: pytest.fail("calibrated before the check"))
    assert main(argv) == 2
    lines = message_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"intsim {argv[0]}: error: {option} readonly/"), lines[0]
    assert "folder readonly is not writable" in lines[0], lines[0]
    assert os.listdir(read_only_folder) == []


def test_output_folder_where_no_file_can_be_created_is_refused(tmp_path, monkeypatch, capsys):
    """``os.access`` says yes but creating a file fails (a read-only mount it misses): the probe finds it."""
    import errno

    import intsim.cli_common

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mount").mkdir()

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(intsim.cli_common.tempfile, "mkstemp", refuse)
    assert main(["quantize", "-o", "mount/out.intsim"]) == 2
    (line,) = message_lines(capsys.readouterr().err)
    assert line == ("intsim quantize: error: --output mount/out.intsim: cannot create a file in folder mount "
                    "(Read-only file system); give a path in a writable folder")


def test_output_below_a_file_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plain").write_text("x")
    assert main(["quantize", "-o", "plain/out.intsim"]) == 2
    (line,) = message_lines(capsys.readouterr().err)
    assert "--output plain/out.intsim" in line and "plain is a file, not a folder" in line, line


def test_probe_leaves_nothing_behind(tmp_path):
    from intsim.cli_common import check_output

    check_output(str(tmp_path / "a" / "b.json"), "--json")
    check_output(str(tmp_path / "c.json"), "--json")
    assert list(tmp_path.iterdir()) == []


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "quantize" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------- bad input
def _random_bytes(path: Path, count: int = 1000) -> Path:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, count, dtype=np.uint8).tobytes())
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _calib_with_bad_image(tmp: Path) -> Path:
    folder = _folder(tmp / "calib")
    write_png(folder / "a.png", np.array(digits_heldout()[0][0]))
    (folder / "b.png").write_bytes(b"this is not a png" * 8)
    return folder


def _calib_with_truncated_image(tmp: Path) -> Path:
    folder = _folder(tmp / "calib")
    noise = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    data = write_png(folder / "cut.png", noise).read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    return folder


def _unlabelled_folder(tmp: Path) -> Path:
    folder = _folder(tmp / "unlabelled")
    write_png(folder / "a.png", np.array(digits_heldout()[0][0]))
    return folder


def _truncated_program(tmp: Path, source: Path) -> Path:
    data = source.read_bytes()
    return _write(tmp / "cut.intsim", data[: len(data) // 2])


def _other_version_program(tmp: Path, source: Path) -> Path:
    """The same Program with format version 99 in its envelope (a well-formed safetensors file)."""
    data = source.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    envelope = json.loads(header["__metadata__"]["intsim"])
    assert envelope["version"] == FORMAT_VERSION
    envelope["version"] = 99
    header["__metadata__"]["intsim"] = json.dumps(envelope)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return _write(tmp / "v99.intsim", len(encoded).to_bytes(8, "little") + encoded + data[8 + length :])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# Each case: (id, argv builder (tmp, program file, weights file) -> argv, substrings of the message, outputs that
# must not exist). Paths are relative to tmp (the working directory) so messages can be matched literally.
BAD_INPUTS = [
    ("missing-weights",
     lambda t, p, w: ["quantize", "-m", "vit_tiny_patch16_224", "-w", "missing.safetensors", "-o", "out.intsim"],
     ["missing.safetensors", "does not exist"], ["out.intsim"]),
    ("corrupt-weights-safetensors",
     lambda t, p, w: ["quantize", "-m", "vit_tiny_patch16_224", "-w", _random_bytes(t / "bad.safetensors").name, "-o", "out.intsim"],
     ["bad.safetensors", "cannot read weights file"], ["out.intsim"]),
    ("corrupt-weights-pth",
     lambda t, p, w: ["quantize", "-m", "vit_tiny_patch16_224", "-w", _random_bytes(t / "bad.pth").name, "-o", "out.intsim"],
     ["bad.pth", "cannot read weights file"], ["out.intsim"]),
    ("empty-weights",
     lambda t, p, w: ["quantize", "-m", "vit_tiny_patch16_224", "-w", _write(t / "empty.safetensors", b"").name, "-o", "out.intsim"],
     ["empty.safetensors"], ["out.intsim"]),
    ("weights-of-another-model",
     lambda t, p, w: ["quantize", "-m", "vit_small_patch16_224", "-w", str(w), "-o", "out.intsim"],
     ["deit_tiny.safetensors", "does not fit model 'vit_small_patch16_224'", "shape mismatch"], ["out.intsim"]),
    ("unknown-model-name",
     lambda t, p, w: ["quantize", "-m", "vit_tiny_patch16_2244", "-w", str(w), "-o", "out.intsim"],
     ["unknown timm model name 'vit_tiny_patch16_2244'", "vit_tiny_patch16_224"], ["out.intsim"]),
    ("weights-without-model",
     lambda t, p, w: ["quantize", "-w", str(w), "-o", "out.intsim"],
     ["--weights needs --model"], ["out.intsim"]),
    ("model-without-weights",
     lambda t, p, w: ["quantize", "-m", "vit_tiny_patch16_224", "-o", "out.intsim"],
     ["--model vit_tiny_patch16_224 needs --weights"], ["out.intsim"]),
    ("undecodable-calibration-image",
     lambda t, p, w: ["quantize", "--calib", _calib_with_bad_image(t).name, "-o", "out.intsim"],
     ["calib/b.png", "cannot decode image"], ["out.intsim"]),
    ("truncated-calibration-image",
     lambda t, p, w: ["quantize", "--calib", _calib_with_truncated_image(t).name, "-j", "0", "-o", "out.intsim"],
     ["calib/cut.png", "cannot decode image"], ["out.intsim"]),
    ("empty-calibration-folder",
     lambda t, p, w: ["quantize", "--calib", _folder(t / "empty").name, "-o", "out.intsim"],
     ["empty", "holds no images"], ["out.intsim"]),
    ("missing-calibration-folder",
     lambda t, p, w: ["quantize", "--calib", "nowhere", "-o", "out.intsim"],
     ["nowhere", "does not exist"], ["out.intsim"]),
    ("unknown-config",
     lambda t, p, w: ["quantize", "--config", "fqvit-w4a4", "-o", "out.intsim"],
     ["'fqvit-w4a4'", *(f"'{name}'" for name in CONFIGS)], ["out.intsim"]),
    ("bit-width-out-of-range",
     lambda t, p, w: ["quantize", "--wbits", "12", "-o", "out.intsim"],
     ["weights bits = 12", "symmetric_channel allows 2..8"], ["out.intsim"]),
    ("bit-width-the-softmax-quantizer-lacks",
     lambda t, p, w: ["quantize", "--attn-bits", "6", "-o", "out.intsim"],
     ["post_softmax bits = 6: lis allows 4..4"], ["out.intsim"]),
    ("unknown-softmax-quantizer",
     lambda t, p, w: ["quantize", "--softmax", "log3", "-o", "out.intsim"],
     ["post_softmax quantizer", "'log3'", "'lis'", "'uniform_softmax'"], ["out.intsim"]),
    ("unknown-rounding",
     lambda t, p, w: ["quantize", "--rounding", "stochastic", "-o", "out.intsim"],
     ["'stochastic'", "half_up"], ["out.intsim"]),
    ("zero-batch-size",
     lambda t, p, w: ["quantize", "--batch-size", "0", "-o", "out.intsim"],
     ["--batch-size"], ["out.intsim"]),
    ("output-is-a-folder",
     lambda t, p, w: ["quantize", "-o", _folder(t / "outdir").name],
     ["--output outdir", "is a folder"], []),
    ("run-truncated-program",
     lambda t, p, w: ["run", _truncated_program(t, p).name, "digit.png"],
     ["cut.intsim", "truncated"], []),
    ("check-truncated-program",
     lambda t, p, w: ["check", _truncated_program(t, p).name, "--json", "out.json"],
     ["cut.intsim", "truncated"], ["out.json"]),
    ("run-other-format-version",
     lambda t, p, w: ["run", _other_version_program(t, p).name, "digit.png"],
     ["v99.intsim", "format version 99", f"reads version {FORMAT_VERSION}"], []),
    ("check-other-format-version",
     lambda t, p, w: ["check", _other_version_program(t, p).name, "--json", "out.json"],
     ["v99.intsim", "format version 99"], ["out.json"]),
    ("check-missing-program",
     lambda t, p, w: ["check", "absent.intsim", "--json", "out.json"],
     ["absent.intsim", "no such Program file"], ["out.json"]),
    ("run-weights-file-as-program",
     lambda t, p, w: ["run", str(w), "digit.png"],
     ["deit_tiny.safetensors", "not an intsim Program"], []),
    ("run-undecodable-image",
     lambda t, p, w: ["run", str(p), _random_bytes(t / "noise.png", 300).name],
     ["noise.png", "cannot decode image"], []),
    ("run-missing-image",
     lambda t, p, w: ["run", str(p), "absent.png"],
     ["absent.png", "does not exist"], []),
    ("check-data-folder-without-labels",
     lambda t, p, w: ["check", str(p), "--data", _unlabelled_folder(t).name, "--json", "out.json"],
     ["unlabelled", "not a labelled image folder"], ["out.json"]),
    ("eval-data-folder-without-labels",
     lambda t, p, w: ["eval", "--data", _unlabelled_folder(t).name, "--json", "out.json"],
     ["unlabelled", "not a labelled image folder"], ["out.json"]),
    ("check-program-of-another-model",
     lambda t, p, w: ["check", str(p), "-m", "vit_tiny_patch16_224", "-w", str(w), "--json", "out.json"],
     ["digits.intsim", "was not exported from model vit_tiny_patch16_224", "'intsim-digits'"], ["out.json"]),
    ("check-zero-limit",
     lambda t, p, w: ["check", str(p), "--limit", "0", "--json", "out.json"],
     ["--limit"], ["out.json"]),
    ("check-json-is-a-folder",
     lambda t, p, w: ["check", str(p), "--json", _folder(t / "jsondir").name],
     ["--json jsondir", "is a folder"], []),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_exits_2_with_one_message_and_no_output(case, tmp_path, monkeypatch, capsys, digits_program_file, deit_tiny_weights):
    _, build, expected, outputs = case
    monkeypatch.chdir(tmp_path)
    write_png(tmp_path / "digit.png", np.array(digits_heldout()[0][0]))
    argv = build(tmp_path, digits_program_file, deit_tiny_weights)
    before = set(os.listdir(tmp_path))
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    lines = message_lines(err)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"intsim {argv[0]}: error: "), lines[0]
    for part in expected:
        assert part in lines[0], (part, lines[0])
    for name in outputs:
        assert not (tmp_path / name).exists(), name
    assert set(os.listdir(tmp_path)) == before  # nothing written, no .partial file left behind
