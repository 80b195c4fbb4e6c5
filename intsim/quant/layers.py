"""Quantized layers: each one describes its computation once, as a fake-quant ``compute`` and an integer ``emit``.

A model (:class:`~intsim.quant.vit.QuantViT`) is a composition of these layers, written once in its ``forward``.
Every layer runs in the mode of the :class:`QuantContext` it shares with the others:

``float``      the float model (float32);
``calibrate``  float64, every quantization point's observer sees its tensor;
``fast``       float32 fake-quant: each point rounds to its codes and dequantizes; weights are the quantized ones,
               biases on the int32 grid of ``s_x * s_w``; differentiable: rounding is straight-through;
``export``     the layers' inputs and outputs are :class:`Codes` / :class:`Accumulator` handles and each layer
               emits its integer ops into the context's :class:`~intsim.quant.builder.ProgramBuilder`.

So the exporter runs the model's own ``forward`` in ``export`` mode: nothing mirrors the model. The quantizer of
each point comes from the configuration (:func:`intsim.quant.quantizers.make_quantizer`); layers use only the
quantizers' integer description (scales, zero points, shifts) and never ask which quantizer they hold.

Integer contracts of what the layers emit (``docs/program.md`` has the ops): every Linear accumulates exactly in
int64 with its bound declared as the accumulator's bits; biases fit int32 at ``s_x * s_w`` (refused otherwise);
requantizations round as the configuration's ``rounding``; logits are int32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from intsim.ops import build_gelu_lut, layernorm_constants, residual_add_constants
from intsim.ops.gelu import gelu_real
from intsim.quant.builder import multipliers, signed_bits
from intsim.quant.quantizers import make_quantizer

__all__ = ["Accumulator", "Codes", "Head", "PatchEmbedding", "QuantAttention", "QuantBlock", "QuantContext",
           "QuantLayerNorm", "QuantLinear", "QuantMlp", "ResidualAdd"]

MODES = ("float", "calibrate", "fast", "export")
CALIBRATION_DTYPE = torch.float64
"""Calibration runs in float64: its statistics then differ between CPU instruction paths only in bits that the
scale grid (:func:`intsim.quant.qparams.snap_scale`) removes, so every CPU derives the same Program."""


@dataclass(frozen=True)
class Codes:
    """Export mode: an activation tensor of codes, named ``name``, quantized by ``quantizer``."""

    name: str
    quantizer: object


@dataclass(frozen=True)
class Accumulator:
    """Export mode: an integer accumulator, zero point 0, real scale ``scales[c]`` per channel."""

    name: str
    scales: np.ndarray
    zero_point: int = 0

    def scale_array(self):
        return self.scales


class _Pixels:
    """The Program's input as a Linear sees it: uint8 codes at scale 1, zero point 0, no shifts."""

    unit_scale, zero_point, span = 1.0, 0, 255

    def __init__(self, name: str):
        self.name = name

    @staticmethod
    def input_shift():
        return None


class QuantContext:
    """The mode, the quantization points (name -> quantizer, in model order), the fast-mode code recorder and the
    export builder, shared by every layer of one model."""

    def __init__(self, config):
        self.config = config
        self.mode = "float"
        self.points: dict = {}
        self.codes: dict | None = None
        self.builder = None
        self.trained_scales: dict = {}  # point name -> LearnedScale while a reconstruction learns its step

    def quantizer(self, kind: str, name: str):
        """A new quantization point ``name`` of kind ``kind`` (a tensor name of the Program)."""
        if name in self.points:
            raise ValueError(f"quantization point {name!r} defined twice")
        self.points[name] = make_quantizer(self.config, kind, name)
        return self.points[name]

    @property
    def dtype(self):
        return CALIBRATION_DTYPE if self.mode == "calibrate" else torch.float32

    def point(self, quantizer, x: torch.Tensor) -> torch.Tensor:
        """A quantization point: observe (calibrate), fake-quantize (fast) or pass through (float)."""
        if self.mode == "calibrate":
            quantizer.observe(x)
            return x
        if self.mode != "fast":
            return x
        trained = getattr(self, "trained_scales", None)  # (absent from models pickled before it)
        if trained and quantizer.name in trained:
            return trained[quantizer.name].fake_quant(x)
        values, codes = quantizer.fake_quant(x)
        if self.codes is not None:
            self.codes[quantizer.name] = codes.to(torch.int64)
        return values


class Layer(torch.nn.Module):
    """A quantized layer: ``compute`` (torch modes) or ``emit`` (export mode) by the context's mode."""

    def __init__(self, context: QuantContext):
        super().__init__()
        object.__setattr__(self, "context", context)  # shared, not a submodule

    def forward(self, *args):
        if self.context.mode == "export":
            return self.emit(self.context.builder, *args)
        return self.compute(*args)


class QuantLinear(Layer):
    """``x @ W.T + b`` with quantized weights (the configuration's ``weights`` quantizer, per output channel)
    over the codes of ``input`` (a quantizer, or ``None`` for raw pixels at scale 1).

    Integer form (op ``Linear``): ``acc = sum_k (x_k - zp) << shift_k * w_nk + bias_n``, int64, exact; ``bias_n =
    round_half_even(b_n / (s_x * s_w[n]))`` must fit int32; the accumulator's real scale is ``s_x * s_w[n]``
    (``s_x`` the input's unit scale: codes with per-channel power-of-two factors are shifted by them, ``shift_k``).
    """

    def __init__(self, context, name: str, weight: torch.Tensor, bias: torch.Tensor | None, input_quantizer):
        super().__init__(context)
        self.name, self.input_quantizer = name, input_quantizer
        self.weight = weight.detach().to(torch.float64)
        self.bias = torch.zeros(weight.shape[0], dtype=torch.float64) if bias is None else bias.detach().to(torch.float64)
        self.float_weight, self.float_bias = weight, bias
        self.weight_quantizer = make_quantizer(context.config, "weights", f"{name}.weight")
        self.codes = self.scales = self.int_bias = self.weight_zero_points = None
        self.learned_codes = None  # (scales, codes) of a learned rounding (intsim.quant.reconstruct), kept by finish
        self.soft_rounding = None  # while a reconstruction trains it: the fast weight is its soft weight
        self._fast = {}

    @property
    def input_scale(self) -> float:
        return 1.0 if self.input_quantizer is None else self.input_quantizer.unit_scale

    def finish(self) -> None:
        """Quantize the weights and put the bias on the accumulator's grid (after the input's calibration).

        An input quantizer with a ``value_offset`` (AdaLog's post-GELU ``eta``: it codes ``x + eta``) moves
        ``-W_q @ eta`` into the bias. The bias is int32, or int64 after a log quantizer (whose unit is tiny)."""
        self.codes, self.scales = self.weight_quantizer.quantize(self.weight)
        self.weight_zero_points = getattr(self.weight_quantizer, "zero_points", None)
        if self.learned_codes is not None:
            scales, codes = self.learned_codes
            if not torch.equal(scales, self.scales):
                raise RuntimeError(f"{self.name}: the weight scales changed after the rounding was learned")
            self.codes = codes
        bias = self.bias
        offset = getattr(self.input_quantizer, "value_offset", 0.0)
        if offset:
            bias = bias - offset * self.dequantized_weight().sum(dim=1)
        bias = torch.round(bias / (self.input_scale * self.scales)).to(torch.int64)
        limit = 2**62 if self.log_input else 2**31 - 1
        if bias.numel() and int(bias.abs().max()) > limit:
            raise OverflowError(f"{self.name}: the bias does not fit int{64 if self.log_input else 32} at scale "
                                f"s_x * s_w (input scale {self.input_scale:g})")
        self.int_bias, self._fast = bias, {}

    def set_learned_codes(self, codes: torch.Tensor) -> None:
        """Codes of a learned rounding at the current scales and zero points (same shape and code range as the
        nearest ones); :meth:`finish` keeps them while the scales stay."""
        codes = torch.as_tensor(codes, dtype=torch.int64)
        if codes.shape != self.codes.shape:
            raise ValueError(f"{self.name}: learned codes of shape {tuple(codes.shape)}, the weight is "
                             f"{tuple(self.codes.shape)}")
        self.learned_codes = (self.scales.clone(), codes)
        self.finish()

    def fold_input_reparam(self, r: torch.Tensor, beta: torch.Tensor) -> None:
        """The input is ``x / r - beta`` per channel (a reparameterized LayerNorm): weight ``W r``, bias
        ``b + W r beta`` (from the float weights, so folding twice gives the same layer)."""
        weight = self.float_weight.detach().to(torch.float64) * r[None, :]
        bias = torch.zeros(weight.shape[0], dtype=torch.float64) if self.float_bias is None \
            else self.float_bias.detach().to(torch.float64)
        self.weight, self.bias = weight, bias + weight @ beta

    @property
    def log_input(self) -> bool:
        """Whether the input is log codes (a quantizer with decoder tables): op ``LogLinear``."""
        return hasattr(self.input_quantizer, "log_tables")

    def dequantized_weight(self) -> torch.Tensor:
        centred = self.codes.to(torch.float64)
        if self.weight_zero_points is not None:
            centred = centred - self.weight_zero_points.to(torch.float64)[:, None]
        return centred * self.scales[:, None]

    def float_codes(self) -> torch.Tensor:
        """The codes the float weights round to (a Program's codes differ where rounding was learned)."""
        return self.weight_quantizer.quantize(self.weight)[0]

    def restore(self, program) -> None:
        """Codes, scales and bias read from ``program`` (learned rounding survives)."""
        self.codes = torch.as_tensor(program.constants[f"{self.name}.weight"].astype(np.int64))
        self.scales = torch.tensor(program.tensors[f"{self.name}.weight"].scale, dtype=torch.float64)
        self.int_bias = torch.as_tensor(program.constants[f"{self.name}.bias"].astype(np.int64))
        zero_points = program.constants.get(f"{self.name}.weight_zero_point")
        self.weight_zero_points = None if zero_points is None else torch.as_tensor(zero_points.astype(np.int64))
        if self.weight_zero_points is not None and hasattr(self.weight_quantizer, "set_parameters"):
            self.weight_quantizer.set_parameters(self.scales, self.weight_zero_points)
        self._fast = {}

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        if self.context.mode != "fast":
            bias = None if self.float_bias is None else self.float_bias.to(x.dtype)
            return F.linear(x, self.float_weight.to(x.dtype), bias)
        if self.soft_rounding is not None:  # a reconstruction in progress: differentiable in its variables
            return F.linear(x, self.soft_rounding.weight().to(x.dtype), self._real_bias(x.dtype))
        if x.dtype not in self._fast:
            self._fast[x.dtype] = (self.dequantized_weight().to(x.dtype), self._real_bias(x.dtype))
        weight, bias = self._fast[x.dtype]
        return F.linear(x, weight, bias)

    def _real_bias(self, dtype) -> torch.Tensor:
        """The integer bias as a real value: ``bias_n * s_x * s_w[n]``."""
        return (self.int_bias.to(torch.float64) * self.input_scale * self.scales).to(dtype)

    def emit(self, b, x) -> Accumulator:
        """Op ``Linear`` on ``x`` (:class:`Codes` or the pixels), ``AsymmetricLinear`` with asymmetric weights,
        ``LogLinear`` on log codes; the declared accumulator bound sums each input channel's largest
        ``|x - zp| * 2**shift_k`` (or decoded log weight) times ``max_n |w[n, k] - z_n|``, plus ``max|bias|``."""
        source = x.quantizer if isinstance(x, Codes) else _Pixels(x)
        name = x.name if isinstance(x, Codes) else x
        codes = self.codes.numpy()  # stored in the narrowest integer dtype holding them (int8 at 8 bits)
        asymmetric = self.weight_zero_points is not None
        scale = source.unit_scale
        b.constant(f"{self.name}.weight", codes, bits=self.weight_quantizer.bits, signed=not asymmetric,
                   scale=self.scales)
        centred = codes.astype(np.int64)
        if asymmetric or self.log_input:
            zero_points = np.zeros(len(codes), np.int64) if not asymmetric else self.weight_zero_points.numpy()
            b.constant(f"{self.name}.weight_zero_point", zero_points, bits=self.weight_quantizer.bits,
                       signed=not asymmetric)
            centred = centred - zero_points[:, None]
        bias = self.int_bias.numpy().astype(np.int64 if self.log_input else np.int32)
        b.constant(f"{self.name}.bias", bias, bits=64 if self.log_input else 32, signed=True,
                   scale=scale * self.scales)
        abs_codes = np.abs(centred)
        if self.log_input:
            return self._emit_log(b, name, source, abs_codes, bias)
        inputs = [name, f"{self.name}.weight"] + ([f"{self.name}.weight_zero_point"] if asymmetric else [])
        inputs.append(f"{self.name}.bias")
        shift = source.input_shift()
        if shift is None:
            bound = codes.shape[1] * source.span * int(abs_codes.max(initial=0))
        else:
            b.constant(f"{self.name}.x_shift", shift.astype(np.uint8), signed=False)
            inputs.append(f"{self.name}.x_shift")
            bound = source.span * int((abs_codes << shift.astype(np.int64)).sum(axis=1).max(initial=0))
        bound += int(np.abs(bias.astype(np.int64)).max(initial=0))
        acc = b.tensor(f"{self.name}.acc", signed_bits(bound), True, scale=scale * self.scales)
        b.op("AsymmetricLinear" if asymmetric else "Linear", self.name, inputs, [acc],
             x_zero_point=int(source.zero_point))
        return Accumulator(acc, (scale * self.scales).numpy())

    def _emit_log(self, b, name, source, abs_codes, bias) -> Accumulator:
        """``LogLinear``: ``sum_k W[x_k] (w_nk - z_n) + bias_n``, ``W[c] = M[c] << (S - SH[c])``; an accumulator
        wider than 31 bits is then narrowed by a rounding shift (op ``Requantize``, multiplier 1) so that the
        residual add's per-channel multipliers fit."""
        qp = source.qparams
        shift_table, mantissa_table = source.log_tables(b, source.name)
        largest = int(qp.mantissa_table.max()) << qp.max_shift
        bound = largest * int(abs_codes.sum(axis=1).max(initial=0)) + int(np.abs(bias).max(initial=0))
        scales = source.unit_scale * self.scales
        acc = b.tensor(f"{self.name}.acc", signed_bits(bound), True, scale=scales)
        inputs = [name, f"{self.name}.weight", f"{self.name}.weight_zero_point", f"{self.name}.bias", shift_table,
                  mantissa_table]
        b.op("LogLinear", self.name, inputs, [acc], max_shift=qp.max_shift)
        drop = max(0, signed_bits(bound) - 31)
        if not drop:
            return Accumulator(acc, scales.numpy())
        narrow = f"{self.name}.narrow"
        b.constant(f"{narrow}.multiplier", np.ones(1, np.int32), signed=True)
        b.constant(f"{narrow}.shift", np.full(1, drop, np.int8), signed=False)
        narrowed = b.tensor(f"{self.name}.acc32", 32, True, scale=scales * 2.0**drop)
        b.op("Requantize", narrow, [acc, f"{narrow}.multiplier", f"{narrow}.shift"], [narrowed], zero_point=0,
             qmin=-(2**31), qmax=2**31 - 1, rounding=b.rounding)
        return Accumulator(narrowed, (scales * 2.0**drop).numpy())


class QuantLayerNorm(Layer):
    """LayerNorm from the codes of its input (the residual stream: any per-channel factors are shifts) to the
    codes of ``output`` (op ``LayerNorm``: integer mean and variance, ``isqrt``, per-channel multipliers)."""

    def __init__(self, context, name: str, norm: torch.nn.LayerNorm, output):
        super().__init__(context)
        self.name, self.norm, self.output = name, norm, output
        self.reparam = None  # (r, beta): channel c's output divided by r[c], minus beta[c] (a method's choice)

    def reparameterize(self, r: torch.Tensor, beta: torch.Tensor, consumer: "QuantLinear") -> None:
        """RepQ-ViT's fold of a per-channel output quantizer into a per-tensor one: this LayerNorm's output channel
        ``c`` becomes ``y_c / r_c - beta_c`` and ``consumer`` (the Linear reading it) takes ``W r`` and
        ``b + W r beta``, so the float function is unchanged (float64)."""
        r, beta = torch.as_tensor(r, dtype=torch.float64), torch.as_tensor(beta, dtype=torch.float64)
        self.reparam = (r, beta)
        consumer.fold_input_reparam(r, beta)

    def restore_reparam(self, program, consumer: "QuantLinear") -> None:
        values = program.metadata.get("quantizer_parameters", {}).get(f"{self.name}.reparam")
        if values is not None:
            self.reparameterize(torch.tensor(values["r"]), torch.tensor(values["beta"]), consumer)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """float64 weight and bias, with a reparameterization ``(r, beta)`` applied: ``w / r``, ``b / r - beta``."""
        weight, bias = self.norm.weight.double(), self.norm.bias.double()  # not detached: fast mode has gradients
        if self.reparam is None:
            return weight, bias
        r, beta = self.reparam
        return weight / r, bias / r - beta

    def compute(self, x):
        norm = self.norm
        weight, bias = (norm.weight, norm.bias) if self.context.mode == "float" else self.affine()
        y = F.layer_norm(x, norm.normalized_shape, weight.to(x.dtype), bias.to(x.dtype), norm.eps)
        return self.context.point(self.output, y)

    def emit(self, b, x: Codes) -> Codes:
        source, out, name = x.quantizer, self.output, self.name
        weight, bias = (value.detach() for value in self.affine())
        constants = layernorm_constants(weight.numpy(), bias.numpy(), out.unit_scale)
        if self.reparam is not None:
            b.parameters[f"{name}.reparam"] = {key: value.tolist() for key, value in zip(("r", "beta"), self.reparam)}
        shift = source.input_shift()
        alpha = np.zeros(self.norm.weight.numel(), np.uint8) if shift is None else shift.astype(np.uint8)
        b.constant(f"{name}.alpha", alpha, signed=False)
        b.constant(f"{name}.multiplier", constants.multiplier.astype(np.int32), signed=True)
        b.constant(f"{name}.bias", constants.bias.astype(np.int64), signed=True)
        b.constant(f"{name}.shift", constants.shift.astype(np.int8), signed=False)
        out.declare(b, out.name)
        b.op("LayerNorm", name, [x.name, f"{name}.alpha", f"{name}.multiplier", f"{name}.bias", f"{name}.shift"],
             [out.name], zero_point=source.zero_point, out_zero_point=out.zero_point, qmin=out.qmin, qmax=out.qmax,
             bits=source.qparams.bits, signed=False, rounding=b.rounding)
        return Codes(out.name, out)


class ResidualAdd(Layer):
    """``a + b`` rounded once to ``output``'s codes (op ``ResidualAdd``: per-channel multipliers of both operands,
    one shift); ``b`` may be an accumulator (proj, fc2, the patch embedding) or codes."""

    def __init__(self, context, name: str, output):
        super().__init__(context)
        self.name, self.output = name, output

    def compute(self, a, b_value):
        return self.context.point(self.output, a + b_value)

    def emit(self, b, a, y, out_name: str | None = None) -> Codes:
        out, name = self.output, self.name
        out_name = out_name or out.name
        a_q, y_q = (value.quantizer if isinstance(value, Codes) else value for value in (a, y))
        ma, mb, shift = residual_add_constants(a_q.scale_array(), y_q.scale_array(), out.scale_array())
        b.constant(f"{name}.a_multiplier", ma.astype(np.int32), signed=True)
        b.constant(f"{name}.b_multiplier", mb.astype(np.int32), signed=True)
        b.constant(f"{name}.shift", shift.astype(np.int8), signed=False)
        out.declare(b, out_name)
        b.op("ResidualAdd", name, [a.name, y.name, f"{name}.a_multiplier", f"{name}.b_multiplier", f"{name}.shift"],
             [out_name], a_zero_point=a_q.zero_point, b_zero_point=y_q.zero_point, out_zero_point=out.zero_point,
             qmin=out.qmin, qmax=out.qmax, rounding=b.rounding)
        return Codes(out_name, out)


class PatchEmbedding(Layer):
    """uint8 pixels -> the residual stream: patches, the patch Linear (input normalisation folded in), plus the
    quantized position embedding (one rounding), then the class token row ``cls + pos_embed[0]`` prepended (a
    constant quantized by the stream's quantizer)."""

    def __init__(self, context, model, weight, bias, stream):
        super().__init__(context)
        object.__setattr__(self, "model", model)  # the timm model, not a submodule
        self.stream = stream
        self.patch = model.patch_embed.patch_size[0]
        self.linear = QuantLinear(context, "patch_embed", weight, bias, None)
        self.pos = context.quantizer("pos_embed", "pos_embed")
        self.add_pos = ResidualAdd(context, "embed.add_pos", stream)
        self.pos_codes = None  # read from a Program by restore

    def _patchify(self, pixels):
        batch, channels, height, width = pixels.shape
        p = self.patch
        grid = pixels.reshape(batch, channels, height // p, p, width // p, p).permute(0, 2, 4, 1, 3, 5)
        return grid.reshape(batch, (height // p) * (width // p), channels * p * p)

    def compute(self, pixels):
        model, dtype = self.model, self.context.dtype
        patches = self._patchify(pixels.to(dtype))
        if self.context.mode == "fast" and self.pos_codes is not None:  # the Program's own codes
            pos = self.pos.qparams.dequantize(self.pos_codes).to(dtype)
            if self.context.codes is not None:
                self.context.codes["pos_embed"] = self.pos_codes
        else:
            pos = self.context.point(self.pos, model.pos_embed[:, 1:].to(dtype))
        x = self.linear(patches) + pos
        cls = (model.cls_token + model.pos_embed[:, :1]).to(dtype).expand(pixels.shape[0], -1, -1)
        return self.context.point(self.stream, torch.cat([cls, x], dim=1))

    def emit(self, b, pixels: str) -> Codes:
        model = self.model
        height, width = model.patch_embed.img_size
        p = self.patch
        tokens = (height // p) * (width // p)
        b.tensor(pixels, 8, False, scale=1.0, shape=[3, height, width], kind="input")
        b.tensor("patch_embed.patches", 8, False, scale=1.0, shape=[tokens, 3 * p * p])
        b.op("Patchify", "patch_embed.patchify", [pixels], ["patch_embed.patches"], patch=p)
        acc = self.linear("patch_embed.patches")
        pos = model.pos_embed.detach().double()
        codes = self.pos.quantize_constant(pos[:, 1:]) if self.pos_codes is None else self.pos_codes
        qp = self.pos.qparams
        b.constant("pos_embed", codes.numpy(), bits=qp.bits, signed=False, scale=qp.scale, zero_point=qp.zero_point)
        self.add_pos.emit(b, acc, Codes("pos_embed", self.pos), "embed.patches")
        stream = self.stream
        cls = (model.cls_token.detach().double() + pos[:, :1]).reshape(-1)
        b.constant("embed.cls_token", stream.quantize_constant(cls).numpy(), bits=stream.qparams.bits, signed=False,
                   scale=stream.scale_array(), zero_point=stream.zero_point)
        stream.declare(b, stream.name)
        b.op("PrependToken", "embed.cls", ["embed.patches", "embed.cls_token"], [stream.name])
        return Codes(stream.name, stream)

    def restore(self, program) -> None:
        self.pos_codes = torch.as_tensor(program.constants["pos_embed"].astype(np.int64))


class QuantAttention(Layer):
    """Multi-head self-attention from LayerNorm codes to proj's accumulator.

    qkv Linear -> Split -> q, k, v requantized; ``q k^T`` accumulated exactly per head (the softmax reads the
    scores accumulator itself, at scale ``s_q s_k / sqrt(d)``: no logit quantizer); the softmax quantizer emits
    its integer softmax and the ``attn @ V`` that reads its codes; the context requantized; proj's accumulator
    goes straight into the residual add (per-channel multipliers, one rounding).
    """

    def __init__(self, context, prefix: str, attn, tokens: int, input_quantizer, proj_weight, proj_bias):
        super().__init__(context)
        self.prefix, self.heads, self.tokens = prefix, attn.num_heads, tokens
        self.qkv = QuantLinear(context, f"{prefix}.qkv", attn.qkv.weight, attn.qkv.bias, input_quantizer)
        self.q, self.k, self.v = (context.quantizer("qkv", f"{prefix}.{n}") for n in "qkv")
        self.probs = context.quantizer("post_softmax", f"{prefix}.probs")
        self.context_out = context.quantizer("attn_output", f"{prefix}.context")
        self.proj = QuantLinear(context, f"{prefix}.proj", proj_weight, proj_bias, self.context_out)

    def compute(self, h):
        ctx = self.context
        batch, tokens, channels = h.shape
        heads, width = self.heads, channels // self.heads
        q, k, v = (ctx.point(quantizer, part)
                   for quantizer, part in zip((self.q, self.k, self.v), self.qkv(h).split(channels, dim=-1)))

        def split_heads(t):
            return t.reshape(batch, tokens, heads, width).transpose(1, 2)

        logits = split_heads(q) @ split_heads(k).transpose(-1, -2) * width**-0.5
        probs = ctx.point(self.probs, logits.softmax(dim=-1))
        attended = (probs @ split_heads(v)).transpose(1, 2).reshape(batch, tokens, channels)
        return self.proj(ctx.point(self.context_out, attended))

    def emit(self, b, h: Codes) -> Accumulator:
        p, heads = self.prefix, self.heads
        acc = self.qkv(h)
        tokens, channels = self.tokens, self.qkv.weight.shape[1]
        parts = [f"{p}.{n}.acc" for n in "qkv"]
        for part in parts:
            b.tensor(part, b.tensors[acc.name].bits, True)
        b.op("Split", f"{p}.split", [acc.name], parts, sizes=[channels] * 3)
        for index, quantizer in enumerate((self.q, self.k, self.v)):
            b.requantize(parts[index], acc.scales[index * channels:(index + 1) * channels], quantizer.name,
                         quantizer, quantizer.name)
        width = channels // heads
        q, k = self.q, self.k
        scores_bits = signed_bits(width * q.span * k.span)
        logit_scale = q.unit_scale * k.unit_scale * width**-0.5
        scores = b.tensor(f"{p}.scores", scores_bits, True, scale=logit_scale)
        b.op("AttentionScores", scores, [q.name, k.name], [scores], heads=heads, q_zero_point=q.zero_point,
             k_zero_point=k.zero_point)
        values, values_scale = self.probs.emit(b, p, scores, scores_bits, logit_scale, tokens, self.v, heads, channels)
        b.requantize(values, values_scale, self.context_out.name, self.context_out, self.context_out.name)
        return self.proj(Codes(self.context_out.name, self.context_out))


class QuantMlp(Layer):
    """fc1 (requantized to the GELU index codes) -> GELU as a table per code (op ``Lut``; with per-channel factors,
    one table row per pair of input and output factors in use) -> fc2's accumulator (into the residual add)."""

    def __init__(self, context, prefix: str, mlp, input_quantizer, fc2_weight, fc2_bias):
        super().__init__(context)
        self.prefix = prefix
        self.fc1 = QuantLinear(context, f"{prefix}.fc1", mlp.fc1.weight, mlp.fc1.bias, input_quantizer)
        self.hidden = context.quantizer("gelu_input", f"{prefix}.fc1")
        self.gelu = context.quantizer("post_gelu", f"{prefix}.gelu")
        self.fc2 = QuantLinear(context, f"{prefix}.fc2", fc2_weight, fc2_bias, self.gelu)

    def compute(self, h):
        point = self.context.point
        return self.fc2(point(self.gelu, F.gelu(point(self.hidden, self.fc1(h)))))

    def emit(self, b, h: Codes) -> Accumulator:
        acc = self.fc1(h)
        b.requantize(acc.name, acc.scales, self.hidden.name, self.hidden, f"{self.fc1.name}.requant")
        self._gelu_table(b)
        return self.fc2(Codes(self.gelu.name, self.gelu))

    def _gelu_table(self, b) -> None:
        source, out, name = self.hidden, self.gelu, self.gelu.name

        def table(in_scale: float, out_scale: float) -> np.ndarray:
            if log_codes:  # each input code's GELU value against the log quantizer's thresholds
                reals = [gelu_real((code - source.zero_point) * in_scale) for code in range(source.qmin, source.qmax + 1)]
                return out.encode_reals(np.array(reals))
            return build_gelu_lut(in_scale=in_scale, in_zero_point=source.zero_point, in_bits=source.qparams.bits,
                                  out_scale=out_scale, out_zero_point=out.zero_point, out_bits=out.qparams.bits)

        log_codes = hasattr(out, "encode_reals")
        out_bits = out.bits + 1 if log_codes else out.qparams.bits
        inputs = [source.name, f"{name}.table"]
        in_shift, out_shift = source.input_shift(), out.input_shift()
        if in_shift is None and out_shift is None:
            b.constant(f"{name}.table", table(source.unit_scale, out.unit_scale), bits=out_bits, signed=False)
        else:
            channels = len(in_shift if in_shift is not None else out_shift)
            zeros = np.zeros(channels, np.int64)
            pairs = torch.stack([torch.as_tensor(zeros if s is None else s.astype(np.int64)) for s in (in_shift, out_shift)],
                                dim=1)
            used, rows = torch.unique(pairs, dim=0, return_inverse=True)  # sorted pairs: deterministic rows
            tables = [table(source.unit_scale * 2.0 ** int(a), out.unit_scale * 2.0 ** int(c)) for a, c in used.tolist()]
            b.constant(f"{name}.table", np.stack(tables), bits=out_bits, signed=False)
            b.constant(f"{name}.rows", rows.numpy(), signed=False)  # stored in the narrowest dtype
            inputs.append(f"{name}.rows")
        out.declare(b, name)
        b.op("Lut", name, inputs, [name], bits=source.qparams.bits, signed=False)


def _scaled(layer, scale):
    """A Linear's weight and bias with timm's LayerScale ``gamma * (W x + b)`` folded in."""
    weight, bias = layer.weight, layer.bias
    if not isinstance(scale, torch.nn.Identity):
        gamma = scale.gamma.detach()
        weight, bias = weight * gamma[:, None], None if bias is None else bias * gamma
    return weight, bias


class QuantBlock(Layer):
    """A pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``, each sum rounded once to
    the residual stream's next point. Written once: ``forward`` serves every mode, the export included."""

    def __init__(self, context, index: int, block, tokens: int, stream_out):
        super().__init__(context)
        p = f"blocks.{index}"
        self.norm1 = QuantLayerNorm(context, f"{p}.norm1", block.norm1, context.quantizer("post_layernorm", f"{p}.norm1"))
        self.attn = QuantAttention(context, f"{p}.attn", block.attn, tokens, self.norm1.output, *_scaled(block.attn.proj, block.ls1))
        middle = context.quantizer("residual", f"{p}.norm2.input")
        self.residual1 = ResidualAdd(context, f"{p}.residual1", middle)
        self.norm2 = QuantLayerNorm(context, f"{p}.norm2", block.norm2, context.quantizer("post_layernorm", f"{p}.norm2"))
        self.mlp = QuantMlp(context, f"{p}.mlp", block.mlp, self.norm2.output, *_scaled(block.mlp.fc2, block.ls2))
        self.residual2 = ResidualAdd(context, f"{p}.residual2", stream_out)

    def forward(self, x):
        x = self.residual1(x, self.attn(self.norm1(x)))
        return self.residual2(x, self.mlp(self.norm2(x)))


class Head(Layer):
    """Final LayerNorm, the class token, the head Linear and the int32 logits on one common scale."""

    def __init__(self, context, model):
        super().__init__(context)
        self.norm = QuantLayerNorm(context, "norm", model.norm, context.quantizer("post_layernorm", "norm"))
        self.linear = QuantLinear(context, "head", model.head.weight, model.head.bias, self.norm.output)

    def compute(self, x):
        return self.linear(self.norm(x)[:, 0])

    def emit(self, b, x: Codes) -> str:
        normed = self.norm(x)
        normed.quantizer.declare(b, "head.input")
        b.op("SelectToken", "head.select_class_token", [normed.name], ["head.input"], index=0)
        acc = self.linear(Codes("head.input", normed.quantizer))
        return self._logits(b, acc)

    @staticmethod
    def _logits(b, acc: Accumulator) -> str:
        """Each class's accumulator has its own scale ``s_x * s_w[c]`` (per-channel weights), so raw accumulators
        would rank classes wrongly. The output scale is the largest of them: every multiplier is ``<= 1``, the
        logits keep at least the resolution of the coarsest class and fit int32."""
        out_scale = float(np.max(acc.scales))
        multiplier, shift = multipliers(np.asarray(acc.scales, dtype=np.float64) / out_scale)
        b.constant("logits.multiplier", multiplier, signed=True)
        b.constant("logits.shift", shift, signed=False)
        b.tensor("logits", 32, True, scale=out_scale, kind="output")
        b.op("Requantize", "logits", [acc.name, "logits.multiplier", "logits.shift"], ["logits"],
             zero_point=0, qmin=-(2**31), qmax=2**31 - 1, rounding=b.rounding)
        return "logits"
