"""``intsim sweep``: top-1/top-5 of several quantization configurations on the same images, FQ-ViT-style.

For every configuration: calibrate, export the integer Program, and measure float, fast fake-quant and integer
top-1/top-5 on the same images, with top-1 agreement rates. Work shared by all configurations is done once: the
float model is loaded once, the calibration and evaluation images are decoded once (in worker processes) and the
float logits computed once. Configurations equal in every field but their name are computed once (the later row
says ``same_as``).

Outputs, in the ``--output`` folder (written to a temporary folder, moved into place at the end):
``results.json`` (see :func:`run_sweep`), ``results.md`` (the table a person reads) and ``accuracy.png``
(top-1 per configuration, float as a reference line).

Determinism: nothing is random (calibration images in sorted order, torch seeded in
:func:`intsim.evaluate.calibrate`, integer results independent of the thread count), so the same command twice
gives the same ``results.json`` except its ``timing`` section.

A configuration that cannot be quantized or run in integers (e.g. a scale the integer softmax refuses) is
recorded with its error and the sweep goes on; the command then exits with status 1.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from intsim.atomic import ordinary_permissions

__all__ = ["PRESETS", "add_sweep_arguments", "expand_config_names", "results_markdown", "run_sweep",
           "run_sweep_command", "write_accuracy_plot", "write_sweep_outputs"]

PRESETS: dict[str, tuple[str, ...]] = {
    # FQ-ViT's table (observers without PTF/LIS, then PTF, then PTF + LIS), the project's own configurations,
    # and lower widths for the record; docs/sweeps.md describes every row.
    "fqvit-ablation": (
        "w8a8a8-minmax", "w8a8a8-ema", "w8a8a8-percentile", "w8a8a8-omse",
        "w8a8a8-minmax-ptf-fqvit", "w8a8a8-minmax-ptf-lnonly", "w8a8a8-minmax-ptf-softmax-unscaled", "w8a8a8-minmax-ptf",
        "w8a8a4-minmax-ptf-lis-unscaled", "w8a8a4-minmax-ptf-lis",
        "fqvit-w8a8a8", "fqvit-w8a8a4", "w8a8a8-r12g12", "w8a8a4-r12g12",
        "fqvit-w6a6a4", "fqvit-w4a8a4", "fqvit-w4a4a4",
    ),
    # AdaLog at W4A4: its quantizers against base-2 log and uniform ones after the softmax and the GELU, then
    # narrower non-MAC activations (docs/sweeps.md)
    "adalog-ablation": (
        "adalog-w4a4", "adalog-w4a4-softmax-log2", "adalog-w4a4-softmax-uniform", "adalog-w4a4-gelu-log2",
        "adalog-w4a4-gelu-uniform", "adalog-w4a4-log2", "adalog-w4a4-uniform", "adalog-w4a4-r12",
        "adalog-w4a4-r10", "adalog-w4a4-r8",
    ),
    # APQ-ViT: the four widths, MPQ against LIS, base-2 log and the minmax uniform softmax, BBC against the
    # layerwise MSE, PTQ4ViT's input grid against the port's, the paper's per-tensor uniform GELU output against the
    # PTF one (docs/quantization.md, APQ-ViT section)
    "apq-ablation": (
        "apq-w8a8", "apq-w6a6", "apq-w4a8", "apq-w4a4", "apq-w4a4-softmax-lis", "apq-w4a4-softmax-log2",
        "apq-w4a4-softmax-minmax", "apq-w4a4-layerwise", "apq-w6a6-layerwise", "apq-w8a8-port-grid",
        "apq-w8a8-gelu-uniform", "apq-w6a6-gelu-uniform",
    ),
    # PFCR beside the calibration-only rows it starts from (docs/quantization.md, PFCR section)
    "pfcr": ("adalog-w4a4", "pfcr-w4a4", "adalog-w3a3", "pfcr-w3a3", "fqvit-w8a8a8", "pfcr-w8a8"),
}

PIPELINES = ("float", "fakequant", "integer")


def expand_config_names(spec: str) -> list[str]:
    """Configuration names of a ``--configs`` value: comma-separated configuration or preset names, in order,
    each name once. ``ValueError`` naming the unknown name and listing the known configurations and presets."""
    from intsim.quant.configs import CONFIGS

    names: list[str] = []
    for token in (part.strip() for part in spec.split(",")):
        if not token:
            raise ValueError(f"--configs {spec!r}: empty name between commas")
        if token not in PRESETS and token not in CONFIGS:
            raise ValueError(f"--configs: unknown configuration {token!r}; known configurations: "
                             f"{', '.join(CONFIGS)}; presets: {', '.join(PRESETS)}")
        names.extend(name for name in PRESETS.get(token, (token,)) if name not in names)
    return names


# --------------------------------------------------------------------------------------------- the sweep
@dataclass
class _Shared:
    """What every configuration of a sweep reuses: the float model, its preprocessing, the decoded images."""

    model: object
    preprocess: object
    model_name: str
    class_names: list
    calib_batches: list  # uint8 arrays
    batches: list  # intsim.evaluate.Batch
    float_logits: list  # one array per batch


def _measure(shared: _Shared, config, bar) -> tuple[dict, dict]:
    """One configuration: ``(row, seconds)``. A configuration that cannot be quantized or run in integers (the
    exporter or the interpreter refuses it: ``ValueError``, ``OverflowError``, ``ProgramError``) gives a row with
    ``error``."""
    from intsim.evaluate import calibrate, evaluate
    from intsim.program import ProgramError
    from intsim.quant.export import export_program

    seconds: dict = {}
    started = step = time.perf_counter()
    bar_start = bar.n
    bar.set_postfix_str(f"{config.name}: calibrating")
    try:
        qvit = calibrate(copy.deepcopy(shared.model), shared.preprocess, config, None,
                         calib_batches=shared.calib_batches, progress=False)
        seconds["calibrate_s"] = time.perf_counter() - step
        step = time.perf_counter()
        program = export_program(qvit, model_name=shared.model_name, class_names=shared.class_names,
                                 preprocess=shared.preprocess.to_config())
        seconds["export_s"] = time.perf_counter() - step
        bar.set_postfix_str(config.name)
        evaluated: dict = {}
        result = evaluate(qvit, program, shared.batches, float_logits=shared.float_logits, progress=bar, seconds=evaluated)
    except (ValueError, OverflowError, ProgramError) as error:
        message = f"{type(error).__name__}: {' '.join(str(error).split())}"
        bar.write(f"intsim sweep: {config.name} failed: {message}", file=sys.stderr)
        bar.update(bar_start + sum(len(batch.pixels) for batch in shared.batches) - bar.n)
        return {"config": asdict(config), "error": message}, {"total_s": time.perf_counter() - started}
    seconds.update({f"{name}_s": value for name, value in evaluated.items()})
    seconds["total_s"] = time.perf_counter() - started
    row = {"config": asdict(config), **{key: result[key] for key in (*PIPELINES, "top1_agreement", "kl_to_float")},
           "program_sha256": program.sha256()}
    return row, seconds


def run_sweep(model_name: str | None, weights: str | None, calib: str | None, data: str | None,
              config_names: list[str], *, limit: int | None = None, calib_limit: int | None = None,
              batch_size: int = 32, workers: int = 2) -> dict:
    """Calibrate, export and evaluate every named configuration on the same images; the results as a dict.

    Keys: ``intsim_version``, ``model``, ``weights``, ``data``, ``calib``, ``settings`` (the command's options),
    ``images``, ``calibration_images``, ``float`` (top-1/top-5 %), ``configs`` -> name -> ``config`` (every
    field), ``float`` / ``fakequant`` / ``integer`` -> ``top1`` / ``top5`` (%), ``top1_agreement`` ->
    ``integer_vs_float`` / ``integer_vs_fakequant`` (%), ``kl_to_float`` -> ``fakequant`` / ``integer`` (mean KL of the
    float model's class distribution to theirs, nats), ``program_sha256`` (or ``same_as``, or ``error`` for a
    configuration that could not be quantized), and ``timing`` (seconds; the only part that varies between runs).
    Models and folders as in :mod:`intsim.evaluate` (``None``: the embedded digits ViT and its own images).
    """
    import torch
    from tqdm import tqdm

    import intsim
    from intsim.evaluate import calibration_batches, float_logits, labelled_batches, load_float_model
    from intsim.quant.configs import get_config
    from intsim.quant.vit import QuantViT

    started = time.perf_counter()
    timing: dict = {"load_before": os.getloadavg()[0], "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    configs = [get_config(name) for name in config_names]
    if not configs:
        raise ValueError("--configs: no configuration given")
    model, preprocess, class_names, model_name = load_float_model(model_name, weights)

    step = time.perf_counter()
    batches = labelled_batches(data, preprocess, limit=limit, batch_size=batch_size, workers=workers,
                               num_classes=len(class_names) if class_names else None)
    calib_batches = calibration_batches(calib, preprocess, batch_size=batch_size, workers=workers, limit=calib_limit)
    timing["decode_s"] = time.perf_counter() - step
    step = time.perf_counter()
    reference = float_logits(QuantViT(model, configs[0], mean=preprocess.mean, std=preprocess.std), batches)
    timing["float_s"] = time.perf_counter() - step
    shared = _Shared(model, preprocess, model_name, class_names, calib_batches, batches, reference)

    images = sum(len(batch.pixels) for batch in batches)
    rows: dict = {}
    timing["configs"] = {}
    first_with: dict = {}  # a configuration without its name -> the first row that measured it
    with tqdm(total=images * len(configs), desc="sweep", unit="img") as bar:
        for config in configs:
            same = first_with.setdefault(replace(config, name=""), config.name)
            if same != config.name:
                rows[config.name] = {**rows[same], "config": asdict(config), "same_as": same}
                rows[config.name].pop("program_sha256", None)
                bar.update(images)
                continue
            rows[config.name], timing["configs"][config.name] = _measure(shared, config, bar)

    timing["total_s"] = time.perf_counter() - started
    timing["load_after"] = os.getloadavg()[0]
    return {
        "intsim_version": intsim.__version__,
        "model": model_name,
        "weights": str(Path(weights).resolve()) if weights else None,
        "data": str(Path(data).resolve()) if data else "embedded held-out digits",
        "calib": str(Path(calib).resolve()) if calib else "embedded digits calibration images",
        "settings": {"configs": list(config_names), "limit": limit, "calib_limit": calib_limit,
                     "batch_size": batch_size, "workers": workers},
        "images": images,
        "calibration_images": sum(len(b) for b in calib_batches),
        "float": next((row["float"] for row in rows.values() if "float" in row), None),
        "configs": rows,
        "timing": timing,
    }


# --------------------------------------------------------------------------------------------- reports
def _describe(values: dict) -> list[str]:
    """Table cells: widths, observer, residual-stream (LayerNorm input) quantizer, fc1/GELU quantizer, softmax."""
    from intsim.quant.configs import config_from_metadata

    config = config_from_metadata(values)
    names = {"ptf": "PTF", "uniform": "per-tensor", "lis": "LIS", "uniform_softmax": "uniform"}

    def quantizer(kind: str) -> str:
        return names.get(config.point(kind).quantizer, config.point(kind).quantizer)

    softmax = f"{quantizer('post_softmax')} {config.attn_bits}-bit"
    if config.softmax == "lis" and config.lis_scale:
        softmax += ", scaled"
    if config.softmax == "uniform_softmax" and config.softmax_minmax:
        softmax += ", max-scaled"
    return [f"W{config.wbits}A{config.abits}", config.observer, quantizer("residual"), quantizer("post_gelu"), softmax]


_COLUMNS = ("configuration", "weights/acts", "observer", "LayerNorm input", "fc1/GELU", "softmax", "fake-quant top-1",
            "integer top-1", "integer top-5", "Δ integer vs float", "agree int/float", "agree int/fake-quant",
            "KL int/float", "seconds")


def _kl_cell(row: dict) -> str:
    kl = row.get("kl_to_float", {}).get("integer")  # absent in sweeps written before it was measured
    return "" if kl is None else f"{kl:.4f}"


def _markdown_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def results_markdown(results: dict) -> str:
    """The sweep as a Markdown table: one row per configuration (top-1/top-5 %, agreement %, seconds)."""
    reference = results["float"] or {"top1": float("nan"), "top5": float("nan")}
    lines = [
        f"# intsim sweep: {results['model']}",
        "",
        f"{results['images']} images of `{results['data']}`, calibrated on {results['calibration_images']} images of "
        f"`{results['calib']}`; intsim {results['intsim_version']}.",
        f"Float model: top-1 **{reference['top1']:.2f} %**, top-5 {reference['top5']:.2f} %. "
        "fake-quant = the fast float32 fake-quant model; integer = the exported Program run by the interpreter. "
        "Agreement = same top-1 class. Accuracies and agreements in %. KL = mean KL(float || integer) of the class "
        "distributions, nats (finer than top-1 on small image sets).",
        "",
        _markdown_row(_COLUMNS),
        _markdown_row(["---"] * 6 + ["---:"] * (len(_COLUMNS) - 6)),
    ]
    for name, row in results["configs"].items():
        cells = [f"`{name}`", *_describe(row["config"])]
        if "error" in row:
            cells += [f"failed: {row['error']}"] + [""] * (len(_COLUMNS) - len(cells) - 1)
        else:
            agree = row["top1_agreement"]
            seconds = results["timing"]["configs"].get(name, {}).get("total_s")
            if "same_as" in row:
                cells[0] += f" (= `{row['same_as']}`)"
            cells += [f"{row['fakequant']['top1']:.2f}", f"**{row['integer']['top1']:.2f}**", f"{row['integer']['top5']:.2f}",
                      f"{row['integer']['top1'] - reference['top1']:+.2f}", f"{agree['integer_vs_float']:.2f}",
                      f"{agree['integer_vs_fakequant']:.2f}", _kl_cell(row),
                      "" if seconds is None else f"{seconds:.0f}"]
        lines.append(_markdown_row(cells))
    timing = results["timing"]
    lines += ["", f"Total {timing['total_s']:.0f} s (decoding {timing['decode_s']:.0f} s, float model "
                  f"{timing['float_s']:.0f} s) on {timing['cpu_count']} cores; load average "
                  f"{timing['load_before']:.2f} before, {timing['load_after']:.2f} after.", ""]
    return "\n".join(lines)


def write_accuracy_plot(results: dict, path: str | Path) -> None:
    """``accuracy.png``: fake-quant and integer top-1 per configuration, the float top-1 as a dashed line.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(results["configs"])
    rows = [results["configs"][n] for n in names]
    fakequant = [row["fakequant"]["top1"] if "error" not in row else 0.0 for row in rows]
    integer = [row["integer"]["top1"] if "error" not in row else 0.0 for row in rows]
    figure = Figure(figsize=(max(6.0, 0.75 * len(names) + 2.0), 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = range(len(names))
    width = 0.4
    axes.bar([p - width / 2 for p in positions], fakequant, width, label="fake-quant (fast)", color="tab:blue")
    axes.bar([p + width / 2 for p in positions], integer, width, label="integer Program", color="tab:orange")
    for position, row, top1 in zip(positions, rows, integer):
        label = "failed" if "error" in row else f"{top1:.1f}"
        axes.text(position + width / 2, top1 + 1.0, label, ha="center", va="bottom", rotation=90, fontsize=7)
    if results["float"]:
        axes.axhline(results["float"]["top1"], color="black", linestyle="--", linewidth=1,
                     label=f"float {results['float']['top1']:.2f} %")
    axes.set_xticks(list(positions), names, rotation=35, ha="right", fontsize=8)
    axes.set_ylabel("top-1 %")
    axes.set_ylim(0, 100)
    axes.set_title(f"{results['model']}: top-1 on {results['images']} images")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={"Software": None})


def write_sweep_outputs(results: dict, output: str | Path) -> list[Path]:
    """Write ``results.json``, ``results.md`` and ``accuracy.png`` into ``output`` (created if needed); all three
    are written to a temporary folder beside it first, so an error leaves no partial output."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; give a folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".partial"))
    ordinary_permissions(staging, folder=True)  # mkdtemp makes it private; results are for sharing
    try:
        (staging / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (staging / "results.md").write_text(results_markdown(results))
        write_accuracy_plot(results, staging / "accuracy.png")
        output.mkdir(exist_ok=True)
        written = []
        for name in ("results.json", "results.md", "accuracy.png"):
            os.replace(staging / name, output / name)
            written.append(output / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


# --------------------------------------------------------------------------------------------- command line
def add_sweep_arguments(parser) -> None:
    """The options of ``intsim sweep`` beyond the model ones (``--model``, ``--weights``, ``-b``, ``-j``)."""
    parser.add_argument("--calib", help="folder of calibration images, searched recursively (default: embedded)")
    parser.add_argument("--calib-limit", type=int, help="use only the first N calibration images")
    parser.add_argument("-d", "--data", help="labelled image folder (default: embedded held-out digits)")
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("-c", "--configs", default="fqvit-ablation",
                        help=f"comma-separated configurations or presets ({', '.join(PRESETS)}; default fqvit-ablation)")
    parser.add_argument("-o", "--output", required=True, help="folder for results.json, results.md, accuracy.png")


def run_sweep_command(args) -> int:
    """``intsim sweep``: 0 when every configuration was evaluated, 1 when one failed (its row says why)."""
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise ValueError(f"--output {args.output} is a file; give a folder")
    from intsim.cli_common import check_output

    check_output(str(Path(args.output) / "results.json"), "--output")  # writable, before any calibration
    names = expand_config_names(args.configs)
    results = run_sweep(args.model, args.weights, args.calib, args.data, names, limit=args.limit,
                        calib_limit=args.calib_limit, batch_size=args.batch_size, workers=args.workers)
    print(results_markdown(results))
    for path in write_sweep_outputs(results, args.output):
        print(f"wrote {path}")
    return 1 if any("error" in row for row in results["configs"].values()) else 0
