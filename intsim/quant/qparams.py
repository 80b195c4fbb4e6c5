"""Uniform quantizer parameters: float scale and integer zero point from a calibrated range (plan time).

Everything here runs at plan time (calibration and export), where floats are allowed: the scales are
float metadata that the exporter later turns into integer multipliers and shifts. The functions are
pure and deterministic; scalar arithmetic is float64 (Python floats), tensor arithmetic is float64 for
weights and in the caller's dtype for activations (float64 in the ``exact`` fake-quant path).

Conventions
    real value     ``(q - zero_point) * scale``
    rounding       round half to even (``torch.round``, IEEE), written ``rhe``: rhe(0.5) = 0, rhe(1.5) = 2,
                   rhe(-0.5) = -0, rhe(-1.5) = -2.
    quantize       ``q = clamp(rhe(x / scale) + zero_point, qmin, qmax)``. FQ-ViT writes
                   ``clamp(rhe(x / scale + zero_point))``; the two differ only on exact ties ``x / scale = k + 0.5``
                   with an odd zero point (adding an odd integer moves the even neighbour). intsim rounds the
                   scaled value first so that a tie goes the same way whatever the zero point.
    scale floor    :data:`MIN_SCALE` ``= 2**-23`` (float32 machine epsilon, FQ-ViT's ``scale.clamp_(eps)``): a
                   scale is never 0, and a zero-width range gives a finite, positive scale.
    scale grid     every calibrated activation scale is rounded *up* to :data:`SCALE_GRID_BITS` significant bits
                   (:func:`snap_scale`) before any integer is derived from it. Calibration statistics are float64
                   sums and maxima whose last bits depend on the CPU's instruction path (torch's avx512 / avx2 /
                   default kernels reduce in different orders); on the grid those differences vanish, so the
                   same calibration gives the same Program on every CPU (docs/quantization.md).
    bit widths     :data:`MIN_BITS` .. :data:`MAX_BITS` (2..16): the ViT configurations use 4..8, and 16 for some
                   points (e.g. an I-ViT style residual stream).

Quantizers
    :func:`asymmetric_qparams`        activations: unsigned, per tensor, with zero point (FQ-ViT ``uint8``).
    :func:`symmetric_weight_qparams`  weights: signed, symmetric, per output channel (dim 0), no zero point.
    :func:`ptf_qparams`               FQ-ViT Power-of-Two Factor for LayerNorm inputs: one base scale and
                                      zero point, per-channel factors ``2**alpha_c``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from intsim.ops._checks import check_int, int_range

__all__ = [
    "MAX_BITS",
    "MIN_BITS",
    "MIN_SCALE",
    "SCALE_GRID_BITS",
    "LisQParams",
    "PtfQParams",
    "QParams",
    "SymmetricWeights",
    "UniformProbsQParams",
    "asymmetric_qparams",
    "ptf_qparams",
    "snap_scale",
    "symmetric_weight_qparams",
]

MIN_SCALE = 2.0**-23
"""Smallest scale ever produced (float32 machine epsilon, as FQ-ViT's ``scale.clamp_(eps)``); never 0."""

SCALE_GRID_BITS = 16
"""Significant bits of every calibrated activation scale (:func:`snap_scale`): a relative step of ``2**-16``
(1.5e-5), far below a scale's effect on accuracy and far above float64 reduction noise (~1e-15 relative)."""

MIN_BITS = 2
"""Narrowest supported code (2 bits: symmetric weights need ``2**(bits-1) - 1 >= 1``)."""

MAX_BITS = 16
"""Widest supported code (16 bits; codes stay exact in float32 fake-quant, which is exact below 2**24)."""


def check_bits(bits, op: str) -> int:
    """Return ``bits`` as an int in ``[MIN_BITS, MAX_BITS]``, or raise ``TypeError``/``ValueError`` naming ``op``."""
    return check_int(bits, "bits", op, lo=MIN_BITS, hi=MAX_BITS)


def _check_finite_float(value, name: str, op: str) -> float:
    """Return ``value`` as a finite Python float; ``TypeError`` for non-numbers, ``ValueError`` for NaN/inf."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{op}: {name} must be a real number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{op}: {name} must be a real number, got {type(value).__name__} {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{op}: {name} must be finite, got {result!r}")
    return result


def _check_float_tensor(x, name: str, op: str) -> torch.Tensor:
    """Return ``x`` detached if it is a non-empty floating torch tensor, else raise ``TypeError``/``ValueError``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{op}: {name} is empty (shape {tuple(x.shape)})")
    return x.detach()


def _check_code_tensor(codes, op: str) -> torch.Tensor:
    """Return ``codes`` detached and floating (integer codes are promoted to float64)."""
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"{op}: codes must be a torch.Tensor, got {type(codes).__name__}")
    if codes.dtype == torch.bool or codes.is_complex():
        raise TypeError(f"{op}: codes must be an integer or floating tensor, got dtype {codes.dtype}")
    codes = codes.detach()
    return codes if codes.is_floating_point() else codes.to(torch.float64)


@dataclass(frozen=True)
class QParams:
    """Per-tensor uniform quantizer: real value ``(q - zero_point) * scale``, ``q`` in ``[qmin, qmax]``.

    ``qmin``/``qmax`` are ``[0, 2**bits - 1]`` when unsigned and ``[-2**(bits-1), 2**(bits-1) - 1]`` when
    signed. Construction validates: ``scale`` finite and ``> 0``, ``zero_point`` an int in ``[qmin, qmax]``,
    ``bits`` in ``[MIN_BITS, MAX_BITS]``.

    >>> qp = QParams(scale=0.5, zero_point=3, bits=4, signed=False)
    >>> qp.quantize(torch.tensor([-2.0, 0.25, 0.75, 100.0])).tolist()
    [0.0, 3.0, 5.0, 15.0]
    >>> qp.dequantize(torch.tensor([0.0, 3.0, 15.0])).tolist()
    [-1.5, 0.0, 6.0]
    """

    scale: float
    zero_point: int
    bits: int
    signed: bool

    def __post_init__(self) -> None:
        op = "QParams"
        bits = check_bits(self.bits, op)
        if not isinstance(self.signed, (bool,)):
            raise TypeError(f"{op}: signed must be a bool, got {type(self.signed).__name__} {self.signed!r}")
        scale = _check_finite_float(self.scale, "scale", op)
        if scale <= 0.0:
            raise ValueError(f"{op}: scale must be > 0, got {scale!r}")
        lo, hi = int_range(bits, self.signed)
        zero_point = check_int(self.zero_point, "zero_point", op, lo=lo, hi=hi)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zero_point)
        object.__setattr__(self, "bits", bits)

    @property
    def qmin(self) -> int:
        """Smallest code: ``0`` unsigned, ``-2**(bits-1)`` signed."""
        return int_range(self.bits, self.signed)[0]

    @property
    def qmax(self) -> int:
        """Largest code: ``2**bits - 1`` unsigned, ``2**(bits-1) - 1`` signed."""
        return int_range(self.bits, self.signed)[1]

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``clamp(rhe(x / scale) + zero_point, qmin, qmax)`` as a float tensor of ``x``'s dtype.

        Computed in ``x``'s dtype (float32 fast path, float64 exact path); codes are integers stored in
        floats, exact for every supported bit width. Ties round half to even *before* the zero point is
        added (see the module docstring for the one-ulp-of-a-tie departure from FQ-ViT).
        """
        x = _check_float_tensor(x, "x", "QParams.quantize")
        codes = torch.round(x / self.scale)
        return codes.add_(self.zero_point).clamp_(self.qmin, self.qmax)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Real values ``(codes - zero_point) * scale``; integer codes are promoted to float64.

        Codes are not range-checked: values outside ``[qmin, qmax]`` dequantize by the same formula.
        """
        codes = _check_code_tensor(codes, "QParams.dequantize")
        return (codes - self.zero_point) * self.scale

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        """``dequantize(quantize(x))``: ``x`` rounded to the grid and clipped to ``[(qmin-zp)*s, (qmax-zp)*s]``."""
        return self.dequantize(self.quantize(x))


def snap_scale(scale: float) -> float:
    """``scale`` rounded up to the grid of :data:`SCALE_GRID_BITS` significant bits (exact in float64).

    With ``scale = m * 2**e``, ``0.5 <= m < 1`` (``math.frexp``): ``ceil(m * 2**16) * 2**(e - 16)``. Rounding up
    keeps every calibrated range representable. Values already on the grid (powers of two, :data:`MIN_SCALE`)
    are unchanged; a positive finite scale is required.

    >>> snap_scale(1.0), snap_scale(0.1), snap_scale(2.0**-23)
    (1.0, 0.10000038146972656, 1.1920928955078125e-07)
    """
    scale = _check_finite_float(scale, "scale", "snap_scale")
    if scale <= 0.0:
        raise ValueError(f"snap_scale: scale must be > 0, got {scale!r}")
    mantissa, exponent = math.frexp(scale)
    return math.ldexp(math.ceil(math.ldexp(mantissa, SCALE_GRID_BITS)), exponent - SCALE_GRID_BITS)


def asymmetric_qparams(lo, hi, bits: int) -> QParams:
    """Unsigned asymmetric per-tensor parameters for the real range ``[lo, hi]`` (FQ-ViT ``uint8`` activations).

    Algorithm (plan time, float64)::

        lo' = min(lo, 0);  hi' = max(hi, 0)              # the range always contains 0
        scale = snap_scale(max((hi' - lo') / (2**bits - 1), MIN_SCALE))      # SCALE_GRID_BITS significant bits
        zero_point = clamp(-rhe(lo' / scale), 0, 2**bits - 1)

    The range is widened to contain 0 so that real 0 (padding, ReLU/GELU zeros, the zero point itself) is
    exactly representable and the zero point lies in ``[0, 2**bits - 1]`` without clipping the range;
    FQ-ViT does not widen (an all-positive range there gets ``zp`` clamped to 0, which clips its top).
    An all-positive range gives ``zero_point = 0``, an all-negative one ``zero_point = 2**bits - 1``, and a
    zero-width range ``[0, 0]`` gives ``scale = MIN_SCALE, zero_point = 0``.

    >>> asymmetric_qparams(-1.0, 3.0, 8)
    QParams(scale=0.015686511993408203, zero_point=64, bits=8, signed=False)
    >>> asymmetric_qparams(2.0, 5.0, 4)
    QParams(scale=0.33333587646484375, zero_point=0, bits=4, signed=False)
    """
    op = "asymmetric_qparams"
    bits = check_bits(bits, op)
    lo = _check_finite_float(lo, "lo", op)
    hi = _check_finite_float(hi, "hi", op)
    if lo > hi:
        raise ValueError(f"{op}: lo = {lo!r} is greater than hi = {hi!r}")
    qmax = 2**bits - 1
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = snap_scale(max((hi - lo) / qmax, MIN_SCALE))
    zero_point = min(max(-round(lo / scale), 0), qmax)  # Python round() on a float is round half to even
    return QParams(scale=scale, zero_point=int(zero_point), bits=bits, signed=False)


class SymmetricWeights(NamedTuple):
    """Result of :func:`symmetric_weight_qparams`: per-output-channel ``scales`` and integer ``codes``."""

    scales: torch.Tensor
    codes: torch.Tensor


def symmetric_weight_qparams(w: torch.Tensor, bits: int) -> SymmetricWeights:
    """Signed symmetric per-output-channel weight quantization: ``w[c] ~= codes[c] * scales[c]``.

    Algorithm (plan time, float64), channel ``c`` = index along dim 0, ``n = 2**(bits-1) - 1``::

        absmax[c] = max |w[c, ...]|
        scales[c] = 1.0                               if absmax[c] == 0 (all-zero channel: codes 0)
                  = max(absmax[c] / n, MIN_SCALE)      otherwise
        codes[c]  = clamp(rhe(w[c] / scales[c]), -n, n)

    Departs from FQ-ViT, whose ``scale = absmax / 127.5`` with codes clamped to ``[-128, 127]`` maps
    ``+absmax`` to 127.5, rounded to 128 and clipped: here ``+absmax`` and ``-absmax`` are both exactly
    representable (``±n``), the code range is symmetric ``[-n, n]`` (``-2**(bits-1)`` unused, like I-ViT's
    scale and TFLite's int8 weights), and no weight is clipped, so ``|codes*scales - w| <= scales/2``.
    An all-zero channel gets scale 1.0 (any positive value would do; 1.0 keeps the exporter's multiplier
    finite and obviously arbitrary).

    Returns ``SymmetricWeights(scales, codes)``: ``scales`` float64 of shape ``(out_channels,)``; ``codes``
    of ``w``'s shape, dtype int8 for ``bits <= 8`` and int16 above; both on ``w``'s device.

    >>> sw = symmetric_weight_qparams(torch.tensor([[0.5, -1.0], [0.0, 0.0]]), 8)
    >>> sw.scales.tolist(), sw.codes.tolist()
    ([0.007874015748031496, 1.0], [[64, -127], [0, 0]])
    """
    op = "symmetric_weight_qparams"
    bits = check_bits(bits, op)
    w = _check_float_tensor(w, "w", op)
    if w.ndim == 0:
        raise ValueError(f"{op}: w must have at least one dimension (dim 0 = output channels), got a scalar")
    w64 = w.to(torch.float64).reshape(w.shape[0], -1)
    if w64.shape[1] == 0:
        raise ValueError(f"{op}: w has no elements per output channel (shape {tuple(w.shape)})")
    if not bool(torch.isfinite(w64).all()):
        raise ValueError(f"{op}: w contains NaN or inf")
    n = 2 ** (bits - 1) - 1
    absmax = w64.abs().amax(dim=1)
    scales = torch.where(absmax == 0, torch.ones_like(absmax), (absmax / n).clamp_min(MIN_SCALE))
    codes = torch.round(w64 / scales[:, None]).clamp_(-n, n)
    code_dtype = torch.int8 if bits <= 8 else torch.int16
    return SymmetricWeights(scales=scales, codes=codes.to(code_dtype).reshape(w.shape))


@dataclass(frozen=True, eq=False)
class PtfQParams:
    """FQ-ViT Power-of-Two-Factor quantizer: channel ``c`` (last axis) has scale ``base_scale * 2**alpha[c]``.

    All channels share ``zero_point`` and the code range ``[0, 2**bits - 1]``; ``alpha`` is an int64 tensor
    of shape ``(C,)`` with values in ``[0, levels - 1]``. Real value of code ``q`` in channel ``c``:
    ``(q - zero_point) * base_scale * 2**alpha[c]``; the integer LayerNorm uses ``(q - zero_point) << alpha[c]``.
    """

    base_scale: float
    zero_point: int
    alpha: torch.Tensor
    bits: int = 8
    levels: int = 4

    def __post_init__(self) -> None:
        op = "PtfQParams"
        bits = check_bits(self.bits, op)
        levels = check_int(self.levels, "levels", op, lo=1, hi=16)
        scale = _check_finite_float(self.base_scale, "base_scale", op)
        if scale <= 0.0:
            raise ValueError(f"{op}: base_scale must be > 0, got {scale!r}")
        zero_point = check_int(self.zero_point, "zero_point", op, lo=0, hi=2**bits - 1)
        alpha = self.alpha
        if not isinstance(alpha, torch.Tensor) or alpha.dtype != torch.int64 or alpha.ndim != 1:
            raise TypeError(f"{op}: alpha must be a 1-D int64 (Long) tensor")
        if alpha.numel() and (int(alpha.min()) < 0 or int(alpha.max()) > levels - 1):
            raise ValueError(f"{op}: alpha values must lie in [0, {levels - 1}]")
        object.__setattr__(self, "base_scale", scale)
        object.__setattr__(self, "zero_point", zero_point)
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "levels", levels)

    @property
    def qmin(self) -> int:
        """Smallest code (0)."""
        return 0

    @property
    def qmax(self) -> int:
        """Largest code ``2**bits - 1``."""
        return 2**self.bits - 1

    @property
    def scales(self) -> torch.Tensor:
        """Per-channel scales ``base_scale * 2**alpha`` (float64, exact: power-of-two multiples)."""
        return self.base_scale * torch.pow(2.0, self.alpha.to(torch.float64))

    def _channel_scales(self, x: torch.Tensor, op: str) -> torch.Tensor:
        if x.ndim == 0 or x.shape[-1] != self.alpha.numel():
            raise ValueError(
                f"{op}: the last axis of the input must have {self.alpha.numel()} channels, got shape {tuple(x.shape)}"
            )
        return self.scales.to(device=x.device, dtype=x.dtype)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``clamp(rhe(x / s_c) + zero_point, 0, 2**bits - 1)`` per channel (last axis), in ``x``'s dtype."""
        op = "PtfQParams.quantize"
        x = _check_float_tensor(x, "x", op)
        codes = torch.round(x / self._channel_scales(x, op))
        return codes.add_(self.zero_point).clamp_(self.qmin, self.qmax)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Real values ``(codes - zero_point) * s_c`` per channel (last axis); integer codes promoted to float64."""
        op = "PtfQParams.dequantize"
        codes = _check_code_tensor(codes, op)
        return (codes - self.zero_point) * self._channel_scales(codes, op)

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        """``dequantize(quantize(x))``."""
        return self.dequantize(self.quantize(x))

    def lowest_factor_one(self) -> "PtfQParams":
        """The same quantizer (same per-channel scales, codes and zero point) with the smallest factor ``2**0``:
        ``base_scale * 2**min(alpha)`` and ``alpha - min(alpha)``. A linear layer over PTF codes shifts each input
        by its factor, so the smallest factors keep the shifted operand (and the exactness bounds) small."""
        low = int(self.alpha.min()) if self.alpha.numel() else 0
        return PtfQParams(self.base_scale * 2.0**low, self.zero_point, self.alpha - low, bits=self.bits,
                          levels=self.levels)


@dataclass(frozen=True)
class LisQParams:
    """FQ-ViT's 4-bit Log-Int-Softmax quantizer of attention probabilities, with a calibrated scale.

    Codes ``A = clamp(floor(log2(4 / (3 p))), 0, 16)`` (16 for ``p == 0``: code 16 means probability 0), the
    fake-quant view of what the integer ``log_int_softmax`` computes. Real value of code ``A < 16``:
    ``scale * 2**-A``. FQ-ViT's scale is 1; rounding to powers of two makes a row's values sum to more than 1
    (about 1.08 to 1.11 on ViT-Ti's heads), so intsim calibrates ``scale = 1 / mean row sum`` per layer
    (:class:`~intsim.quant.observers.LisScaleObserver`). The integer Program folds ``scale`` into the context
    requantization multiplier: the softmax op itself is unchanged.
    """

    scale: float = 1.0

    def __post_init__(self) -> None:
        scale = _check_finite_float(self.scale, "scale", "LisQParams")
        if scale <= 0.0:
            raise ValueError(f"LisQParams: scale must be > 0, got {scale!r}")
        object.__setattr__(self, "scale", scale)

    @staticmethod
    def quantize(probs: torch.Tensor) -> torch.Tensor:
        """LIS codes of probabilities in ``[0, 1]`` (same dtype, integer-valued)."""
        ratio = 4.0 / (3.0 * probs.clamp_min(2.0**-40))
        codes = torch.floor(torch.log2(ratio)).clamp(0, 16)
        return torch.where(probs > 0, codes, torch.full_like(codes, 16))

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """``scale * 2**-A`` for ``A < 16``, 0 for code 16."""
        return torch.where(codes < 16, torch.pow(2.0, -codes) * self.scale, torch.zeros_like(codes))


@dataclass(frozen=True)
class UniformProbsQParams:
    """The uniform integer softmax's quantizer of attention probabilities: codes ``min(rhe(p * F), 2**bits - 1)``.

    ``full_scale`` F is the code of probability 1 (real value of code ``q``: ``q / F``): ``2**bits - 1`` keeps the
    whole ``[0, 1]`` (intsim's fixed scale), a larger F spends the codes on ``[0, (2**bits - 1) / F]`` and
    saturates larger probabilities. FQ-ViT quantizes the softmax output with its activation observer (minmax:
    scale = largest probability / (2**bits - 1)); :class:`~intsim.quant.observers.SoftmaxMaxObserver` gives
    ``F = floor((2**bits - 1) / largest probability)``. The integer ``uniform_int_softmax`` takes F as its
    ``full_scale`` (``min((e * F + (S >> 1)) // S, 2**bits - 1)``); this is its fake-quant view.
    """

    full_scale: int | tuple[int, ...]
    bits: int = 8

    def __post_init__(self) -> None:
        from intsim.ops.softmax import MAX_FULL_SCALE

        op = "UniformProbsQParams"
        bits = check_bits(self.bits, op)
        object.__setattr__(self, "bits", bits)
        if isinstance(self.full_scale, (list, tuple, np.ndarray)):  # one per head (APQ-ViT's MPQ)
            full = tuple(check_int(v, "full_scale", op, lo=2**bits - 1, hi=MAX_FULL_SCALE) for v in self.full_scale)
            if not full:
                raise ValueError(f"{op}: full_scale is an empty list")
        else:
            full = check_int(self.full_scale, "full_scale", op, lo=2**bits - 1, hi=MAX_FULL_SCALE)
        object.__setattr__(self, "full_scale", full)

    @property
    def levels(self) -> int:
        return 2**self.bits - 1

    def _full(self, probs: torch.Tensor):
        """F against ``probs (..., heads, N, N)``: a scalar, or one per head."""
        if isinstance(self.full_scale, tuple):
            return torch.tensor(self.full_scale, dtype=probs.dtype, device=probs.device).reshape(-1, 1, 1)
        return self.full_scale

    def quantize(self, probs: torch.Tensor) -> torch.Tensor:
        """Codes of probabilities in ``[0, 1]`` (same dtype, integer-valued)."""
        return torch.round(probs * self._full(probs)).clamp(0, self.levels)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return codes / self._full(codes)


_PTF_CHUNK_ELEMENTS = 1 << 22  # rows per chunk of the alpha search: bounds the float64 temporaries to ~32 MiB each


def ptf_qparams(x_last: torch.Tensor, lo_per_channel, hi_per_channel, bits: int = 8, levels: int = 4, *,
                search_zero_point: bool = False) -> PtfQParams:
    """FQ-ViT PTF parameters (``observer/ptf.py::PtfObserver.get_quantization_params``) for a LayerNorm input.

    ``lo_per_channel``/``hi_per_channel`` are the running per-channel minima/maxima over all calibration
    batches (shape ``(C,)``); ``x_last`` is the last calibration batch, shape ``(..., C)``. Algorithm (plan
    time, float64)::

        lo = min(min_c lo_per_channel, 0);  hi = max(max_c hi_per_channel, 0)   # layer-wide range, contains 0
        scale_top  = snap_scale(max((hi - lo) / (2**bits - 1), MIN_SCALE))      # FQ-ViT's scale8, on the grid
        base_scale = scale_top / 2**(levels - 1)                                # FQ-ViT's scale1 (levels = 4)
        zero_point = clamp(-rhe(lo / scale_top), 0, 2**bits - 1)                # from scale_top, shared
        for each channel c:  alpha[c] = argmin over a in 0..levels-1 of
            mean over x_last[..., c] of (fake_quant(x, base_scale * 2**a, zero_point) - x)**2
        (ties -> the smallest a, as FQ-ViT's ``score.index(min(score))``)

    ``search_zero_point=True`` (intsim's default configurations) replaces FQ-ViT's zero point, which serves the
    layer-wide range and leaves ordinary channels almost no room below zero when one outlier channel is
    one-sided, by the one of ``zp in {1, 1 + t, 1 + 2t, ...} U {FQ-ViT's}`` (``t = 2**bits / 64``: every 4th code at 8 bits) minimising the summed per-channel error
    ``sum_c min_a err(c, a)`` over every 7th row of ``x_last``; ``scale_top`` then grows to keep
    ``[lo, hi]`` representable at the largest factor: ``snap_scale(max(hi / (2**bits - 1 - zp), -lo / zp))``.

    ``fake_quant(x, s, zp) = (clamp(rhe(x / s) + zp, 0, 2**bits - 1) - zp) * s``. Departures from FQ-ViT: the
    range is widened to contain 0 (as :func:`asymmetric_qparams`), the zero point is added after rounding
    (module docstring), and the search runs in float64 (FQ-ViT: float32), vectorised over channels.
    """
    op = "ptf_qparams"
    bits = check_bits(bits, op)
    levels = check_int(levels, "levels", op, lo=1, hi=16)
    x = _check_float_tensor(x_last, "x_last", op)
    if x.ndim == 0:
        raise ValueError(f"{op}: x_last must have a channel axis (last), got a scalar")
    channels = x.shape[-1]
    bounds = []
    for name, value in (("lo_per_channel", lo_per_channel), ("hi_per_channel", hi_per_channel)):
        t = torch.as_tensor(value).detach()
        if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
            raise TypeError(f"{op}: {name} must hold real numbers, got dtype {t.dtype}")
        t = t.to(device="cpu", dtype=torch.float64).reshape(-1)
        if t.numel() != channels:
            raise ValueError(f"{op}: {name} has {t.numel()} values but x_last has {channels} channels (last axis)")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{op}: {name} contains NaN or inf")
        bounds.append(t)
    lo_c, hi_c = bounds
    if bool((lo_c > hi_c).any()):
        bad = int(torch.nonzero(lo_c > hi_c)[0, 0])
        raise ValueError(
            f"{op}: lo_per_channel[{bad}] = {float(lo_c[bad])!r} > hi_per_channel[{bad}] = {float(hi_c[bad])!r}"
        )

    qmax = 2**bits - 1
    lo = min(float(lo_c.min()), 0.0)
    hi = max(float(hi_c.max()), 0.0)
    scale_top = snap_scale(max((hi - lo) / qmax, MIN_SCALE))
    base_scale = scale_top / 2 ** (levels - 1)
    zero_point = int(min(max(-round(lo / scale_top), 0), qmax))

    rows = x.reshape(-1, channels)
    if search_zero_point:
        step = max(1, (qmax + 1) // 64)  # 64 candidates at any width (every 4th code at 8 bits)
        candidates = set(range(1 if lo < 0 else 0, qmax if hi > 0 else qmax + 1, step)) | {zero_point}

        def searched_error(zp: int) -> float:
            return float(_ptf_errors(rows[::7], _ptf_base_scale(lo, hi, zp, qmax, levels), zp, qmax, levels).amin(0).sum())

        # a zero point at an end of the code range cannot hold a two-sided range (infinite base scale)
        candidates = {zp for zp in candidates if math.isfinite(_ptf_base_scale(lo, hi, zp, qmax, levels))}
        zero_point = min(sorted(candidates), key=searched_error)
        base_scale = _ptf_base_scale(lo, hi, zero_point, qmax, levels)
    sq_err = _ptf_errors(rows, base_scale, zero_point, qmax, levels)
    if not bool(torch.isfinite(sq_err).all()):
        raise ValueError(f"{op}: x_last contains NaN or inf")
    alpha = torch.argmin(sq_err, dim=0).to(device="cpu", dtype=torch.int64)  # first minimum: smallest alpha
    return PtfQParams(base_scale=base_scale, zero_point=zero_point, alpha=alpha, bits=bits, levels=levels)


def _ptf_base_scale(lo: float, hi: float, zero_point: int, qmax: int, levels: int) -> float:
    """The base scale whose largest factor ``2**(levels-1)`` still represents ``[lo, hi]`` around ``zero_point``."""
    top = max(hi / (qmax - zero_point) if zero_point < qmax else (0.0 if hi <= 0 else math.inf),
              -lo / zero_point if zero_point > 0 else (0.0 if lo >= 0 else math.inf), MIN_SCALE)
    return snap_scale(top) / 2 ** (levels - 1) if math.isfinite(top) else math.inf


def _ptf_errors(rows: torch.Tensor, base_scale: float, zero_point: int, qmax: int, levels: int) -> torch.Tensor:
    """``(levels, C)`` summed squared fake-quant errors of every channel at each factor ``2**a`` (float64)."""
    channels = rows.shape[-1]
    sq_err = torch.zeros(levels, channels, dtype=torch.float64, device=rows.device)
    for chunk in rows.split(max(1, _PTF_CHUNK_ELEMENTS // channels)):
        chunk = chunk.to(torch.float64)
        for a in range(levels):
            s = base_scale * 2.0**a
            err = torch.round(chunk / s).clamp_(-zero_point, qmax - zero_point).mul_(s).sub_(chunk)
            sq_err[a] += err.square_().sum(dim=0)
    return sq_err
