"""Every quantizer and method that ships with intsim, registered: import this module before reading
:data:`~intsim.quant.quantizers.QUANTIZERS` or :data:`~intsim.quant.methods.METHODS`.

The registries' own modules cannot import the modules that extend them (those import the registries: a cycle), so
the extensions are collected here: the log-domain quantizers (``asymmetric_channel``, ``adalog``, ``log2``) and
the ``adalog`` method, APQ-ViT's ``mpq`` quantizer and ``apq`` method, and the ``pfcr`` method register themselves
on import.
"""

from intsim.quant import adalog, apq, log_quantizers, reconstruct  # noqa: F401  (each registers its entries on import)
from intsim.quant.methods import METHODS
from intsim.quant.quantizers import QUANTIZERS

__all__ = ["METHODS", "QUANTIZERS"]
