"""The integer contract lives in one place: limits in intsim.limits, validation and bound proofs in backend-neutral
functions (intsim.ops._checks and each op module's check_* / prove_*), kernel internals under public names."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from intsim import limits
from intsim.ops import fused, gelu, layernorm, matmul, requant, residual, rounding, softmax
from intsim.ops._checks import ArrayOperand, abs_max, check_in_range, column_abs_max, per_channel_vector

OPS_DIR = Path(fused.__file__).parent


def test_the_public_limits_are_the_ones_of_intsim_limits():
    assert requant.MAX_SHIFT == residual.MAX_SHIFT == limits.MAX_SHIFT
    assert requant.MULTIPLIER_BITS == residual.MULTIPLIER_BITS == limits.MULTIPLIER_BITS
    assert matmul.MAX_INPUT_SHIFT == limits.MAX_INPUT_SHIFT
    assert matmul.FLOAT32_EXACT == limits.FLOAT32_EXACT and matmul.FLOAT64_EXACT == limits.FLOAT64_EXACT
    assert layernorm.MAX_PTF_ALPHA == limits.MAX_PTF_ALPHA
    assert layernorm.MAX_CHANNELS == limits.LAYERNORM_MAX_CHANNELS
    assert layernorm.MAX_INPUT_BITS == limits.LAYERNORM_MAX_INPUT_BITS
    assert softmax.ZERO_CODE == limits.LIS_ZERO_CODE and softmax.LIS_VALUE_SHIFT == limits.LIS_VALUE_SHIFT
    assert softmax.MAX_FULL_SCALE == limits.MAX_FULL_SCALE
    assert gelu.MAX_LUT_BITS == limits.LUT_MAX_BITS
    assert tuple(rounding.ROUNDING_MODES) == limits.ROUNDING_MODES


@pytest.mark.parametrize("path", sorted(OPS_DIR.glob("*.py")) + [OPS_DIR.parent / "quant" / "torch_ops.py"],
                         ids=lambda path: path.name)
def test_no_module_redefines_a_limit(path):
    """The numbers of intsim.limits are imported, never computed again (aliases of the same object are fine)."""
    tree = ast.parse(path.read_text())
    redefined = [
        target.id
        for node in tree.body if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Constant, ast.BinOp, ast.UnaryOp))
        for target in node.targets if isinstance(target, ast.Name)
        if target.id.lstrip("_") in limits.__all__ or target.id in ("_INT32_MIN", "_INT32_MAX", "_MAX_MULTIPLIER")
    ]
    assert not redefined, f"{path.name} defines {redefined} again; import them from intsim.limits"


def test_fused_kernels_import_no_private_name():
    tree = ast.parse(Path(fused.__file__).read_text())
    private = [alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               for alias in node.names if alias.name.startswith("_")]
    assert not private, f"intsim/ops/fused.py imports private names {private}; give them public names"


# ------------------------------------------------------------------------------------------- neutral helpers


@given(hnp.arrays(st.sampled_from([np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64]),
                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)),
       st.integers(-300, 300))
def test_array_operand_reductions_are_exact(array, zero_point):
    operand = ArrayOperand(array)
    assert operand.bounds() == (int(array.min()), int(array.max()))
    assert abs_max(operand, zero_point) == max(abs(int(v) - zero_point) for v in array.reshape(-1).tolist())
    columns = array.reshape(-1, array.shape[-1] if array.ndim else 1)
    assert column_abs_max(operand, zero_point) == [max(abs(int(v) - zero_point) for v in column)
                                                   for column in columns.T.tolist()]
    assert array[operand.index_of(int(array.max()))] == array.max()


def test_check_in_range_names_the_value_and_its_index_and_trusts_the_dtype():
    check_in_range(ArrayOperand(np.array([0, 255], np.uint8)), "q", "op", 0, 255)  # the dtype proves it: no scan
    with pytest.raises(ValueError, match=r"op: q holds 256 at index \(1, 0\), outside its declared code range \[0, 255\]"):
        check_in_range(ArrayOperand(np.array([[0, 1], [256, 3]], np.int16)), "q", "op", 0, 255)
    with pytest.raises(ValueError, match=r"^op: b holds -1, outside the rows$"):
        check_in_range(ArrayOperand(np.array([-1])), "b", "op", 0, 3, where="the rows", locate=False)


def test_per_channel_vector_broadcasts_and_names_the_channel():
    assert per_channel_vector(3, "m", "op", 4, 0, 7).tolist() == [3, 3, 3, 3]
    assert per_channel_vector(np.array([1, 2], np.uint8), "m", "op", 2, 0, 7).dtype == np.int64
    with pytest.raises(ValueError, match=r"m = 9 is outside its allowed range \[0, 7\] \(m holds 9 at channel 1\)"):
        per_channel_vector([0, 9, 9], "m", "op", 3, 0, 7)
    with pytest.raises(ValueError, match=r"m = -1 is outside .* \(m holds -1 for every channel\)"):
        per_channel_vector(-1, "m", "op", 3, 0, 7)
    with pytest.raises(ValueError, match=r"per-channel vector of length 3 \(the last axis\), got shape \(2,\)"):
        per_channel_vector([1, 2], "m", "op", 3, 0, 7, of=" (the last axis)")
    with pytest.raises(TypeError, match="m must be an integer array"):
        per_channel_vector(1.5, "m", "op", 3, 0, 7)


def test_the_neutral_proofs_take_bounds_not_arrays():
    """The proofs read operands only through the Operand protocol: a stand-in with bounds alone suffices."""

    class Bounds:
        shape, dtype_range = (2, 3), (limits.INT64_MIN, limits.INT64_MAX)

        def __init__(self, low, high):
            self.low, self.high = low, high

        def bounds(self):
            return self.low, self.high

        def column_bounds(self):
            return [self.low] * 3, [self.high] * 3

    params = requant.check_requantize_parameters((2, 3), [1, 1, 2**30], 0)
    requant.prove_requantize_bounds(Bounds(-(2**32), 2**32), params)
    with pytest.raises(OverflowError, match=r"acc \* multiplier \(channel 2\)"):
        requant.prove_requantize_bounds(Bounds(-(2**33), 2**33), params)
    c = matmul.check_matmul(Bounds(-5, 3), type("B", (Bounds,), {"shape": (3, 4)})(0, 7), 1, 0, None)
    assert (c.a_abs, c.b_abs, c.bound, c.out_shape) == (6, 7, 3 * 6 * 7, (2, 4))
