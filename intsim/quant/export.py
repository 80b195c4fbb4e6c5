"""Export a calibrated :class:`~intsim.quant.vit.QuantViT` to an integer :class:`~intsim.program.Program`.

The exporter runs the model's own ``forward`` in ``export`` mode: each quantized layer emits its ops into a
:class:`~intsim.quant.builder.ProgramBuilder` (:mod:`intsim.quant.layers`), each quantizer declares its tensors
and, for a softmax, its own integer ops (:mod:`intsim.quant.quantizers`). Nothing here knows the model's
structure, a method or a quantizer. The Program's tensor names are the model's quantization points, so codes can
be compared point by point.

Guarantees (checked while emitting, refused with a clear error otherwise): biases fit int32; every
accumulator's bound is computed and declared as its bit width; the logits fit int32; the Program validates.
"""

from __future__ import annotations

import intsim
from intsim.program import Program
from intsim.quant.builder import ProgramBuilder
from intsim.quant.configs import config_metadata

__all__ = ["ProgramBuilder", "export_program"]


def export_program(qvit, *, model_name: str = "", class_names=None, preprocess=None) -> Program:
    """The integer Program of a calibrated ``qvit`` (see the module docstring)."""
    if not qvit.weights:
        raise ValueError("export_program: the model is not calibrated (call QuantViT.calibrate first)")
    metadata = dict(
        intsim_version=intsim.__version__,
        model=model_name,
        config=config_metadata(qvit.config),
        rounding=qvit.config.rounding,
        class_names=list(class_names) if class_names is not None else None,
        preprocess=preprocess,
    )
    builder = ProgramBuilder(qvit.config.rounding)
    previous, context = qvit.mode, qvit.context
    context.builder, context.mode = builder, "export"
    try:
        qvit("pixels")
    finally:
        context.builder, context.mode = None, previous
    return builder.build(metadata)
