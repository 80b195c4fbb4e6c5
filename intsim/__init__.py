"""intsim: a bit-exact integer reference simulator for quantized Vision Transformers.

The integer side (``intsim.ops``, and later the Program, interpreter and vector writers) needs numpy and
numba only; the torch side (calibration, fake-quant models, export) lives in ``intsim.quant``.
"""

__version__ = "0.1.0"
