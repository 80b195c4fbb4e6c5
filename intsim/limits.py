"""The integer contract's limits: one place, no dependency but the standard library.

Every number here bounds what an op accepts or what its int64 proofs rely on. The numpy references and numba
kernels of :mod:`intsim.ops`, their torch twins (:mod:`intsim.quant.torch_ops`), the Program schema
(:mod:`intsim.op_schema`) and the docs all read them from here, so a limit changes in one place (and with it
``docs/semantics.md`` and the committed golden files, on purpose). This module imports nothing heavy, so the
Program loader and the schema check need neither numba nor torch.
"""

from __future__ import annotations

__all__ = [
    "FLOAT32_EXACT",
    "FLOAT64_EXACT",
    "I_EXP_MAX_B",
    "I_EXP_MAX_C",
    "I_EXP_MAX_N",
    "I_EXP_MAX_X0",
    "INT32_MAX",
    "INT32_MIN",
    "INT64_MAX",
    "INT64_MIN",
    "LAYERNORM_MAX_CHANNELS",
    "LAYERNORM_MAX_INPUT_BITS",
    "LIS_VALUE_SHIFT",
    "LIS_ZERO_CODE",
    "LUT_MAX_BITS",
    "MAX_FULL_SCALE",
    "MAX_INPUT_SHIFT",
    "MAX_MULTIPLIER",
    "MAX_PTF_ALPHA",
    "MAX_SHIFT",
    "MULTIPLIER_BITS",
    "ROUNDING_MODES",
    "SOFTMAX_MAX_INPUT_BITS",
    "SOFTMAX_MAX_OUT_BITS",
]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT32_EXACT = 2**24  # every integer of magnitude <= 2**24 is a float32
FLOAT64_EXACT = 2**53  # every integer of magnitude <= 2**53 is a float64

ROUNDING_MODES = ("half_up", "half_even", "half_away")  # ties toward +inf, to even, away from zero

# requantize / residual add: y = round_shift(acc * M, k) with |M| < 2**31 and 0 <= k <= 62
MULTIPLIER_BITS = 31  # the mantissa of a normalised multiplier lies in [2**30, 2**31)
MAX_MULTIPLIER = 2**MULTIPLIER_BITS - 1
MAX_SHIFT = 62

MAX_INPUT_SHIFT = 15  # Linear's x_shift (PTF factors of its input): 0..15
MAX_PTF_ALPHA = 7  # LayerNorm's PTF factors 2**alpha, alpha in 0..7 (FQ-ViT: 0..3)
LAYERNORM_MAX_INPUT_BITS = 16
LAYERNORM_MAX_CHANNELS = 2**14  # |t * inv| <= 2*sqrt(C-1) * 2**48 < 2**56 fits int64 below this

SOFTMAX_MAX_INPUT_BITS = 32  # the scores accumulator a softmax reads
SOFTMAX_MAX_OUT_BITS = 16  # a uniform softmax's code width
MAX_FULL_SCALE = 2**20  # a uniform softmax's code of probability 1: 2**out_bits - 1 <= F <= 2**20
LIS_ZERO_CODE = 16  # Log-Int-Softmax codes 0..15 mean 2**-code, 16 means probability 0
# I-BERT's i-exp constants (IExpConstants): x0 in [-2**30, -1], |b_int| <= 2**30, |c_int| <= 2**61, n in [0, 62],
# so that r * (r + b_int) + c_int fits int64 for every r in (x0, 0]
I_EXP_MAX_X0, I_EXP_MAX_B, I_EXP_MAX_C, I_EXP_MAX_N = 2**30, 2**30, 2**61, 62
LIS_VALUE_SHIFT = 15  # LIS attn @ V weights are 2**(15 - code): the accumulator's unit is s_v * 2**-15

LUT_MAX_BITS = 16  # a table's index width (a 65536-word ROM)
