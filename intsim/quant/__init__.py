"""The torch side of intsim: quantizer parameters and calibration observers (plan time, floats allowed).

- :mod:`intsim.quant.qparams`: uniform quantizer parameters from a calibrated range: per-tensor asymmetric
  activations (:func:`asymmetric_qparams`), per-channel symmetric weights (:func:`symmetric_weight_qparams`),
  FQ-ViT's Power-of-Two Factor for LayerNorm inputs (:func:`ptf_qparams`).
- :mod:`intsim.quant.observers`: calibration observers (``minmax``, ``ema``, ``percentile``, ``omse`` and the
  per-channel observer for PTF), FQ-ViT semantics, and :func:`make_observer`.

- :mod:`intsim.quant.layers`: quantized layers, each with one fake-quant ``compute`` and one ``emit`` into the
  Program builder; :mod:`intsim.quant.vit` composes them into a ViT/DeiT (:class:`~intsim.quant.vit.QuantViT`).
- :mod:`intsim.quant.quantizers` and :mod:`intsim.quant.methods`: the quantizer registry (by name, with the kinds
  of point and bits each serves) and the method registry (named calibration procedures); configurations
  (:mod:`intsim.quant.configs`) name one quantizer and bit width per kind of point, and a method.

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
