"""Whole-model speed: the integer interpreter on ViT-Ti against timm's float32 model, in the same process.

    python tools/bench_model.py [--weights FILE] [--batch 32] [--repeats 5] [--config fqvit-w8a8a4 | --program FILE]
                                [--json FILE]

Builds ViT-Ti (``vit_tiny_patch16_224``: the real weights from ``--weights``, else timm's random initialisation;
speed does not depend on the values), calibrates it on ``--calib-images`` random uint8 images, exports the
integer Program (or loads ``--program``: a method with a long search, e.g. ``adalog``, is calibrated once
with ``intsim quantize`` or ``tools/eval_config.py``), then times, interleaved, ``--repeats`` runs of

- the interpreter: :func:`intsim.interpreter.run_program` on a uint8 batch ``(B, 3, 224, 224)``;
- timm's float32 model (``eval()``, ``torch.no_grad()``) on the same batch, normalised beforehand (the
  normalisation is preprocessing, not model time; the Program folds it into the patch embedding).

after one warm-up call of each (numba kernels compile or load from the cache). It prints images/s of both, the
ratio interpreter / timm (images/s) of every repeat and its median (the target is >= 0.5), and the time of one
traced interpreter run split by op kind (a traced run executes op by op: the interpreter's fused kernels, used
in the timed runs, are off while a trace hook is installed, so the breakdown shows the unfused ops) (the gap between consecutive trace-hook calls, measured with
``time.perf_counter``: each op's own time plus the interpreter's bookkeeping around it). Writes all numbers as
JSON with the machine's thread settings.

Idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE`` unless set), as in the ``intsim`` command: torch and
numba each bring a libgomp, and spinning idle threads of one steal the cores of the other. Set the variable
to ``ACTIVE`` to measure the other way. On a loaded machine, OpenBLAS's threads make the batched attention
products (96 small GEMMs per op at ViT-Ti batch 32) up to 100x slower; the interpreter therefore runs BLAS on
one thread and parallelises by row blocks itself (``intsim.ops._threads``). Compare timings only between runs on the same, otherwise idle, machine.
"""

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
_BLOCK = re.compile(r"^blocks\.\d+\.")


def build_model(weights: str | None):
    import timm
    import torch

    if weights:
        from intsim.models import load_timm_model

        return load_timm_model(MODEL, weights)
    torch.manual_seed(0)
    return timm.create_model(MODEL, pretrained=False).eval()


def build_program(model, config_name: str, calib_images: int):
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
    return preprocess, export_program(qvit, model_name=MODEL, preprocess=preprocess.to_config())


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help=f"{MODEL} state_dict file (default: timm's random initialisation)")
    parser.add_argument("-c", "--config", default="fqvit-w8a8a4", help="named configuration (default fqvit-w8a8a4)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each model (default 5)")
    parser.add_argument("--calib-images", type=int, default=4, help="random calibration images (default 4)")
    parser.add_argument("--program", help="time this saved Program (e.g. a calibrated adalog-w4a4) instead of "
                                          "calibrating --config; its model must be " + MODEL)
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.calib_images < 1:
        parser.error("--batch, --repeats and --calib-images must be at least 1")

    import numba
    import torch

    from intsim.interpreter import run_program

    model = build_model(args.weights)
    if args.program:
        from intsim.data import Preprocess
        from intsim.program import load_program

        program = load_program(args.program)
        preprocess = Preprocess.from_config(program.metadata["preprocess"])
        args.config = program.metadata["config"]["name"]
    else:
        preprocess, program = build_program(model, args.config, args.calib_images)
    pixels = np.random.default_rng(2).integers(0, 256, size=(args.batch, 3, *preprocess.input_size), dtype=np.uint8)
    floats = torch.as_tensor(preprocess.normalize(pixels))

    def interpreter():
        return run_program(program, pixels)

    def float_model():
        with torch.no_grad():
            return model(floats)

    interpreter()  # warm-up: numba kernels load from the cache or compile
    float_model()
    rows = []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        interpreter()
        t_int = time.perf_counter() - start
        start = time.perf_counter()
        float_model()
        t_float = time.perf_counter() - start
        row = dict(interpreter_images_per_s=args.batch / t_int, timm_images_per_s=args.batch / t_float, ratio=t_float / t_int)
        rows.append(row)
        print(f"repeat {repeat + 1}: interpreter {row['interpreter_images_per_s']:8.2f} img/s   "
              f"timm float32 {row['timm_images_per_s']:8.2f} img/s   ratio {row['ratio']:.3f}", flush=True)
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    print(f"median:   interpreter {median['interpreter_images_per_s']:8.2f} img/s   "
          f"timm float32 {median['timm_images_per_s']:8.2f} img/s   ratio {median['ratio']:.3f} (target >= 0.5)")

    total, kinds, roles = op_breakdown(program, pixels)
    print(f"\none traced interpreter run: {total:.3f} s ({args.batch / total:.2f} img/s)")
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
    result = dict(
        model=MODEL,
        weights=args.weights or "random (timm init, torch.manual_seed(0))",
        config=args.config,
        batch=args.batch,
        repeats=rows,
        median=median,
        breakdown=dict(total_seconds=total, kinds=kinds, roles=roles),
        program=dict(ops=len(program.ops), sha256=program.sha256()),
        versions=dict(torch=torch.__version__, numba=numba.__version__, numpy=np.__version__),
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
