"""The fake-quant model's ``exact`` precision: the Program's integer semantics computed with torch.

:func:`run_exact` runs a Program through :func:`intsim.interpreter.run_program` on the torch backend
(:class:`~intsim.backends.torch_backend.TorchBackend`: the twins of :mod:`intsim.quant.torch_ops`, int64
arithmetic, float64 BLAS only where a proved bound keeps it exact; TF32 never applies), so the interpreter's numba
kernels and an independent torch implementation are compared over the same Program, code by code. One backend per
device is kept, so a Program's constants are converted to device tensors once, not once per batch.
"""

from __future__ import annotations

import numpy as np
import torch

from intsim.backends import get_backend
from intsim.backends.torch_backend import TorchBackend
from intsim.interpreter import run_program
from intsim.program import Program

__all__ = ["TorchBackend", "run_exact"]


def run_exact(program: Program, pixels, *, device="cpu", trace=None) -> torch.Tensor:
    """Int32 logits of ``pixels`` (uint8 ``(B, 3, H, W)``) computed by the torch twins; ``trace`` as in
    :func:`~intsim.interpreter.run_program`."""
    device = torch.device(device)
    pixels = torch.as_tensor(np.asarray(pixels), device=device)
    with torch.no_grad():
        return run_program(program, pixels, backend=get_backend("torch", device=device), trace=trace)
