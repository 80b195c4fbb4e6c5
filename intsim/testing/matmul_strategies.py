"""Hypothesis strategies for the exact integer matmul family (:mod:`intsim.ops.matmul`).

Cases are dicts of keyword arguments for ``integer_matmul`` / ``integer_linear`` (and their references):
operand codes of uint8/int8/int16 (or any integer dtypes you pass), broadcast batch dimensions, per-tensor
zero points and an optional int32 bias, with corner values (code range ends, ``±2**i ± 1``) mixed in by
:func:`intsim.testing.strategies.int_codes`. Shapes are small by default so that a profile runs quickly.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from intsim.testing.strategies import int_codes

__all__ = ["CODE_DTYPES", "code_arrays", "matmul_cases", "linear_cases", "shifted_linear_cases", "int32_biases"]

CODE_DTYPES = (np.uint8, np.int8, np.int16)
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def code_arrays(*, dtype, shape) -> st.SearchStrategy[np.ndarray]:
    """Arrays of ``dtype`` codes of the given ``shape`` over the dtype's whole range, corner values mixed in."""
    info = np.iinfo(dtype)
    return hnp.arrays(dtype=dtype, shape=shape, elements=int_codes(lo=int(info.min), hi=int(info.max)))


def int32_biases(*, n: int) -> st.SearchStrategy[np.ndarray]:
    """int32 bias vectors of length ``n`` (the whole int32 range, corners mixed in)."""
    return hnp.arrays(dtype=np.int32, shape=(n,), elements=int_codes(lo=_INT32_MIN, hi=_INT32_MAX))


def _zero_point(dtype) -> st.SearchStrategy[int]:
    info = np.iinfo(dtype)
    return int_codes(lo=int(info.min), hi=int(info.max))


@st.composite
def matmul_cases(
    draw,
    *,
    dtypes=CODE_DTYPES,
    max_batch_dims: int = 2,
    max_side: int = 6,
    with_bias: bool | None = None,
    with_zero_points: bool | None = None,
):
    """A case ``dict(a, b, a_zero_point, b_zero_point, bias)`` for ``integer_matmul``.

    ``a (..., M, K)`` and ``b (..., K, N)`` have mutually broadcastable batch dimensions (up to
    ``max_batch_dims`` of them, size-1 dimensions included) and sides in ``[1, max_side]``; each operand
    draws its own dtype from ``dtypes``; zero points lie in the operand's dtype range (``0`` when
    ``with_zero_points`` is False); ``bias`` is ``None`` or an int32 ``(N,)`` vector (``None`` draws both).
    """
    shapes = draw(
        hnp.mutually_broadcastable_shapes(
            signature="(m,k),(k,n)->(m,n)", max_dims=max_batch_dims, min_side=1, max_side=max_side
        )
    )
    a_shape, b_shape = shapes.input_shapes
    a_dtype, b_dtype = draw(st.sampled_from(dtypes)), draw(st.sampled_from(dtypes))
    a = draw(code_arrays(dtype=a_dtype, shape=a_shape))
    b = draw(code_arrays(dtype=b_dtype, shape=b_shape))
    zero_points = draw(st.booleans()) if with_zero_points is None else with_zero_points
    a_zp = draw(_zero_point(a_dtype)) if zero_points else 0
    b_zp = draw(_zero_point(b_dtype)) if zero_points else 0
    bias_wanted = draw(st.booleans()) if with_bias is None else with_bias
    bias = draw(int32_biases(n=b_shape[-1])) if bias_wanted else None
    return dict(a=a, b=b, a_zero_point=a_zp, b_zero_point=b_zp, bias=bias)


@st.composite
def linear_cases(draw, *, x_dtypes=(np.uint8, np.int8), max_dims: int = 3, max_side: int = 6, with_bias: bool | None = None):
    """A case ``dict(x, weight, x_zero_point, bias)`` for ``integer_linear``: ``x (..., K)``, int8 ``weight (N, K)``."""
    x_shape = draw(hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=1, max_side=max_side))
    n = draw(st.integers(1, max_side))
    x_dtype = draw(st.sampled_from(x_dtypes))
    x = draw(code_arrays(dtype=x_dtype, shape=x_shape))
    weight = draw(code_arrays(dtype=np.int8, shape=(n, x_shape[-1])))
    bias_wanted = draw(st.booleans()) if with_bias is None else with_bias
    bias = draw(int32_biases(n=n)) if bias_wanted else None
    return dict(x=x, weight=weight, x_zero_point=draw(_zero_point(x_dtype)), bias=bias)


@st.composite
def shifted_linear_cases(draw, *, max_shift: int = 7):
    """:func:`linear_cases` with PTF input factors: ``x_shift (K,)`` in ``[0, max_shift]`` (uint8 or int64)."""
    case = draw(linear_cases())
    k = case["x"].shape[-1]
    shift = draw(hnp.arrays(draw(st.sampled_from([np.uint8, np.int64])), (k,), elements=st.integers(0, max_shift)))
    return dict(case, x_shift=shift)
