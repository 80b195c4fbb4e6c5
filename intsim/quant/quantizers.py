"""The quantizer registry: every quantizer a configuration can name, by name, with the points and bits it serves.

A quantizer object stands at one quantization point of a model. It has three lives, one per mode of the
fake-quant model, and one more when it is read back from a Program:

``observe(x)``            calibration: its observer sees the float64 tensor;
``finish()``              fixes its parameters (``qparams``) from what it observed;
``fake_quant(x)``         fast mode: ``(values, codes)``; the values carry a straight-through gradient;
``declare(builder, name)`` / ``restore(program, name)``  the Program's view of it (tensor spec, constants).

Activation quantizers (``uniform``, ``ptf``) also describe themselves to the layers that emit integer ops:
``scale_array()`` (real scale per channel, or one float), ``unit_scale`` (the scale of one code step at factor 1),
``input_shift()`` (per-channel left shifts of the codes, PTF's factors, or ``None``), ``zero_point``, ``qmin``,
``qmax``, ``span``. Softmax quantizers (``lis``, ``uniform_softmax``) own their integer softmax and the
``attn @ V`` op that reads their codes (:meth:`emit`): the layers never ask which one they hold.

Register a new quantizer with :func:`register_quantizer` (a :class:`QuantizerKind`); a configuration then names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from intsim.kinds.registry import get_op_kind
from intsim.limits import LIS_VALUE_SHIFT
from intsim.ops._checks import check_choice
from intsim.quant.builder import signed_bits
from intsim.quant.observers import LisScaleObserver, PerChannelMinMaxObserver, SoftmaxMaxObserver, make_observer
from intsim.quant.qparams import LisQParams, PtfQParams, QParams, UniformProbsQParams

__all__ = ["POINT_BITS", "QUANTIZERS", "QuantizerKind", "check_point", "make_quantizer", "register_quantizer",
           "straight_through", "unregister_quantizer"]

POINT_BITS = {
    "weights": (2, 8), "residual": (2, 16), "pos_embed": (2, 16), "post_layernorm": (2, 8), "qkv": (2, 8),
    "post_softmax": (2, 8), "attn_output": (2, 8), "gelu_input": (2, 16), "post_gelu": (2, 8),
}
"""Bits each kind of point allows whatever its quantizer: MAC inputs (weights, post-LayerNorm, q/k/v, probabilities,
the context and the GELU output) at most 8, so every matmul is an int8 (or narrower) product; the residual
stream, the position embedding and the GELU table index up to 16."""


def straight_through(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` in the forward pass, the gradient of ``x`` in the backward pass (straight-through rounding).

    ``values + (x - x.detach())`` adds an exact zero, so the forward values are bit-identical to ``values``."""
    return values + (x - x.detach()) if x.requires_grad else values


# ------------------------------------------------------------------------------------------ activations
class ActivationQuantizer:
    """Codes of real values at one point; see the module docstring. ``qparams`` is set by finish/restore."""

    def __init__(self, kind: str, name: str, bits: int, config):
        self.kind, self.name, self.bits, self.config = kind, name, bits, config
        self.observer = None
        self.qparams = None

    # calibration ------------------------------------------------------------------------------------
    def observe(self, x: torch.Tensor) -> None:
        if self.observer is None:
            self.observer = self.make_observer()
        self.observer.update(x.detach())

    def finish(self) -> None:
        if self.observer is None:
            raise RuntimeError(f"quantization point {self.name!r} saw no data during calibration")
        self.qparams = self.from_observer(self.observer)

    # fast mode --------------------------------------------------------------------------------------
    def fake_quant(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = self.qparams.quantize(x)
        return straight_through(x, self.qparams.dequantize(codes).to(x.dtype)), codes

    def quantize_constant(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes (int64) of a constant tensor."""
        return self.qparams.quantize(x).to(torch.int64)

    # the integer view -------------------------------------------------------------------------------
    @property
    def zero_point(self) -> int:
        return self.qparams.zero_point

    @property
    def qmin(self) -> int:
        return self.qparams.qmin

    @property
    def qmax(self) -> int:
        return self.qparams.qmax

    @property
    def span(self) -> int:
        """``max |code - zero_point|`` over the code range."""
        return max(self.zero_point - self.qmin, self.qmax - self.zero_point)

    def declare(self, builder, name: str, shape=None) -> str:
        return builder.tensor(name, self.qparams.bits, False, zero_point=self.zero_point, scale=self.scale_array(),
                              shape=shape)


class UniformQuantizer(ActivationQuantizer):
    """Unsigned asymmetric per tensor: ``(q - zp) * scale``, ``q`` in ``[0, 2**bits - 1]``; the configuration's
    ``observer`` (minmax, ema, percentile, omse) gives the range."""

    def make_observer(self):
        return make_observer(self.config.observer, self.bits)

    def from_observer(self, observer):
        return observer.qparams()

    def scale_array(self):
        return self.qparams.scale

    @property
    def unit_scale(self) -> float:
        return self.qparams.scale

    def input_shift(self):
        return None

    def restore(self, program, name: str) -> None:
        spec = program.tensors[name]
        self.qparams = QParams(spec.scale, spec.zero_point, spec.bits, spec.signed)


class PtfQuantizer(ActivationQuantizer):
    """FQ-ViT's power-of-two factors: channel ``c`` at scale ``base * 2**alpha[c]``, ``alpha`` in
    ``0..ptf_alpha_max``, one zero point; the integer side shifts codes left by ``alpha`` (LayerNorm, Linear).
    Where its codes feed a Linear or a table (not the residual stream), the smallest factor is ``2**0``
    (:meth:`~intsim.quant.qparams.PtfQParams.lowest_factor_one`), which keeps the shifted operand small."""

    def make_observer(self):
        return PerChannelMinMaxObserver(self.bits)

    def from_observer(self, observer):
        qparams = observer.ptf_qparams(levels=self.config.ptf_alpha_max + 1,
                                       search_zero_point=self.config.ptf_search_zero_point)
        return qparams if self.kind == "residual" else qparams.lowest_factor_one()

    def scale_array(self):
        return self.qparams.scales.numpy()

    @property
    def unit_scale(self) -> float:
        return self.qparams.base_scale

    def input_shift(self):
        return self.qparams.alpha.numpy()

    def restore(self, program, name: str) -> None:
        """Per-channel scales from the tensor spec; the factors from the constant that applies them (a LayerNorm's
        ``alpha`` or a Linear's ``x_shift``), else from the scales (powers of two of the smallest)."""
        spec = program.tensors[name]
        scales = torch.tensor(spec.scale, dtype=torch.float64)
        alpha = None
        for op in program.ops:  # a reader of these codes whose constant shifts them: by role, not by position
            if op.inputs and op.inputs[0] == name:
                roles = dict(zip(get_op_kind(op.kind).input_roles, op.inputs))
                factors = roles.get("alpha", roles.get("x_shift"))
                if factors is not None:
                    alpha = torch.as_tensor(program.constants[factors].astype("int64"))
                    break
        if alpha is None:
            alpha = torch.round(torch.log2(scales / scales.min())).to(torch.int64)
        base = float(scales[0]) / 2.0 ** int(alpha[0])
        self.qparams = PtfQParams(base, spec.zero_point, alpha, bits=spec.bits, levels=self.config.ptf_alpha_max + 1)


# ------------------------------------------------------------------------------------------ weights
class SymmetricChannelWeights:
    """Signed symmetric per output channel: codes ``[-(2**(b-1)-1), 2**(b-1)-1]``, ``scale_n = max|W_n| / qmax``."""

    def __init__(self, kind: str, name: str, bits: int, config):
        self.kind, self.name, self.bits, self.config = kind, name, bits, config

    def quantize(self, weight: torch.Tensor):
        from intsim.quant.qparams import symmetric_weight_qparams

        quantized = symmetric_weight_qparams(weight.detach().to(torch.float64), self.bits)
        return quantized.codes.to(torch.int64), quantized.scales.to(torch.float64)


class SymmetricTensorWeights(SymmetricChannelWeights):
    """Signed symmetric per tensor: one scale ``max|W| / qmax`` for every output channel (stored per channel, all
    equal, so the integer side is the per-channel one)."""

    def quantize(self, weight: torch.Tensor):
        from intsim.quant.qparams import symmetric_weight_qparams

        flat = weight.detach().to(torch.float64).reshape(1, -1)
        quantized = symmetric_weight_qparams(flat, self.bits)
        scales = quantized.scales.to(torch.float64).expand(weight.shape[0]).clone()
        return quantized.codes.to(torch.int64).reshape(weight.shape), scales


# ------------------------------------------------------------------------------------------ softmax
class SoftmaxQuantizer:
    """Attention probabilities: a float view (calibration, fast mode) and the integer softmax that makes the codes
    plus the ``attn @ V`` op that reads them (:meth:`emit`)."""

    def __init__(self, kind: str, name: str, bits: int, config):
        self.kind, self.name, self.bits, self.config = kind, name, bits, config
        self.observer = self.make_observer()
        self.qparams = None

    def observe(self, probs: torch.Tensor) -> None:
        if self.observer is not None:
            self.observer.update(probs.detach())

    def finish(self) -> None:
        self.qparams = self.observer.qparams() if self.observer is not None else None

    def fake_quant(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        quantizer = self.effective()
        codes = quantizer.quantize(probs)
        return straight_through(probs, quantizer.dequantize(codes).to(probs.dtype)), codes

    def emit(self, builder, prefix: str, scores: str, scores_bits: int, logit_scale: float, tokens: int, v,
             heads: int, channels: int) -> tuple[str, float]:
        """Emit the softmax of the ``scores`` accumulator (scale ``logit_scale``) into ``{prefix}.probs`` and its
        product with ``v`` (an activation quantizer's codes, ``channels`` of them in ``heads`` heads) into
        ``{prefix}.values``; return the values accumulator's name and real scale (a float, or one per channel)."""
        raise NotImplementedError


def _exp_attributes(constants, scores_bits: int) -> dict:
    return dict(zero_point=0, bits=scores_bits, signed=True, x0=constants.x0, b_int=constants.b_int,
                c_int=constants.c_int, n=constants.n)


class LisQuantizer(SoftmaxQuantizer):
    """FQ-ViT's 4-bit Log-Int-Softmax: code ``A = floor(log2(4 / (3 p)))`` (16 means 0), value ``scale * 2**-A``
    (``scale`` calibrated so rows sum to 1 on average, with ``lis_scale``; else 1). ``attn @ V`` sums
    ``(v - zp) << (15 - A)`` exactly (op ``LisAttentionValues``); the unit ``scale * 2**-15 * s_v`` is folded into
    the context multiplier."""

    def make_observer(self):
        return LisScaleObserver() if self.config.lis_scale else None

    def effective(self) -> LisQParams:
        return self.qparams or LisQParams()

    def emit(self, builder, prefix, scores, scores_bits, logit_scale, tokens, v, heads, channels):
        from intsim.ops.softmax import fit_i_exp_constants

        constants = fit_i_exp_constants(logit_scale, row_length=tokens, levels=None)
        probs, values = f"{prefix}.probs", f"{prefix}.values"
        builder.tensor(probs, 5, False, scale=None if self.qparams is None else self.qparams.scale)
        builder.op("LogIntSoftmax", probs, [scores], [probs], **_exp_attributes(constants, scores_bits))
        probs_scale = self.effective().scale * 2.0**-LIS_VALUE_SHIFT
        builder.tensor(values, signed_bits(tokens * v.span << LIS_VALUE_SHIFT), True, scale=probs_scale * v.unit_scale)
        builder.op("LisAttentionValues", values, [probs, v.name], [values], heads=heads, v_zero_point=v.zero_point)
        return values, probs_scale * v.unit_scale

    def restore(self, program, name: str) -> None:
        scale = program.tensors[name].scale
        self.qparams = None if scale is None else LisQParams(scale)


class UniformSoftmaxQuantizer(SoftmaxQuantizer):
    """The uniform integer softmax: codes ``min(rhe(p * F), 2**bits - 1)``, value ``q / F``; ``F`` the calibrated
    code of probability 1 (with ``softmax_minmax``; else ``2**bits - 1``). ``attn @ V`` is an integer matmul
    (op ``AttentionValues``)."""

    def make_observer(self):
        return SoftmaxMaxObserver(self.bits) if self.config.softmax_minmax else None

    def effective(self) -> UniformProbsQParams:
        return self.qparams or UniformProbsQParams(2**self.bits - 1, self.bits)

    def emit(self, builder, prefix, scores, scores_bits, logit_scale, tokens, v, heads, channels):
        """One ``F`` (the probability codes at scale ``1 / F``), or one per head (APQ-ViT's MPQ: the codes' scale
        ``1 / F_h`` is per head, so their tensor declares none, and the context accumulator's channel ``c`` has scale
        ``s_v / F_h``, ``h = c // (channels / heads)``: its requantization is per channel)."""
        from intsim.ops.softmax import fit_i_exp_constants, largest_full_scale

        levels = 2**self.bits - 1
        full_scale = self.effective().full_scale
        per_head = isinstance(full_scale, tuple)
        fulls = list(full_scale) if per_head else [full_scale]
        if per_head and len(fulls) != heads:
            raise ValueError(f"{self.name}: {len(fulls)} full scales for {heads} heads")
        try:
            constants = fit_i_exp_constants(logit_scale, row_length=tokens, levels=max(fulls))
        except OverflowError:
            # a fine logit scale leaves no int64 room for e * F: keep the fixed scale's exp constants and the
            # largest F they allow (>= 2**bits - 1, which they were fitted for)
            constants = fit_i_exp_constants(logit_scale, row_length=tokens, levels=levels)
            cap = largest_full_scale(constants, tokens)
            fulls = [max(levels, min(full, cap)) for full in fulls]
        probs, values = f"{prefix}.probs", f"{prefix}.values"
        builder.tensor(probs, self.bits, False, scale=None if per_head else 1.0 / fulls[0])
        builder.op("UniformSoftmax", probs, [scores], [probs], out_bits=self.bits,
                   full_scale=fulls if per_head else fulls[0], **_exp_attributes(constants, scores_bits))
        if per_head:
            values_scale = np.repeat(1.0 / np.asarray(fulls, dtype=np.float64), channels // heads) * v.unit_scale
        else:
            values_scale = 1.0 / fulls[0] * v.unit_scale
        builder.tensor(values, signed_bits(tokens * v.span * levels), True, scale=values_scale)
        builder.op("AttentionValues", values, [probs, v.name], [values], heads=heads, v_zero_point=v.zero_point)
        return values, values_scale

    def restore(self, program, name: str) -> None:
        (op,) = [op for op in program.ops if op.outputs == [name]]
        self.qparams = UniformProbsQParams(op.attrs["full_scale"], program.tensors[name].bits)


# ------------------------------------------------------------------------------------------ the registry
@dataclass(frozen=True)
class QuantizerKind:
    """A registered quantizer: ``make(kind, name, bits, config)`` builds one for a point; ``points`` are the kinds
    of point it serves and ``bits`` its own range (intersected with :data:`POINT_BITS`)."""

    name: str
    make: Callable
    points: tuple[str, ...]
    bits: tuple[int, int]
    description: str = ""

    def allowed_bits(self, kind: str) -> range:
        low, high = POINT_BITS[kind]
        return range(max(low, self.bits[0]), min(high, self.bits[1]) + 1)


_ACTIVATIONS = ("residual", "pos_embed", "post_layernorm", "qkv", "attn_output", "gelu_input", "post_gelu")
QUANTIZERS: dict[str, QuantizerKind] = {}


def register_quantizer(entry: QuantizerKind) -> QuantizerKind:
    """Add ``entry`` under its name (``ValueError`` if the name is taken); configurations may then name it."""
    if entry.name in QUANTIZERS:
        raise ValueError(f"register_quantizer: a quantizer named {entry.name!r} is already registered")
    unknown = sorted(set(entry.points) - set(POINT_BITS))
    if unknown:
        raise ValueError(f"register_quantizer: {entry.name!r} names unknown kinds of point {unknown}")
    QUANTIZERS[entry.name] = entry
    return entry


def unregister_quantizer(name: str) -> None:
    QUANTIZERS.pop(name)


for _entry in (
    QuantizerKind("symmetric_channel", SymmetricChannelWeights, ("weights",), (2, 8),
                  "signed symmetric per output channel"),
    QuantizerKind("symmetric_tensor", SymmetricTensorWeights, ("weights",), (2, 8),
                  "signed symmetric, one scale per tensor"),
    QuantizerKind("uniform", UniformQuantizer, _ACTIVATIONS, (2, 16), "unsigned asymmetric per tensor"),
    QuantizerKind("ptf", PtfQuantizer, ("residual", "gelu_input", "post_gelu"), (2, 16),
                  "per-channel power-of-two factors of one base scale (FQ-ViT's PTF)"),
    QuantizerKind("lis", LisQuantizer, ("post_softmax",), (4, 4), "Log-Int-Softmax codes (FQ-ViT)"),
    QuantizerKind("uniform_softmax", UniformSoftmaxQuantizer, ("post_softmax",), (2, 16),
                  "uniform integer softmax codes q / F"),
):
    register_quantizer(_entry)


def check_point(kind: str, point, where: str) -> None:
    """``ValueError`` unless ``point.quantizer`` is registered for ``kind`` and allows ``point.bits``."""
    serving = sorted(name for name, other in QUANTIZERS.items() if kind in other.points)
    if point.quantizer not in QUANTIZERS:
        check_choice(point.quantizer, f"{kind} quantizer", where, tuple(serving))
    entry = QUANTIZERS[point.quantizer]
    if kind not in entry.points:
        raise ValueError(f"{where}: quantizer {point.quantizer!r} cannot quantize {kind} points "
                         f"(those take {', '.join(serving)})")
    allowed = entry.allowed_bits(kind)
    if not isinstance(point.bits, int) or isinstance(point.bits, bool) or point.bits not in allowed:
        raise ValueError(f"{where}: {kind} bits = {point.bits!r}: {point.quantizer} allows "
                         f"{allowed.start}..{allowed.stop - 1} there")


def make_quantizer(config, kind: str, name: str):
    """The quantizer of point ``name`` (a kind-``kind`` point) as ``config`` names it."""
    point = config.point(kind)
    return QUANTIZERS[point.quantizer].make(kind, name, point.bits, config)

