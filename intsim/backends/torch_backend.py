"""The torch backend: the torch twins of :mod:`intsim.quant.torch_ops` on int64 tensors (CPU or CUDA).

:meth:`TorchBackend.prepare` converts the Program's constants once to int64 tensors on the backend's device and
keeps them per Program, so a run over many batches converts nothing. It has no fusion table: every op runs its
twin on its own (the cross-check compares two independent implementations op by op).
"""

from __future__ import annotations

import numpy as np
import torch

from intsim.backends.base import ArrayBackend

__all__ = ["TorchBackend"]


class TorchBackend(ArrayBackend):
    """Interpreter backend on torch int64 tensors (CPU or CUDA)."""

    name = "torch"

    def __init__(self, device: str | torch.device = "cpu"):
        from intsim.quant import torch_ops

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
