"""Export a calibrated :class:`~intsim.quant.vit.QuantViT` to an integer :class:`~intsim.program.Program`.

Every float scale becomes integers here, through the plan-time helpers of :mod:`intsim.ops`
(``quantize_multiplier``, ``residual_add_constants``, ``layernorm_constants``, ``fit_i_exp_constants``,
``build_gelu_lut``); nothing float reaches the Program except scales kept as metadata. The Program's tensor
names are the QuantViT's quantization points, so codes can be compared point by point.

Exporter guarantees (checked here, refused with a clear error otherwise): biases fit int32; every
accumulator's bound is computed and declared as its bit width; the logits fit int32.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

import intsim
from intsim.ops import (
    build_gelu_lut,
    layernorm_constants,
    quantize_multiplier,
    residual_add_constants,
)
from intsim.ops.softmax import LIS_VALUE_SHIFT, fit_i_exp_constants, largest_full_scale
from intsim.program import Op, Program, TensorSpec
from intsim.quant.qparams import PtfQParams, QParams
from intsim.quant.vit import QuantViT, unit_scale

__all__ = ["ProgramBuilder", "export_program"]


def _scale_metadata(scale) -> float | list[float]:
    if isinstance(scale, (torch.Tensor, np.ndarray)):
        return [float(v) for v in scale.reshape(-1)]
    return float(scale)


def _signed_bits(bound: int) -> int:
    """Bits of a two's complement integer holding ``[-bound, bound]``."""
    return max(int(bound).bit_length() + 1, 2)


class ProgramBuilder:
    """Collects tensors, constants and ops in program order (a tiny helper of the exporter)."""

    def __init__(self):
        self.ops: list[Op] = []
        self.tensors: dict[str, TensorSpec] = {}
        self.constants: dict[str, np.ndarray] = {}

    def tensor(self, name: str, bits: int, signed: bool, *, zero_point=0, scale=None, shape=None, kind="activation"):
        if name in self.tensors:
            raise ValueError(f"ProgramBuilder: tensor {name!r} declared twice")
        self.tensors[name] = TensorSpec(bits=int(bits), signed=bool(signed), zero_point=int(zero_point),
                                        scale=None if scale is None else _scale_metadata(scale),
                                        shape=None if shape is None else [int(s) for s in shape], kind=kind)
        return name

    def codes(self, name: str, qparams, shape=None) -> str:
        """Declare an activation tensor quantized with ``qparams`` (QParams or PtfQParams)."""
        scale = qparams.scales if isinstance(qparams, PtfQParams) else qparams.scale
        signed = getattr(qparams, "signed", False)
        return self.tensor(name, qparams.bits, signed, zero_point=qparams.zero_point, scale=scale, shape=shape)

    def constant(self, name: str, values, *, bits=None, signed=None, scale=None, zero_point=0) -> str:
        array = np.ascontiguousarray(np.asarray(values))
        if array.dtype.kind not in "iu":
            raise TypeError(f"ProgramBuilder: constant {name!r} must be integer, got {array.dtype}")
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        signed = low < 0 if signed is None else signed
        if bits is None:
            bits = _signed_bits(max(abs(low), abs(high))) if signed else max(int(high).bit_length(), 1)
        dtype = next(d for d in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64)
                     if np.iinfo(d).min <= low and high <= np.iinfo(d).max)
        self.constants[name] = array.astype(dtype)
        return self.tensor(name, bits, signed, zero_point=zero_point, scale=scale, shape=array.shape, kind="constant")

    def op(self, kind: str, name: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        plain = {key: (value.item() if isinstance(value, np.generic) else value) for key, value in attrs.items()}
        self.ops.append(Op(kind, name, list(inputs), list(outputs), plain))

    def build(self, metadata: dict) -> Program:
        return Program(self.ops, self.tensors, self.constants, metadata).validate()


def _multipliers(ratios) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``quantize_multiplier`` of float64 ratios: int32 multipliers and int8 shifts."""
    pairs = [quantize_multiplier(float(r)) for r in np.atleast_1d(np.asarray(ratios, dtype=np.float64))]
    return np.array([m for m, _ in pairs], dtype=np.int32), np.array([k for _, k in pairs], dtype=np.int8)


class _Exporter:
    def __init__(self, qvit: QuantViT):
        if not qvit.qparams:
            raise ValueError("export_program: the model is not calibrated (call QuantViT.calibrate first)")
        self.q = qvit
        self.config = qvit.config
        self.rounding = qvit.config.rounding
        self.b = ProgramBuilder()

    def qp(self, name: str):
        return self.q.qparams[name]

    def requantize(self, acc: str, acc_scale, out: str, out_qp, name: str) -> None:
        """``acc`` (real scale per channel ``acc_scale``) to the codes of ``out_qp`` (QParams, or PTF per channel)."""
        multiplier, shift = _multipliers(np.asarray(acc_scale, dtype=np.float64) / _scale_array(out_qp))
        self.b.constant(f"{name}.multiplier", multiplier, signed=True)
        self.b.constant(f"{name}.shift", shift, signed=False)
        self.b.codes(out, out_qp)
        self.b.op("Requantize", name, [acc, f"{name}.multiplier", f"{name}.shift"], [out],
                  zero_point=out_qp.zero_point, qmin=out_qp.qmin, qmax=out_qp.qmax, rounding=self.rounding)

    def linear(self, layer: str, x: str, x_scale: float, x_zero_point: int, x_abs_max: int,
               x_shift: np.ndarray | None = None) -> tuple[str, np.ndarray]:
        """Linear op; returns the accumulator name and its per-channel real scales ``s_x * s_w``.

        ``x_shift``: the input's PTF factors (``x`` codes of channel ``k`` at scale ``x_scale * 2**x_shift[k]``),
        passed to the op as its fourth input; the declared accumulator bound then sums each input channel's
        ``x_abs_max * 2**x_shift[k] * max_n |w[n, k]|``."""
        weights = self.q.weights[layer]
        codes = weights.codes.numpy().astype(np.int8 if self.config.wbits <= 8 else np.int16)
        bias = weights.int_bias(x_scale, layer).numpy().astype(np.int32)
        self.b.constant(f"{layer}.weight", codes, bits=self.config.wbits, signed=True, scale=weights.scales)
        self.b.constant(f"{layer}.bias", bias, bits=32, signed=True, scale=x_scale * weights.scales)
        abs_codes = np.abs(codes.astype(np.int64))
        inputs = [x, f"{layer}.weight", f"{layer}.bias"]
        if x_shift is None:
            bound = codes.shape[1] * x_abs_max * int(abs_codes.max(initial=0))
        else:
            self.b.constant(f"{layer}.x_shift", x_shift.astype(np.uint8), signed=False)
            inputs.append(f"{layer}.x_shift")
            bound = x_abs_max * int((abs_codes << x_shift.astype(np.int64)).sum(axis=1).max(initial=0))
        bound += int(np.abs(bias.astype(np.int64)).max(initial=0))
        acc = self.b.tensor(f"{layer}.acc", _signed_bits(bound), True, scale=x_scale * weights.scales)
        self.b.op("Linear", layer, inputs, [acc], x_zero_point=int(x_zero_point))
        return acc, (x_scale * weights.scales).numpy()

    def residual(self, name: str, a: str, a_qp, b: str, b_qp, out: str, out_qp=None) -> None:
        out_qp = self.qp(out) if out_qp is None else out_qp
        ma, mb, shift = residual_add_constants(_scale_array(a_qp), _scale_array(b_qp), _scale_array(out_qp))
        self.b.constant(f"{name}.a_multiplier", ma.astype(np.int32), signed=True)
        self.b.constant(f"{name}.b_multiplier", mb.astype(np.int32), signed=True)
        self.b.constant(f"{name}.shift", shift.astype(np.int8), signed=False)
        self.b.codes(out, out_qp)
        self.b.op("ResidualAdd", name, [a, b, f"{name}.a_multiplier", f"{name}.b_multiplier", f"{name}.shift"], [out],
                  a_zero_point=a_qp.zero_point, b_zero_point=b_qp.zero_point, out_zero_point=out_qp.zero_point,
                  qmin=out_qp.qmin, qmax=out_qp.qmax, rounding=self.rounding)

    def layernorm(self, name: str, x: str, norm: torch.nn.LayerNorm, out: str) -> None:
        x_qp, out_qp = self.qp(x), self.qp(out)
        constants = layernorm_constants(norm.weight.detach().double().numpy(), norm.bias.detach().double().numpy(), out_qp.scale)
        alpha = x_qp.alpha.numpy().astype(np.uint8) if isinstance(x_qp, PtfQParams) else np.zeros(norm.weight.numel(), np.uint8)
        self.b.constant(f"{name}.alpha", alpha, signed=False)
        self.b.constant(f"{name}.multiplier", constants.multiplier.astype(np.int32), signed=True)
        self.b.constant(f"{name}.bias", constants.bias.astype(np.int64), signed=True)
        self.b.constant(f"{name}.shift", constants.shift.astype(np.int8), signed=False)
        self.b.codes(out, out_qp)
        self.b.op("LayerNorm", name, [x, f"{name}.alpha", f"{name}.multiplier", f"{name}.bias", f"{name}.shift"], [out],
                  zero_point=x_qp.zero_point, out_zero_point=out_qp.zero_point, qmin=out_qp.qmin, qmax=out_qp.qmax,
                  bits=x_qp.bits, signed=False, rounding=self.rounding)

    def attention(self, p: str, tokens: int, channels: int) -> None:
        heads = self.q.heads
        width = channels // heads
        q_qp, k_qp, v_qp = (self.qp(f"{p}.attn.{n}") for n in "qkv")
        bound = width * _span(q_qp) * _span(k_qp)
        scores_bits = _signed_bits(bound)
        logit_scale = q_qp.scale * k_qp.scale * width**-0.5
        scores = self.b.tensor(f"{p}.attn.scores", scores_bits, True, scale=logit_scale)
        self.b.op("AttentionScores", f"{p}.attn.scores", [f"{p}.attn.q", f"{p}.attn.k"], [scores], heads=heads,
                  q_zero_point=q_qp.zero_point, k_zero_point=k_qp.zero_point)
        # the softmax reads the scores accumulator itself, at scale s_q s_k / sqrt(d): an 8-bit logit quantizer
        # (FQ-ViT's) cost 3 points of top-1 on ViT-Ti, and the fine scale keeps I-BERT's x0 = floor(-ln2/s) exact
        full_scale = None  # uniform softmax: the code of probability 1 (calibrated, or 2**bits - 1)
        if self.config.softmax != "lis":
            probs_qp = self.q.qparams.get(f"{p}.attn.probs")
            full_scale = 2**self.config.attn_bits - 1 if probs_qp is None else probs_qp.full_scale
        try:
            c = fit_i_exp_constants(logit_scale, row_length=tokens, levels=full_scale)
        except OverflowError:
            if full_scale is None:
                raise
            # a fine logit scale leaves no int64 room for e * F: keep the fixed scale's exp constants and the
            # largest F they allow (>= 2**bits - 1, which they were fitted for)
            c = fit_i_exp_constants(logit_scale, row_length=tokens, levels=2**self.config.attn_bits - 1)
            full_scale = max(2**self.config.attn_bits - 1, min(full_scale, largest_full_scale(c, tokens)))
        exp_attrs = dict(zero_point=0, bits=scores_bits, signed=True, x0=c.x0, b_int=c.b_int, c_int=c.c_int, n=c.n)
        v_span = max(v_qp.zero_point, v_qp.qmax - v_qp.zero_point)
        if self.config.softmax == "lis":
            # code A < 16 means scale * 2**-A (LisQParams; scale 1 without lis_scale); the value accumulator holds
            # sum (v - zp) << (15 - A), so its unit is scale * 2**-15 * s_v, folded into the context multiplier
            lis = self.q.qparams.get(f"{p}.attn.probs")
            self.b.tensor(f"{p}.attn.probs", 5, False, scale=None if lis is None else lis.scale)
            lis_scale = 1.0 if lis is None else lis.scale
            self.b.op("LogIntSoftmax", f"{p}.attn.probs", [scores], [f"{p}.attn.probs"], **exp_attrs)
            probs_scale, probs_kind, bound = lis_scale * 2.0**-LIS_VALUE_SHIFT, "lis", tokens * v_span << LIS_VALUE_SHIFT
        else:
            levels = 2**self.config.attn_bits - 1
            self.b.tensor(f"{p}.attn.probs", self.config.attn_bits, False, scale=1.0 / full_scale)
            self.b.op("UniformSoftmax", f"{p}.attn.probs", [scores], [f"{p}.attn.probs"],
                      out_bits=self.config.attn_bits, full_scale=full_scale, **exp_attrs)
            probs_scale, probs_kind, bound = 1.0 / full_scale, "uniform", tokens * v_span * levels
        values = self.b.tensor(f"{p}.attn.values", _signed_bits(bound), True, scale=probs_scale * v_qp.scale)
        self.b.op("AttentionValues", f"{p}.attn.values", [f"{p}.attn.probs", f"{p}.attn.v"], [values], heads=heads,
                  v_zero_point=v_qp.zero_point, probs=probs_kind)
        self.requantize(values, probs_scale * v_qp.scale, f"{p}.attn.context", self.qp(f"{p}.attn.context"), f"{p}.attn.context")

    def linear_acc(self, layer: str, x: str) -> "_Accumulator":
        """A linear layer whose int32 accumulator feeds a residual add directly (per-channel scales, zp 0); PTF
        input codes are shifted by their factors in the MAC (the accumulator's unit is the base scale)."""
        x_qp = self.qp(x)
        x_shift = x_qp.alpha.numpy() if isinstance(x_qp, PtfQParams) else None
        acc, scales = self.linear(layer, x, unit_scale(x_qp), x_qp.zero_point, _span(x_qp), x_shift)
        return _Accumulator(acc, scales)

    def gelu(self, p: str) -> None:
        """GELU as a table per fc1 code. PTF codes (``mlp_ptf``) get one table per pair of input and output
        factors in use, and the Lut op a per-channel row index (channel ``c`` reads row ``rows[c]``)."""
        fc1_qp, gelu_qp = self.qp(f"{p}.mlp.fc1"), self.qp(f"{p}.mlp.gelu")

        def table(in_scale: float, out_scale: float) -> np.ndarray:
            return build_gelu_lut(in_scale=in_scale, in_zero_point=fc1_qp.zero_point, in_bits=fc1_qp.bits,
                                  out_scale=out_scale, out_zero_point=gelu_qp.zero_point, out_bits=gelu_qp.bits)

        inputs = [f"{p}.mlp.fc1", f"{p}.mlp.gelu.table"]
        if not isinstance(fc1_qp, PtfQParams):
            self.b.constant(f"{p}.mlp.gelu.table", table(fc1_qp.scale, gelu_qp.scale), bits=gelu_qp.bits, signed=False)
        else:
            pairs = torch.stack([fc1_qp.alpha, gelu_qp.alpha], dim=1)
            used, rows = torch.unique(pairs, dim=0, return_inverse=True)  # sorted pairs: deterministic rows
            tables = [table(fc1_qp.base_scale * 2.0 ** int(a), gelu_qp.base_scale * 2.0 ** int(b)) for a, b in used.tolist()]
            self.b.constant(f"{p}.mlp.gelu.table", np.stack(tables), bits=gelu_qp.bits, signed=False)
            self.b.constant(f"{p}.mlp.gelu.rows", rows.numpy(), signed=False)  # stored in the narrowest dtype
            inputs.append(f"{p}.mlp.gelu.rows")
        self.b.codes(f"{p}.mlp.gelu", gelu_qp)
        self.b.op("Lut", f"{p}.mlp.gelu", inputs, [f"{p}.mlp.gelu"], bits=fc1_qp.bits, signed=False)

    def linear_requant(self, layer: str, x: str, out: str) -> None:
        x_qp = self.qp(x)
        acc, scales = self.linear(layer, x, x_qp.scale, x_qp.zero_point, _span(x_qp))
        self.requantize(acc, scales, out, self.qp(out), f"{layer}.requant")

    def block(self, index: int, block, tokens: int, channels: int, next_input: str) -> None:
        p = f"blocks.{index}"
        self.layernorm(f"{p}.norm1", f"{p}.norm1.input", block.norm1, f"{p}.norm1")
        ln_qp = self.qp(f"{p}.norm1")
        acc, scales = self.linear(f"{p}.attn.qkv", f"{p}.norm1", ln_qp.scale, ln_qp.zero_point, _span(ln_qp))
        parts = [f"{p}.attn.{n}.acc" for n in "qkv"]
        for part in parts:
            self.b.tensor(part, self.b.tensors[acc].bits, True)
        self.b.op("Split", f"{p}.attn.split", [acc], parts, sizes=[channels] * 3)
        for i, n in enumerate("qkv"):
            self.requantize(parts[i], scales[i * channels:(i + 1) * channels], f"{p}.attn.{n}", self.qp(f"{p}.attn.{n}"), f"{p}.attn.{n}")
        self.attention(p, tokens, channels)
        proj = self.linear_acc(f"{p}.attn.proj", f"{p}.attn.context")
        self.residual(f"{p}.residual1", f"{p}.norm1.input", self.qp(f"{p}.norm1.input"), proj.name, proj, f"{p}.norm2.input")
        self.layernorm(f"{p}.norm2", f"{p}.norm2.input", block.norm2, f"{p}.norm2")
        self.linear_requant(f"{p}.mlp.fc1", f"{p}.norm2", f"{p}.mlp.fc1")
        self.gelu(p)
        fc2 = self.linear_acc(f"{p}.mlp.fc2", f"{p}.mlp.gelu")
        self.residual(f"{p}.residual2", f"{p}.norm2.input", self.qp(f"{p}.norm2.input"), fc2.name, fc2, next_input)

    def run(self, metadata: dict) -> Program:
        q, b = self.q, self.b
        model = q.model
        height, width = q.input_size
        patch = q.patch
        tokens = (height // patch) * (width // patch) + 1
        channels = model.embed_dim
        b.tensor("pixels", 8, False, scale=1.0, shape=[3, height, width], kind="input")
        b.tensor("patch_embed.patches", 8, False, scale=1.0, shape=[tokens - 1, 3 * patch * patch])
        b.op("Patchify", "patch_embed.patchify", ["pixels"], ["patch_embed.patches"], patch=patch)
        acc, scales = self.linear("patch_embed", "patch_embed.patches", 1.0, 0, 255)
        # the patch accumulator plus the position embedding of the patch tokens, rounded once to the residual
        # stream's codes; the class token row cls + pos_embed[0] is a constant quantized by the same quantizer
        depth = len(model.blocks)
        stream = q.ln_input_name(0, depth)
        stream_qp = self.qp(stream)
        pos_qp = self.qp("pos_embed")
        pos = model.pos_embed.detach().double()
        b.constant("pos_embed", pos_qp.quantize(pos[:, 1:]).to(torch.int64).numpy(),
                   bits=pos_qp.bits, signed=False, scale=pos_qp.scale, zero_point=pos_qp.zero_point)
        self.residual("embed.add_pos", acc, _Accumulator(acc, scales), "pos_embed", pos_qp, "embed.patches", stream_qp)
        cls = (model.cls_token.detach().double() + pos[:, :1]).reshape(-1)
        b.constant("embed.cls_token", stream_qp.quantize(cls).to(torch.int64).numpy(), bits=stream_qp.bits, signed=False,
                   scale=_scale_array(stream_qp), zero_point=stream_qp.zero_point)
        b.codes(stream, stream_qp)
        b.op("PrependToken", "embed.cls", ["embed.patches", "embed.cls_token"], [stream])
        for index, block in enumerate(model.blocks):
            self.block(index, block, tokens, channels, q.ln_input_name(index + 1, depth))
        self.layernorm("norm", "norm.input", model.norm, "norm")
        norm_qp = self.qp("norm")
        b.codes("head.input", norm_qp)
        b.op("SelectToken", "head.select_class_token", ["norm"], ["head.input"], index=0)
        acc, scales = self.linear("head", "head.input", norm_qp.scale, norm_qp.zero_point, _span(norm_qp))
        self.logits(acc, scales)
        return b.build(metadata)

    def logits(self, acc: str, acc_scales: np.ndarray) -> None:
        """The head's accumulator on one common scale: int32 logits whose argmax is the prediction.

        Each class's accumulator has its own scale ``s_x * s_w[c]`` (per-channel weights), so comparing raw
        accumulators across classes would rank them wrongly. The output scale is the largest of them: every
        multiplier is ``<= 1``, the logits keep at least the resolution of the coarsest class and fit int32.
        """
        out_scale = float(np.max(acc_scales))
        multiplier, shift = _multipliers(np.asarray(acc_scales, dtype=np.float64) / out_scale)
        self.b.constant("logits.multiplier", multiplier, signed=True)
        self.b.constant("logits.shift", shift, signed=False)
        self.b.tensor("logits", 32, True, scale=out_scale, kind="output")
        self.b.op("Requantize", "logits", [acc, "logits.multiplier", "logits.shift"], ["logits"],
                  zero_point=0, qmin=-(2**31), qmax=2**31 - 1, rounding=self.rounding)


class _Accumulator:
    """An int32 accumulator used as a residual-add operand: zero point 0, per-channel real scales."""

    zero_point = 0

    def __init__(self, name: str, scales: np.ndarray):
        self.name, self.scales = name, scales


def _span(qp) -> int:
    """max |code - zero_point| over the code range."""
    return max(qp.zero_point - qp.qmin, qp.qmax - qp.zero_point)


def _scale_array(qp):
    if isinstance(qp, _Accumulator):
        return qp.scales
    return qp.scales.numpy() if isinstance(qp, PtfQParams) else qp.scale


def export_program(qvit: QuantViT, *, model_name: str = "", class_names=None, preprocess=None) -> Program:
    """The integer Program of a calibrated ``qvit`` (see the module docstring)."""
    metadata = dict(
        intsim_version=intsim.__version__,
        model=model_name,
        config=asdict(qvit.config),
        rounding=qvit.config.rounding,
        class_names=list(class_names) if class_names is not None else None,
        preprocess=preprocess,
    )
    return _Exporter(qvit).run(metadata)
