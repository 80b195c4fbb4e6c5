"""PFCR: progressive fine-to-coarse reconstruction with learned weight rounding (AdaRound) and learned activation
step sizes (LSQ), over intsim's quantized layers.

Reconstruction changes values, not quantizer types, so its result is an ordinary Program: each Linear's learned
codes are its ``weight`` constant and each learned step size is its tensor's ``scale`` (snapped to the scale grid,
:func:`~intsim.quant.qparams.snap_scale`), exported and restored like any other.

Learned rounding of one Linear (AdaRound, as in AdaLog's ``block_recon.py``; ``shared/research/ptq_methods.md``
section 1.6), with the layer's calibrated scales ``s_n`` and zero points ``z_n`` (0 for symmetric weights) fixed:

* soft code ``c~ = clamp(floor(w / s) + z + h(V), lo, hi)``, ``h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)``
  (the rectified sigmoid, ``zeta = 1.1``, ``gamma = -0.1``), ``V`` initialised so that ``h(V) = frac(w / s)``;
* the fast model's weight is ``s (c~ - z)`` while the Linear reconstructs; the hard code is
  ``clamp(floor(w / s) + z + [V >= 0], lo, hi)``;
* rounding loss ``lambda * sum(1 - |2 h(V) - 1|**beta)`` (``lambda = 0.01``), ``beta`` annealed from 20 to 2
  after a warm-up of 20 % of a unit's iterations (no rounding loss before).

Learned step size of one uniform activation point (per tensor, at most 8 bits: the MAC inputs; the 16-bit
residual stream and GELU index are left alone): ``s = s0 exp(u)``, ``u`` from 0, codes
``clamp(round(x / s) + z, qmin, qmax)`` with a straight-through round, so the gradient reaches ``s`` (LSQ) and
``x``; the zero point stays. Adam on ``u`` (:data:`SCALE_LEARNING_RATE`, cosine to 0 over a unit). The log
quantizers (LIS, AdaLog, log2) and PTF factors keep their calibrated parameters.

The schedule (POS, the progressive optimization strategy: two stages, the granularity diminishing), each unit
against the float model's output of the same unit on the float model's input. What the quantized unit reads is
``pfcr_inputs``: the float model's inputs (``float``, AdaLog's choice), the quantized prefix's (``quantized``,
BRECQ's: the fast model's values into the unit, after everything learned before it), or each element from either
with probability 1/2, drawn anew every step (``mix``, QDrop's, the default):

1. the patch embedding (MSE at the residual stream);
2. for each block: stage 1, rounding only, the attention unit ``x + attn(norm1(x))`` then the MLP unit
   ``h + mlp(norm2(h))``; stage 2, the whole block, the units' rounding variables continued (not
   re-initialised) with the block's step sizes learned too, ``beta`` annealed again;
3. groups of ``pfcr_group_blocks`` consecutive blocks (stage 2 again, ``pfcr_iterations / pfcr_group_blocks``
   steps: the compute of one block pass);
4. the head (final LayerNorm and the head Linear on the class token) with the KL divergence of the float logits'
   softmax from the quantized one's.

Unit loss: the squared error summed over the channels, averaged over the tokens of a batch of 32 images drawn with
a seeded generator (one per unit), Adam on ``V`` (:data:`LEARNING_RATE`). A unit whose hard loss ends above its
start is put back to its start (codes, variables, step sizes; ``UnitLoss.kept`` is False). The base calibration
sees the first ``pfcr_base_images`` images; the reconstruction sees all. Deterministic for the same images and ``search_seed``
on one device; with a checkpoint directory (:func:`run_options`) every finished unit is saved and an interrupted
run resumes after the last one with the same result.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = ["ZETA", "GAMMA", "LEARNING_RATE", "SCALE_LEARNING_RATE", "SoftRounding", "LearnedScale", "UnitLoss",
           "reconstruct_unit", "reconstruct_block", "reconstruct", "run_options"]

ZETA, GAMMA = 1.1, -0.1  # AdaRound's stretch of the sigmoid
WARMUP = 0.2  # fraction of the iterations without the rounding loss
BETA = (20.0, 2.0)
ROUNDING_WEIGHT = 0.01
LEARNING_RATE = 1e-2  # the pfcr method's Adam step on V: 10x AdaLog's 1e-3, for 500 steps per unit against 20000
SCALE_LEARNING_RATE = 1e-3  # Adam on log(s / s0): at most about e^{+-0.5} over 500 steps
BATCH = 32
DROP = 0.5  # QDrop: the probability of the float value in a mixed input
INPUTS = ("float", "quantized", "mix")
LEARNABLE_SCALE_BITS = 8


def _code_range(linear) -> tuple[int, int]:
    bits = linear.weight_quantizer.bits
    if linear.weight_zero_points is not None:
        return 0, 2**bits - 1
    return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1


class SoftRounding:
    """The rounding variables ``V`` of one calibrated :class:`~intsim.quant.layers.QuantLinear` (module docstring)."""

    def __init__(self, linear):
        if linear.codes is None:
            raise RuntimeError(f"{linear.name}: learned rounding needs a calibrated layer (codes and scales)")
        self.linear = linear
        self.scales = linear.scales.to(torch.float64)
        zero_points = linear.weight_zero_points
        self.zero_points = torch.zeros_like(self.scales, dtype=torch.int64) if zero_points is None else zero_points
        self.low, self.high = _code_range(linear)
        ratio = linear.weight / self.scales[:, None]
        self.floor = torch.floor(ratio) + self.zero_points[:, None].to(torch.float64)
        rest = (ratio - torch.floor(ratio)).clamp(1e-4, 1 - 1e-4)
        self.variables = torch.log((rest - GAMMA) / (ZETA - rest)).to(torch.float32).requires_grad_(True)

    def h(self) -> torch.Tensor:
        return (torch.sigmoid(self.variables) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def weight(self) -> torch.Tensor:
        """The soft weight ``s (c~ - z)`` (float32, differentiable in ``V``)."""
        codes = (self.floor.to(torch.float32) + self.h()).clamp(self.low, self.high)
        centred = codes - self.zero_points[:, None].to(torch.float32)
        return centred * self.scales[:, None].to(torch.float32)

    def hard_codes(self) -> torch.Tensor:
        rounded_up = (self.variables.detach() >= 0).to(torch.float64)
        return (self.floor + rounded_up).clamp(self.low, self.high).to(torch.int64)

    def rounding_loss(self, beta: float) -> torch.Tensor:
        return (1.0 - (2.0 * self.h() - 1.0).abs().pow(beta)).sum()


class LearnedScale:
    """The learned step size of one uniform activation quantizer (module docstring): ``s = s0 exp(u)``."""

    def __init__(self, quantizer):
        self.quantizer = quantizer
        self.start = quantizer.qparams
        self.log_ratio = torch.zeros((), dtype=torch.float32, requires_grad=True)

    @staticmethod
    def applies(quantizer) -> bool:
        from intsim.quant.quantizers import UniformQuantizer

        return type(quantizer) is UniformQuantizer and quantizer.bits <= LEARNABLE_SCALE_BITS

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        qp = self.start
        scale = qp.scale * torch.exp(self.log_ratio)
        ratio = x / scale
        codes = (ratio + (torch.round(ratio) - ratio).detach() + qp.zero_point).clamp(qp.qmin, qp.qmax)
        return (codes - qp.zero_point) * scale

    def learned_scale(self) -> float:
        from intsim.quant.qparams import snap_scale

        return snap_scale(self.start.scale * math.exp(float(self.log_ratio.detach())))


def _set_scale(qvit, quantizer, scale: float) -> None:
    """Give ``quantizer`` the step ``scale`` and re-finish the Linears that read it (their bias grid moved)."""
    from dataclasses import replace

    quantizer.qparams = replace(quantizer.qparams, scale=scale)
    for linear in qvit.linears_q.values():
        if linear.input_quantizer is quantizer:
            linear.finish()


@dataclass
class UnitLoss:
    """A unit's loss with hard rounding and calibrated (``before``) / learned (``after``) values, on its
    training inputs, and the seconds it took. ``kept`` is False where ``after > before``: the unit's codes, rounding
    variables and step sizes were put back to their start."""

    name: str
    before: float
    after: float
    seconds: float = 0.0
    kept: bool = True


@dataclass
class _Unit:
    """One reconstruction unit: ``forward(inputs) -> outputs`` in fast mode, its Linears and learnable points."""

    name: str
    forward: object
    linears: list
    points: list
    inputs: torch.Tensor
    target: torch.Tensor
    iterations: int
    loss: str = "mse"
    quantized: torch.Tensor | None = None  # the quantized prefix's inputs, where they feed the unit


def _unit_loss(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "kl":
        return torch.nn.functional.kl_div(output.log_softmax(-1), target.log_softmax(-1), log_target=True,
                                          reduction="batchmean")
    return ((output - target) ** 2).sum(dim=-1).mean()


def _evaluate(unit: _Unit) -> float:
    with torch.no_grad():
        total = 0.0
        for start in range(0, unit.inputs.shape[0], BATCH):
            rows = slice(start, start + BATCH)
            total += float(_unit_loss(unit.loss, unit.forward(unit.inputs[rows]), unit.target[rows])) \
                * unit.inputs[rows].shape[0]
        return total / unit.inputs.shape[0]


def reconstruct_unit(name: str, unit, roundings: list[SoftRounding], x: torch.Tensor, target: torch.Tensor, *,
                     iterations: int, batch_size: int = BATCH, lr: float = 1e-3, weight: float = ROUNDING_WEIGHT,
                     seed: int = 0, progress=None, scales: list[LearnedScale] = (), loss: str = "mse",
                     qvit=None, quantized: torch.Tensor | None = None) -> UnitLoss:
    """Learn the rounding of ``roundings`` (and the step sizes ``scales``) so that ``unit(x)`` (the fast model)
    matches ``target``; the layers are left with their hard learned codes and snapped learned steps. ``loss``:
    ``mse`` or ``kl`` (over the last axis). With ``quantized`` (the quantized prefix's inputs, same shape as
    ``x``), each step's input takes each element from ``x`` or ``quantized`` with probability 1/2 (QDrop) and the
    losses reported are on ``quantized``. Deterministic for a seed on one device."""
    import time

    start_time = time.time()
    linears = [r.linear for r in roundings]
    context = qvit.context if qvit is not None else linears[0].context
    spec = _Unit(name, unit, linears, list(scales), x if quantized is None else quantized, target, iterations, loss)
    before = _evaluate(spec)
    start_roundings = [(r, r.variables.detach().clone(), r.linear.learned_codes) for r in roundings]
    start_scales = [(s.quantizer, s.quantizer.qparams.scale) for s in scales]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam([r.variables for r in roundings], lr=lr)
    scale_optimizer = torch.optim.Adam([s.log_ratio for s in scales], lr=SCALE_LEARNING_RATE) if scales else None
    for linear, rounding in zip(linears, roundings):
        linear.soft_rounding = rounding
    context.trained_scales = {s.quantizer.name: s for s in scales}
    try:
        for step in range(iterations):
            rows = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=generator)
            inputs = x[rows]
            if quantized is not None:
                keep = torch.rand(inputs.shape, generator=generator) < DROP
                inputs = torch.where(keep, inputs, quantized[rows])
            error = _unit_loss(loss, unit(inputs), target[rows])
            total = error
            fraction = step / max(iterations, 1)
            if fraction >= WARMUP:
                beta = BETA[1] + (BETA[0] - BETA[1]) * (1 - (fraction - WARMUP) / (1 - WARMUP))
                total = total + weight * sum(r.rounding_loss(beta) for r in roundings)
            optimizer.zero_grad()
            if scale_optimizer is not None:
                scale_optimizer.zero_grad()
                for group in scale_optimizer.param_groups:
                    group["lr"] = SCALE_LEARNING_RATE * 0.5 * (1 + math.cos(math.pi * fraction))
            total.backward()
            optimizer.step()
            if scale_optimizer is not None:
                scale_optimizer.step()
            if progress is not None:
                progress.set_postfix_str(f"{name} {loss} {error.item():.3g}")
                progress.update(1)
    finally:
        for linear in linears:
            linear.soft_rounding = None
        context.trained_scales = {}
    for linear, rounding in zip(linears, roundings):
        linear.set_learned_codes(rounding.hard_codes())
    for learned in scales:
        _set_scale(qvit, learned.quantizer, learned.learned_scale())
    after = _evaluate(spec)
    kept = after <= before
    if not kept:
        _put_back(qvit, start_roundings, start_scales)
    return UnitLoss(name, before, after, round(time.time() - start_time, 1), kept=kept)


def _put_back(qvit, roundings: list, scales: list) -> None:
    """Undo a unit whose learned values raised its loss: the step sizes, then the codes and variables it started
    with (the hard loss of soft-trained codes can exceed the calibrated one where the soft optimum is far from a
    corner, e.g. the patch embedding on uint8 pixels, whose rows amplify a mean rounding error by ~120 x 768)."""
    for quantizer, scale in scales:
        _set_scale(qvit, quantizer, scale)
    for rounding, variables, learned_codes in roundings:
        with torch.no_grad():
            rounding.variables.copy_(variables)
        rounding.linear.learned_codes = learned_codes
        rounding.linear.finish()


# ------------------------------------------------------------------------------------------------- the schedule
@dataclass
class RunOptions:
    """Run-time options of a reconstruction that do not change its result: where to checkpoint."""

    checkpoint: str | None = None


_OPTIONS = RunOptions()


@contextlib.contextmanager
def run_options(*, checkpoint: str | None = None):
    """Within the block, reconstructions save each finished unit under the folder ``checkpoint`` and resume from
    it (the file is named by the configuration and the images, so different runs do not mix)."""
    global _OPTIONS
    previous, _OPTIONS = _OPTIONS, RunOptions(checkpoint)
    try:
        yield
    finally:
        _OPTIONS = previous


class _Checkpoint:
    """The finished units' learned codes, variables, step sizes and losses in one file, written atomically."""

    def __init__(self, folder: str | None, key: str):
        self.path = None if folder is None else Path(folder) / f"pfcr-{key}.pt"
        self.state = {"key": key, "done": [], "codes": {}, "variables": {}, "scales": {}, "losses": []}
        if self.path is not None and self.path.exists():
            state = torch.load(self.path, weights_only=False)
            if state.get("key") != key:
                raise ValueError(f"{self.path}: a checkpoint of another run (key {state.get('key')!r})")
            self.state = state

    def done(self, name: str) -> bool:
        return name in self.state["done"]

    def restore(self, qvit, roundings: dict) -> None:
        """Put the saved codes, variables and step sizes back (after the base calibration)."""
        linears, points = qvit.linears_q, qvit.points
        for name, codes in self.state["codes"].items():
            linears[name].set_learned_codes(codes)
        for name, variables in self.state["variables"].items():
            roundings[name].variables.data.copy_(variables)
        for name, scale in self.state["scales"].items():
            _set_scale(qvit, points[name], scale)

    def save(self, qvit, roundings: dict, loss: UnitLoss) -> None:
        self.state["done"].append(loss.name)
        self.state["losses"].append(loss)
        self.state["codes"] = {name: r.linear.codes.clone() for name, r in roundings.items()
                               if r.linear.learned_codes is not None}
        self.state["variables"] = {name: r.variables.detach().clone() for name, r in roundings.items()}
        self.state["scales"] = {name: q.qparams.scale for name, q in qvit.points.items() if LearnedScale.applies(q)}
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        torch.save(self.state, partial)
        os.replace(partial, self.path)


def _points(*quantizers) -> list[LearnedScale]:
    return [LearnedScale(q) for q in quantizers if LearnedScale.applies(q)]


def _block_points(block) -> list:
    attn, mlp = block.attn, block.mlp
    return [block.norm1.output, attn.q, attn.k, attn.v, attn.context_out, block.norm2.output, mlp.hidden]


def _float_outputs(qvit, forward, inputs: torch.Tensor) -> torch.Tensor:
    qvit.mode = "float"
    with torch.no_grad():
        out = torch.cat([forward(inputs[i:i + BATCH]) for i in range(0, inputs.shape[0], BATCH)])
    qvit.mode = "fast"
    return out.to(torch.float32)


def _fast_outputs(qvit, forward, inputs: torch.Tensor) -> torch.Tensor:
    qvit.mode = "fast"
    with torch.no_grad():
        return torch.cat([forward(inputs[i:i + BATCH]) for i in range(0, inputs.shape[0], BATCH)]).to(torch.float32)


def reconstruct_block(qvit, block, x: torch.Tensor, *, iterations: int, lr: float = 1e-3, seed: int = 0,
                      progress=None, learn_scales: bool = True) -> list[UnitLoss]:
    """PFCR on one block of ``qvit`` from its float input ``x`` (``(B, N, C)``, the float model's residual stream):
    the attention unit, the MLP unit (rounding only), then the block (rounding continued, step sizes learned
    where ``learn_scales``), each against the float model's output of the same unit."""
    layers = (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2)
    roundings = {layer.name: SoftRounding(layer) for layer in layers}
    plan = _BlockPlan(qvit, block, x.to(torch.float32), iterations)
    losses = []
    for index, unit in enumerate(plan.units()):
        losses.append(_run(qvit, unit, roundings, lr=lr, seed=seed + index, progress=progress,
                           learn_scales=learn_scales))
    return losses


class _BlockPlan:
    """The three units of one block on the float inputs ``x`` (and the quantized prefix's, ``quantized``, where
    they feed the units): attention, MLP, block."""

    def __init__(self, qvit, block, x: torch.Tensor, iterations: int, quantized: torch.Tensor | None = None):
        self.qvit, self.block, self.x, self.iterations, self.quantized = qvit, block, x, iterations, quantized
        self.attention = [block.attn.qkv, block.attn.proj]
        self.mlp = [block.mlp.fc1, block.mlp.fc2]
        self.prefix = block.norm1.name.rsplit(".", 1)[0]
        self.middle = _float_outputs(qvit, self.attention_unit, x)
        self.out = _float_outputs(qvit, self.mlp_unit, self.middle)

    def attention_unit(self, h):
        block = self.block
        return block.residual1(h, block.attn(block.norm1(h)))

    def mlp_unit(self, h):
        block = self.block
        return block.residual2(h, block.mlp(block.norm2(h)))

    def units(self):
        """The units in order; the MLP unit's quantized input is the attention unit's output once it is learned."""
        p, n, q = self.prefix, self.iterations, self.quantized
        yield _Unit(f"{p}.attention", self.attention_unit, self.attention, [], self.x, self.middle, n, quantized=q)
        middle = None if q is None else _fast_outputs(self.qvit, self.attention_unit, q)
        yield _Unit(f"{p}.mlp", self.mlp_unit, self.mlp, [], self.middle, self.out, n, quantized=middle)
        yield _Unit(p, self.block, self.attention + self.mlp, _block_points(self.block), self.x, self.out, n,
                    quantized=q)


def _run(qvit, unit: _Unit, roundings: dict, *, lr: float, seed: int, progress, learn_scales: bool,
         checkpoint: _Checkpoint | None = None, inputs: str = "float") -> UnitLoss:
    """Reconstruct ``unit`` (or take its loss from ``checkpoint`` where it is done) on the ``inputs`` of
    :data:`INPUTS`, then checkpoint."""
    if checkpoint is not None and checkpoint.done(unit.name):
        if progress is not None:
            progress.update(unit.iterations)
        return next(loss for loss in checkpoint.state["losses"] if loss.name == unit.name)
    chosen = [roundings[linear.name] for linear in unit.linears]
    scales = _points(*unit.points) if learn_scales else []
    x, quantized = unit.inputs, None
    if unit.quantized is not None and inputs == "quantized":
        x = unit.quantized
    elif unit.quantized is not None and inputs == "mix":
        quantized = unit.quantized
    loss = reconstruct_unit(unit.name, unit.forward, chosen, x, unit.target, iterations=unit.iterations, lr=lr,
                            seed=seed, progress=progress, scales=scales, loss=unit.loss, qvit=qvit,
                            quantized=quantized)
    if checkpoint is not None:
        checkpoint.save(qvit, roundings, loss)
    return loss


def _key(config, pixels: torch.Tensor) -> str:
    """The checkpoint's name: the configuration's name, then a hash of all its fields and the calibration pixels."""
    digest = hashlib.sha256(repr(sorted(asdict(config).items())).encode())
    digest.update(pixels.numpy().tobytes())
    return f"{config.name}-{digest.hexdigest()[:16]}"


def reconstruct(qvit, batches, progress=None) -> list[UnitLoss]:
    """The ``pfcr`` method (module docstring): the configuration's ``pfcr_base`` method calibrates on the first
    ``pfcr_base_images`` images, then the schedule runs on all of them. Returns every unit's loss (also kept as
    ``qvit.reconstruction_losses``); deterministic for the same batches and ``search_seed``."""
    from tqdm import tqdm

    from intsim.quant.methods import METHODS

    config = qvit.context.config
    pixels = torch.cat([torch.as_tensor(b) for b in batches])
    base = pixels[:config.pfcr_base_images]
    METHODS[config.pfcr_base].calibrate(qvit, [base[i:i + BATCH] for i in range(0, base.shape[0], BATCH)], progress)
    blocks = list(qvit.blocks)
    images = pixels.to(torch.float32)
    roundings = {name: SoftRounding(linear) for name, linear in qvit.linears_q.items()}
    checkpoint = _Checkpoint(_OPTIONS.checkpoint, _key(config, pixels))
    checkpoint.restore(qvit, roundings)
    iterations, group = config.pfcr_iterations, config.pfcr_group_blocks
    groups = [blocks[i:i + group] for i in range(0, len(blocks), group)]
    groups = [members for members in groups if len(members) > 1]  # a one-block group is its block's unit
    group_iterations = max(1, iterations // max(group, 1))
    total = iterations * (2 + 3 * len(blocks)) + group_iterations * len(groups)
    losses: list[UnitLoss] = []
    seed = config.search_seed
    mode = config.pfcr_inputs
    with tqdm(total=total, desc="pfcr", unit="step") as bar:
        def run(unit, index, learn_scales=True):
            return _run(qvit, unit, roundings, lr=LEARNING_RATE, seed=seed + index, progress=bar,
                        learn_scales=learn_scales, checkpoint=checkpoint, inputs=mode)

        def quantized_stream(stop: int):
            """The fast model's residual stream into block ``stop`` (after what is learned so far)."""
            if mode == "float":
                return None

            def prefix(pixels):
                h = qvit.embed(pixels)
                for b in blocks[:stop]:
                    h = b(h)
                return h

            return _fast_outputs(qvit, prefix, images)

        embed = qvit.embed
        stream = _float_outputs(qvit, embed, images)
        losses.append(run(_Unit("embed", embed, [embed.linear], [], images, stream, iterations), 0))
        inputs = [stream]
        quantized = quantized_stream(0)
        for index, block in enumerate(blocks):
            plan = _BlockPlan(qvit, block, inputs[-1], iterations, quantized)
            for offset, unit in enumerate(plan.units()):
                losses.append(run(unit, 1 + 3 * index + offset, learn_scales=offset == 2))
            inputs.append(plan.out)
            quantized = None if quantized is None else _fast_outputs(qvit, block, quantized)
        for number, members in enumerate(groups):
            first = blocks.index(members[0])
            linears = [layer for b in members for layer in (b.attn.qkv, b.attn.proj, b.mlp.fc1, b.mlp.fc2)]

            def forward(h, members=members):
                for b in members:
                    h = b(h)
                return h

            name = f"blocks.{first}-{first + len(members) - 1}"
            unit = _Unit(name, forward, linears, [p for b in members for p in _block_points(b)], inputs[first],
                         inputs[first + len(members)], group_iterations,
                         quantized=None if checkpoint.done(name) else quantized_stream(first))
            losses.append(run(unit, 1 + 3 * len(blocks) + number))
        head = qvit.head
        logits = _float_outputs(qvit, head, inputs[-1])
        losses.append(run(_Unit("head", head, [head.linear], [head.norm.output], inputs[-1], logits, iterations,
                                loss="kl", quantized=quantized_stream(len(blocks))), 1 + 3 * len(blocks) + len(groups)))
    qvit.mode = "fast"
    qvit.reconstruction_losses = losses
    return losses


def _register() -> None:
    from intsim.quant.methods import Method, register_method

    register_method(Method("pfcr", reconstruct, "PFCR: a base calibration, then learned weight rounding and "
                                                "activation step sizes, unit by unit (embedding, attention, MLP, "
                                                "block, groups of blocks, head), fine to coarse"))


_register()
