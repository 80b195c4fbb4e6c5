"""The one place where numba options are set for every intsim kernel.

Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, set in ``intsim/__init__.py``),
so that numba kernels and BLAS calls can alternate on the same cores. Kernels are compiled once and cached on disk (``cache=True``); row-wise kernels that pay for it use
``parallel=True`` with ``numba.prange``. Integer results never depend on the thread count: each
output element is computed by exactly one thread, and reductions run serially inside a row.
"""

from __future__ import annotations

import numba

__all__ = ["kernel", "parallel_kernel"]


def kernel(function):
    """Compile ``function`` as a serial, cached numba kernel (used for helpers inlined by others)."""
    return numba.njit(cache=True, nogil=True)(function)


def parallel_kernel(function):
    """Compile ``function`` as a cached numba kernel whose ``prange`` loops run on all threads."""
    return numba.njit(cache=True, nogil=True, parallel=True)(function)
