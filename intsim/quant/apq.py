"""The ``apq`` method and the ``mpq`` softmax quantizer: APQ-ViT's calibration (ACM MM 2022) over intsim's layers.

APQ-ViT has no official code. What is implemented follows the equations of the one port found (PaddleSlim
``example/APQ_ViT``, on PTQ4ViT; ``shared/research/ptq_methods.md`` section 7) and chooses where the paper and the
port are silent (``docs/quantization.md``, APQ-ViT section, lists every choice):

* **MPQ** (:class:`MpqSoftmaxQuantizer`, quantizer ``mpq``): the attention probabilities as uniform unsigned codes
  with zero point 0, ``c = min(rhe(p F), 2**b - 1)``, value ``c / F`` (op ``UniformSoftmax``; ``attn @ V`` an
  ordinary integer matmul). ``F = rhe((2**b - 1) / (a max p))`` is searched over ``a`` in ``[0.9, 1.2)``: zero is
  exact and probabilities below ``1 / (2 F)`` vanish, which keeps the large ones (the "Matthew effect"). One ``F``
  per head, as in the port (``UniformSoftmax`` with ``full_scale`` one per head), each head searched in turn.
* **BBC** (``apq_metric = "bbc"``): each candidate's error is measured at its *block's* output ``O``: with
  ``dO = O_fp - O_q`` (the float block and the quantized block on the same quantized-prefix input), the entries with
  ``|dO|`` below the 10th percentile are dropped (bottom elimination) and the score is ``mean((g dO)**2)``, ``g``
  the gradient of PTQ4ViT's ``KL(p_fp || p_q)`` (``kl_div(log_softmax(pred_q), p_fp, "batchmean")``) with respect
  to ``O``, taken with the calibrated prefix quantized and the block and everything after it in float (PTQ4ViT's
  sequential Hessian calibrator). ``layerwise_mse`` (the ablation) scores the MSE of the searched layer's output.
* **The search**: every scale is ``a`` times its starting (minmax) range, ``a`` on 100-point grids: the port's for
  the weights ``[0.7, 1.1)`` and the matmul operands and the softmax ``[0.9, 1.2)``; PTQ4ViT's ``[0.01, 1.2)`` for
  the Linears' inputs (``apq_input_grid = "port"``: the port's ``[0.7, 1.1)``, which cannot clip the post-GELU
  values of ViT-Ti's block 7, whose largest is ~150 against ~7 elsewhere), visited
  coarse to fine (every fifth point, then the nine around the best); for each pair (a Linear's weights then its
  input, ``q`` then ``k``, the softmax then ``v``) ``search_rounds`` alternating rounds (the port: 3).

Weights are asymmetric per output channel (``asymmetric_channel``; the port: per tensor), one ``a`` per layer for
every channel's range. The GELU output (fc2's input) has FQ-ViT's power-of-two channel factors (``ptf``; the paper:
uniform per tensor, the ``-gelu-uniform`` configurations), searched by :class:`PtfRange`. The residual stream,
position embedding and GELU index stay at the configuration's (16-bit) observer ranges: APQ-ViT leaves them in
floating point.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from intsim.quant.methods import Method, observe, register_method
from intsim.quant.observers import full_scale_of
from intsim.quant.qparams import QParams, UniformProbsQParams, snap_scale
from intsim.quant.quantizers import PtfQuantizer, UniformQuantizer, UniformSoftmaxQuantizer

__all__ = ["MpqSoftmaxQuantizer", "ApqSearch", "alpha_grid"]

GRID_POINTS = 100  # the port's eq_n; like PTQ4ViT it tries alpha_0 .. alpha_99 (the upper end never)
LINEAR_ALPHAS = (0.7, 1.1)  # the port's eq_alpha / eq_beta of the linear layers
MATMUL_ALPHAS = (0.9, 1.2)  # ... of the matmul operands (q, k, the softmax, v)
INPUT_ALPHAS = {"ptq4vit": (0.01, 1.2), "port": LINEAR_ALPHAS}  # the Linears' inputs, by apq_input_grid
COARSE_STRIDE = 5
BOTTOM_FRACTION = 0.1  # the port's np.percentile(|dO|, 10)


def alpha_grid(bounds: tuple[float, float], points: int = GRID_POINTS) -> np.ndarray:
    low, high = bounds
    return low + np.arange(points) * (high - low) / points


def coarse_to_fine(score, count: int, stride: int = COARSE_STRIDE) -> int:
    """The index in ``range(count)`` of the lowest ``score(index)`` found by scoring every ``stride``-th index, then
    the ``stride - 1`` on each side of the best (the lower index on ties)."""
    scores = {}

    def at(index):
        if index not in scores:
            scores[index] = score(index)
        return scores[index]
    best = min(range(0, count, stride), key=lambda i: (at(i), i))
    near = range(max(0, best - stride + 1), min(count, best + stride))
    return min(near, key=lambda i: (at(i), i))


# ------------------------------------------------------------------------------------------ the quantities
class UniformRange:
    """A per-tensor uniform activation quantizer: ``s = (hi_a - lo_a) / (2**b - 1)``, ``zp = rhe(-lo_a / s)``
    (clamped) over the candidate window ``[lo_a, hi_a]`` of :meth:`window`, from its observer's calibrated range
    ``[lo, hi]`` (with 0); ``consumers`` are the Linears whose bias grid follows its scale. The port scales both ends
    by ``a`` (``s = a (hi - lo) / (2**b - 1)``, ``zp = rhe(-a lo / s)``), which keeps the zero point of a one-sided
    range at 0 for every ``a``: GELU's negative values (to -0.17) then never have a code."""

    bounds = LINEAR_ALPHAS

    def __init__(self, quantizer: UniformQuantizer, consumers=(), bounds=None):
        self.quantizer, self.consumers = quantizer, tuple(consumers)
        self.bounds = bounds or self.bounds
        self.levels = 2**quantizer.bits - 1
        low, high = quantizer.observer.range()
        self.low, self.high = min(low, 0.0), max(high, 0.0)

    def window(self, alpha: float) -> tuple[float, float]:
        """The candidate's real range: below ``a = 1`` the observed range clipped to ``[-a M, a M]`` (``M`` its
        largest magnitude: only the far end is cut, a one-sided range such as GELU's ``[-0.17, 150]`` keeps its
        small end); from ``a = 1`` both ends times ``a`` (the port's widening)."""
        if alpha >= 1.0:
            return alpha * self.low, alpha * self.high
        magnitude = alpha * max(-self.low, self.high)
        return max(self.low, -magnitude), min(self.high, magnitude)

    def key(self, alpha: float):
        low, high = self.window(alpha)
        scale = snap_scale(max(high - low, 1e-12) / self.levels)
        return scale, int(np.clip(np.round(-low / scale), 0, self.levels))

    def apply(self, alpha: float) -> None:
        scale, zero_point = self.key(alpha)
        self.quantizer.qparams = QParams(scale, zero_point, self.quantizer.bits, False)
        for linear in self.consumers:
            linear.finish()


class PtfRange:
    """A PTF activation quantizer (channel ``c`` at scale ``base * 2**alpha_c``, one zero point), base scale and zero
    point the observer's: candidate ``a`` raises each channel's factor from FQ-ViT's (its least squares on the last
    batch, ``alpha0_c``) until it reaches ``a`` times the channel's observed maximum ``hi_c``:
    ``alpha_c = max(alpha0_c, ceil(log2(a hi_c / (base (2**b - 1 - zp)))))`` in ``0..ptf_alpha_max``, on the
    Linears' input grid (``a >= 1``: nothing clipped; small ``a``: FQ-ViT's factors). Those clip up to 40 % of a
    channel's largest post-GELU values at 8 bits, which costs KL (ViT-Ti W8A8, fast mode: 0.023 against 0.019
    unclipped); the block metric chooses how much to clip. ``consumers`` as for :class:`UniformRange`."""

    def __init__(self, quantizer: PtfQuantizer, consumers=(), bounds=LINEAR_ALPHAS):
        self.quantizer, self.consumers, self.bounds = quantizer, tuple(consumers), bounds
        self.start = quantizer.qparams
        self.high = quantizer.observer.channel_range()[1].clamp(min=0.0)
        self.top = self.start.base_scale * (2**self.start.bits - 1 - self.start.zero_point)

    def factors(self, alpha: float) -> torch.Tensor:
        need = torch.ceil(torch.log2((alpha * self.high / self.top).clamp(min=1.0)))
        return torch.maximum(need.clamp(0, self.start.levels - 1).to(torch.int64), self.start.alpha)

    def key(self, alpha: float):
        return self.factors(alpha).numpy().tobytes()

    def apply(self, alpha: float) -> None:
        self.quantizer.qparams = dataclasses.replace(self.start, alpha=self.factors(alpha))
        for linear in self.consumers:
            linear.finish()


def activation_range(quantizer, consumers, bounds):
    """The searched quantity of an activation quantizer: :class:`PtfRange` for PTF codes, else :class:`UniformRange`
    over ``bounds``."""
    if isinstance(quantizer, PtfQuantizer):
        return PtfRange(quantizer, consumers, bounds)
    return UniformRange(quantizer, consumers, bounds)


class WeightRange:
    """A Linear's asymmetric per-channel weights: each row's ``[min, max]`` (with 0) times ``a``."""

    bounds = LINEAR_ALPHAS

    def __init__(self, linear):
        self.linear = linear
        weight = linear.weight
        self.levels = 2**linear.weight_quantizer.bits - 1
        self.low = weight.min(dim=1).values.clamp(max=0.0)
        self.high = weight.max(dim=1).values.clamp(min=0.0)

    def key(self, alpha: float):
        return float(alpha)

    def apply(self, alpha: float) -> None:
        scales = ((self.high - self.low) * alpha / self.levels).clamp(min=1e-12)
        scales = torch.tensor([snap_scale(float(s)) for s in scales], dtype=torch.float64)
        zero_points = torch.round(-alpha * self.low / scales).clamp(0, self.levels).to(torch.int64)
        self.linear.weight_quantizer.set_parameters(scales, zero_points)
        self.linear.finish()


class SoftmaxRange:
    """MPQ's ``F_h = rhe((2**b - 1) / (a max_h p))`` of one head ``h`` (at least ``2**b - 1``, at most
    ``MAX_FULL_SCALE``); the other heads keep theirs."""

    bounds = MATMUL_ALPHAS

    def __init__(self, quantizer: "MpqSoftmaxQuantizer", head: int):
        self.quantizer, self.head = quantizer, head
        self.levels = 2**quantizer.bits - 1
        self.largest = min(float(quantizer.observer.largest[head]), 1.0)

    def key(self, alpha: float):
        from intsim.ops.softmax import MAX_FULL_SCALE

        return int(min(max(np.round(self.levels / (alpha * self.largest)), self.levels), MAX_FULL_SCALE))

    def apply(self, alpha: float) -> None:
        full = list(self.quantizer.qparams.full_scale)
        full[self.head] = self.key(alpha)
        self.quantizer.qparams = UniformProbsQParams(tuple(full), self.quantizer.bits)


# ------------------------------------------------------------------------------------------ the metric
def bbc_score(reference: torch.Tensor, output: torch.Tensor, gradient: torch.Tensor | None) -> float:
    """APQ-ViT's metric (lower is better): ``mean((g dO)**2)`` over the entries with ``|dO|`` at or above the
    10th percentile of ``|dO|`` (``dO = reference - output``); ``gradient`` None: the plain MSE."""
    error = (reference - output).to(torch.float64)
    if gradient is None:
        return float((error**2).mean())
    magnitude = error.abs()
    threshold = torch.quantile(magnitude.reshape(-1)[:: max(1, magnitude.numel() // 2**24 + 1)], BOTTOM_FRACTION)
    error = torch.where(magnitude < threshold, torch.zeros_like(error), error)
    return float(((gradient * error) ** 2).mean())


class _Capture:
    """The output of one module during a forward (a forward hook), for the layerwise metric."""

    def __init__(self, module):
        self.value = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.value = output.detach()

    def remove(self):
        self.handle.remove()


# ------------------------------------------------------------------------------------------ the search
class ApqSearch:
    """One APQ-ViT calibration of a :class:`~intsim.quant.vit.QuantViT` after its observers ran."""

    def __init__(self, qvit, pixels: torch.Tensor, *, rounds: int, metric: str, input_grid: str = "ptq4vit"):
        self.qvit, self.pixels, self.rounds, self.metric, self.input_grid = qvit, pixels, rounds, metric, input_grid
        with torch.no_grad():
            previous, qvit.mode = qvit.mode, "float"
            self.float_probs = F.softmax(qvit(pixels).to(torch.float64), dim=-1)
            qvit.mode = previous

    # ---------------------------------------------------------------------------------- the model in parts
    def _prefix(self, count: int) -> torch.Tensor:
        """The fast (quantized) output of the embedding and the first ``count`` blocks."""
        self.qvit.mode = "fast"
        with torch.no_grad():
            x = self.qvit.embed(self.pixels)
            for block in self.qvit.blocks[:count]:
                x = block(x)
        return x

    def _gradient(self, count: int, x: torch.Tensor) -> torch.Tensor:
        """``d KL(p_fp || p_q) / d O`` at the output ``O`` of block ``count`` (or at the logits when ``count`` is
        the depth): ``x`` its quantized-prefix input, that block and everything after it in float."""
        qvit = self.qvit
        qvit.mode = "float"
        with torch.enable_grad():
            blocks = list(qvit.blocks)
            if count < len(blocks):
                with torch.no_grad():
                    out = blocks[count](x)
                out = out.detach().requires_grad_(True)
                y = out
                for block in blocks[count + 1:]:
                    y = block(y)
                logits = qvit.head(y)
            else:
                out = qvit.head(x).detach().requires_grad_(True)
                logits = out
            loss = F.kl_div(F.log_softmax(logits.to(torch.float64), dim=-1), self.float_probs, reduction="batchmean")
            loss.backward()
        qvit.mode = "fast"
        return out.grad.detach().to(torch.float64)

    # ---------------------------------------------------------------------------------- one unit
    def _search_unit(self, unit, x, pairs, gradient, bar, layer_of=None) -> None:
        """Search ``pairs`` of quantities of ``unit`` (the embedding, a block or the head) on its input ``x``: by
        :func:`bbc_score` of the unit's output (``gradient`` None: its MSE), or with the layerwise metric and
        ``layer_of`` (quantity id -> module) by the MSE of each quantity's layer output."""
        qvit = self.qvit
        captures = {}
        layerwise = self.metric == "layerwise_mse" and layer_of is not None
        qvit.mode = "float"
        with torch.no_grad():
            if layerwise:
                layers = {id(layer_of[id(q)]): layer_of[id(q)] for pair in pairs for q in pair}
                captures = {key: _Capture(layer) for key, layer in layers.items()}
                unit(x)
                references = {key: capture.value for key, capture in captures.items()}
            else:
                reference = unit(x)
        qvit.mode = "fast"

        def score_of(quantity):
            def score(alpha):
                quantity.apply(alpha)
                with torch.no_grad():
                    out = unit(x)
                if layerwise:
                    key = id(layer_of[id(quantity)])
                    return bbc_score(references[key], captures[key].value, None)
                return bbc_score(reference, out, gradient)
            return score

        try:
            for _ in range(self.rounds):
                for pair in pairs:
                    for quantity in pair:
                        grid = alpha_grid(quantity.bounds)
                        cache = {}
                        score = score_of(quantity)

                        def keyed(index, grid=grid, cache=cache, score=score, quantity=quantity):
                            key = quantity.key(grid[index])
                            if key not in cache:
                                cache[key] = score(grid[index])
                            return cache[key]
                        quantity.apply(grid[coarse_to_fine(keyed, len(grid))])
                    bar.update(1)
        finally:
            for capture in captures.values():
                capture.remove()

    def _block_pairs(self, block):
        attn, mlp = block.attn, block.mlp
        inputs = INPUT_ALPHAS[self.input_grid]
        probs = [SoftmaxRange(attn.probs, head) for head in range(attn.heads)] \
            if isinstance(attn.probs, MpqSoftmaxQuantizer) else []
        matmul = MATMUL_ALPHAS
        pairs = [
            (WeightRange(attn.qkv), UniformRange(block.norm1.output, [attn.qkv], inputs)),
            (UniformRange(attn.q, bounds=matmul), UniformRange(attn.k, bounds=matmul)),
            (*probs, UniformRange(attn.v, bounds=matmul)),
            (WeightRange(attn.proj), UniformRange(attn.context_out, [attn.proj], inputs)),
            (WeightRange(mlp.fc1), UniformRange(block.norm2.output, [mlp.fc1], inputs)),
            (WeightRange(mlp.fc2), activation_range(mlp.gelu, [mlp.fc2], inputs)),
        ]
        layers = [attn.qkv, attn, attn, attn.proj, mlp.fc1, mlp.fc2]
        layer_of = {id(q): layer for pair, layer in zip(pairs, layers) for q in pair}
        return pairs, layer_of

    def run(self, progress=None) -> None:
        qvit = self.qvit
        for quantizer in qvit.points.values():
            quantizer.finish()
        for linear in qvit.linears_q.values():
            linear.finish()
        blocks = list(qvit.blocks)
        total = self.rounds * (1 + 6 * len(blocks) + 1)
        bar = progress if progress is not None else tqdm(total=total, desc="apq search", unit="pair")
        try:
            # the patch embedding: nothing before it is quantized, so the KL gradient is zero there: its output MSE
            self._search_unit(qvit.embed, self.pixels, [(WeightRange(qvit.embed.linear),)], None, bar)
            for index, block in enumerate(blocks):
                x = self._prefix(index)
                gradient = self._gradient(index, x) if self.metric == "bbc" else None
                pairs, layer_of = self._block_pairs(block)
                self._search_unit(block, x, pairs, gradient, bar, layer_of)
            x = self._prefix(len(blocks))
            gradient = self._gradient(len(blocks), x) if self.metric == "bbc" else None
            head = qvit.head
            pairs = [(WeightRange(head.linear), UniformRange(head.norm.output, [head.linear],
                                                              INPUT_ALPHAS[self.input_grid]))]
            self._search_unit(head, x, pairs, gradient, bar, {id(q): head.linear for q in pairs[0]})
        finally:
            if progress is None:
                bar.close()
        for linear in qvit.linears_q.values():
            linear.finish()


def _metric_pixels(batches, count: int, seed: int) -> torch.Tensor:
    pixels = torch.cat([torch.as_tensor(b) for b in batches])
    if pixels.shape[0] > count:
        chosen = np.sort(np.random.default_rng(seed).choice(pixels.shape[0], count, replace=False))
        pixels = pixels[torch.as_tensor(chosen)]
    return pixels


def _apq(qvit, batches, progress=None) -> None:
    config = qvit.context.config
    batches = list(batches)
    observe(qvit, batches, progress)
    search = ApqSearch(qvit, _metric_pixels(batches, config.apq_metric_images, config.search_seed),
                       rounds=config.search_rounds, metric=config.apq_metric, input_grid=config.apq_input_grid)
    search.run()


# ------------------------------------------------------------------------------------------ MPQ
class HeadMaxObserver:
    """The largest float attention probability of each head (probabilities ``(B, heads, N, N)``); :meth:`qparams`
    gives each head ``F = floor((2**b - 1) / largest)`` (within ``[2**b - 1, MAX_FULL_SCALE]``), as
    :class:`~intsim.quant.observers.SoftmaxMaxObserver` does for one tensor."""

    def __init__(self, bits: int):
        self.bits = bits
        self.largest = None

    def update(self, probs: torch.Tensor) -> None:
        if probs.dim() != 4:
            raise ValueError(f"HeadMaxObserver: attention probabilities must be (B, heads, N, N), got shape "
                             f"{tuple(probs.shape)}")
        largest = probs.detach().to(torch.float64).amax(dim=(0, 2, 3)).numpy()
        self.largest = largest if self.largest is None else np.maximum(self.largest, largest)

    def qparams(self) -> UniformProbsQParams:
        if self.largest is None or not (self.largest > 0).all():
            raise RuntimeError("HeadMaxObserver: no positive attention probability observed in some head")
        return UniformProbsQParams(tuple(full_scale_of(float(p), self.bits) for p in self.largest), self.bits)


class MpqSoftmaxQuantizer(UniformSoftmaxQuantizer):
    """APQ-ViT's Matthew-effect preserving quantizer of the attention probabilities, one ``F_h`` per head: codes
    ``min(rhe(p F_h), 2**b - 1)`` (zero point 0, value ``c / F_h``), ``F_h`` searched by the ``apq`` method
    (:class:`SoftmaxRange`) from the observer's ``floor((2**b - 1) / max_h p)``. Integer ops: those of
    ``uniform_softmax`` (:meth:`UniformSoftmaxQuantizer.emit`) with ``full_scale`` one per head."""

    def make_observer(self):
        return HeadMaxObserver(self.bits)

    def effective(self) -> UniformProbsQParams:
        if self.qparams is None:
            raise RuntimeError(f"{self.name}: MPQ needs calibration (its full scales are per head)")
        return self.qparams


def _register() -> None:
    from intsim.quant.quantizers import QuantizerKind, register_quantizer

    register_quantizer(QuantizerKind("mpq", MpqSoftmaxQuantizer, ("post_softmax",), (2, 16),
                                     "APQ-ViT's MPQ: uniform softmax codes, F searched (zero exact, small values "
                                     "vanish)"))
    register_method(Method("apq", _apq, "APQ-ViT: alpha-grid search of every scale by the bottom-eliminated, "
                                        "KL-gradient-weighted block-output error (BBC), MPQ softmax"))


_register()
