"""Benchmark every integer kernel against its numpy reference, and the integer matmul against float32 BLAS.

Shapes are ViT-Ti's at batch 32. Each timing is the median of ``--repeats`` runs after one warm-up call (which
also compiles the numba kernel). Prints a table of ratios and writes the same numbers as JSON:

    python tools/bench_ops.py [--repeats 5] [--json bench_ops.json]

A ratio is ``time(reference) / time(kernel)`` (how many times faster the kernel is), and for the matmuls
``time(numpy float32 matmul) / time(integer matmul)`` (throughput relative to float BLAS; >= 0.5 is the target).
Reference timings use fewer repeats when a single call is slow (they are plain numpy/Python loops).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from tqdm import tqdm

BATCH, TOKENS, DIM, HEADS, HIDDEN = 32, 197, 192, 3, 768


@dataclass
class Case:
    name: str
    shape: str
    kernel: Callable[[], object]
    baseline: Callable[[], object]
    baseline_name: str  # "reference" or "numpy float32 matmul"
    target: float


def median_seconds(function: Callable[[], object], repeats: int, budget_seconds: float = 20.0) -> float:
    function()  # warm-up: compiles numba kernels, fills caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
        if sum(times) > budget_seconds:
            break
    return statistics.median(times)


def cases(rng: np.random.Generator) -> list[Case]:
    import intsim.ops as ops

    out: list[Case] = []

    acc = rng.integers(-(2**20), 2**20, size=(BATCH, TOKENS, 3 * DIM), dtype=np.int32)
    multiplier = rng.integers(2**30, 2**31 - 1, size=3 * DIM)
    shift = rng.integers(30, 40, size=3 * DIM)
    kwargs = dict(zero_point=128, qmin=0, qmax=255)
    out.append(Case("requantize (per channel)", str(acc.shape),
                    lambda: ops.requantize(acc, multiplier, shift, **kwargs),
                    lambda: ops.requantize_reference(acc, multiplier, shift, **kwargs), "reference", 20.0))

    for extra in getattr(ops, "BENCH_EXTRA", []):
        out.append(extra(rng))
    return out


def matmul_cases(rng: np.random.Generator) -> list[Case]:
    try:
        from intsim.ops.matmul import integer_matmul
    except ImportError:
        return []
    shapes = [
        ("qkv linear", (BATCH, TOKENS, DIM), (DIM, 3 * DIM), 255, 127),
        ("fc1 linear", (BATCH, TOKENS, DIM), (DIM, HIDDEN), 255, 127),
        ("fc2 linear", (BATCH, TOKENS, HIDDEN), (HIDDEN, DIM), 255, 127),
        ("q @ k^T", (BATCH, HEADS, TOKENS, DIM // HEADS), (BATCH, HEADS, DIM // HEADS, TOKENS), 255, 255),
        ("attn @ v (LIS weights)", (BATCH, HEADS, TOKENS, TOKENS), (BATCH, HEADS, TOKENS, DIM // HEADS), 2**15, 255),
    ]
    out = []
    for name, a_shape, b_shape, a_hi, b_hi in shapes:
        a = rng.integers(0, a_hi + 1, size=a_shape).astype(np.uint8 if a_hi < 256 else np.int32)
        b_signed = b_hi == 127
        b = (rng.integers(-128, 128, size=b_shape).astype(np.int8) if b_signed
             else rng.integers(0, 256, size=b_shape).astype(np.uint8))
        a_zp = 0 if a_hi > 255 else 117
        b_zp = 0 if b_signed else 131
        af, bf = a.astype(np.float32), b.astype(np.float32)
        out.append(Case(f"integer_matmul: {name}", f"{a_shape} @ {b_shape}",
                        lambda a=a, b=b, a_zp=a_zp, b_zp=b_zp: integer_matmul(a, b, a_zero_point=a_zp, b_zero_point=b_zp),
                        lambda af=af, bf=bf: np.matmul(af, bf), "numpy float32 matmul", 0.5))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per function (median is reported)")
    parser.add_argument("--json", default="bench_ops.json", help="where to write the results (JSON)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    all_cases = cases(rng) + matmul_cases(rng)
    rows = []
    for case in tqdm(all_cases, desc="benchmarking", unit="op"):
        kernel_s = median_seconds(case.kernel, args.repeats)
        baseline_s = median_seconds(case.baseline, args.repeats)
        rows.append(dict(op=case.name, shape=case.shape, kernel_ms=kernel_s * 1e3, baseline=case.baseline_name,
                         baseline_ms=baseline_s * 1e3, ratio=baseline_s / kernel_s, target=case.target,
                         meets_target=baseline_s / kernel_s >= case.target))

    import numba

    header = f"{'op':<36} {'shape':<40} {'kernel ms':>10} {'baseline ms':>12} {'ratio':>8} {'target':>7}  baseline"
    print(header)
    print("-" * len(header))
    for row in rows:
        flag = "" if row["meets_target"] else "  BELOW TARGET"
        print(f"{row['op']:<36} {row['shape']:<40} {row['kernel_ms']:>10.2f} {row['baseline_ms']:>12.2f} "
              f"{row['ratio']:>8.2f} {row['target']:>7.1f}  {row['baseline']}{flag}")
    result = dict(repeats=args.repeats, numba_threads=numba.get_num_threads(), rows=rows)
    with open(args.json, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"\nwrote {args.json} (numba threads: {numba.get_num_threads()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
