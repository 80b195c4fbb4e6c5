"""The integer operators of a quantized ViT: each has a numpy reference (the spec) and a numba kernel.

The public functions exported here run the numba kernel after validating their arguments; the
``*_reference`` twins are the specification that the kernels, the fake-quant torch modules and
``docs/semantics.md`` follow bit for bit. :data:`OPS` lists every run-time op with its reference, so the
tests, the CLI and the benchmarks iterate one registry. Plan-time helpers (float scales in, integer
constants out) are exported too: ``quantize_multiplier``, ``layernorm_constants``, ``i_exp_constants``,
``build_gelu_lut``, ``i_gelu_constants``, ``residual_add_constants``, and the AdaLog tables of
:mod:`intsim.ops.logquant` (``adalog_shift_table``, ``adalog_mantissa_table``, ``adalog_thresholds``,
``log_weight_table``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from intsim.ops.gelu import (
    IGeluConstants,
    build_gelu_lut,
    i_gelu,
    i_gelu_constants,
    i_gelu_reference,
    lut_lookup,
    lut_lookup_reference,
)
from intsim.ops.isqrt import isqrt, isqrt_reference
from intsim.ops.logquant import (
    adalog_mantissa_table,
    adalog_shift_table,
    adalog_thresholds,
    asymmetric_linear,
    asymmetric_linear_reference,
    log_attention_values,
    log_attention_values_reference,
    log_encode,
    log_encode_reference,
    log_linear,
    log_linear_reference,
    log_weight_table,
)
from intsim.ops.layernorm import LayerNormConstants, layernorm_constants, ptf_layernorm, ptf_layernorm_reference
from intsim.ops.matmul import integer_linear, integer_linear_reference, integer_matmul, integer_matmul_reference
from intsim.ops.requant import quantize_multiplier, requantize, requantize_reference
from intsim.ops.residual import residual_add, residual_add_constants, residual_add_reference
from intsim.ops.rounding import ROUNDING_MODES
from intsim.ops.softmax import (
    ZERO_CODE,
    IExpConstants,
    i_exp_constants,
    int_exp,
    int_exp_reference,
    lis_attention_values,
    lis_attention_values_reference,
    log_int_softmax,
    log_int_softmax_reference,
    uniform_int_softmax,
    uniform_int_softmax_reference,
)


@dataclass(frozen=True)
class OpSpec:
    """A run-time integer op: its public (validated, numba) function and its numpy reference twin."""

    name: str
    kernel: Callable
    reference: Callable


OPS: tuple[OpSpec, ...] = tuple(
    OpSpec(kernel.__name__, kernel, reference)
    for kernel, reference in (
        (requantize, requantize_reference),
        (integer_matmul, integer_matmul_reference),
        (integer_linear, integer_linear_reference),
        (isqrt, isqrt_reference),
        (ptf_layernorm, ptf_layernorm_reference),
        (int_exp, int_exp_reference),
        (log_int_softmax, log_int_softmax_reference),
        (uniform_int_softmax, uniform_int_softmax_reference),
        (lis_attention_values, lis_attention_values_reference),
        (lut_lookup, lut_lookup_reference),
        (i_gelu, i_gelu_reference),
        (residual_add, residual_add_reference),
        (log_encode, log_encode_reference),
        (log_attention_values, log_attention_values_reference),
        (asymmetric_linear, asymmetric_linear_reference),
        (log_linear, log_linear_reference),
    )
)

__all__ = [
    "OPS",
    "OpSpec",
    "ROUNDING_MODES",
    "ZERO_CODE",
    "IExpConstants",
    "IGeluConstants",
    "LayerNormConstants",
    "adalog_mantissa_table",
    "adalog_shift_table",
    "adalog_thresholds",
    "build_gelu_lut",
    "i_exp_constants",
    "i_gelu_constants",
    "layernorm_constants",
    "log_weight_table",
    "quantize_multiplier",
    "residual_add_constants",
    *(name for spec in OPS for name in (spec.name, f"{spec.name}_reference")),
]
