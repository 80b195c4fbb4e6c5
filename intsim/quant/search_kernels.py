"""numba kernels of the calibration searches (FPCS candidates and their errors), float64 throughout.

Each kernel is the one-pass form of a numpy expression written beside it, with the same operations in the same
order per element (a division, ``rint`` = round half to even, a clamp, a subtraction, a product), so its results
are the numpy expression's bit for bit; sums over a row run serially inside one thread, so they do not depend on
the thread count. None of this is integer semantics: these are the float metrics a method ranks candidates by.
"""

from __future__ import annotations

import numba
import numpy as np

from intsim._jit import kernel, parallel_kernel
from intsim.ops.logquant import count_at_most

__all__ = ["fake_uniform", "log_decode", "uniform_candidate_rows", "uniform_rows_error"]


@kernel
def _fake_value(x, scale, zero_point, qmax):
    """One element: ``(clamp(rint(x / s) + z, 0, qmax) - z) * s``, numpy's operations in numpy's order."""
    code = min(max(np.rint(x / scale) + zero_point, 0.0), qmax)
    return (code - zero_point) * scale


@parallel_kernel
def _fake_uniform(x, scale, zero_point, qmax, out):
    for index in numba.prange(x.size):
        out[index] = _fake_value(x[index], scale, zero_point, qmax)


def fake_uniform(x: np.ndarray, scale: float, zero_point: int, bits: int) -> np.ndarray:
    """``(clamp(rint(x / s) + z, 0, 2**b - 1) - z) * s`` (float64, the shape of ``x``)."""
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = np.empty_like(flat)
    _fake_uniform(flat, float(scale), float(zero_point), float(2**bits - 1), out)
    return out.reshape(np.shape(x))


@parallel_kernel
def _uniform_rows_error(x, scales, zero_points, qmax, out):
    rows, count = scales.shape
    for task in numba.prange(rows * count):
        row, candidate = task // count, task % count
        scale, zero_point = scales[row, candidate], zero_points[row, candidate]
        total = 0.0
        for t in range(x.shape[1]):
            delta = _fake_value(x[row, t], scale, zero_point, qmax) - x[row, t]
            total += delta * delta
        out[row, candidate] = total


def uniform_rows_error(x: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, bits: int) -> np.ndarray:
    """``(R, C)``: for row ``r`` of ``x`` ``(R, T)`` and its candidate ``c``, the summed squared error of the
    row's fake-quantized values, ``sum_t (fake_uniform(x[r, t], s[r, c], z[r, c]) - x[r, t])**2``."""
    out = np.empty(scales.shape, np.float64)
    _uniform_rows_error(np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(scales, dtype=np.float64),
                        np.ascontiguousarray(zero_points, dtype=np.float64), float(2**bits - 1), out)
    return out


@parallel_kernel
def _uniform_candidate_rows(weight, scales, zero_points, qmax, out):
    rows, count = scales.shape
    for task in numba.prange(rows * count):
        row, candidate = task // count, task % count
        scale, zero_point = scales[row, candidate], zero_points[row, candidate]
        for k in range(weight.shape[1]):
            out[row, candidate, k] = _fake_value(weight[row, k], scale, zero_point, qmax)


def uniform_candidate_rows(weight: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, bits: int) -> np.ndarray:
    """Dequantized candidate rows ``(N, C, K)`` of ``weight`` ``(N, K)``: ``fake_uniform(w[n], s[n, c], z[n, c])``."""
    out = np.empty((*scales.shape, weight.shape[1]), np.float64)
    _uniform_candidate_rows(np.ascontiguousarray(weight, dtype=np.float64),
                            np.ascontiguousarray(scales, dtype=np.float64),
                            np.ascontiguousarray(zero_points, dtype=np.float64), float(2**bits - 1), out)
    return out


@parallel_kernel
def _log_decode(x, offset, ascending, values, out):
    for index in numba.prange(x.size):
        out[index] = values[ascending.size - count_at_most(ascending, x[index] + offset)] - offset


def log_decode(x: np.ndarray, offset: float, ascending_thresholds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The log quantizer's ``dequantize(quantize(x)) - offset``: code ``Z - #{thresholds <= x + offset}``
    (``Z = len(thresholds)``, the zero code), then its value ``values[code]`` (``values[Z] = 0``)."""
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = np.empty_like(flat)
    _log_decode(flat, float(offset), np.ascontiguousarray(ascending_thresholds, dtype=np.float64),
                np.ascontiguousarray(values, dtype=np.float64), out)
    return out.reshape(np.shape(x))
