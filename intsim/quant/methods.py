"""The method registry: a quantization method is a named calibration procedure over a model's quantized layers.

A :class:`Method` receives the fake-quant model (:class:`~intsim.quant.vit.QuantViT`, whose points and linear
layers are in ``qvit.points`` and ``qvit.linears_q``) and the calibration batches, and leaves every point's
quantizer and every linear layer finished (``qparams`` set, weights quantized). The exporter then needs nothing
from the method: the quantizers and layers describe the integer Program. A configuration names its method
(``QuantConfig.method``); :func:`register_method` adds one from anywhere (AdaLog, APQ-ViT and PFCR plug in here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["METHODS", "Method", "observe", "register_method", "unregister_method"]


@dataclass(frozen=True)
class Method:
    """``calibrate(qvit, batches, progress)``: fix every quantizer and weight of ``qvit`` from uint8 ``batches``
    (``progress``: a tqdm-like bar updated once per batch, or ``None``). Must be deterministic for the same
    batches (and seed, where it draws random numbers)."""

    name: str
    calibrate: Callable
    description: str = ""


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` under its name (``ValueError`` if the name is taken)."""
    if method.name in METHODS:
        raise ValueError(f"register_method: a method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def unregister_method(name: str) -> None:
    METHODS.pop(name)


def observe(qvit, batches, progress=None) -> None:
    """Run the float64 model over ``batches`` with every point's observer watching (the common first step)."""
    qvit.mode = "calibrate"
    with torch.no_grad():
        for pixels in batches:
            qvit(torch.as_tensor(pixels))
            if progress is not None:
                progress.update(1)


def _fqvit(qvit, batches, progress=None) -> None:
    """FQ-ViT: observers over the calibration set (minmax / ema / percentile / omse per tensor, per-channel
    ranges with the PTF search, the LIS row-sum scale, the softmax maximum), then weights by per-channel
    minmax."""
    observe(qvit, batches, progress)
    for quantizer in qvit.points.values():
        quantizer.finish()
    for linear in qvit.linears_q.values():
        linear.finish()


register_method(Method("fqvit", _fqvit, "FQ-ViT post-training calibration: observers, PTF, LIS; no training"))

