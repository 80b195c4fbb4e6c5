"""The ``adalog`` method: AdaLog's calibration (ECCV 2024) over intsim's quantized layers.

What it does, after FQ-ViT-style observers have given every point a starting range (``shared/research/
ptq_methods.md`` sections 1.4-1.5, with the choices below):

1. one float64 pass over the calibration images records the float input of every quantization point (AdaLog:
   every layer is searched on *float* inputs and float reference outputs, not on the quantized prefix);
2. layer by layer, in model order, FPCS (:func:`intsim.quant.fpcs.fpcs`) picks
   - each Linear's asymmetric per-output-channel weight scales and zero points: first by weight MSE, then, for
     ``search_rounds`` rounds, by the layer-output MSE with its quantized input;
   - its uniform input quantizer (the LayerNorm outputs, the attention context): by the layer-output MSE;
   - fc2's AdaLog post-GELU quantizer: ``q`` swept over its allowed range, then ``(q, s)`` jointly, by fc2's
     output MSE;
   - q and k (per tensor) by the attention scores' MSE, v and the post-softmax AdaLog ``q`` by the MSE of
     ``attn @ V``;
3. every Linear is finished (weights quantized, biases on the accumulator grid, fc2's ``-W_q eta`` folded in).

Choices where intsim differs from AdaLog's code (stated in ``docs/quantization.md``): q, k and v are per tensor
(intsim's attention ops take one zero point per operand; AdaLog: per head); the post-LayerNorm channel-wise
search is folded RepQ-ViT-style into the LayerNorm affine and the next Linear (:meth:`AdaLogSearch.reparameterize`);
the post-softmax scale is 1 (AdaLog's too); ``q`` is bounded by the 48-bit exact accumulator rule
(:func:`intsim.quant.log_quantizers.largest_q`); the activation searches rank candidates on a seeded subsample of
``search_tokens`` rows (the weight search uses Gram matrices of all rows). The candidates' errors are computed by
the float64 kernels of :mod:`intsim.quant.search_kernels` and, for ``q k^T``, in Gram form.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from intsim.quant.fpcs import GramError, fpcs, percentile_scale_grid
from intsim.quant.log_quantizers import GELU_SHIFT, LogActivationQuantizer, LogQParams, LogSoftmaxQuantizer, largest_q
from intsim.quant.methods import Method, observe, register_method
from intsim.quant.qparams import QParams, snap_scale
from intsim.quant.search_kernels import fake_uniform, log_decode, uniform_candidate_rows, uniform_rows_error

__all__ = ["AdaLogSearch"]

CANDIDATES = 128  # AdaLog's eq_n
KEEP = 16
LOG_KEEP = 32


def _subsample(rows: np.ndarray, count: int, rng) -> np.ndarray:
    if rows.shape[0] <= count:
        return rows
    return rows[np.sort(rng.choice(rows.shape[0], count, replace=False))]


def _flat(tensors) -> np.ndarray:
    return np.concatenate([t.reshape(-1, t.shape[-1]) for t in tensors]).astype(np.float64)


# ------------------------------------------------------------------------------------------ candidate grids
def weight_candidates(weight: np.ndarray, bits: int):
    """AdaLog's weight grid per output row: ``min(16, 2**(b-1))`` zero points around ``2**(b-1)`` times scales from
    ``(P90 - P10) / (2**b - 1)`` to ``(max - min) / (2**b - 1)``: 128 candidates per row."""
    levels = 2**bits - 1
    zero_points = min(16, 2 ** (bits - 1))
    p10, p90 = np.quantile(weight, [0.1, 0.9], axis=1)
    scales, spacing = percentile_scale_grid(p10, p90, weight.min(axis=1), weight.max(axis=1), levels,
                                            CANDIDATES // zero_points)
    zps = 2 ** (bits - 1) - zero_points // 2 + np.arange(zero_points)
    rows = weight.shape[0]
    return (np.repeat(scales, zero_points, axis=1), np.tile(zps, (rows, scales.shape[1])), spacing)


def activation_candidates(rows: np.ndarray, bits: int):
    """Uniform grids per row of ``rows`` (R, T) (one row: a per-tensor quantizer; a row per channel: the channel-wise
    search): ``min(16, 2**b)`` zero points around the one each scale's range implies, times scales from
    ``(P90 - P10)`` to ``(max - min)`` over ``2**b - 1``; 128 candidates per row."""
    levels = 2**bits - 1
    zero_points = min(16, 2**bits)
    count = CANDIDATES // zero_points
    p10, p90 = np.quantile(rows, [0.1, 0.9], axis=1)
    low, high = rows.min(axis=1), rows.max(axis=1)
    scales, spacing = percentile_scale_grid(p10, p90, low, high, levels, count)
    lows = p10[:, None] + (low - p10)[:, None] * np.linspace(0.0, 1.0, count)
    centre = np.clip(np.round(-lows / np.maximum(scales, 1e-12)), 0, levels)
    zps = np.clip(centre[:, :, None] + np.arange(zero_points) - zero_points // 2, 0, levels)
    return np.repeat(scales, zero_points, axis=1), zps.reshape(rows.shape[0], -1).astype(np.int64), spacing


def uniform_qparams(scale: float, zero_point: int, bits: int) -> QParams:
    return QParams(snap_scale(float(scale)), int(zero_point), bits, False)


def _log_values(qparams: LogQParams, x: np.ndarray) -> np.ndarray:
    """``dequantize(quantize(x)) - offset`` of a post-GELU log quantizer (what fc2 sees once ``eta`` is in its
    bias), float64, by :func:`~intsim.quant.search_kernels.log_decode`."""
    return log_decode(x, qparams.offset, qparams.thresholds.numpy()[::-1], qparams.values.numpy())


def _product_error(other: np.ndarray, reference: np.ndarray):
    """``error(x) = sum((x @ other^T - reference)**2)`` over batched heads ``(..., T, D)``, in the Gram form
    ``sum(x * (x G)) - 2 sum(x * (reference @ other)) + sum(reference**2)`` with ``G = other^T other`` (a
    ``D x D`` product per head instead of ``T x T``)."""
    gram = other.transpose(0, 1, 3, 2) @ other
    cross = reference @ other
    constant = float((reference**2).sum())

    def error(x: np.ndarray) -> float:
        return float(((x @ gram) * x).sum() - 2.0 * (x * cross).sum()) + constant
    return error


# ------------------------------------------------------------------------------------------ the search
class AdaLogSearch:
    """The state of one AdaLog calibration: recorded float inputs, search options, progress."""

    def __init__(self, qvit, batches, *, rounds: int, steps: int, tokens: int, seed: int, progress=None):
        self.qvit, self.rounds, self.steps, self.tokens = qvit, rounds, steps, tokens
        self.rng = np.random.default_rng(seed)
        self.inputs = self._record(batches, progress)

    def _record(self, batches, progress) -> dict[str, list[np.ndarray]]:
        """Observers run (the starting ranges) and every point's float input is kept (float64 numpy)."""
        recorded: dict[str, list[np.ndarray]] = {}
        originals = {}
        for name, quantizer in self.qvit.points.items():
            originals[name] = quantizer.observe

            def capture(x, name=name, observe_original=quantizer.observe):
                recorded.setdefault(name, []).append(x.detach().to(torch.float64).numpy().copy())
                observe_original(x)
            quantizer.observe = capture
        patches = []
        hook = self.qvit.embed.linear.register_forward_hook(
            lambda module, args, output: patches.append(args[0].detach().to(torch.float64).numpy().copy()))
        try:
            observe(self.qvit, batches, progress)
        finally:
            hook.remove()
            for name, quantizer in self.qvit.points.items():
                quantizer.observe = originals[name]
        recorded["patch_embed.patches"] = patches
        return recorded

    # --------------------------------------------------------------------------------------- linears
    def search_weights(self, linear, quantized_input=None, reference_input=None) -> np.ndarray:
        """FPCS of a Linear's asymmetric weights; by weight MSE without inputs, else by output MSE. Sets the
        quantizer's parameters; returns the dequantized weight (N, K)."""
        weight = linear.weight.numpy()
        bits = linear.weight_quantizer.bits
        scales, zps, spacing = weight_candidates(weight, bits)
        if quantized_input is None:
            def error(s, z):
                return uniform_rows_error(weight, s, z, bits)
        else:
            gram = GramError.of(quantized_input, reference_input, weight)

            def error(s, z):
                return gram(uniform_candidate_rows(weight, s, z, bits))
        best_s, best_z, _ = fpcs(scales, zps, spacing, error, keep=KEEP, steps=self.steps)
        best_s = np.array([snap_scale(float(v)) for v in best_s])
        linear.weight_quantizer.set_parameters(best_s, best_z)
        return uniform_candidate_rows(weight, best_s[:, None], best_z[:, None], bits)[:, 0, :]

    def search_uniform_input(self, quantizer, x: np.ndarray, weight: np.ndarray, weight_q: np.ndarray) -> np.ndarray:
        """FPCS of a per-tensor uniform input quantizer by the output MSE of ``x W^T`` (quantized weights);
        returns the quantized inputs."""
        bits = quantizer.bits
        sample = _subsample(x, self.tokens, self.rng)
        reference = sample @ weight.T
        gram = weight_q.T @ weight_q
        target = reference @ weight_q  # (T, K): <x_q W_q^T, Y> = sum(x_q * (Y W_q))
        constant = float((reference**2).sum())
        scales, zps, spacing = activation_candidates(sample.reshape(1, -1), bits)

        def error(s, z):
            out = np.empty(s.shape[1])
            for index in range(s.shape[1]):
                xq = fake_uniform(sample, s[0, index], z[0, index], bits)
                out[index] = float(((xq @ gram) * xq).sum() - 2.0 * (xq * target).sum()) + constant
            return out[None, :]
        best_s, best_z, _ = fpcs(scales, zps, spacing, error, keep=KEEP, steps=self.steps, min_scale=1e-4)
        quantizer.qparams = uniform_qparams(best_s[0], best_z[0], bits)
        return fake_uniform(x, quantizer.qparams.scale, quantizer.qparams.zero_point, bits)

    def search_linear(self, linear, x: np.ndarray, progress) -> None:
        """The schedule of a Linear with a uniform (or no) input quantizer: weights by weight MSE, then rounds of
        (input quantizer, weights) by output MSE."""
        quantizer = linear.input_quantizer
        weight = linear.weight.numpy()
        weight_q = self.search_weights(linear)
        xq = x if quantizer is None else None
        for _ in range(self.rounds):
            if quantizer is not None:
                xq = self.search_uniform_input(quantizer, x, weight, weight_q)
            weight_q = self.search_weights(linear, xq, x)
            progress.update(1)

    def reparameterize(self, norm, linear, x: np.ndarray) -> np.ndarray:
        """AdaLog's post-LayerNorm step: a channel-wise search of the LayerNorm's output quantizer (per channel
        ``(s_c, z_c)`` by the MSE of the codes' values), folded RepQ-ViT-style into one per-tensor quantizer
        (``s* = mean s_c``, ``z* = rhe(mean z_c)``, ``r = s_c / s*``, ``beta = s* (z* - z_c)``: the per-tensor codes of
        ``x / r - beta`` are the per-channel codes of ``x``) and into ``linear``. Returns the transformed inputs."""
        bits = norm.output.bits
        columns = _subsample(x, self.tokens, self.rng).T  # (C, T)
        scales, zps, spacing = activation_candidates(columns, bits)

        def error(s, z):
            return uniform_rows_error(columns, s, z, bits)
        best_s, best_z, _ = fpcs(scales, zps, spacing, error, keep=KEEP, steps=self.steps, min_scale=1e-6)
        # on the scale grid: the float inputs differ between CPU instruction paths in their last bits, and so would
        # (r, beta), which the Program stores (see docs/quantization.md, "The same Program on every CPU")
        best_s = np.array([snap_scale(float(v)) for v in best_s])
        s_star = snap_scale(float(best_s.mean()))
        z_star = float(np.round(best_z.mean()))
        r, beta = best_s / s_star, s_star * (z_star - best_z)
        norm.reparameterize(torch.as_tensor(r), torch.as_tensor(beta), linear)
        return x / r - beta

    def search_fc2(self, linear, x: np.ndarray, progress) -> None:
        """fc2 after AdaLog post-GELU codes: weights by weight MSE, then rounds of ((q, s) of the log quantizer,
        weights) by fc2's output MSE."""
        quantizer = linear.input_quantizer
        weight = linear.weight.numpy()
        weight_q = self.search_weights(linear)
        for _ in range(self.rounds):
            xq = self.search_log_gelu(quantizer, x, weight, weight_q)
            weight_q = self.search_weights(linear, xq, x)
            progress.update(1)

    def search_log_gelu(self, quantizer: LogActivationQuantizer, x, weight, weight_q) -> np.ndarray:
        """AdaLog's post-GELU search: every allowed ``q`` at the current scale (best 8 kept), then 16 scales between
        P90 and P100 of the positive values (plus eta) for each: 128 joint candidates, FPCS over the scale."""
        bits = quantizer.bits
        sample = _subsample(x, self.tokens, self.rng)
        reference = sample @ weight.T
        low, high = quantizer.q_range
        weight_span = 2 ** self.qvit.context.config.weights.bits - 1  # |w - z| of b-bit asymmetric weights
        high = min(high, largest_q(bits, weight.shape[1], weight_span))

        def decoded(q, s):
            return _log_values(LogQParams(bits, int(q), float(s), GELU_SHIFT), sample)

        def error(s, qs):
            out = np.empty(s.shape[1])
            for index in range(s.shape[1]):
                out[index] = float(((decoded(qs[0, index], s[0, index]) @ weight_q.T - reference) ** 2).sum())
            return out[None, :]
        positive = sample[sample > 0]
        p90, p100 = (np.quantile(positive, [0.9, 1.0]) if positive.size else (1.0, 1.0))
        grid = np.linspace(p90, p100, 16) + GELU_SHIFT
        start = grid[-2] if quantizer.qparams is None or quantizer.qparams.q == quantizer.default_q \
            else quantizer.qparams.scale
        qs = np.arange(low, high + 1)
        sweep = error(np.full((1, qs.size), start), qs[None, :])[0]
        best_q = qs[np.argsort(sweep, kind="stable")[: min(8, qs.size)]]
        scales = np.tile(grid, best_q.size)[None, :]
        fixed = np.repeat(best_q, grid.size)[None, :]
        spacing = np.array([max((grid[-1] - grid[0]) / 15, 1e-12)])
        best_s, best_qv, _ = fpcs(scales, fixed, spacing, error, keep=min(LOG_KEEP, scales.shape[1]),
                                  steps=self.steps, min_scale=1e-4)
        quantizer.set_parameters(int(best_qv[0]), snap_scale(float(best_s[0])))
        return _log_values(quantizer.qparams, x)

    # --------------------------------------------------------------------------------------- attention
    def search_attention(self, attention, progress) -> None:
        """q and k by the scores' MSE, then the post-softmax ``q`` and v by ``attn @ V``'s MSE, ``rounds`` times."""
        p, heads = attention.prefix, attention.heads
        take = min(len(self.inputs[f"{p}.q"]), 2)  # the first batches (AdaLog's matmul search is per batch too)
        q, k, v = (np.concatenate(self.inputs[f"{p}.{n}"][:take]).astype(np.float64) for n in "qkv")
        probs = np.concatenate(self.inputs[f"{p}.probs"][:take]).astype(np.float64)
        images = min(q.shape[0], 8)
        q, k, v, probs = q[:images], k[:images], v[:images], probs[:images]
        width = q.shape[-1] // heads

        def split(t):
            return t.reshape(t.shape[0], t.shape[1], heads, width).transpose(0, 2, 1, 3)
        qh, kh, vh = split(q), split(k), split(v)
        reference_scores = qh @ kh.transpose(0, 1, 3, 2)
        reference_values = probs @ vh
        kq, vq = kh, vh
        for _ in range(self.rounds):
            qq = self._search_operand(attention.q, qh, _product_error(kq, reference_scores))
            kq = self._search_operand(attention.k, kh, _product_error(qq, reference_scores.transpose(0, 1, 3, 2)))
            if isinstance(attention.probs, LogSoftmaxQuantizer):
                self._search_softmax(attention.probs, probs, vq, reference_values)
            pq = self._decode_probs(attention.probs, probs)
            vq = self._search_operand(attention.v, vh, lambda cand: float(((pq @ cand - reference_values) ** 2).sum()))
            progress.update(1)

    def _search_operand(self, quantizer, x, output_error) -> np.ndarray:
        """FPCS of a per-tensor uniform attention operand ``x`` by ``output_error(fake-quantized x)``."""
        bits = quantizer.bits
        flat = x.reshape(-1)
        scales, zps, spacing = activation_candidates(_subsample(flat[:, None], 200_000, self.rng).reshape(1, -1), bits)

        def error(s, z):
            return np.array([[output_error(fake_uniform(x, s[0, i], z[0, i], bits)) for i in range(s.shape[1])]])
        best_s, best_z, _ = fpcs(scales, zps, spacing, error, keep=KEEP, steps=self.steps, min_scale=1e-4)
        quantizer.qparams = uniform_qparams(best_s[0], best_z[0], bits)
        return fake_uniform(x, quantizer.qparams.scale, quantizer.qparams.zero_point, bits)

    @staticmethod
    def _decode_probs(quantizer: LogSoftmaxQuantizer, probs: np.ndarray) -> np.ndarray:
        values, _ = quantizer.fake_quant(torch.as_tensor(probs))
        return values.numpy()

    def _search_softmax(self, quantizer: LogSoftmaxQuantizer, probs, vq, reference) -> None:
        """Every allowed ``q`` (scale 1) by the MSE of ``attn_q @ v_q`` against the float ``attn @ v``."""
        bits = quantizer.bits
        low, high = quantizer.q_range
        v_span = 2 ** self.qvit.context.config.qkv.bits - 1  # |v - zp| <= 2**b - 1: the bound the op declares
        high = min(high, largest_q(bits, probs.shape[-1], v_span))
        best, best_error = None, None
        for q in range(low, high + 1):
            quantizer.set_parameters(q, 1.0)
            err = float(((self._decode_probs(quantizer, probs) @ vq - reference) ** 2).sum())
            if best_error is None or err < best_error:
                best, best_error = q, err
        quantizer.set_parameters(best, 1.0)

    # --------------------------------------------------------------------------------------- the whole model
    def run(self, progress=None) -> None:
        qvit = self.qvit
        for quantizer in qvit.points.values():
            quantizer.finish()
        blocks = list(qvit.blocks)
        total = self.rounds * (2 + 5 * len(blocks))
        bar = progress if progress is not None else tqdm(total=total, desc="adalog search", unit="step")
        try:
            self.search_linear(qvit.embed.linear, _flat(self.inputs["patch_embed.patches"]), bar)
            for block in blocks:
                attn, mlp = block.attn, block.mlp
                normed = self.reparameterize(block.norm1, attn.qkv, _flat(self.inputs[block.norm1.output.name]))
                self.search_linear(attn.qkv, normed, bar)
                self.search_attention(attn, bar)
                self.search_linear(attn.proj, _flat(self.inputs[attn.context_out.name]), bar)
                normed = self.reparameterize(block.norm2, mlp.fc1, _flat(self.inputs[block.norm2.output.name]))
                self.search_linear(mlp.fc1, normed, bar)
                if isinstance(mlp.gelu, LogActivationQuantizer):
                    self.search_fc2(mlp.fc2, _flat(self.inputs[mlp.gelu.name]), bar)
                else:
                    self.search_linear(mlp.fc2, _flat(self.inputs[mlp.gelu.name]), bar)
            head_inputs = [x[:, 0] for x in self.inputs[qvit.head.norm.output.name]]
            self.search_linear(qvit.head.linear, self.reparameterize(qvit.head.norm, qvit.head.linear,
                                                                      _flat(head_inputs)), bar)
        finally:
            if progress is None:
                bar.close()
        for linear in qvit.linears_q.values():
            linear.finish()


def _adalog(qvit, batches, progress=None) -> None:
    config = qvit.context.config
    search = AdaLogSearch(qvit, batches, rounds=config.search_rounds, steps=config.search_steps,
                          tokens=config.search_tokens, seed=config.search_seed, progress=progress)
    search.run()


register_method(Method("adalog", _adalog, "AdaLog: FPCS search of weights, uniform and AdaLog quantizers by "
                                          "layer-output MSE on float inputs"))
