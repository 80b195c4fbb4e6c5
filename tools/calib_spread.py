"""How much top-1 moves with the calibration images: the same configuration calibrated on random subsets.

    python tools/calib_spread.py --model vit_tiny_patch16_224 --weights W --calib DIR --data DIR \
        [-c fqvit-w8a8a8] [--subsets 4] [--subset-size 224] [--grid-bits 14,15,17] [--integer] [--limit N] \
        [--json FILE]

On 500 validation images one image is 0.2 points of top-1, so a method's effect of a few tenths is within the
noise of which images calibrated it. This calibrates the configuration once on the whole ``--calib`` folder and
then on ``--subsets`` random subsets of ``--subset-size`` of its images (seeded: subset ``i`` uses
``numpy.random.default_rng(i)``), and reports for each the fast fake-quant top-1 and the mean KL(float || quantized)
of the logits over the validation images (a paired, far less noisy measure), and with ``--integer`` the same for
the exported integer Program (its int32 logits times the logits' scale). Prints a table (and the spread: mean,
min, max, standard deviation of each column) and writes everything as JSON. Deterministic for the same arguments.

``--grid-bits`` adds rows calibrated on the whole folder with the scale grid (``intsim.quant.qparams.snap_scale``,
16 significant bits by default) at other widths: every scale moves by at most ~1e-5 relative, so these rows show
how much top-1 moves for reasons that have nothing to do with a method (which borderline images flip).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def _kl(reference: np.ndarray, logits: np.ndarray) -> float:
    """Mean over images of KL(softmax(reference) || softmax(logits)), float64."""
    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    ref, ours = log_softmax(reference.astype(np.float64)), log_softmax(logits.astype(np.float64))
    return float((np.exp(ref) * (ref - ours)).sum(axis=1).mean())


def _measure(qvit, program, val, float_logits, labels) -> dict:
    import torch

    from intsim.interpreter import run_program

    fast = np.concatenate([qvit.run_fast(torch.as_tensor(batch.pixels))[0].numpy() for batch in val])
    row = {"fakequant.top1": 100.0 * float((fast.argmax(1) == labels).mean()), "fakequant.kl": _kl(float_logits, fast)}
    if program is not None:
        scale = program.tensors[program.output_names[0]].scale
        integer = np.concatenate([run_program(program, batch.pixels) for batch in val]).astype(np.float64) * scale
        row.update({"integer.top1": 100.0 * float((integer.argmax(1) == labels).mean()), "integer.kl": _kl(float_logits, integer)})
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="timm model name")
    parser.add_argument("--weights", required=True, help="state_dict file (safetensors or torch)")
    parser.add_argument("--calib", required=True, help="calibration image folder")
    parser.add_argument("--data", required=True, help="labelled validation folder")
    parser.add_argument("-c", "--config", default="fqvit-w8a8a8", help="named configuration (default fqvit-w8a8a8)")
    parser.add_argument("--subsets", type=int, default=4, help="random calibration subsets (default 4)")
    parser.add_argument("--subset-size", type=int, default=224, help="images per subset (default 224)")
    parser.add_argument("--grid-bits", default="", help="comma-separated scale-grid widths for extra rows (e.g. 14,15,17)")
    parser.add_argument("--integer", action="store_true", help="also run the exported integer Program (slower)")
    parser.add_argument("--limit", type=int, help="validation images (default all)")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    import intsim  # noqa: F401  (sets the OpenMP wait policy before torch loads)
    from intsim.evaluate import calibrate, calibration_batches, float_logits, labelled_batches, load_float_model
    from intsim.quant import qparams
    from intsim.quant.configs import get_config
    from intsim.quant.export import export_program

    config = get_config(args.config)
    model, preprocess, class_names, name = load_float_model(args.model, args.weights)
    calib = np.concatenate(calibration_batches(args.calib, preprocess, batch_size=32, workers=2))
    if not 1 <= args.subset_size <= len(calib) or args.subsets < 0:
        parser.error(f"--subset-size must be in [1, {len(calib)}] (the calibration images) and --subsets >= 0")
    val = labelled_batches(args.data, preprocess, limit=args.limit, batch_size=50, workers=2)
    labels = np.concatenate([batch.labels for batch in val])
    sets = [("all", np.arange(len(calib)))] + [
        (f"subset {i}", np.sort(np.random.default_rng(i).permutation(len(calib))[: args.subset_size]))
        for i in range(args.subsets)
    ]
    shipped_grid = qparams.SCALE_GRID_BITS
    grids = [int(bits) for bits in args.grid_bits.split(",") if bits.strip()]
    sets = [(label, index, shipped_grid) for label, index in sets]
    sets += [(f"grid {bits} bits", np.arange(len(calib)), bits) for bits in grids]
    reference = None
    rows = []
    start = time.perf_counter()
    for label, index, grid_bits in tqdm(sets, desc="calibration sets", unit="set"):
        images = calib[index]
        qparams.SCALE_GRID_BITS = grid_bits  # read by snap_scale at calibration time
        qvit = calibrate(model, preprocess, config, None, calib_batches=[images[i : i + 32] for i in range(0, len(images), 32)],
                         progress=False)
        if reference is None:
            reference = np.concatenate(float_logits(qvit, val))
        program = export_program(qvit, model_name=name, class_names=class_names, preprocess=preprocess.to_config()) \
            if args.integer else None
        rows.append({"calibration": label, "images": len(index), **_measure(qvit, program, val, reference, labels)})
    qparams.SCALE_GRID_BITS = shipped_grid

    columns = [key for key in rows[0] if key not in ("calibration", "images")]
    print(f"{args.config} on {len(labels)} images of {args.data} (float top-1 "
          f"{100.0 * float((reference.argmax(1) == labels).mean()):.2f} %)")
    print(f"{'calibration':16s} {'images':>6s} " + " ".join(f"{c:>16s}" for c in columns))
    for row in rows:
        print(f"{row['calibration']:16s} {row['images']:6d} " + " ".join(f"{row[c]:16.4f}" for c in columns))
    spread = {c: {"mean": statistics.fmean(r[c] for r in rows), "min": min(r[c] for r in rows),
                  "max": max(r[c] for r in rows), "stdev": statistics.stdev(r[c] for r in rows) if len(rows) > 1 else 0.0}
              for c in columns}
    for stat in ("mean", "min", "max", "stdev"):
        print(f"{stat:16s} {'':6s} " + " ".join(f"{spread[c][stat]:16.4f}" for c in columns))
    print(f"{time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": args.config, "images": len(labels), "rows": rows, "spread": spread,
                       "float.top1": 100.0 * float((reference.argmax(1) == labels).mean())}, handle, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
