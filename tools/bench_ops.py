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
    """One case per row-wise / elementwise kernel at ViT-Ti batch-32 shapes, against its numpy reference."""
    import intsim.ops as ops

    tokens = (BATCH, TOKENS, DIM)
    attention = (BATCH, HEADS, TOKENS, TOKENS)
    hidden = (BATCH, TOKENS, HIDDEN)

    acc = rng.integers(-(2**20), 2**20, size=(BATCH, TOKENS, 3 * DIM), dtype=np.int32)
    multiplier = rng.integers(2**30, 2**31 - 1, size=3 * DIM)
    shift = rng.integers(30, 40, size=3 * DIM)
    requant = dict(zero_point=128, qmin=0, qmax=255)

    residual_stream = rng.integers(0, 256, size=tokens).astype(np.uint8)
    ln_params = ops.layernorm_constants(rng.normal(1.0, 0.2, DIM), rng.normal(0.0, 0.2, DIM), 0.05)
    layernorm = dict(zero_point=121, alpha=rng.integers(0, 4, size=DIM), **ln_params._asdict())

    logits = rng.integers(0, 256, size=attention).astype(np.uint8)
    exp_constants = ops.i_exp_constants(0.06)
    softmax = dict(zero_point=100, constants=exp_constants)
    exponent_input = -rng.integers(0, 2000, size=attention).astype(np.int64)
    lis_codes = ops.log_int_softmax(logits, **softmax)
    values = rng.integers(0, 256, size=(BATCH, HEADS, TOKENS, DIM // HEADS)).astype(np.uint8)

    gelu_input = rng.integers(0, 256, size=hidden).astype(np.uint8)
    gelu_table = ops.build_gelu_lut(in_scale=0.05, in_zero_point=100, out_scale=0.03, out_zero_point=10)
    fc1_acc = rng.integers(-(2**16), 2**16, size=hidden).astype(np.int32)
    gelu_constants = ops.i_gelu_constants(1e-3)

    other = rng.integers(0, 256, size=tokens).astype(np.uint8)
    ma, mb, k = ops.residual_add_constants(0.05, 0.02 * 2.0 ** rng.integers(0, 4, size=DIM), 0.04)
    residual = dict(a_zero_point=120, b_zero_point=7, a_multiplier=ma, b_multiplier=mb, shift=k, out_zero_point=110)

    squares = rng.integers(0, 2**46, size=(BATCH, TOKENS))

    def pair(name, shape, kernel, reference, *args, **kwargs):
        return Case(name, str(shape), lambda: kernel(*args, **kwargs), lambda: reference(*args, **kwargs),
                    "reference", 20.0)

    return [
        pair("requantize (per channel)", acc.shape, ops.requantize, ops.requantize_reference, acc, multiplier, shift, **requant),
        pair("ptf_layernorm", tokens, ops.ptf_layernorm, ops.ptf_layernorm_reference, residual_stream, **layernorm),
        pair("log_int_softmax", attention, ops.log_int_softmax, ops.log_int_softmax_reference, logits, **softmax),
        pair("uniform_int_softmax", attention, ops.uniform_int_softmax, ops.uniform_int_softmax_reference, logits, **softmax),
        pair("int_exp", attention, ops.int_exp, ops.int_exp_reference, exponent_input, exp_constants),
        pair("lis_attention_values", f"{attention} x {values.shape}", ops.lis_attention_values,
             ops.lis_attention_values_reference, lis_codes, values, v_zero_point=128),
        pair("residual_add (PTF output)", tokens, ops.residual_add, ops.residual_add_reference, residual_stream, other, **residual),
        pair("lut_lookup (GELU)", hidden, ops.lut_lookup, ops.lut_lookup_reference, gelu_input, gelu_table),
        pair("i_gelu", hidden, ops.i_gelu, ops.i_gelu_reference, fc1_acc, gelu_constants),
        pair("isqrt (LayerNorm sigmas)", squares.shape, ops.isqrt, ops.isqrt_reference, squares),
    ]


def matmul_cases(rng: np.random.Generator) -> list[Case]:
    from intsim.ops.matmul import integer_matmul

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
        if a_hi > 255:  # attention weights 2**(15 - A) of realistic LIS codes, not uniform values
            a = np.where(rng.random(a_shape) < 0.9, 0, 2 ** (15 - rng.integers(2, 16, size=a_shape))).astype(np.int32)
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
