"""Whole-model speed: the integer interpreter against timm's float32 model (and onnxruntime's int8 model), in one run.

    python tools/bench_model.py [--model vit_tiny_patch16_224] [--weights FILE] [--batch 1,8,32,128] [--repeats 7]
                                [--config fqvit-w8a8a4 | --program FILE] [--no-onnxruntime] [--json FILE]

Builds the timm model (``--model``: ``vit_tiny_patch16_224``, ``deit_small_patch16_224`` or
``deit_base_patch16_224``; the weights from ``--weights``, else timm's random initialisation: speed does not
depend on the values), calibrates it on ``--calib-images`` random uint8 images, exports the integer Program (or
loads ``--program``: a method with a long search, e.g. ``adalog``, is calibrated once with ``intsim quantize`` or
``tools/eval_config.py``), and, for every batch size of ``--batch``, times ``--repeats`` interleaved rounds of

- the interpreter: :func:`intsim.interpreter.run_program` on a uint8 batch ``(B, 3, 224, 224)``;
- timm's float32 model (``eval()``, ``torch.no_grad()``) on the same batch, normalised beforehand (the
  normalisation is preprocessing, not model time; the Program folds it into the patch embedding);
- where onnxruntime and onnx are installed (``pip install onnxruntime onnx``; ``--no-onnxruntime`` skips it):
  the same timm model exported to ONNX and quantized by onnxruntime (static, QDQ, per-channel int8 weights, uint8
  activations, MinMax on the calibration images), on the same normalised batch, ``intra_op_num_threads`` = torch's
  thread count;

after one warm-up call of each (numba kernels compile or load from the cache). It prints, per batch, the medians
of images/s, the ratios interpreter / timm (the figure of the issues: >= 1 means the interpreter is faster) and
interpreter / onnxruntime int8, and the interpreter's peak memory (numpy bytes held at once in a fresh process that
loads the Program and runs the batch once, ``tracemalloc``); then the time of one traced interpreter run (at batch
32, or the first size) split by op kind and by op role (a traced run executes op by op: the fused kernels of the
timed runs are off while a trace hook is installed, so the breakdown shows the unfused ops; each row is the gap
between consecutive trace-hook calls, ``time.perf_counter``). Writes all numbers as JSON with the machine's thread
settings and the library versions.

Idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE`` unless set), as in the ``intsim`` command: torch and
numba each bring a libgomp, and spinning idle threads of one steal the cores of the other. Set the variable
to ``ACTIVE`` to measure the other way. On a loaded machine, OpenBLAS's threads make the batched attention
products (96 small GEMMs per op at ViT-Ti batch 32) up to 100x slower; the interpreter therefore runs BLAS on
one thread and parallelises by row blocks itself (``intsim.ops._threads``). Compare timings only between runs on
the same, otherwise idle, machine."""

from __future__ import annotations

import os

import intsim  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch or numba load libgomp; see the docstring)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import numpy as np  # noqa: E402

MODEL = "vit_tiny_patch16_224"
MODELS = ("vit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")
_BLOCK = re.compile(r"^blocks\.\d+\.")


def build_model(weights: str | None, name: str = MODEL):
    import timm
    import torch

    if weights:
        from intsim.models import load_timm_model

        return load_timm_model(name, weights)
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).eval()


def build_program(model, config_name: str, calib_images: int, name: str = MODEL):
    import torch

    from intsim.data import Preprocess
    from intsim.quant.configs import make_config
    from intsim.quant.export import export_program
    from intsim.quant.vit import QuantViT

    preprocess = Preprocess.from_timm_model(model)
    calib = np.random.default_rng(1).integers(0, 256, size=(calib_images, 3, *preprocess.input_size), dtype=np.uint8)
    torch.manual_seed(0)
    qvit = QuantViT(model, make_config(config_name), mean=preprocess.mean, std=preprocess.std)
    qvit.calibrate([torch.as_tensor(calib)])
    return preprocess, export_program(qvit, model_name=name, preprocess=preprocess.to_config())


def onnxruntime_int8(model, calibration: np.ndarray, folder: str, threads: int):
    """timm's model exported to ONNX (``torch.onnx.export``, opset 17, dynamic batch) and quantized by onnxruntime
    (``quantize_static``: QDQ format, per-channel int8 weights, uint8 activations, MinMax calibration on the given
    normalised float images); returns a callable ``run(batch)``, or ``None`` when onnxruntime or onnx is missing."""
    try:
        import onnxruntime
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError:
        return None
    import warnings

    import torch

    float_path, int8_path = os.path.join(folder, "model.onnx"), os.path.join(folder, "model_int8.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.as_tensor(calibration[:1]),), float_path, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)

    class Images(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": image[None]} for image in calibration])

        def get_next(self):
            return next(self.items, None)

    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime's advice to pre-process, once per weight
    try:
        quantize_static(float_path, int8_path, Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # idle onnxruntime threads must sleep, not spin: spinning threads steal the cores of the next runner timed
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(int8_path, options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run(None, {"x": batch})[0]


def interpreter_peak_bytes(program_path: str, batch: int) -> int:
    """The most bytes numpy arrays held at once while a FRESH process loads the Program and runs it once on a
    random batch (``tracemalloc``, started before loading: the constants, the forms derived from them, the
    kernels' per-thread workspaces and the activations all count; numpy reports its data buffers to it, so the
    allocator's reuse hides nothing). A subprocess, because the workspaces of earlier runs would hide their
    allocation. Torch and onnxruntime do not report to ``tracemalloc``: they have no such column."""
    import subprocess
    import sys

    code = ("import tracemalloc, numpy as np; tracemalloc.start(); from intsim.program import load_program; "
            "from intsim.interpreter import run_program; p = load_program(%r); (name,) = p.input_names; "
            "x = np.random.default_rng(2).integers(0, 256, size=(%d, *p.tensors[name].shape), dtype=np.uint8); "
            "run_program(p, x); print(tracemalloc.get_traced_memory()[1])") % (program_path, batch)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def _grouped(per_op, key, total) -> dict[str, dict]:
    groups: dict[str, dict] = defaultdict(lambda: {"seconds": 0.0, "count": 0})
    for row in per_op:
        group = groups[key(row)]
        group["seconds"] += row[2]
        group["count"] += 1
    for group in groups.values():
        group["share"] = group["seconds"] / total
    return dict(sorted(groups.items(), key=lambda item: -item[1]["seconds"]))


def op_breakdown(program, pixels) -> tuple[float, dict[str, dict], dict[str, dict]]:
    """One traced interpreter run: total seconds, seconds/count/share per op kind and per op role (the op name
    with its block index replaced by ``*``, e.g. ``blocks.*.attn.logits``, plus the kind)."""
    from intsim.interpreter import run_program

    per_op: list[tuple[str, str, float]] = []
    last = [0.0]

    def trace(op, inputs, outputs):
        now = time.perf_counter()
        per_op.append((op.kind, op.name, now - last[0]))
        last[0] = time.perf_counter()  # the hook's own bookkeeping is not charged to the next op

    start = last[0] = time.perf_counter()
    run_program(program, pixels, trace=trace)
    total = time.perf_counter() - start
    per_op.append(("(output check)", "(output check)", total - sum(t for _, _, t in per_op)))
    kinds = _grouped(per_op, lambda row: row[0], total)
    roles = _grouped(per_op, lambda row: f"{_BLOCK.sub('blocks.*.', row[1])} ({row[0]})", total)
    return total, kinds, roles


def _batches(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch takes sizes separated by commas (e.g. 1,8,32,128), got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--batch sizes must be at least 1, got {text!r}")
    return values


def time_runners(runners: dict, repeats: int, batch: int) -> list[dict]:
    """``repeats`` interleaved rounds (one call of each runner per round, in order) after one warm-up call each;
    images/s of every call, and each runner's images/s over the interpreter's (``ratio_*``)."""
    for run in runners.values():
        run()
    rows = []
    for _ in range(repeats):
        row = {}
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            row[f"{name}_images_per_s"] = batch / (time.perf_counter() - start)
        for name in runners:
            if name != "interpreter":  # interpreter / other, in images/s: > 1 means the interpreter is faster
                row[f"ratio_{name}"] = row["interpreter_images_per_s"] / row[f"{name}_images_per_s"]
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL, choices=MODELS, help=f"timm model (default {MODEL})")
    parser.add_argument("--weights", help="state_dict file of --model (default: timm's random initialisation)")
    parser.add_argument("-c", "--config", default="fqvit-w8a8a4", help="named configuration (default fqvit-w8a8a4)")
    parser.add_argument("--batch", type=_batches, default=[32], help="batch size, or sizes separated by commas "
                                                                     "(default 32; e.g. 1,8,32,128)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each model (default 5)")
    parser.add_argument("--calib-images", type=int, default=4, help="random calibration images (default 4)")
    parser.add_argument("--program", help="time this saved Program (e.g. a calibrated adalog-w4a4) instead of "
                                          "calibrating --config; its model must be --model")
    parser.add_argument("--no-onnxruntime", action="store_true",
                        help="do not time onnxruntime's int8 model even where onnxruntime is installed")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.calib_images < 1:
        parser.error("--repeats and --calib-images must be at least 1")

    import tempfile

    import numba
    import torch

    from intsim.interpreter import run_program

    model = build_model(args.weights, args.model)
    if args.program:
        from intsim.data import Preprocess
        from intsim.program import load_program

        program = load_program(args.program)
        preprocess = Preprocess.from_config(program.metadata["preprocess"])
        args.config = program.metadata["config"]["name"]
        if program.metadata.get("model") not in (None, args.model):
            parser.error(f"--program {args.program} is a Program of {program.metadata.get('model')}, not of "
                         f"--model {args.model}")
    else:
        preprocess, program = build_program(model, args.config, args.calib_images, args.model)
    ort_int8 = None
    with tempfile.TemporaryDirectory() as folder:
        if not args.no_onnxruntime:
            calibration = np.random.default_rng(1).integers(0, 256, size=(args.calib_images, 3, *preprocess.input_size),
                                                            dtype=np.uint8)
            ort_int8 = onnxruntime_int8(model, preprocess.normalize(calibration).astype(np.float32), folder,
                                        torch.get_num_threads())
            if ort_int8 is None:
                print("onnxruntime (and onnx) not installed: no int8 onnxruntime column (pip install onnxruntime onnx)")
        from intsim.program import save_program

        program_path = os.path.join(folder, "program.intsim")
        save_program(program, program_path)
        results = []
        for batch in args.batch:
            pixels = np.random.default_rng(2).integers(0, 256, size=(batch, 3, *preprocess.input_size), dtype=np.uint8)
            floats = preprocess.normalize(pixels).astype(np.float32)
            floats_torch = torch.as_tensor(floats)

            def float_model():
                with torch.no_grad():
                    return model(floats_torch)

            runners = {"interpreter": lambda: run_program(program, pixels), "timm": float_model}
            if ort_int8 is not None:
                runners["onnxruntime_int8"] = lambda: ort_int8(floats)
            rows = time_runners(runners, args.repeats, batch)
            median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
            peak = interpreter_peak_bytes(program_path, batch)
            results.append(dict(batch=batch, repeats=rows, median=median, interpreter_peak_bytes=peak))
            other = (f"   onnxruntime int8 {median['onnxruntime_int8_images_per_s']:8.2f} img/s (interpreter / "
                     f"onnxruntime {median['ratio_onnxruntime_int8']:.3f})") if ort_int8 is not None else ""
            print(f"batch {batch:>4}: interpreter {median['interpreter_images_per_s']:8.2f} img/s   timm float32 "
                  f"{median['timm_images_per_s']:8.2f} img/s   ratio {median['ratio_timm']:.3f}{other}   interpreter "
                  f"peak {peak / 2**20:.0f} MB", flush=True)

    breakdown_batch = 32 if 32 in args.batch else args.batch[0]
    pixels = np.random.default_rng(2).integers(0, 256, size=(breakdown_batch, 3, *preprocess.input_size), dtype=np.uint8)
    total, kinds, roles = op_breakdown(program, pixels)
    print(f"\none traced interpreter run at batch {breakdown_batch}: {total:.3f} s ({breakdown_batch / total:.2f} img/s)")
    print(f"{'op kind':<18} {'count':>5} {'seconds':>9} {'share':>7}")
    for kind, row in kinds.items():
        print(f"{kind:<18} {row['count']:>5} {row['seconds']:>9.4f} {100 * row['share']:>6.1f}%")
    print(f"\n{'op role (all blocks together)':<46} {'count':>5} {'seconds':>9} {'share':>7}")
    for role, row in list(roles.items())[:15]:
        print(f"{role:<46} {row['count']:>5} {row['seconds']:>9.4f} {100 * row['share']:>6.1f}%")

    threads = dict(
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        numba_threads=numba.get_num_threads(),
        numba_threading_layer=numba.threading_layer(),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
    )
    print(f"\nmachine: {platform.processor() or platform.machine()}, {threads}")
    versions = dict(torch=torch.__version__, numba=numba.__version__, numpy=np.__version__)
    if ort_int8 is not None:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    result = dict(
        model=args.model,
        weights=args.weights or "random (timm init, torch.manual_seed(0))",
        config=args.config,
        batches=results,
        breakdown=dict(batch=breakdown_batch, total_seconds=total, kinds=kinds, roles=roles),
        program=dict(ops=len(program.ops), sha256=program.sha256()),
        versions=versions,
        machine=dict(platform=platform.platform(), processor=platform.processor(), **threads),
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
            handle.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
