"""The Program builder the quantized layers emit into: tensors, integer constants and ops, in program order.

Every float scale becomes integers through the plan-time helpers of :mod:`intsim.ops` (``quantize_multiplier``
and friends) before it reaches the builder; a constant must be an integer array. Builder guarantees: a tensor
is declared once; a constant is stored in the narrowest numpy integer dtype that holds its values, and
declared with the bits that hold them (or the bits given); :meth:`ProgramBuilder.build` validates the Program.
"""

from __future__ import annotations

import numpy as np
import torch

from intsim.limits import MULTIPLIER_BITS
from intsim.ops import quantize_multiplier
from intsim.program import Op, Program, TensorSpec

__all__ = ["ProgramBuilder", "multipliers", "signed_bits"]


def _scale_metadata(scale) -> float | list[float]:
    if isinstance(scale, (torch.Tensor, np.ndarray)):
        return [float(v) for v in scale.reshape(-1)]
    return float(scale)


def signed_bits(bound: int) -> int:
    """Bits of a two's complement integer holding ``[-bound, bound]``."""
    return max(int(bound).bit_length() + 1, 2)


def multiplier_bits(acc_bits: int) -> int:
    """The multiplier width a requantization of a signed ``acc_bits`` accumulator uses: 31, or fewer where the
    product ``acc * M`` (``< 2**(acc_bits - 1 + bits)``) would otherwise leave int64's ``2**62`` margin."""
    return max(2, min(MULTIPLIER_BITS, 63 - int(acc_bits)))


def multipliers(ratios, bits: int = MULTIPLIER_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``quantize_multiplier`` of float64 ratios: int32 multipliers and int8 shifts."""
    pairs = [quantize_multiplier(float(r), bits) for r in np.atleast_1d(np.asarray(ratios, dtype=np.float64))]
    return np.array([m for m, _ in pairs], dtype=np.int32), np.array([k for _, k in pairs], dtype=np.int8)


class ProgramBuilder:
    """Collects tensors, constants and ops in program order; ``rounding`` is every requantization's mode."""

    def __init__(self, rounding: str = "half_up"):
        self.rounding = rounding
        self.ops: list[Op] = []
        self.tensors: dict[str, TensorSpec] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.parameters: dict[str, dict] = {}  # real parameters of quantizers the tensors cannot hold (metadata)

    def tensor(self, name: str, bits: int, signed: bool, *, zero_point=0, scale=None, shape=None, kind="activation"):
        if name in self.tensors:
            raise ValueError(f"ProgramBuilder: tensor {name!r} declared twice")
        self.tensors[name] = TensorSpec(bits=int(bits), signed=bool(signed), zero_point=int(zero_point),
                                        scale=None if scale is None else _scale_metadata(scale),
                                        shape=None if shape is None else [int(s) for s in shape], kind=kind)
        return name

    def constant(self, name: str, values, *, bits=None, signed=None, scale=None, zero_point=0) -> str:
        array = np.ascontiguousarray(np.asarray(values))
        if array.dtype.kind not in "iu":
            raise TypeError(f"ProgramBuilder: constant {name!r} must be integer, got {array.dtype}")
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        signed = low < 0 if signed is None else signed
        if bits is None:
            bits = signed_bits(max(abs(low), abs(high))) if signed else max(int(high).bit_length(), 1)
        dtype = next(d for d in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64)
                     if np.iinfo(d).min <= low and high <= np.iinfo(d).max)
        self.constants[name] = array.astype(dtype)
        return self.tensor(name, bits, signed, zero_point=zero_point, scale=scale, shape=array.shape, kind="constant")

    def op(self, kind: str, name: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        plain = {key: (value.item() if isinstance(value, np.generic) else value) for key, value in attrs.items()}
        self.ops.append(Op(kind, name, list(inputs), list(outputs), plain))

    def requantize(self, acc: str, acc_scale, out: str, quantizer, name: str) -> str:
        """``acc`` (real scale per channel ``acc_scale``) to the codes of ``quantizer``, declared as ``out``."""
        bits = multiplier_bits(self.tensors[acc].bits)
        multiplier, shift = multipliers(np.asarray(acc_scale, dtype=np.float64) / quantizer.scale_array(), bits)
        self.constant(f"{name}.multiplier", multiplier, signed=True)
        self.constant(f"{name}.shift", shift, signed=False)
        quantizer.declare(self, out)
        self.op("Requantize", name, [acc, f"{name}.multiplier", f"{name}.shift"], [out],
                zero_point=quantizer.zero_point, qmin=quantizer.qmin, qmax=quantizer.qmax, rounding=self.rounding)
        return out

    def build(self, metadata: dict) -> Program:
        if self.parameters:
            metadata = dict(metadata, quantizer_parameters=self.parameters)
        return Program(self.ops, self.tensors, self.constants, metadata).validate()
