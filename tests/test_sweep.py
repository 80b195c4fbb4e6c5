"""``intsim sweep`` (issue 5): configuration names and presets, the ablation rows, determinism, agreement with
``intsim eval``'s path, the three output files, and bad input (exit 2, one line, no output left behind).

Everything runs on the embedded digits ViT (a few seconds per sweep of 2 configurations on 64 images); one
``realdata`` + ``slow`` test runs two configurations on 16 real ImageNet images.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402
from test_cli import message_lines  # noqa: E402
from test_pipeline import assert_exact_match  # noqa: E402

from intsim.cli import main  # noqa: E402
from intsim.data import Preprocess  # noqa: E402
from intsim.evaluate import evaluate, labelled_batches, quantize  # noqa: E402
from intsim.models.digits import digits_heldout  # noqa: E402
from intsim.quant.configs import CONFIGS, POINT_KINDS, Point  # noqa: E402
from intsim.sweep import PRESETS, expand_config_names  # noqa: E402

IMAGES = 64
TWO_CONFIGS = "w8a8a8-minmax,fqvit-w8a8a4"  # per-tensor LayerNorm inputs + uniform softmax; PTF + LIS


def sweep(tmp_path: Path, folder: str, *extra: str) -> tuple[int, Path]:
    output = tmp_path / folder
    return main(["sweep", "--limit", str(IMAGES), "-j", "0", "-o", str(output), *extra]), output


def without_timing(results: dict) -> dict:
    return {key: value for key, value in results.items() if key != "timing"}


# ------------------------------------------------------------------------------------------ configurations
def test_preset_expands_to_known_configs_in_order_without_repeats():
    names = expand_config_names("fqvit-w8a8a4, fqvit-ablation")
    assert names[0] == "fqvit-w8a8a4"
    assert names.count("fqvit-w8a8a4") == 1
    assert names[1:] == [n for n in PRESETS["fqvit-ablation"] if n != "fqvit-w8a8a4"]
    assert all(name in CONFIGS for name in names)


@pytest.mark.parametrize("spec, expected", [
    ("w8a8a8-minmx", ["'w8a8a8-minmx'", "fqvit-ablation", *CONFIGS]),
    ("fqvit-w8a8a8,,fqvit-w8a8a4", ["empty name"]),
])
def test_bad_config_names_are_refused_with_the_known_ones(spec, expected):
    with pytest.raises(ValueError) as error:
        expand_config_names(spec)
    assert all(part in str(error.value) for part in expected), str(error.value)


def test_ablation_rows_differ_from_their_base_only_by_the_switches_in_their_names():
    base8, base4 = CONFIGS["fqvit-w8a8a8"], CONFIGS["fqvit-w8a8a4"]
    per_tensor = Point("uniform", 8)
    for observer in ("minmax", "ema", "percentile", "omse"):
        row = CONFIGS[f"w8a8a8-{observer}"]
        assert (row.observer, row.residual, row.post_softmax) == (observer, per_tensor, Point("uniform_softmax", 8))
        # a name without "-ptf" has no power-of-two factors anywhere (LayerNorm inputs, fc1/GELU outputs)
        assert row == replace(base8, name=row.name, observer=observer, residual=per_tensor, gelu_input=per_tensor,
                              post_gelu=per_tensor)
    assert CONFIGS["w8a8a8-minmax-ptf"] == replace(base8, name="w8a8a8-minmax-ptf", observer="minmax")
    assert CONFIGS["w8a8a8-minmax-ptf-lnonly"] == replace(base8, name="w8a8a8-minmax-ptf-lnonly",
                                                           gelu_input=per_tensor, post_gelu=per_tensor)
    lis = CONFIGS["w8a8a4-minmax-ptf-lis"]
    assert lis.softmax == "lis" and lis == replace(base4, name=lis.name, observer="minmax")
    unscaled = CONFIGS["w8a8a4-minmax-ptf-lis-unscaled"]
    assert unscaled == replace(lis, name=unscaled.name, lis_scale=False)
    for wbits, abits in ((6, 6), (4, 8), (4, 4)):
        row = CONFIGS[f"fqvit-w{wbits}a{abits}a4"]
        assert (row.wbits, row.abits, row.residual.bits, row.gelu_input.bits, row.attn_bits) == (wbits, abits, abits,
                                                                                                 abits, 4)
        assert replace(row, name="x", **{kind: base4.point(kind) for kind in POINT_KINDS}) == \
            replace(base4, name="x")


def test_per_tensor_layernorm_inputs_exact_match_end_to_end():
    """Per-tensor residual stream: quantize, integer run, and the interpreter equals the torch twins at every op."""
    _, program = quantize(None, None, None, CONFIGS["w8a8a8-minmax"], workers=0)
    assert program.metadata["config"]["residual"] == {"quantizer": "uniform", "bits": 8}
    assert not any(name.endswith(".x_shift") for name in program.constants)
    assert_exact_match(program, np.array(digits_heldout()[0][:32]))


# ------------------------------------------------------------------------------------------ the sweep
def test_sweep_twice_gives_identical_results_equal_to_eval(tmp_path, capsys):
    status, first = sweep(tmp_path, "first", "-c", TWO_CONFIGS)
    assert status == 0
    out = capsys.readouterr().out
    status, second = sweep(tmp_path, "second", "-c", TWO_CONFIGS, "-j", "2")  # decoding workers: same images
    assert status == 0
    a = json.loads((first / "results.json").read_text())
    b = json.loads((second / "results.json").read_text())
    assert without_timing(a) == without_timing({**b, "settings": {**b["settings"], "workers": 0}})

    assert a["images"] == IMAGES and list(a["configs"]) == TWO_CONFIGS.split(",")
    assert set(a["timing"]["configs"]) == set(a["configs"]) and a["timing"]["total_s"] > 0
    for name, row in a["configs"].items():
        assert row["config"] == asdict(CONFIGS[name])
        # the same numbers as intsim eval's path: quantize this configuration alone, decode, evaluate
        qvit, program = quantize(None, None, None, CONFIGS[name], workers=0)
        preprocess = Preprocess.from_config(program.metadata["preprocess"])
        expected = evaluate(qvit, program, labelled_batches(None, preprocess, limit=IMAGES, batch_size=32, workers=0))
        assert row["program_sha256"] == program.sha256()
        for key in ("float", "fakequant", "integer", "top1_agreement"):
            assert row[key] == expected[key], (name, key)
        assert f"**{row['integer']['top1']:.2f}**" in out
    assert a["float"] == a["configs"]["fqvit-w8a8a4"]["float"]

    table = (first / "results.md").read_text()
    assert all(f"`{name}`" in table for name in a["configs"]) and "per-tensor" in table and "LIS 4-bit" in table
    with Image.open(first / "accuracy.png") as image:
        assert image.format == "PNG" and image.width >= 600 and image.height >= 400
    assert not list(tmp_path.glob(".*partial"))


def test_identical_configurations_are_computed_once(tmp_path, monkeypatch):
    monkeypatch.setitem(CONFIGS, "copy-of-w8a8a8", replace(CONFIGS["fqvit-w8a8a8"], name="copy-of-w8a8a8"))
    status, output = sweep(tmp_path, "out", "-c", "fqvit-w8a8a8,copy-of-w8a8a8")
    assert status == 0
    results = json.loads((output / "results.json").read_text())
    first, copy = results["configs"]["fqvit-w8a8a8"], results["configs"]["copy-of-w8a8a8"]
    assert copy["same_as"] == "fqvit-w8a8a8" and copy["config"]["name"] == "copy-of-w8a8a8"
    assert copy["integer"] == first["integer"] and copy["fakequant"] == first["fakequant"]
    assert list(results["timing"]["configs"]) == ["fqvit-w8a8a8"]


@pytest.mark.parametrize("stage", ["export", "integer run"])
def test_a_configuration_that_fails_is_recorded_and_the_sweep_goes_on(stage, tmp_path, monkeypatch, capsys):
    """The exporter (at plan time) or the interpreter (on the second batch) refuses the LIS configuration."""
    import intsim.interpreter
    import intsim.quant.export

    module, function = (intsim.quant.export, "export_program") if stage == "export" else (intsim.interpreter, "run_program")
    real = getattr(module, function)
    calls = []

    def refuse_lis(*args, **kwargs):
        program_or_qvit = args[0]
        config = program_or_qvit.config.name if stage == "export" else program_or_qvit.metadata["config"]["name"]
        calls.append(config)
        if config == "fqvit-w8a8a4" and (stage == "export" or calls.count(config) > 1):
            raise OverflowError("blocks.0.attn: refused for this test")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, function, refuse_lis)
    status, output = sweep(tmp_path, "out", "-c", TWO_CONFIGS)
    assert status == 1
    results = json.loads((output / "results.json").read_text())
    assert results["configs"]["fqvit-w8a8a4"]["error"] == "OverflowError: blocks.0.attn: refused for this test"
    assert "integer" in results["configs"]["w8a8a8-minmax"]
    assert "failed: OverflowError: blocks.0.attn: refused for this test" in (output / "results.md").read_text()
    assert (output / "accuracy.png").stat().st_size > 0
    assert "fqvit-w8a8a4 failed: OverflowError" in capsys.readouterr().err


def test_an_error_while_writing_leaves_no_output(tmp_path, monkeypatch):
    import intsim.sweep

    def broken_plot(results, path):
        Path(path).write_bytes(b"half a png")
        raise OSError(f"{path}: disk full")

    monkeypatch.setattr(intsim.sweep, "write_accuracy_plot", broken_plot)
    status, output = sweep(tmp_path, "out", "-c", "fqvit-w8a8a8")
    assert status == 2
    assert not output.exists() and not list(tmp_path.glob(".*partial"))


# ------------------------------------------------------------------------------------------ bad input
def _unlabelled_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    return folder


@pytest.mark.parametrize("case, args, expected", [
    ("unknown-config", lambda t: ["-c", "fqvit-w8a8a8,w4a4-magic"],
     ["'w4a4-magic'", "fqvit-ablation", *(f"{name}" for name in CONFIGS)]),
    ("data-without-labels", lambda t: ["-d", str(_unlabelled_folder(t))],
     ["unlabelled", "labels.csv", "file,label", "ImageFolder"]),
    ("missing-calibration-folder", lambda t: ["--calib", str(t / "nowhere")], ["nowhere", "does not exist"]),
    ("output-is-a-file", lambda t: ["-o", str(t / "taken")], ["taken", "is a file"]),
    ("zero-limit", lambda t: ["--limit", "0"], ["--limit"]),
])
def test_bad_input_exits_2_with_one_line_and_no_output(case, args, expected, tmp_path, capsys):
    (tmp_path / "taken").write_text("not a folder")
    output = tmp_path / "out"
    status = main(["sweep", "-j", "0", "-c", "fqvit-w8a8a8", "-o", str(output), *args(tmp_path)])
    lines = message_lines(capsys.readouterr().err)
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("intsim sweep: error: "), lines
    assert all(part in lines[0] for part in expected), lines[0]
    assert not output.exists() and not list(tmp_path.glob(".*partial"))
    assert (tmp_path / "taken").read_text() == "not a folder"


# ------------------------------------------------------------------------------------------ real data
@pytest.mark.realdata
@pytest.mark.slow
def test_real_vit_tiny_sweep_runs_two_configs(shared_data, tmp_path):
    weights = shared_data / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
    status = main(["sweep", "-m", "vit_tiny_patch16_224", "-w", str(weights), "--calib", str(shared_data / "imagenet-calib-256"),
                   "--calib-limit", "32", "-d", str(shared_data / "imagenet-val-500"), "--limit", "16",
                   "-c", "w8a8a8-minmax,fqvit-w8a8a8", "-o", str(tmp_path / "out")])
    assert status == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["images"] == 16 and results["calibration_images"] == 32
    for row in results["configs"].values():
        for pipeline in ("float", "fakequant", "integer"):
            assert 0.0 <= row[pipeline]["top1"] <= row[pipeline]["top5"] <= 100.0
