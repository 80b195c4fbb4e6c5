"""Log-domain quantizers: AdaLog's adaptive base ``2**(q/37)`` (and ``log2``, its ``q = 37`` case) for
post-softmax and post-GELU values, and AdaLog's asymmetric per-channel weights.

AdaLog (ECCV 2024), bits ``b``, ``r = 37``, integer ``q`` (searched), scale ``s``:

``code``   ``#{k : x < theta_k}``, ``theta_k = s * 2**(-(k + 1/2) q / r)``, ``k = 0..2**b - 1``: codes ``0..2**b - 1``
           and ``2**b`` (value 0); ``b + 1`` bits on the wire (``b`` bits and the zero code);
``value``  ``s * M[c] / D * 2**-SH[c]`` with ``SH[c] = floor(c q / r)``, ``M[c] = rhe(D * 2**(-(c q mod r) / r))``,
           ``D = 2**(b+1) - 2`` (:mod:`intsim.ops.logquant` computes the tables exactly).

Integer form. The encoder is threshold comparisons on integer codes, no log unit: post-softmax, on the codes of a
16-bit uniform integer softmax (``adalog_softmax_bits``, scale ``1/F``, ``F = 2**16 - 1``; op ``LogEncode``);
post-GELU, inside the GELU table (op ``Lut``: each fc1 code's GELU value is compared with the thresholds when the
table is built). The decoder is the two tables: ``attn @ V`` (op ``LogAttentionValues``) and fc2 (op ``LogLinear``)
sum ``M[c] * operand << (S - SH[c])``, ``S = SH[2**b - 1]``, exactly in int64; the unit ``s / D * 2**-S`` is folded
into the next multiplier. ``q`` is bounded so that every such accumulator is at most
:data:`LOG_ACCUMULATOR_BITS` bits (:func:`largest_q`): float64-exact, and the requantization keeps a multiplier of
at least ``63 - LOG_ACCUMULATOR_BITS`` bits.

Post-GELU values are shifted: the quantizer codes ``x + eta`` (``eta = -min GELU``, so every value is positive)
and fc2's bias absorbs ``-W_q @ eta`` (AdaLog's bias reparameterization), so fc2 sees ``Q(x + eta)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext
from functools import cached_property

import numpy as np
import torch

from intsim.quant.builder import signed_bits
from intsim.quant.quantizers import ActivationQuantizer, SoftmaxQuantizer, straight_through

__all__ = ["ADALOG_R", "GELU_SHIFT", "LOG_ACCUMULATOR_BITS", "AsymmetricChannelWeights", "LogActivationQuantizer",
           "LogQParams", "LogSoftmaxQuantizer", "largest_q"]

ADALOG_R = 37
ADALOG_Q_RANGE = (10, 137)
GELU_SHIFT = 0.16997124254703522  # -min over x of x * Phi(x), at x = -0.7518
LOG_ACCUMULATOR_BITS = 48
"""Largest accumulator (signed bits) an op with a log operand may declare: exact in float64 (< 2**53) and
requantized with multipliers of at least 15 bits."""
SOFTMAX_FULL_SCALE_BITS = 16
DEFAULT_BOUND_TERMS = 4096
"""Terms of the longest log-weighted sum an unsearched ``q`` must keep exact (ViT-B's fc2 has 3072)."""


def _log_ops():
    from intsim.ops import logquant

    return logquant


def real_thresholds(bits: int, q: int, scale: float) -> np.ndarray:
    """``theta_k = scale * 2**(-(2k+1) q / (2r))`` as float64, computed in decimal (the same on every machine)."""
    with localcontext() as context:
        context.prec = 40
        two = Decimal(2)
        return np.array([float(Decimal(scale) * two ** (Decimal(-(2 * k + 1) * q) / Decimal(2 * ADALOG_R)))
                         for k in range(2**bits)], dtype=np.float64)


@dataclass(frozen=True)
class LogQParams:
    """An AdaLog quantizer's parameters: ``bits``, the base exponent ``q`` (base ``2**(q/37)``), the scale and the
    shift ``offset`` added before coding (``eta`` after GELU, else 0)."""

    bits: int
    q: int
    scale: float = 1.0
    offset: float = 0.0

    zero_point = 0  # the integer view shared with the uniform quantizers: codes 0..2**b, no zero point
    qmin = 0

    @property
    def zero_code(self) -> int:
        return 2**self.bits

    @property
    def qmax(self) -> int:
        return self.zero_code

    @property
    def denominator(self) -> int:
        return 2 ** (self.bits + 1) - 2

    @cached_property
    def shift_table(self) -> np.ndarray:
        return np.asarray(_log_ops().adalog_shift_table(self.bits, self.q), dtype=np.int64)

    @cached_property
    def mantissa_table(self) -> np.ndarray:
        return np.asarray(_log_ops().adalog_mantissa_table(self.bits, self.q), dtype=np.int64)

    @property
    def max_shift(self) -> int:
        return int(self.shift_table[-1])

    @property
    def unit_scale(self) -> float:
        """The real value of one unit of the aligned sum: ``s / D * 2**-S``."""
        return self.scale / self.denominator * 2.0**-self.max_shift

    @cached_property
    def values(self) -> torch.Tensor:
        """float64 ``(2**b + 1,)``: the value of each code (the last, the zero code, is 0)."""
        values = self.scale * self.mantissa_table / self.denominator * np.ldexp(1.0, -self.shift_table)
        return torch.as_tensor(np.append(values, 0.0), dtype=torch.float64)

    @cached_property
    def thresholds(self) -> torch.Tensor:
        return torch.as_tensor(real_thresholds(self.bits, self.q, self.scale))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (int64) of real ``x``: ``#{k : x + offset < theta_k}``."""
        ascending = self.thresholds.flip(0).to(x.dtype)
        above = torch.searchsorted(ascending, (x + self.offset).contiguous(), right=True)  # thresholds <= x
        return (self.zero_code - above).to(torch.int64)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return self.values[codes.to(torch.int64)]

    def as_metadata(self) -> dict:
        return dict(bits=self.bits, q=self.q, scale=self.scale, offset=self.offset)


def largest_q(bits: int, terms: int, operand_span: int, extra: int = 0, q_range=ADALOG_Q_RANGE) -> int:
    """The largest ``q`` in ``q_range`` whose aligned sum of ``terms`` products ``M[c] * operand`` (``|operand| <=
    operand_span``, plus ``extra``) fits :data:`LOG_ACCUMULATOR_BITS` signed bits; ``ValueError`` if none does."""
    denominator = 2 ** (bits + 1) - 2
    for q in range(q_range[1], q_range[0] - 1, -1):
        bound = terms * denominator * operand_span * 2 ** ((2**bits - 1) * q // ADALOG_R) + extra
        if signed_bits(bound) <= LOG_ACCUMULATOR_BITS:
            return q
    raise ValueError(f"no AdaLog q in {q_range} keeps a {bits}-bit log operand's sum of {terms} terms within "
                     f"{LOG_ACCUMULATOR_BITS} bits")


class _LogCodes:
    """What a log quantizer shares: parameters (set by a method or restored), the default ``q`` and its range."""

    default_q = ADALOG_R  # log2 until a method searches q

    @property
    def q_range(self) -> tuple[int, int]:
        """The ``q`` a method may search: AdaLog's ``[10, 137]``, from the configuration's ``adalog_q_min`` up (the
        base-2 quantizers fix ``q = 37`` instead)."""
        return self.config.adalog_q_min, ADALOG_Q_RANGE[1]

    def default_qparams(self, offset: float = 0.0) -> LogQParams:
        """``q = 37`` (base 2), or the largest ``q`` below it that keeps a sum of :data:`DEFAULT_BOUND_TERMS`
        products with 8-bit operands exact (what a method that does not search ``q`` gets), scale 1."""
        q = min(self.default_q, largest_q(self.bits, DEFAULT_BOUND_TERMS, 255, q_range=(self.q_range[0], self.default_q)))
        return LogQParams(self.bits, q, 1.0, offset)

    def restore_log(self, program, name: str) -> LogQParams:
        values = program.metadata.get("quantizer_parameters", {}).get(name)
        if values is None:
            raise ValueError(f"the Program has no log quantizer parameters for {name!r} (metadata "
                             f"'quantizer_parameters')")
        return LogQParams(**values)

    def log_tables(self, builder, name: str) -> tuple[str, str]:
        """Declare the decoder's tables ``{name}.shift_table`` / ``{name}.mantissa_table``; record the real
        parameters in the Program's metadata."""
        qp = self.qparams
        builder.constant(f"{name}.shift_table", qp.shift_table.astype(np.uint8), signed=False)
        builder.constant(f"{name}.mantissa_table", qp.mantissa_table, bits=qp.bits + 1, signed=False)
        builder.parameters[name] = qp.as_metadata()
        return f"{name}.shift_table", f"{name}.mantissa_table"


class LogActivationQuantizer(_LogCodes, ActivationQuantizer):
    """AdaLog (``adalog``) or base-2 (``log2``) codes of post-GELU values ``x + eta`` (see the module docstring).

    Its integer view for the Linear that reads it (fc2, op ``LogLinear``): ``unit_scale = s / D * 2**-S`` and the
    decoder tables; ``value_offset = eta`` moves into that Linear's bias."""

    def make_observer(self):
        return None

    def observe(self, x: torch.Tensor) -> None:  # a method searches its parameters (:mod:`intsim.quant.fpcs`)
        pass

    def finish(self) -> None:
        if self.qparams is None:
            self.qparams = self.default_qparams(GELU_SHIFT)

    def set_parameters(self, q: int, scale: float) -> None:
        self.qparams = LogQParams(self.bits, int(q), float(scale), GELU_SHIFT)

    @property
    def value_offset(self) -> float:
        return self.qparams.offset

    @property
    def unit_scale(self) -> float:
        return self.qparams.unit_scale

    def input_shift(self):
        return None

    def scale_array(self):
        return self.qparams.unit_scale

    def encode_reals(self, reals: np.ndarray) -> np.ndarray:
        """Plan time (the GELU table): codes of float64 ``reals`` by the decimal thresholds."""
        return self.qparams.quantize(torch.as_tensor(np.asarray(reals, dtype=np.float64))).numpy()

    def declare(self, builder, name: str, shape=None) -> str:
        return builder.tensor(name, self.bits + 1, False, scale=self.qparams.scale, shape=shape)

    def restore(self, program, name: str) -> None:
        self.qparams = self.restore_log(program, name)


class Log2ActivationQuantizer(LogActivationQuantizer):
    """Base-2 log codes (AdaLog with ``q = 37`` fixed): the ablation's ``log2``."""

    q_range = (ADALOG_R, ADALOG_R)


class LogSoftmaxQuantizer(_LogCodes, SoftmaxQuantizer):
    """AdaLog (``adalog``) or base-2 (``log2``) codes of the attention probabilities, scale ``s`` (1 unless a
    method sets it). Integer ops (:meth:`emit`): ``UniformSoftmax`` to 16-bit codes ``rhe(p F)``, ``LogEncode``
    against the integer thresholds ``ceil(s F 2**(-(k+1/2) q/37))``, ``LogAttentionValues``."""

    def make_observer(self):
        return None

    def finish(self) -> None:
        if self.qparams is None:
            self.qparams = self.default_qparams()

    def set_parameters(self, q: int, scale: float = 1.0) -> None:
        self.qparams = LogQParams(self.bits, int(q), float(scale))

    def effective(self) -> LogQParams:
        return self.qparams or self.default_qparams()

    @property
    def full_scale(self) -> int:
        return 2**SOFTMAX_FULL_SCALE_BITS - 1

    def integer_thresholds(self, qparams: LogQParams) -> np.ndarray:
        return np.asarray(_log_ops().adalog_thresholds(qparams.bits, qparams.q, qparams.scale * self.full_scale),
                          dtype=np.int64)

    def fake_quant(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The integer path in float: 16-bit softmax codes, then the integer thresholds."""
        qp = self.effective()
        uniform = torch.round(probs.detach().to(torch.float64) * self.full_scale)
        ascending = torch.as_tensor(self.integer_thresholds(qp)[::-1].copy(), dtype=torch.float64)
        codes = qp.zero_code - torch.searchsorted(ascending, uniform.contiguous(), right=True)
        return straight_through(probs, qp.dequantize(codes).to(probs.dtype)), codes.to(torch.int64)

    def emit(self, builder, prefix, scores, scores_bits, logit_scale, tokens, v, heads, channels):
        from intsim.ops.softmax import fit_i_exp_constants
        from intsim.quant.quantizers import _exp_attributes

        qp = self.effective()
        full_scale = self.full_scale
        constants = fit_i_exp_constants(logit_scale, row_length=tokens, levels=full_scale)
        uniform, probs, values = f"{prefix}.softmax", f"{prefix}.probs", f"{prefix}.values"
        builder.tensor(uniform, SOFTMAX_FULL_SCALE_BITS, False, scale=1.0 / full_scale)
        builder.op("UniformSoftmax", uniform, [scores], [uniform], out_bits=SOFTMAX_FULL_SCALE_BITS,
                   full_scale=full_scale, **_exp_attributes(constants, scores_bits))
        builder.constant(f"{probs}.thresholds", self.integer_thresholds(qp), signed=False)
        builder.tensor(probs, qp.bits + 1, False, scale=qp.scale)
        builder.op("LogEncode", probs, [uniform, f"{probs}.thresholds"], [probs])
        shift, mantissa = self.log_tables(builder, probs)
        bound = tokens * int(qp.mantissa_table.max()) * v.span << qp.max_shift
        builder.tensor(values, signed_bits(bound), True, scale=qp.unit_scale * v.unit_scale)
        builder.op("LogAttentionValues", values, [probs, v.name, shift, mantissa], [values], heads=heads,
                   v_zero_point=v.zero_point, max_shift=qp.max_shift)
        return values, qp.unit_scale * v.unit_scale

    def restore(self, program, name: str) -> None:
        self.qparams = self.restore_log(program, name)


class Log2SoftmaxQuantizer(LogSoftmaxQuantizer):
    q_range = (ADALOG_R, ADALOG_R)


# ------------------------------------------------------------------------------------------ weights
class AsymmetricChannelWeights:
    """Unsigned asymmetric per output channel (AdaLog's weights): ``w ~ s_n (c - z_n)``, ``c`` in ``[0, 2**b - 1]``,
    ``c = clamp(rhe(w / s_n) + z_n)``. Scales and zero points by per-row minmax unless a method sets them
    (:meth:`set_parameters`; AdaLog's FPCS). The integer GEMM expands the zero point exactly (op
    ``AsymmetricLinear``, or ``LogLinear`` after a log quantizer)."""

    asymmetric = True

    def __init__(self, kind: str, name: str, bits: int, config):
        self.kind, self.name, self.bits, self.config = kind, name, bits, config
        self.parameters = None
        self.zero_points = None

    def set_parameters(self, scales, zero_points) -> None:
        self.parameters = (torch.as_tensor(scales, dtype=torch.float64).reshape(-1),
                           torch.as_tensor(zero_points, dtype=torch.int64).reshape(-1))

    def minmax_parameters(self, weight: torch.Tensor):
        levels = 2**self.bits - 1
        low = weight.min(dim=1).values.clamp(max=0.0)
        high = weight.max(dim=1).values.clamp(min=0.0)
        scales = ((high - low) / levels).clamp(min=1e-12)
        return scales, torch.round(-low / scales).clamp(0, levels).to(torch.int64)

    def quantize(self, weight: torch.Tensor):
        weight = weight.detach().to(torch.float64)
        scales, zero_points = self.parameters or self.minmax_parameters(weight)
        codes = (torch.round(weight / scales[:, None]) + zero_points[:, None]).clamp(0, 2**self.bits - 1)
        self.zero_points = zero_points
        return codes.to(torch.int64), scales


def _register() -> None:
    from intsim.quant.quantizers import QuantizerKind, register_quantizer

    def by_point(softmax, activation):
        def make(kind, name, bits, config):
            return (softmax if kind == "post_softmax" else activation)(kind, name, bits, config)
        return make

    for entry in (
        QuantizerKind("asymmetric_channel", AsymmetricChannelWeights, ("weights",), (2, 8),
                      "unsigned asymmetric per output channel (AdaLog)"),
        QuantizerKind("adalog", by_point(LogSoftmaxQuantizer, LogActivationQuantizer), ("post_softmax", "post_gelu"),
                      (2, 6), "AdaLog: base 2**(q/37), q searched; b bits + zero code"),
        QuantizerKind("log2", by_point(Log2SoftmaxQuantizer, Log2ActivationQuantizer), ("post_softmax", "post_gelu"),
                      (2, 4), "base-2 log codes (AdaLog with q = 37); b bits + zero code (above 4 bits the "
                      "shifts leave no exact 48-bit accumulator)"),
    ):
        register_quantizer(entry)


_register()
