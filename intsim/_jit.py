"""The one place where numba options are set for every intsim kernel.

Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE`` unless set), so that numba
kernels and BLAS calls can alternate on the same cores. Kernels are compiled once and cached on disk (``cache=True``); row-wise kernels that pay for it use
``parallel=True`` with ``numba.prange``. Integer results never depend on the thread count: each
output element is computed by exactly one thread, and reductions run serially inside a row.
"""

from __future__ import annotations

import os

# numba's default threading layer here is GNU OpenMP, whose idle threads busy-wait after every parallel
# region; on a small machine they then steal the cores that OpenBLAS needs for the integer GEMMs that
# follow (measured: integer matmul at 0.24x float32 BLAS with spinning threads, 0.74x without). Sleeping
# idle threads cost a few microseconds per kernel launch instead. A value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402  (after the environment default above)

__all__ = ["kernel", "parallel_kernel"]


def kernel(function):
    """Compile ``function`` as a serial, cached numba kernel (used for helpers inlined by others)."""
    return numba.njit(cache=True, nogil=True)(function)


def parallel_kernel(function):
    """Compile ``function`` as a cached numba kernel whose ``prange`` loops run on all threads."""
    return numba.njit(cache=True, nogil=True, parallel=True)(function)
