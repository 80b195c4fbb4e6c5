"""The fake-quant model's ``exact`` precision: the Program's integer semantics computed with torch.

:func:`run_exact` runs a Program through :func:`intsim.interpreter.run_program` with a backend whose ops are
the torch twins of :mod:`intsim.quant.torch_ops` (int64 arithmetic, float64 BLAS only where a proved bound
keeps it exact; TF32 never applies), so the interpreter's numba kernels and an independent torch
implementation are compared over the same Program, code by code.
"""

from __future__ import annotations

import numpy as np
import torch

from intsim.interpreter import Backend, run_program
from intsim.program import Program
from intsim.quant import torch_ops

__all__ = ["TorchBackend", "run_exact"]


class TorchBackend(Backend):
    """Interpreter backend on torch int64 tensors (CPU or CUDA)."""

    name = "torch"

    def __init__(self, device: str | torch.device = "cpu"):
        super().__init__(torch_ops)
        self.device = torch.device(device)

    def asarray(self, constant: np.ndarray):
        return torch.as_tensor(np.asarray(constant, dtype=np.int64), device=self.device)

    def patchify(self, pixels, patch: int):
        batch, channels, height, width = pixels.shape
        grid = pixels.reshape(batch, channels, height // patch, patch, width // patch, patch).permute(0, 2, 4, 1, 3, 5)
        return grid.reshape(batch, -1, channels * patch * patch)

    def split(self, x, sizes):
        return list(torch.split(x, list(sizes), dim=-1))

    def prepend(self, x, token):
        return torch.cat([token.to(x.dtype).expand(x.shape[0], 1, x.shape[2]), x], dim=1)

    def broadcast_to(self, x, shape):
        return x.expand(*shape)

    def to_int32(self, x):
        return x.to(torch.int32)


def run_exact(program: Program, pixels, *, device="cpu", trace=None) -> torch.Tensor:
    """Int32 logits of ``pixels`` (uint8 ``(B, 3, H, W)``) computed by the torch twins; ``trace`` as in
    :func:`~intsim.interpreter.run_program`."""
    pixels = torch.as_tensor(np.asarray(pixels), device=device)
    with torch.no_grad():
        return run_program(program, pixels, backend=TorchBackend(device), trace=trace)
