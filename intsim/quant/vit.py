"""Fake-quant wrapper of a timm ``VisionTransformer`` (ViT / DeiT with a class token): a thin composition of
the quantized layers of :mod:`intsim.quant.layers`, written once in :meth:`QuantViT.forward`.

Modes (``qvit.mode``): ``float``, ``calibrate`` (float64, observers), ``fast`` (float32 fake-quant,
differentiable with straight-through rounding) and ``export`` (the same forward emits the integer Program:
:func:`intsim.quant.export.export_program`). The ``exact`` precision (codes equal to the interpreter's at every
point, every image) runs the exported Program with the torch twins (:func:`intsim.quant.exact.run_exact`).

Calibration is the configuration's method (:mod:`intsim.quant.methods`); each point's quantizer is the one the
configuration names for its kind of point (:mod:`intsim.quant.quantizers`).

Quantization points (= Program tensor names; ``i`` = block index; kind of point in brackets)::

    pos_embed                      [pos_embed] the position embedding (a constant)
    blocks.0.norm1.input           [residual] the patch-embedding accumulator plus the position embedding, after
                                   the class token (cls + pos_embed[0], quantized once as a constant row)
    blocks.{i}.norm1, .norm2, norm [post_layernorm]
    blocks.{i}.attn.q, .k, .v      [qkv] (the softmax reads the q k^T accumulator at scale s_q s_k / sqrt(d))
    blocks.{i}.attn.probs          [post_softmax]
    blocks.{i}.attn.context        [attn_output]
    blocks.{i}.norm2.input         [residual] residual + proj accumulator
    blocks.{i}.mlp.fc1             [gelu_input] the GELU table's index
    blocks.{i}.mlp.gelu            [post_gelu]
    blocks.{i+1}.norm1.input / norm.input   [residual] residual + fc2 accumulator
    (the patch-embedding, proj and fc2 int32 accumulators go straight into the residual adds, rescaled per channel)
"""

from __future__ import annotations

import torch

from intsim.quant.configs import QuantConfig, config_from_metadata, validate_config
from intsim.quant.layers import CALIBRATION_DTYPE, MODES, Head, PatchEmbedding, QuantBlock, QuantContext, QuantLinear
import intsim.quant.registered  # noqa: F401  (every shipped quantizer and method, registered)

__all__ = ["CALIBRATION_DTYPE", "QuantViT", "unsupported_reason"]


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
        self.config = validate_config(config)
        self.heads = model.blocks[0].attn.num_heads
        self.patch = model.patch_embed.patch_size[0]
        self.input_size = tuple(model.patch_embed.img_size)
        context = QuantContext(config)
        object.__setattr__(self, "context", context)
        weight, bias = self._folded_patch_embedding(torch.as_tensor(mean, dtype=torch.float64),
                                                    torch.as_tensor(std, dtype=torch.float64))
        depth = len(model.blocks)
        streams = [context.quantizer("residual", self.ln_input_name(index, depth)) for index in range(depth + 1)]
        tokens = (self.input_size[0] // self.patch) * (self.input_size[1] // self.patch) + 1
        self.embed = PatchEmbedding(context, model, weight, bias, streams[0])
        self.blocks = torch.nn.ModuleList(QuantBlock(context, index, block, tokens, streams[index + 1])
                                          for index, block in enumerate(model.blocks))
        self.head = Head(context, model)

    # ----------------------------------------------------------------------------------------- structure

    @property
    def mode(self) -> str:
        return self.context.mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"QuantViT.mode must be one of {MODES}, got {value!r}")
        self.context.mode = value

    @property
    def points(self) -> dict:
        """Every quantization point's quantizer by Program tensor name, in model order."""
        return self.context.points

    @property
    def linears_q(self) -> dict[str, QuantLinear]:
        """Every quantized linear layer by name, in model order."""
        return {module.name: module for module in self.modules() if isinstance(module, QuantLinear)}

    @property
    def weights(self) -> dict[str, QuantLinear]:
        """The linear layers (``.codes`` int64 ``(N, K)``, ``.scales`` float64 ``(N,)``) once calibrated."""
        return {name: linear for name, linear in self.linears_q.items() if linear.codes is not None}

    @property
    def qparams(self) -> dict:
        """Each calibrated point's parameters by name (points without any, e.g. a softmax with a fixed scale, absent)."""
        return {name: q.qparams for name, q in self.points.items() if getattr(q, "qparams", None) is not None}

    def _folded_patch_embedding(self, mean: torch.Tensor, std: torch.Tensor):
        """Patch embedding on raw pixels: ``conv(u8/255 - mean)/std`` = ``conv'(u8) + b'`` with
        ``W'[o,c] = W[o,c] / (255 std_c)`` and ``b' = b - sum W[o,c] mean_c / std_c`` (float64, plan time)."""
        conv = self.model.patch_embed.proj
        weight = conv.weight.detach().to(torch.float64)
        bias = conv.bias.detach().to(torch.float64) if conv.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
        folded = (weight / (255.0 * std.view(1, -1, 1, 1))).reshape(weight.shape[0], -1)
        return folded, bias - (weight * (mean / std).view(1, -1, 1, 1)).sum(dim=(1, 2, 3))

    @staticmethod
    def ln_input_name(index: int, depth: int) -> str:
        """The residual-stream point that feeds LayerNorm 1 of block ``index`` (``norm.input`` after the last)."""
        return f"blocks.{index}.norm1.input" if index < depth else "norm.input"

    def layernorm_consumers(self):
        """``(LayerNorm, the Linear that reads its output)`` pairs, in model order (a reparameterization's pairs)."""
        for block in self.blocks:
            yield block.norm1, block.attn.qkv
            yield block.norm2, block.mlp.fc1
        yield self.head.norm, self.head.linear

    @classmethod
    def from_program(cls, model, program) -> "QuantViT":
        """The fast fake-quant model of an exported ``program`` on ``model`` (same architecture): configuration,
        every quantizer's parameters and every constant (weight codes, biases, position embedding) read from the
        Program, so what a method learned (rounding, scales) is what the fast model computes."""
        meta = program.metadata
        qvit = cls(model, config_from_metadata(meta["config"]), mean=meta["preprocess"]["mean"],
                   std=meta["preprocess"]["std"])
        needed = [*qvit.points, *(f"{name}.weight" for name in qvit.linears_q)]
        missing = [name for name in needed if name not in program.tensors]
        if missing:
            raise ValueError(f"the Program has no tensor {missing[0]!r}" +
                             (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else "") +
                             f" of the {len(needed)} this model quantizes")
        for name, quantizer in qvit.points.items():
            quantizer.restore(program, name)
        for norm, consumer in qvit.layernorm_consumers():
            norm.restore_reparam(program, consumer)
        for linear in qvit.linears_q.values():
            linear.restore(program)
        qvit.embed.restore(program)
        qvit.mode = "fast"
        return qvit

    # --------------------------------------------------------------------------------------- calibration

    def calibrate(self, batches, progress=None) -> None:
        """The configuration's method over ``batches`` of uint8 pixels: fixes every quantizer and quantizes the
        weights. Deterministic for the same batches."""
        from intsim.quant.registered import METHODS

        METHODS[self.config.method].calibrate(self, batches, progress)
        self.mode = "fast"

    # --------------------------------------------------------------------------------------------- forward

    def forward(self, pixels):
        """Logits (float) of a uint8 pixel batch ``(B, 3, H, W)`` in the current mode; in ``export`` mode
        ``pixels`` is the input tensor's name and the result the logits tensor's name."""
        x = self.embed(pixels)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    # ------------------------------------------------------------------------------------------ reporting

    def run_fast(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fast fake-quant logits and the codes of every quantization point, by Program tensor name."""
        self.mode = "fast"
        self.context.codes = {}
        try:
            with torch.no_grad():
                logits = self(torch.as_tensor(pixels))
            return logits, self.context.codes
        finally:
            self.context.codes = None

    def run_float(self, pixels: torch.Tensor) -> torch.Tensor:
        previous, self.mode = self.mode, "float"
        try:
            with torch.no_grad():
                return self(torch.as_tensor(pixels))
        finally:
            self.mode = previous
