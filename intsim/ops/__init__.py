"""The integer operators of a quantized ViT: each has a numpy reference (the spec) and a numba kernel.

The public functions exported here run the numba kernel after validating their arguments; the
``*_reference`` twins are the specification that the kernels, the fake-quant torch modules and
``docs/semantics.md`` follow bit for bit.
"""

from intsim.ops.requant import quantize_multiplier, requantize, requantize_reference
from intsim.ops.rounding import ROUNDING_MODES

__all__ = [
    "ROUNDING_MODES",
    "quantize_multiplier",
    "requantize",
    "requantize_reference",
]
