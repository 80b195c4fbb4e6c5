"""Fake-quant wrapper of a timm ``VisionTransformer`` (ViT / DeiT with a class token): calibration and ``fast`` mode.

:class:`QuantViT` runs the timm model's computation from uint8 pixels with a quantization point after every
op whose output the integer Program stores (names below). Its modes:

``float``      the float model (mean/std folded into the patch embedding, which is exact in real arithmetic);
``calibrate``  float64, and every point's observer sees its tensor (float64 statistics: see ``qparams.snap_scale``);
``fast``       float32 fake-quant: each point rounds to its codes and dequantizes (FQ-ViT style); weights are
               the quantized ones, biases quantized at ``s_x * s_w``; LayerNorm, softmax and GELU run in float
               before their quantizer. Its codes are *reported* against the integer Program, not required equal.

The ``exact`` precision (codes equal to the interpreter's at every point, every image) runs the exported
Program with the torch twins of every integer op (:func:`intsim.quant.exact.run_exact`).

Quantization points (= Program tensor names; ``i`` = block index)::

    pos_embed                      the position embedding (a constant)
    blocks.0.norm1.input           the patch-embedding accumulator plus the position embedding (PTF per channel),
                                   after the class token (cls + pos_embed[0], quantized once as a constant row)
    blocks.{i}.norm1.input         residual stream into LayerNorm 1 (PTF per channel)
    blocks.{i}.norm1, .attn.q, .attn.k, .attn.v, .attn.probs, .attn.context
    (the softmax reads the q k^T accumulator at scale s_q s_k / sqrt(d): no quantizer on the logits)
    blocks.{i}.norm2.input         residual stream into LayerNorm 2 (PTF): residual + proj accumulator
    blocks.{i}.norm2, .mlp.fc1, .mlp.gelu
    (fc1 and gelu are PTF per channel with ``mlp_ptf``: a few hidden units carry values ~100x the others)
    (the patch-embedding, proj and fc2 int32 accumulators go straight into the residual adds, rescaled per channel)
    norm.input, norm               final LayerNorm (input PTF)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from intsim.quant.configs import QuantConfig
from intsim.quant.observers import LisScaleObserver, PerChannelMinMaxObserver, SoftmaxMaxObserver, make_observer
from intsim.quant.qparams import LisQParams, PtfQParams, QParams, UniformProbsQParams, symmetric_weight_qparams

__all__ = ["QuantViT", "QuantizedLinear", "unit_scale", "unsupported_reason"]

MODES = ("float", "calibrate", "fast")
CALIBRATION_DTYPE = torch.float64
"""Calibration runs in float64: its statistics then differ between CPU instruction paths only in bits that the
scale grid (:func:`intsim.quant.qparams.snap_scale`) removes, so every CPU derives the same Program."""


def unsupported_reason(model) -> str | None:
    """Why ``model`` is outside what :class:`QuantViT` handles, or ``None`` when it is supported."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        return f"{type(model).__name__} is not a timm VisionTransformer"
    checks = (
        (model.cls_token is not None, "it has no class token"),
        (model.global_pool == "token", f"global_pool is {model.global_pool!r} (only 'token')"),
        (getattr(model, "num_reg_tokens", 0) == 0, "it has register tokens"),
        (not getattr(model, "no_embed_class", False), "its position embedding excludes the class token"),
        (isinstance(model.norm_pre, torch.nn.Identity), "it has a pre-norm before the blocks"),
        (isinstance(model.fc_norm, torch.nn.Identity), "it has an fc_norm"),
        (model.pos_embed is not None, "it has no absolute position embedding"),
    )
    for ok, reason in checks:
        if not ok:
            return reason
    for index, block in enumerate(model.blocks):
        attn = block.attn
        if not isinstance(getattr(attn, "q_norm", torch.nn.Identity()), torch.nn.Identity):
            return f"block {index} normalises q/k"
        if not isinstance(block.mlp.act, torch.nn.GELU) or getattr(block.mlp.act, "approximate", "none") != "none":
            return f"block {index} does not use exact GELU"
        if not isinstance(getattr(block.mlp, "norm", torch.nn.Identity()), torch.nn.Identity):
            return f"block {index} has a norm inside its MLP"
    return None


def unit_scale(qparams) -> float:
    """The real value of one code step at factor 1: ``scale``, or a PTF quantizer's ``base_scale`` (the unit of a
    linear layer's accumulator over PTF codes shifted by their factors)."""
    return qparams.base_scale if isinstance(qparams, PtfQParams) else qparams.scale


@dataclass
class QuantizedLinear:
    """A linear layer's int8 (or ``wbits``) weight codes ``(N, K)`` and per-output-channel float64 scales."""

    codes: torch.Tensor  # int64 values in [-(2**(b-1)-1), 2**(b-1)-1]
    scales: torch.Tensor  # float64 (N,)
    bias: torch.Tensor  # float64 (N,) real bias (quantized to int32 at s_x * s_w when the input scale is known)

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None, bits: int) -> "QuantizedLinear":
        weight = weight.detach().to(torch.float64)
        quantized = symmetric_weight_qparams(weight, bits)
        bias = torch.zeros(weight.shape[0], dtype=torch.float64) if bias is None else bias.detach().to(torch.float64)
        return cls(quantized.codes.to(torch.int64), quantized.scales.to(torch.float64), bias)

    def int_bias(self, input_scale: float, name: str) -> torch.Tensor:
        """``round_half_even(b / (s_x * s_w))`` as int64, refused if it leaves int32."""
        bias = torch.round(self.bias / (input_scale * self.scales)).to(torch.int64)
        if bias.numel() and int(bias.abs().max()) > 2**31 - 1:
            raise OverflowError(f"{name}: the bias does not fit int32 at scale s_x * s_w (input scale {input_scale:g})")
        return bias


class QuantViT(torch.nn.Module):
    """A timm ViT wrapped with quantization points; see the module docstring.

    ``mean``/``std`` are the model's input normalisation (folded into the patch embedding: the Program takes
    raw uint8 pixels). Typical use: ``qvit.calibrate(batches)``, then ``qvit.mode = "fast"`` or
    :func:`intsim.quant.export.export_program`.
    """

    def __init__(self, model, config: QuantConfig, *, mean, std):
        super().__init__()
        reason = unsupported_reason(model)
        if reason:
            raise ValueError(f"QuantViT: cannot quantize this model: {reason}")
        self.model = model.eval()
        self.config = config
        self.mode = "float"
        self.heads = model.blocks[0].attn.num_heads
        self.patch = model.patch_embed.patch_size[0]
        self.input_size = tuple(model.patch_embed.img_size)
        self._fold_normalisation(torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64))
        self.observers: dict = {}
        self.qparams: dict = {}
        self.weights: dict[str, QuantizedLinear] = {}
        self.codes: dict[str, torch.Tensor] | None = None  # filled in fast mode when recording

    # ----------------------------------------------------------------------------------------- structure

    def _fold_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Patch embedding on raw pixels: ``conv(u8/255 - mean)/std`` = ``conv'(u8) + b'`` with
        ``W'[o,c] = W[o,c] / (255 std_c)`` and ``b' = b - sum W[o,c] mean_c / std_c`` (float64, plan time)."""
        conv = self.model.patch_embed.proj
        weight = conv.weight.detach().to(torch.float64)
        bias = conv.bias.detach().to(torch.float64) if conv.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
        self.patch_weight = (weight / (255.0 * std.view(1, -1, 1, 1))).reshape(weight.shape[0], -1)
        self.patch_bias = bias - (weight * (mean / std).view(1, -1, 1, 1)).sum(dim=(1, 2, 3))

    def linears(self) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Every linear layer as ``name -> (float weight (N, K), bias)`` (layer scale folded into proj/fc2)."""
        out = {"patch_embed": (self.patch_weight, self.patch_bias)}
        for index, block in enumerate(self.model.blocks):
            prefix = f"blocks.{index}"
            out[f"{prefix}.attn.qkv"] = (block.attn.qkv.weight, block.attn.qkv.bias)
            for name, layer, scale in ((f"{prefix}.attn.proj", block.attn.proj, block.ls1),
                                       (f"{prefix}.mlp.fc2", block.mlp.fc2, block.ls2)):
                weight, bias = layer.weight, layer.bias
                if not isinstance(scale, torch.nn.Identity):  # LayerScale: gamma * (W x + b)
                    gamma = scale.gamma.detach()
                    weight, bias = weight * gamma[:, None], None if bias is None else bias * gamma
                out[name] = (weight, bias)
            out[f"{prefix}.mlp.fc1"] = (block.mlp.fc1.weight, block.mlp.fc1.bias)
        out["head"] = (self.model.head.weight, self.model.head.bias)
        return out

    @staticmethod
    def ln_input_name(index: int, depth: int) -> str:
        """The residual-stream point that feeds LayerNorm 1 of block ``index`` (``norm.input`` after the last)."""
        return f"blocks.{index}.norm1.input" if index < depth else "norm.input"

    @classmethod
    def from_program(cls, model, program) -> "QuantViT":
        """The fast fake-quant model of an exported ``program`` (its config, scales and zero points), on ``model``
        (the same float weights). Weights are re-quantized deterministically, giving the Program's codes."""
        from intsim.quant.configs import QuantConfig

        meta = program.metadata
        qvit = cls(model, QuantConfig(**meta["config"]), mean=meta["preprocess"]["mean"], std=meta["preprocess"]["std"])
        qparams = {}
        # a Linear over PTF codes names their factors (x_shift): that fixes the base scale, its bias's unit
        factors = {op.inputs[0]: program.constants[op.inputs[3]] for op in program.ops
                   if op.kind == "Linear" and len(op.inputs) > 3}
        full_scales = {op.outputs[0]: op.attrs["full_scale"] for op in program.ops if op.kind == "UniformSoftmax"}
        for name, spec in program.tensors.items():
            if name.endswith(".probs") and qvit.config.softmax == "lis" and spec.scale is not None:
                qparams[name] = LisQParams(spec.scale)
                continue
            if name in full_scales:
                qparams[name] = UniformProbsQParams(full_scales[name], spec.bits)
                continue
            if spec.kind != "activation" or spec.scale is None or name.endswith((".acc", ".scores", ".values", ".probs", "patches")):
                continue
            if isinstance(spec.scale, list):  # PTF: per-channel base * 2**alpha
                scales = torch.tensor(spec.scale, dtype=torch.float64)
                if name in factors:
                    alpha = torch.as_tensor(factors[name].astype("int64"))
                    base = float(scales[0]) / 2.0 ** int(alpha[0])
                else:
                    base = float(scales.min())
                    alpha = torch.round(torch.log2(scales / base)).to(torch.int64)
                levels = qvit.config.ptf_levels if name.endswith(".input") else qvit.config.mlp_ptf_levels
                qparams[name] = PtfQParams(base, spec.zero_point, alpha, bits=spec.bits, levels=levels)
            else:
                qparams[name] = QParams(spec.scale, spec.zero_point, spec.bits, spec.signed)
        pos = program.tensors["pos_embed"]
        qparams["pos_embed"] = QParams(pos.scale, pos.zero_point, pos.bits, pos.signed)
        qvit.qparams = qparams
        qvit.weights = {name: QuantizedLinear.from_float(w, b, qvit.config.wbits) for name, (w, b) in qvit.linears().items()}
        qvit.mode = "fast"
        return qvit

    # --------------------------------------------------------------------------------------- calibration

    def calibrate(self, batches, progress=None) -> None:
        """Run the float model over ``batches`` of uint8 pixels, observe every point, then fix all qparams and
        quantize the weights. Deterministic for the same batches."""
        self.observers = {}
        self.mode = "calibrate"
        with torch.no_grad():
            for pixels in batches:
                self(torch.as_tensor(pixels))
                if progress is not None:
                    progress.update(1)
        self._finish_calibration()
        self.mode = "fast"

    def _point_bits(self, name: str) -> int:
        if name.endswith(".input"):
            return self.config.residual_width
        return self.config.gelu_input_width if name.endswith(".mlp.fc1") else self.config.abits

    def _observer(self, name: str, kind: str):
        if name not in self.observers:
            if kind == "ptf":
                self.observers[name] = PerChannelMinMaxObserver(self._point_bits(name))
            else:
                self.observers[name] = make_observer(self.config.observer, self._point_bits(name))
        return self.observers[name]

    def _finish_calibration(self) -> None:
        qparams = {}
        for name, observer in self.observers.items():
            if isinstance(observer, LisScaleObserver):
                qparams[name] = observer.qparams()
            elif isinstance(observer, PerChannelMinMaxObserver):
                if name.endswith(".input"):  # LayerNorm inputs (the LayerNorm op is scale-free)
                    qparams[name] = observer.ptf_qparams(levels=self.config.ptf_levels,
                                                         search_zero_point=self.config.ptf_search_zero_point)
                else:  # fc1 / GELU outputs: the GELU codes feed fc2 shifted by their factors
                    qparams[name] = observer.ptf_qparams(
                        levels=self.config.mlp_ptf_levels, search_zero_point=self.config.ptf_search_zero_point
                    ).lowest_factor_one()
            else:
                qparams[name] = observer.qparams()
        self.qparams = qparams
        self.weights = {name: QuantizedLinear.from_float(w, b, self.config.wbits) for name, (w, b) in self.linears().items()}

    # ------------------------------------------------------------------------------------------ quantizers

    def _point(self, name: str, x: torch.Tensor, kind: str = "uniform") -> torch.Tensor:
        """A quantization point: observe (calibrate), fake-quantize (fast) or pass through (float)."""
        if self.mode == "calibrate":
            self._observer(name, kind).update(x.detach())
            return x
        if self.mode != "fast":
            return x
        qp = self.qparams[name]
        codes = qp.quantize(x)
        if self.codes is not None:
            self.codes[name] = codes.to(torch.int64)
        return qp.dequantize(codes).to(x.dtype)

    def _probs(self, name: str, probs: torch.Tensor) -> torch.Tensor:
        """Attention probabilities: LIS codes ``A = floor(log2(4 / (3 p)))`` (0..15, 16 = zero; values
        ``scale * 2**-A``, :class:`~intsim.quant.qparams.LisQParams`) or uniform codes."""
        lis = self.config.softmax == "lis"
        if self.mode == "calibrate" and lis and self.config.lis_scale:
            self.observers.setdefault(name, LisScaleObserver()).update(probs.detach())
        if self.mode == "calibrate" and not lis and self.config.softmax_minmax:
            self.observers.setdefault(name, SoftmaxMaxObserver(self.config.attn_bits)).update(probs.detach())
        if self.mode != "fast":
            return probs
        if lis:
            quantizer = self.qparams.get(name, LisQParams())
        else:
            levels = 2**self.config.attn_bits - 1
            quantizer = self.qparams.get(name, UniformProbsQParams(levels, self.config.attn_bits))
        codes = quantizer.quantize(probs)
        values = quantizer.dequantize(codes)
        if self.codes is not None:
            self.codes[name] = codes.to(torch.int64)
        return values.to(probs.dtype)

    def _linear(self, name: str, x: torch.Tensor, input_point: str | None) -> torch.Tensor:
        """``x @ W.T + b``: float weights (float/calibrate) or quantized weights and int32-grid bias (fast)."""
        if self.mode != "fast":
            weight, bias = self._float_linear(name)
            return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
        q = self.weights[name]
        input_scale = 1.0 if input_point is None else unit_scale(self.qparams[input_point])
        weight = (q.codes.to(torch.float64) * q.scales[:, None]).to(x.dtype)
        bias = (q.int_bias(input_scale, name).to(torch.float64) * input_scale * q.scales).to(x.dtype)
        return F.linear(x, weight, bias)

    def _float_linear(self, name: str):
        if not hasattr(self, "_float_linears"):
            self._float_linears = self.linears()
        return self._float_linears[name]

    # --------------------------------------------------------------------------------------------- forward

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Logits (float) of a uint8 pixel batch ``(B, 3, H, W)`` in the current mode."""
        if self.mode not in MODES:
            raise ValueError(f"QuantViT.mode must be one of {MODES}, got {self.mode!r}")
        model = self.model
        dtype = CALIBRATION_DTYPE if self.mode == "calibrate" else torch.float32
        batch = pixels.shape[0]
        patches = self._patchify(pixels.to(dtype))
        # the patch-embedding accumulator goes straight into the add of the (quantized) position embedding; the
        # class token row cls + pos_embed[0] is a constant, quantized once by the residual stream's quantizer
        x = self._linear("patch_embed", patches, None) + self._point("pos_embed", model.pos_embed[:, 1:].to(dtype))
        cls = (model.cls_token + model.pos_embed[:, :1]).to(dtype).expand(batch, -1, -1)
        depth = len(model.blocks)
        x = self._point(self.ln_input_name(0, depth), torch.cat([cls, x], dim=1), "ptf")
        for index, block in enumerate(model.blocks):
            x = self._block(index, block, x, self.ln_input_name(index + 1, depth))
        x = self._point("norm", self._layer_norm(model.norm, x))
        return self._linear("head", x[:, 0], "norm")

    def _patchify(self, pixels: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = pixels.shape
        p = self.patch
        grid = pixels.reshape(batch, channels, height // p, p, width // p, p).permute(0, 2, 4, 1, 3, 5)
        return grid.reshape(batch, (height // p) * (width // p), channels * p * p)

    @staticmethod
    def _layer_norm(norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, norm.normalized_shape, norm.weight.to(x.dtype), norm.bias.to(x.dtype), norm.eps)

    def _block(self, index: int, block, x: torch.Tensor, next_input: str) -> torch.Tensor:
        p = f"blocks.{index}"
        batch, tokens, channels = x.shape
        heads, width = self.heads, channels // self.heads
        h = self._point(f"{p}.norm1", self._layer_norm(block.norm1, x))
        qkv = self._linear(f"{p}.attn.qkv", h, f"{p}.norm1")
        q, k, v = (self._point(f"{p}.attn.{name}", part) for name, part in zip("qkv", qkv.split(channels, dim=-1)))

        def split_heads(t):
            return t.reshape(batch, tokens, heads, width).transpose(1, 2)

        # the softmax reads the scores accumulator itself (scale s_q s_k / sqrt(d)): no 8-bit logit quantizer
        logits = split_heads(q) @ split_heads(k).transpose(-1, -2) * width**-0.5
        probs = self._probs(f"{p}.attn.probs", logits.softmax(dim=-1))
        context = (probs @ split_heads(v)).transpose(1, 2).reshape(batch, tokens, channels)
        context = self._point(f"{p}.attn.context", context)
        # proj and fc2 accumulators feed the residual add directly (per-channel multipliers, one rounding):
        # their outlier channels never pass through a per-tensor 8-bit quantizer
        proj = self._linear(f"{p}.attn.proj", context, f"{p}.attn.context")
        x = self._point(f"{p}.norm2.input", x + proj, "ptf")
        h = self._point(f"{p}.norm2", self._layer_norm(block.norm2, x))
        hidden = "ptf" if self.config.mlp_ptf else "uniform"
        fc1 = self._point(f"{p}.mlp.fc1", self._linear(f"{p}.mlp.fc1", h, f"{p}.norm2"), hidden)
        gelu = self._point(f"{p}.mlp.gelu", F.gelu(fc1), hidden)
        fc2 = self._linear(f"{p}.mlp.fc2", gelu, f"{p}.mlp.gelu")
        return self._point(next_input, x + fc2, "ptf")

    # ------------------------------------------------------------------------------------------ reporting

    def run_fast(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fast fake-quant logits and the codes of every quantization point, by Program tensor name."""
        self.mode = "fast"
        self.codes = {}
        try:
            with torch.no_grad():
                logits = self(torch.as_tensor(pixels))
            return logits, self.codes
        finally:
            self.codes = None

    def run_float(self, pixels: torch.Tensor) -> torch.Tensor:
        previous, self.mode = self.mode, "float"
        try:
            with torch.no_grad():
                return self(torch.as_tensor(pixels))
        finally:
            self.mode = previous
