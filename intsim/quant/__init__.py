"""The torch side of intsim: quantizer parameters and calibration observers (plan time, floats allowed).

- :mod:`intsim.quant.qparams`: uniform quantizer parameters from a calibrated range: per-tensor asymmetric
  activations (:func:`asymmetric_qparams`), per-channel symmetric weights (:func:`symmetric_weight_qparams`),
  FQ-ViT's Power-of-Two Factor for LayerNorm inputs (:func:`ptf_qparams`).
- :mod:`intsim.quant.observers`: calibration observers (``minmax``, ``ema``, ``percentile``, ``omse`` and the
  per-channel observer for PTF), FQ-ViT semantics, and :func:`make_observer`.

The integer side (``intsim.ops``, the Program, the interpreter) never imports this package.
"""

from intsim.quant.observers import (
    OBSERVERS,
    EmaObserver,
    MinMaxObserver,
    Observer,
    OmseObserver,
    PerChannelMinMaxObserver,
    PercentileObserver,
    batch_quantiles,
    make_observer,
)
from intsim.quant.qparams import (
    MAX_BITS,
    MIN_BITS,
    MIN_SCALE,
    PtfQParams,
    QParams,
    SymmetricWeights,
    asymmetric_qparams,
    ptf_qparams,
    symmetric_weight_qparams,
)

__all__ = [
    "MAX_BITS",
    "MIN_BITS",
    "MIN_SCALE",
    "OBSERVERS",
    "EmaObserver",
    "MinMaxObserver",
    "Observer",
    "OmseObserver",
    "PerChannelMinMaxObserver",
    "PercentileObserver",
    "PtfQParams",
    "QParams",
    "SymmetricWeights",
    "asymmetric_qparams",
    "batch_quantiles",
    "make_observer",
    "ptf_qparams",
    "symmetric_weight_qparams",
]
