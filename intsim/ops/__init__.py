"""The integer operators of a quantized ViT: each has a numpy reference (the spec) and a numba kernel.

The public functions exported here run the numba kernel after validating their arguments; the
``*_reference`` twins are the specification that the kernels, the fake-quant torch modules and
``docs/semantics.md`` follow bit for bit. :data:`OPS` lists every run-time op with its reference, so the
tests, the CLI and the benchmarks iterate one registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from intsim.ops.requant import quantize_multiplier, requantize, requantize_reference
from intsim.ops.rounding import ROUNDING_MODES


@dataclass(frozen=True)
class OpSpec:
    """A run-time integer op: its public (validated, numba) function and its numpy reference twin."""

    name: str
    kernel: Callable
    reference: Callable


OPS: tuple[OpSpec, ...] = (
    OpSpec("requantize", requantize, requantize_reference),
)

__all__ = [
    "OPS",
    "OpSpec",
    "ROUNDING_MODES",
    "quantize_multiplier",
    "requantize",
    "requantize_reference",
]
