"""intsim: a bit-exact integer reference simulator for quantized Vision Transformers.

The integer side (``intsim.ops``, and later the Program, interpreter and vector writers) needs numpy and
numba only; the torch side (calibration, fake-quant models, export) lives in ``intsim.quant``.
"""

import os

# Idle OpenMP threads must sleep, not spin. numba's parallel kernels, torch and OpenBLAS each keep a pool of
# threads; spinning idle threads of one steal the cores of the next (on 2 cores: integer matmul 0.24x of
# float32 BLAS with spinning threads, 0.74x without; `intsim check` 47 s vs 6 s). It must be set before any
# OpenMP runtime starts, hence here, the first module every intsim import runs. A value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
