"""FPCS, AdaLog's fast progressive combining search, and the layer-output error metrics it ranks candidates by.

FPCS (``shared/research/ptq_methods.md`` section 1.5) starts from ``C`` candidate tuples ``(scale, fixed)`` on a
grid of spacing ``delta`` in the scale (``fixed``: a zero point or an AdaLog ``q``; inherited, never moved), keeps
the ``keep`` best, and refines: each survivor spawns ``m = C / keep`` scales ``s + (j / (m - 1) - 1/2) delta``,
``j = 0..m-1``, the spacing shrinks to ``delta / (m - 1/2)``, and the best ``keep`` survive again; after ``steps``
rankings in all, the best one is returned. Everything here is vectorized over *rows* (a weight matrix's output
channels, each with its own candidates; an activation is one row), float64 and deterministic: ties in the error
go to the earlier candidate (a stable sort).

The metrics are exact rewrites of the layer-output squared error, cheap enough to rank 128 candidates per row:
for a linear map ``y = x W^T`` with fixed quantized inputs ``X_q`` and float reference ``Y = X W^T``, the error of
row ``n``'s candidate weights ``w_q`` is ``w_q^T G_qq w_q - 2 w_q^T (G_qx w_n) + w_n^T G_xx w_n`` with the Gram
matrices ``G = X^T X`` computed once (:class:`GramError`), whatever the number of tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["GramError", "fpcs", "percentile_scale_grid"]


def fpcs(scales: np.ndarray, fixed: np.ndarray, delta: np.ndarray, error: Callable, *, keep: int, steps: int,
         min_scale: float = 1e-12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Search per row: ``scales`` float ``(R, C)``, ``fixed`` int ``(R, C)``, ``delta`` float ``(R,)``;
    ``error(scales, fixed) -> (R, C')`` float64. Returns the best ``(scale (R,), fixed (R,), error (R,))``.

    ``steps`` rankings: the initial grid, then ``steps - 1`` refinements (``keep`` survivors, ``C // keep`` new
    scales each, clamped to ``>= min_scale``)."""
    scales, fixed = np.asarray(scales, np.float64), np.asarray(fixed, np.int64)
    delta = np.asarray(delta, np.float64).reshape(-1).copy()
    rows, count = scales.shape
    if fixed.shape != scales.shape or delta.shape != (rows,):
        raise ValueError(f"fpcs: scales {scales.shape}, fixed {fixed.shape} and delta {delta.shape} disagree")
    if not (isinstance(steps, int) and steps >= 1 and isinstance(keep, int) and 1 <= keep <= count):
        raise ValueError(f"fpcs: need steps >= 1 and 1 <= keep <= {count}, got steps={steps!r}, keep={keep!r}")
    spawn = max(count // keep, 2)
    offsets = np.arange(spawn) / (spawn - 1) - 0.5
    rows_index = np.arange(rows)[:, None]
    for step in range(steps):
        errors = np.asarray(error(scales, fixed), np.float64)
        order = np.argsort(errors, axis=1, kind="stable")
        if step == steps - 1:
            best = order[:, 0]
            return scales[rows_index[:, 0], best], fixed[rows_index[:, 0], best], errors[rows_index[:, 0], best]
        top = order[:, :keep]
        survivors, inherited = scales[rows_index, top], fixed[rows_index, top]
        scales = (survivors[:, :, None] + offsets * delta[:, None, None]).reshape(rows, -1)
        scales = np.maximum(scales, min_scale)
        fixed = np.repeat(inherited, spawn, axis=1)
        delta = delta / (spawn - 0.5)
    raise AssertionError("unreachable")


def percentile_scale_grid(low_narrow, high_narrow, low_wide, high_wide, levels: int, count: int):
    """``count`` scales per row, linear from ``(high_narrow - low_narrow) / levels`` (e.g. P90 - P10) to
    ``(high_wide - low_wide) / levels`` (max - min); returns ``(scales (R, count), spacing (R,))``."""
    narrow = np.maximum(np.asarray(high_narrow, np.float64) - np.asarray(low_narrow, np.float64), 0.0) / levels
    wide = np.maximum(np.asarray(high_wide, np.float64) - np.asarray(low_wide, np.float64), 0.0) / levels
    wide = np.maximum(wide, narrow)
    fractions = np.linspace(0.0, 1.0, count)
    scales = narrow.reshape(-1, 1) + (wide - narrow).reshape(-1, 1) * fractions
    spacing = (wide - narrow).reshape(-1) / max(count - 1, 1)
    return scales, np.maximum(spacing, 1e-12)


@dataclass
class GramError:
    """Output squared error of candidate weight rows for ``y = x W^T``, from Gram matrices (float64).

    ``quantized`` ``(T, K)``: the layer's quantized inputs ``X_q``; ``reference`` ``(T, K)``: the float inputs ``X``;
    ``weight`` ``(N, K)`` the float weights. :meth:`__call__` takes candidate rows ``(N, C, K)`` and returns the
    summed squared output error ``(N, C)`` over the T tokens (the bias cancels: it is the same in both)."""

    gram_qq: np.ndarray
    cross: np.ndarray  # (N, K): G_qx w_n
    constant: np.ndarray  # (N,): w_n^T G_xx w_n

    @classmethod
    def of(cls, quantized: np.ndarray, reference: np.ndarray, weight: np.ndarray) -> "GramError":
        quantized, reference = np.asarray(quantized, np.float64), np.asarray(reference, np.float64)
        weight = np.asarray(weight, np.float64)
        gram_qq = quantized.T @ quantized
        cross = weight @ (reference.T @ quantized)  # row n: (G_qx w_n)^T = w_n^T X^T X_q
        outputs = reference @ weight.T
        return cls(gram_qq, cross, np.einsum("tn,tn->n", outputs, outputs))

    def __call__(self, candidates: np.ndarray) -> np.ndarray:
        quadratic = np.einsum("nck,nck->nc", candidates @ self.gram_qq, candidates)
        return quadratic - 2.0 * np.einsum("nck,nk->nc", candidates, self.cross) + self.constant[:, None]
