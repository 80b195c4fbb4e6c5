"""Thread control for the BLAS-backed kernels: one BLAS thread per caller, parallelism by row blocks.

numpy's OpenBLAS keeps its own thread pool, whose idle threads spin for a while after every call. Between
numba's parallel loops and many mid-sized GEMMs (the interpreter alternates them) those spinning threads steal
the cores from numba's threads, and on a machine shared with other jobs the batched attention products ran up
to 100x slower. The kernels here therefore call BLAS with ONE thread (:func:`single_threaded_blas`) and
parallelise themselves: :func:`run_row_ranges` splits the rows of a product into contiguous ranges and runs
them on a small pool of Python threads (numpy's matmul and intsim's ``nogil`` numba kernels release the GIL).

Results never depend on the thread count: every output row is computed by exactly one thread, with the same
arithmetic whatever the split. The number of threads is numba's (``NUMBA_NUM_THREADS`` /
``numba.set_num_threads``), so one setting governs all of intsim's parallelism.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numba

__all__ = ["run_row_ranges", "single_threaded_blas"]

_POOL: ThreadPoolExecutor | None = None
_BLAS_CONTROLLER = None  # threadpoolctl's view of numpy's OpenBLAS, built once (None: not available)


def _openblas_controller():
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # optional: without it BLAS keeps its own thread count (slower, same results)
            _BLAS_CONTROLLER = False
        else:
            _BLAS_CONTROLLER = ThreadpoolController().select(internal_api="openblas")
    return _BLAS_CONTROLLER


@contextlib.contextmanager
def single_threaded_blas():
    """Inside the block numpy's OpenBLAS runs every call on the calling thread (restored afterwards).

    Speed only: BLAS results are exact integers here whatever its thread count (see :mod:`intsim.ops.matmul`).
    """
    controller = _openblas_controller()
    if not controller:
        yield
        return
    with controller.limit(limits=1):
        yield


def run_row_ranges(rows: int, block: int, work: Callable[[int, int], None]) -> None:
    """Call ``work(start, stop)`` once for every block ``[start, start + block)`` of ``range(rows)`` (the last one
    shorter), on numba's number of threads; each thread takes the next unclaimed block (a loaded core takes fewer).

    With one thread, or a single block, everything runs on the calling thread. Exceptions propagate to the caller.
    """
    global _POOL
    starts = range(0, rows, block)
    workers = min(numba.get_num_threads(), len(starts))
    if workers <= 1:
        for start in starts:
            work(start, min(start + block, rows))
        return
    if _POOL is None or _POOL._max_workers < workers:
        _POOL = ThreadPoolExecutor(max_workers=max(workers, numba.config.NUMBA_NUM_THREADS), thread_name_prefix="intsim")
    claim = iter(starts)  # next() on a range iterator is atomic under the GIL: each block is claimed once

    def worker():
        for start in claim:
            work(start, min(start + block, rows))

    futures = [_POOL.submit(worker) for _ in range(workers)]
    for future in futures:
        future.result()
