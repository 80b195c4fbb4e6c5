"""Integer square root: ``floor(sqrt(n))`` of non-negative int64 values, by the binary restoring method.

LayerNorm's standard deviation comes from ``isqrt(C*S2 - S1**2)``; this module is the one place where
intsim takes an integer square root.

Integer contract
    input   any integer array (or scalar) with every value in ``[0, 2**63 - 1]``; negatives raise
            ``ValueError`` naming ``n``, floats/bools/objects raise ``TypeError``, uint64 values above
            ``2**63 - 1`` raise ``ValueError``.
    output  int64 array of the same shape, ``r = floor(sqrt(n))``, i.e. the unique ``r >= 0`` with
            ``r*r <= n < (r+1)*(r+1)``; ``r <= 3037000499 < 2**32``. Exact: no rounding, no float.
    kernel  the digit-by-digit ("restoring", "shift-subtract") square root a hardware block uses: one
            result bit per iteration, 32 iterations for a 63-bit radicand, each a compare, a subtract
            and two shifts. Every intermediate is below ``2**63`` (``res <= sqrt(n) < 2**31.5`` and
            ``bit <= 2**62``), so it runs in signed int64 without overflow::

                rem = n ; res = 0 ; bit = 1 << 62            # the highest power of 4 below 2**63
                repeat 32 times:
                    if rem >= res + bit: rem -= res + bit ; res = (res >> 1) + bit
                    else:                res = res >> 1
                    bit >>= 2
                return res                                  # floor(sqrt(n)); rem = n - res**2

    checks  :func:`check_isqrt_input` (backend-neutral: the torch twin calls it too).

    I-BERT's Algorithm 1 (Newton from above with an early exit) returns the same value; the digit-by-digit
    form is chosen because its latency is fixed (32 steps) and it needs no divider.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from intsim._jit import kernel, parallel_kernel
from intsim.limits import INT64_MAX
from intsim.ops._checks import ArrayOperand, Operand

__all__ = ["ISQRT_ITERATIONS", "check_isqrt_input", "isqrt", "isqrt_reference", "isqrt_scalar"]

ISQRT_ITERATIONS = 32  # one result bit per iteration: bit = 4**31, 4**30, ..., 4**0


def check_isqrt_input(n: Operand, op: str = "isqrt") -> None:
    """``ValueError`` unless every value of ``n`` lies in ``[0, 2**63 - 1]`` (naming the first negative one).
    Backend-neutral (``n`` an :class:`~intsim.ops._checks.Operand`)."""
    found = n.bounds()
    if found is None:
        return
    low, high = found
    if low < 0:
        raise ValueError(f"{op}: n holds {low} at index {n.index_of(low)}; the square root needs n in [0, {INT64_MAX}]")
    if high > INT64_MAX:  # only uint64 can get here
        raise ValueError(f"{op}: n holds {high}, outside [0, {INT64_MAX}] (int64)")


def _prepare(n, op: str) -> np.ndarray:
    """Validate ``n`` (integer, every value in ``[0, 2**63 - 1]``) and return it as an int64 array."""
    array = np.asarray(n)
    if array.dtype == np.bool_ or array.dtype.kind not in "iu":
        raise TypeError(f"{op}: n must be an integer array, got dtype {array.dtype}")
    check_isqrt_input(ArrayOperand(array), op)
    return array.astype(np.int64)


def isqrt_reference(n) -> np.ndarray:
    """Reference (the specification): ``math.isqrt`` of every element, as int64. Same validation as :func:`isqrt`.

    >>> isqrt_reference([0, 1, 2, 3, 4, 99, 100])
    array([ 0,  1,  1,  1,  2,  9, 10])
    """
    array = _prepare(n, "isqrt_reference")
    flat = [math.isqrt(int(value)) for value in array.reshape(-1)]
    return np.array(flat, dtype=np.int64).reshape(array.shape)


@kernel
def isqrt_scalar(n):
    """Numba helper: ``floor(sqrt(n))`` of one int64 ``n >= 0``, digit by digit, 32 fixed iterations, no float."""
    rem = np.int64(n)
    res = np.int64(0)
    bit = np.int64(1) << 62
    for _ in range(32):
        trial = res + bit
        if rem >= trial:
            rem -= trial
            res = (res >> 1) + bit
        else:
            res >>= 1
        bit >>= 2
    return res


@parallel_kernel
def _isqrt_kernel(values, out):
    for i in prange(values.shape[0]):
        out[i] = isqrt_scalar(values[i])


def isqrt(n) -> np.ndarray:
    """``floor(sqrt(n))`` elementwise, exactly, with integer operations only; returns int64 of ``n``'s shape.

    See the module docstring for the contract. Raises ``TypeError`` for non-integer ``n`` and
    ``ValueError`` for negative values.

    >>> isqrt([0, 3, 4, 2**62, 2**63 - 1])
    array([         0,          1,          2, 2147483648, 3037000499])
    """
    array = _prepare(n, "isqrt")
    flat = np.ascontiguousarray(array).reshape(-1)
    out = np.empty(flat.shape[0], dtype=np.int64)
    if flat.shape[0]:
        _isqrt_kernel(flat, out)
    return out.reshape(array.shape)
