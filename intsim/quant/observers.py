"""Calibration observers: see float tensors at a quantization point, yield a real range (plan time).

During calibration the float model runs over the calibration batches; at each quantization point an
observer's :meth:`Observer.update` sees the float tensor. At the end :meth:`Observer.range` gives the real
range ``(lo, hi)``, from which :meth:`Observer.qparams` derives the unsigned asymmetric scale and zero
point (:func:`intsim.quant.qparams.asymmetric_qparams`). Semantics follow FQ-ViT's ``models/ptq/observer``
(layer-wise, i.e. per tensor, unless the class says otherwise):

=====================  ===========================================================================
``minmax``             running minimum and maximum over all batches.
``ema``                first batch sets ``(lo, hi)`` to its min/max; then ``v += 0.01 * (cur - v)``.
``percentile``         per batch the 1e-5 and 1 - 1e-5 quantiles (linear interpolation, numpy's default
                       method) of the flattened tensor, then EMA 0.01 as ``ema``.
``omse``               running min/max; :meth:`~OmseObserver.range` searches 90 shrunken ranges
                       ``[min, max] * (1 - 0.01 i)``, i = 0..89, for the least squared error of fake
                       quantization at ``bits`` on the last batch seen (FQ-ViT's OMSE).
per channel            :class:`PerChannelMinMaxObserver`: running min/max per channel (last axis) and the
                       last batch, for the PTF LayerNorm-input quantizer (:func:`~intsim.quant.qparams.ptf_qparams`).
=====================  ===========================================================================

Running state is kept in float64 (Python floats, or float64 tensors per channel); :class:`~intsim.quant.vit.QuantViT`
calibrates in float64, and every scale derived here lies on the grid of :func:`~intsim.quant.qparams.snap_scale`. Everything is
deterministic: quantiles are exact order statistics (no sampling), searches break ties towards the
first candidate. Memory is bounded: at most the last batch is kept (a copy, so later in-place changes of
the caller's tensor do not leak in). An update rejects NaN/inf with ``ValueError`` (they would poison a
running minimum silently). Batches of shape ``(32, 197, 3072)`` cost one to three reductions per update.
"""

from __future__ import annotations

import math

import torch

from intsim.ops._checks import check_choice
from intsim.quant.qparams import (
    LisQParams,
    PtfQParams,
    QParams,
    UniformProbsQParams,
    _check_finite_float,
    _check_float_tensor,
    asymmetric_qparams,
    check_bits,
    ptf_qparams,
    snap_scale,
)

__all__ = [
    "EmaObserver",
    "LisScaleObserver",
    "batch_quantiles",
    "MinMaxObserver",
    "OBSERVERS",
    "Observer",
    "OmseObserver",
    "PerChannelMinMaxObserver",
    "PercentileObserver",
    "SoftmaxMaxObserver",
    "make_observer",
]


def _finite_min_max(lo: float, hi: float, op: str) -> tuple[float, float]:
    """Check a batch's min/max (NaN and inf propagate into them, so this checks the whole batch)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{op}: x contains NaN or inf (batch min {lo!r}, max {hi!r})")
    return lo, hi


def _batch_min_max(x: torch.Tensor, op: str) -> tuple[float, float]:
    lo, hi = torch.aminmax(x)
    return _finite_min_max(float(lo), float(hi), op)


class Observer:
    """Base class: ``update(x)`` on every calibration batch, then ``range()`` / ``qparams()``.

    ``bits`` (``[MIN_BITS, MAX_BITS]``, default 8) is the width the range is meant for; only
    :class:`OmseObserver` uses it to choose the range, every observer uses it in :meth:`qparams`.
    ``x`` is any floating tensor (any shape, any device); integer, empty, NaN/inf inputs raise.
    :meth:`range` before any update raises ``RuntimeError``.
    """

    name = "observer"

    def __init__(self, bits: int = 8) -> None:
        self.bits = check_bits(bits, type(self).__name__)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen (the observer is as if just constructed)."""
        self.num_updates = 0
        self._lo: float | None = None
        self._hi: float | None = None

    def update(self, x: torch.Tensor) -> None:
        """Fold one calibration batch into the running state."""
        raise NotImplementedError

    def _checked_batch(self, x: torch.Tensor) -> torch.Tensor:
        return _check_float_tensor(x, "x", f"{type(self).__name__}.update")

    def _require_data(self) -> None:
        if self.num_updates == 0:
            raise RuntimeError(f"{type(self).__name__}.range: no batch observed yet (call update() first)")

    def range(self) -> tuple[float, float]:
        """The calibrated real range ``(lo, hi)`` as Python floats, ``lo <= hi``."""
        self._require_data()
        return self._lo, self._hi

    def qparams(self) -> QParams:
        """Unsigned asymmetric per-tensor parameters for :meth:`range` at ``bits`` (``asymmetric_qparams``)."""
        lo, hi = self.range()
        return asymmetric_qparams(lo, hi, self.bits)

    def __repr__(self) -> str:  # never runs a search (OMSE's range() can take seconds)
        return f"{type(self).__name__}(bits={self.bits}, updates={self.num_updates})"


class MinMaxObserver(Observer):
    """Running ``(min, max)`` over every element of every batch (FQ-ViT ``MinmaxObserver``, layer-wise)."""

    name = "minmax"

    def update(self, x: torch.Tensor) -> None:
        lo, hi = _batch_min_max(self._checked_batch(x), f"{type(self).__name__}.update")
        if self.num_updates == 0:
            self._lo, self._hi = lo, hi
        else:
            self._lo, self._hi = min(self._lo, lo), max(self._hi, hi)
        self.num_updates += 1


class EmaObserver(Observer):
    """Exponential moving average of batch min/max (FQ-ViT ``EmaObserver``).

    First batch: ``(lo, hi) = (min x, max x)``; every later batch: ``lo += momentum * (min x - lo)`` and the
    same for ``hi``, in float64; ``momentum`` defaults to FQ-ViT's ``ema_sigma = 0.01``.
    """

    name = "ema"

    def __init__(self, bits: int = 8, *, momentum: float = 0.01) -> None:
        momentum = _check_finite_float(momentum, "momentum", type(self).__name__)
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"{type(self).__name__}: momentum must be in (0, 1], got {momentum!r}")
        self.momentum = momentum
        super().__init__(bits)

    def _fold(self, lo: float, hi: float) -> None:
        if self.num_updates == 0:
            self._lo, self._hi = lo, hi
        else:
            self._lo += self.momentum * (lo - self._lo)
            self._hi += self.momentum * (hi - self._hi)
        self.num_updates += 1

    def update(self, x: torch.Tensor) -> None:
        self._fold(*_batch_min_max(self._checked_batch(x), f"{type(self).__name__}.update"))


# --- exact quantiles without torch.quantile's 16M-element limit -----------------------------------------

_BLOCK = 1024  # elements per block for the tail search (amin/amax per block are fast contiguous reductions)


def _extreme_values(
    flat: torch.Tensor, blocks: torch.Tensor, block_key: torch.Tensor, rest: torch.Tensor, count: int, largest: bool
) -> torch.Tensor:
    """The ``count`` largest (descending) or smallest (ascending) values of ``flat``, exactly.

    ``blocks`` is ``flat[:m*_BLOCK]`` viewed as ``(m, _BLOCK)``, ``block_key`` its per-block max (``largest``)
    or min, ``rest`` the tail that does not fill a block. Let ``T`` be the ``count``-th most extreme block
    key: at least ``count`` blocks hold an element at least as extreme as ``T``, so the ``count`` most extreme
    elements of ``flat`` are all at least as extreme as ``T`` and lie in blocks whose key is, or in ``rest``.
    Only those candidates go through ``topk``.
    """
    if blocks.shape[0] < 4 * count:  # pruning would keep most blocks: select on everything
        return torch.topk(flat, count, largest=largest, sorted=True).values
    threshold = torch.topk(block_key, count, largest=largest, sorted=True).values[-1]
    keep = block_key >= threshold if largest else block_key <= threshold
    candidates = torch.cat([blocks[keep].reshape(-1), rest])
    return torch.topk(candidates, count, largest=largest, sorted=True).values


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's ``_lerp`` (monotone form: exact at t = 0 and t = 1)."""
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def batch_quantiles(x: torch.Tensor, q_lo: float, q_hi: float, *, op: str = "batch_quantiles") -> tuple[float, float]:
    """The ``q_lo`` and ``q_hi`` quantiles of all elements of ``x`` (float64 results), exact, any size.

    Same definition as ``numpy.quantile(x, q)`` with its default ``method="linear"`` (Hyndman-Fan type 7):
    virtual index ``h = (n - 1) * q``, ``k = floor(h)``, result ``lerp(x_(k), x_(k+1), h - k)`` over the
    sorted values. Fast when ``q_lo``/``q_hi`` are near 0/1: the tails are found with ``topk`` on pruned blocks
    (``torch.quantile`` refuses inputs above 2**24 elements). Raises ``ValueError`` on NaN/inf.
    """
    for name, q in (("q_lo", q_lo), ("q_hi", q_hi)):
        if not 0.0 <= _check_finite_float(q, name, op) <= 1.0:
            raise ValueError(f"{op}: {name} must be in [0, 1], got {q!r}")
    flat = _check_float_tensor(x, "x", op).reshape(-1)
    n = flat.numel()
    m = n // _BLOCK
    blocks = flat[: m * _BLOCK].view(m, _BLOCK)
    rest = flat[m * _BLOCK :]
    block_min = blocks.amin(dim=1)
    block_max = blocks.amax(dim=1)
    lo = float(block_min.min()) if m else math.inf
    hi = float(block_max.max()) if m else -math.inf
    if rest.numel():
        lo, hi = min(lo, float(rest.min())), max(hi, float(rest.max()))
    _finite_min_max(lo, hi, op)

    results = []
    for q in (q_lo, q_hi):
        h = (n - 1) * q
        k = min(max(math.floor(h), 0), n - 1)
        t = min(max(h - k, 0.0), 1.0)
        k1 = min(k + 1, n - 1)
        if k < n - 1 - k:  # lower half: the k1 + 1 smallest, ascending
            values = _extreme_values(flat, blocks, block_min, rest, k1 + 1, largest=False)
            a, b = float(values[k]), float(values[k1])
        else:  # upper half: the n - k largest, descending; sorted position p is values[n - 1 - p]
            values = _extreme_values(flat, blocks, block_max, rest, n - k, largest=True)
            a, b = float(values[n - 1 - k]), float(values[n - 1 - k1])
        results.append(_lerp(a, b, t))
    return results[0], results[1]


class PercentileObserver(EmaObserver):
    """Per-batch tail quantiles, then EMA (FQ-ViT ``PercentileObserver``, layer-wise).

    For each batch: ``cur_lo = quantile(x, tail)``, ``cur_hi = quantile(x, 1 - tail)`` over all elements
    (numpy's linear interpolation, exact order statistics, no size limit: see :func:`batch_quantiles`);
    then folded as :class:`EmaObserver` (first batch initialises, ``v += momentum * (cur - v)``).
    Defaults are FQ-ViT's: ``tail = 1e-5`` (``percentile_alpha = 0.99999``), ``momentum = 0.01``.
    """

    name = "percentile"

    def __init__(self, bits: int = 8, *, tail: float = 1e-5, momentum: float = 0.01) -> None:
        tail = _check_finite_float(tail, "tail", type(self).__name__)
        if not 0.0 <= tail < 0.5:
            raise ValueError(f"{type(self).__name__}: tail must be in [0, 0.5), got {tail!r}")
        self.tail = tail
        super().__init__(bits, momentum=momentum)

    def update(self, x: torch.Tensor) -> None:
        op = f"{type(self).__name__}.update"
        x = self._checked_batch(x)
        self._fold(*batch_quantiles(x, self.tail, 1.0 - self.tail, op=op))


_OMSE_CANDIDATES = 90
_OMSE_STEP = 0.01


class OmseObserver(Observer):
    """Running min/max, then the shrunken range with the least fake-quant squared error (FQ-ViT ``OmseObserver``).

    :meth:`update` keeps the running ``(min, max)`` and a copy of the batch (the previous copy is dropped).
    :meth:`range` tries, for ``i = 0..89``, ``lo_i = min * (1 - 0.01 i)``, ``hi_i = max * (1 - 0.01 i)`` and
    ``p_i = asymmetric_qparams(lo_i, hi_i, bits)``, scores ``sum((p_i.fake_quant(x_last) - x_last)**2)`` (the
    mean times a constant) and returns the first ``(lo_i, hi_i)`` with the smallest score (strict ``<``, as
    FQ-ViT). Scores are computed in the last batch's dtype (float64 in the exact path, float32 like FQ-ViT in
    the fast one). The result is cached until the next update; a ``(32, 197, 3072)`` float32 batch costs about
    90 x 6 elementwise passes (seconds on a few cores).
    """

    name = "omse"

    def reset(self) -> None:
        super().reset()
        self._last: torch.Tensor | None = None
        self._best: tuple[float, float] | None = None

    def update(self, x: torch.Tensor) -> None:
        op = f"{type(self).__name__}.update"
        x = self._checked_batch(x)
        lo, hi = _batch_min_max(x, op)
        if self.num_updates == 0:
            self._lo, self._hi = lo, hi
        else:
            self._lo, self._hi = min(self._lo, lo), max(self._hi, hi)
        self._last = None  # release the previous copy before allocating the new one
        self._last = x.reshape(-1).clone()
        self._best = None
        self.num_updates += 1

    @property
    def last_batch(self) -> torch.Tensor | None:
        """The last batch seen, flattened (a private copy; ``None`` before any update)."""
        return self._last

    def minmax_range(self) -> tuple[float, float]:
        """The running ``(min, max)`` the search starts from."""
        self._require_data()
        return self._lo, self._hi

    def range(self) -> tuple[float, float]:
        self._require_data()
        if self._best is None:
            self._best = self._search()
        return self._best

    def _search(self) -> tuple[float, float]:
        x = self._last
        work = torch.empty_like(x)
        best_score = math.inf
        best = (self._lo, self._hi)
        for i in range(_OMSE_CANDIDATES):
            factor = 1.0 - i * _OMSE_STEP
            lo, hi = self._lo * factor, self._hi * factor
            qp = asymmetric_qparams(lo, hi, self.bits)
            torch.div(x, qp.scale, out=work)
            # clamp(rhe(x/s) + zp, 0, qmax) - zp == clamp(rhe(x/s), -zp, qmax - zp): exact on integer-valued floats
            work.round_().clamp_(-qp.zero_point, qp.qmax - qp.zero_point).mul_(qp.scale).sub_(x)
            score = float(work.square_().sum())
            if score < best_score:
                best_score, best = score, (lo, hi)
        return best


class PerChannelMinMaxObserver(Observer):
    """Running per-channel ``(min, max)`` along the last axis, plus the last batch (FQ-ViT ``PtfObserver`` state).

    The channel count is fixed by the first batch. :meth:`channel_range` gives the float64 ``(C,)`` minima and
    maxima, :meth:`range` the layer-wide ``(min, max)`` as floats, and :meth:`ptf_qparams` the PTF quantizer
    (:func:`intsim.quant.qparams.ptf_qparams` on the running ranges and the last batch).
    """

    name = "perchannel_minmax"

    def reset(self) -> None:
        super().reset()
        self._lo_c: torch.Tensor | None = None
        self._hi_c: torch.Tensor | None = None
        self._last: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        op = f"{type(self).__name__}.update"
        x = self._checked_batch(x)
        if x.ndim == 0:
            raise ValueError(f"{op}: x must have a channel axis (last), got a scalar")
        channels = x.shape[-1]
        if self._lo_c is not None and channels != self._lo_c.numel():
            raise ValueError(f"{op}: x has {channels} channels (last axis), earlier batches had {self._lo_c.numel()}")
        rows = x.reshape(-1, channels)
        lo = rows.amin(dim=0).to(torch.float64)
        hi = rows.amax(dim=0).to(torch.float64)
        _finite_min_max(float(lo.min()), float(hi.max()), op)
        if self._lo_c is None:
            self._lo_c, self._hi_c = lo, hi
        else:
            self._lo_c, self._hi_c = torch.minimum(self._lo_c, lo), torch.maximum(self._hi_c, hi)
        self._last = None
        self._last = x.clone()
        self.num_updates += 1

    @property
    def last_batch(self) -> torch.Tensor | None:
        """The last batch seen (a private copy, original shape; ``None`` before any update)."""
        return self._last

    def channel_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel running ``(min, max)``, float64 tensors of shape ``(C,)`` (copies)."""
        self._require_data()
        return self._lo_c.clone(), self._hi_c.clone()

    def range(self) -> tuple[float, float]:
        self._require_data()
        return float(self._lo_c.min()), float(self._hi_c.max())

    def ptf_qparams(self, levels: int = 4, *, search_zero_point: bool = False) -> PtfQParams:
        """PTF parameters at ``bits`` with ``levels`` power-of-two factors (alpha in ``0..levels-1``); see
        :func:`~intsim.quant.qparams.ptf_qparams` for ``search_zero_point``."""
        self._require_data()
        return ptf_qparams(self._last, self._lo_c, self._hi_c, bits=self.bits, levels=levels,
                           search_zero_point=search_zero_point)


class LisScaleObserver:
    """Mean row sum of the Log-Int-Softmax values ``2**-A`` of float attention probabilities (last axis = keys).

    :meth:`qparams` gives :class:`~intsim.quant.qparams.LisQParams` with ``scale = snap_scale(rows / sum of row
    sums)`` (float64 running sums over every row of every batch, on the scale grid), so that the dequantized rows
    sum to 1 on average.
    """

    name = "lis_scale"

    def __init__(self) -> None:
        self.rows = 0
        self.total = 0.0

    def update(self, probs: torch.Tensor) -> None:
        probs = _check_float_tensor(probs, "probs", f"{type(self).__name__}.update")
        values = LisQParams().dequantize(LisQParams.quantize(probs.to(torch.float64)))
        self.rows += values.numel() // max(values.shape[-1], 1)
        self.total += float(values.sum())

    def qparams(self) -> LisQParams:
        if self.rows == 0 or self.total <= 0.0:
            raise RuntimeError(f"{type(self).__name__}: no attention row observed yet (call update() first)")
        return LisQParams(snap_scale(self.rows / self.total))


def full_scale_of(largest: float, bits: int) -> int:
    """A uniform softmax's ``F = floor((2**bits - 1) / largest)`` for the largest probability seen, within
    ``[2**bits - 1, MAX_FULL_SCALE]`` (the code ``2**bits - 1`` stands for no more than ``largest``)."""
    from intsim.ops.softmax import MAX_FULL_SCALE

    levels = 2**bits - 1
    return min(max(math.floor(levels / min(largest, 1.0)), levels), MAX_FULL_SCALE)


class SoftmaxMaxObserver:
    """Largest float attention probability seen: FQ-ViT's minmax observer on the softmax output (``min`` is 0).

    :meth:`qparams` gives :class:`~intsim.quant.qparams.UniformProbsQParams` with ``full_scale = floor((2**bits - 1)
    / largest)`` (at least ``2**bits - 1``, at most 2**20): the code ``2**bits - 1`` then stands for a probability
    no larger than the largest one seen, so calibration rows never saturate.
    """

    name = "softmax_max"

    def __init__(self, bits: int = 8) -> None:
        self.bits = check_bits(bits, type(self).__name__)
        self.largest = 0.0

    def update(self, probs: torch.Tensor) -> None:
        probs = _check_float_tensor(probs, "probs", f"{type(self).__name__}.update")
        if probs.numel():
            self.largest = max(self.largest, float(probs.max()))

    def qparams(self) -> UniformProbsQParams:
        if self.largest <= 0.0:
            raise RuntimeError(f"{type(self).__name__}: no positive attention probability observed yet (call update() first)")
        return UniformProbsQParams(full_scale_of(self.largest, self.bits), self.bits)


OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "ema": EmaObserver,
    "percentile": PercentileObserver,
    "omse": OmseObserver,
}
"""Per-tensor activation observers by name (FQ-ViT's ``--quant-method`` names)."""


def make_observer(name: str, bits: int = 8) -> Observer:
    """A fresh observer ``OBSERVERS[name](bits)``; an unknown name raises ``ValueError`` listing the known ones."""
    op = "make_observer"
    check_choice(name, "observer", op, tuple(OBSERVERS))
    check_bits(bits, op)
    return OBSERVERS[name](bits)
