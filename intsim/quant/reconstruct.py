"""Learned weight rounding (AdaRound) and PFCR's fine-to-coarse unit reconstruction over intsim's quantized layers.

This is the engine of issue 16, first slice: weight rounding only (activation scales stay the calibration's), units
of one block. Reconstruction changes values, not quantizer types, so its result is an ordinary Program: each
Linear's learned codes are its ``weight`` constant, exported and restored like any other (``QuantLinear.restore``).

Learned rounding of one Linear (AdaRound, as in AdaLog's ``block_recon.py``; ``shared/research/ptq_methods.md``
section 1.6), with the layer's calibrated scales ``s_n`` and zero points ``z_n`` (0 for symmetric weights) fixed:

* soft code ``c~ = clamp(floor(w / s) + z + h(V), lo, hi)``, ``h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)``
  (the rectified sigmoid, ``zeta = 1.1``, ``gamma = -0.1``), ``V`` initialised so that ``h(V) = frac(w / s)``
  (the soft code starts at the float weight);
* the fast model's weight is ``s (c~ - z)`` while the Linear reconstructs; the hard code is
  ``clamp(floor(w / s) + z + [V >= 0], lo, hi)`` (``[lo, hi]`` the quantizer's code range);
* loss: the squared error summed over the channels, averaged over the tokens of a batch, plus
  ``lambda * sum(1 - |2 h(V) - 1|**beta)`` over every variable (``lambda = 0.01``), ``beta`` annealed from 20 to 2
  after a warm-up of 20 % of the iterations (no rounding loss before); Adam on ``V`` (``reconstruct_unit``'s default
  lr 1e-3, AdaLog's; the ``pfcr`` method uses :data:`LEARNING_RATE`), batches of 32 images drawn with a seeded
  generator.

Units (PFCR, fine to coarse): the attention unit ``x + attn(norm1(x))`` and the MLP unit ``h + mlp(norm2(h))`` of a
block, each on the float model's inputs (AdaLog's choice: the quantized prefix's inputs are a documented
alternative), then the whole block with both units' variables continued (not re-initialised) and ``beta``
annealed again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ZETA", "GAMMA", "LEARNING_RATE", "SoftRounding", "UnitLoss", "reconstruct_unit", "reconstruct_block",
           "reconstruct"]

ZETA, GAMMA = 1.1, -0.1  # AdaRound's stretch of the sigmoid
WARMUP = 0.2  # fraction of the iterations without the rounding loss
BETA = (20.0, 2.0)
LEARNING_RATE = 1e-2  # the pfcr method's Adam step: 10x AdaLog's 1e-3, for 1000 steps per unit against its 20000


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


@dataclass
class UnitLoss:
    """A unit's output MSE with hard rounding before and after its reconstruction (on its training inputs)."""

    name: str
    before: float
    after: float


def _mse(unit, x: torch.Tensor, target: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((unit(x) - target) ** 2).mean())


def reconstruct_unit(name: str, unit, roundings: list[SoftRounding], x: torch.Tensor, target: torch.Tensor, *,
                     iterations: int, batch_size: int = 32, lr: float = 1e-3, weight: float = 0.01,
                     seed: int = 0, progress=None) -> UnitLoss:
    """Learn the rounding of ``roundings`` so that ``unit(x)`` (the fast model) matches ``target``; the layers are
    left with their hard learned codes. Deterministic for a seed on one device."""
    linears = [r.linear for r in roundings]
    before = _mse(unit, x, target)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam([r.variables for r in roundings], lr=lr)
    for linear, rounding in zip(linears, roundings):
        linear.soft_rounding = rounding
    try:
        for step in range(iterations):
            rows = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=generator)
            loss = ((unit(x[rows]) - target[rows]) ** 2).sum(dim=-1).mean()
            fraction = step / max(iterations, 1)
            if fraction >= WARMUP:
                beta = BETA[1] + (BETA[0] - BETA[1]) * (1 - (fraction - WARMUP) / (1 - WARMUP))
                loss = loss + weight * sum(r.rounding_loss(beta) for r in roundings)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if progress is not None:
                progress.set_postfix_str(f"{name} loss {loss.item():.3g}")
                progress.update(1)
    finally:
        for linear in linears:
            linear.soft_rounding = None
    for linear, rounding in zip(linears, roundings):
        linear.set_learned_codes(rounding.hard_codes())
    return UnitLoss(name, before, _mse(unit, x, target))


def reconstruct_block(qvit, block, x: torch.Tensor, *, iterations: int, lr: float = 1e-3, seed: int = 0,
                      progress=None) -> list[UnitLoss]:
    """PFCR on one block of ``qvit`` from its float input ``x`` (``(B, N, C)``, the float model's residual stream):
    the attention unit, the MLP unit, then the block, each against the float model's output of the same unit."""
    qvit.mode = "float"
    with torch.no_grad():
        attn_target = block.residual1(x, block.attn(block.norm1(x)))
        block_target = block.residual2(attn_target, block.mlp(block.norm2(attn_target)))
    qvit.mode = "fast"
    x, attn_target, block_target = (t.to(torch.float32) for t in (x, attn_target, block_target))
    attention = [SoftRounding(layer) for layer in (block.attn.qkv, block.attn.proj)]
    mlp = [SoftRounding(layer) for layer in (block.mlp.fc1, block.mlp.fc2)]

    def attention_unit(h):
        return block.residual1(h, block.attn(block.norm1(h)))

    def mlp_unit(h):
        return block.residual2(h, block.mlp(block.norm2(h)))

    prefix = block.norm1.name.rsplit(".", 1)[0]
    losses = [
        reconstruct_unit(f"{prefix}.attention", attention_unit, attention, x, attn_target, iterations=iterations,
                         lr=lr, seed=seed, progress=progress),
        reconstruct_unit(f"{prefix}.mlp", mlp_unit, mlp, attn_target, block_target, iterations=iterations,
                         lr=lr, seed=seed + 1, progress=progress),
        reconstruct_unit(prefix, block, attention + mlp, x, block_target, iterations=iterations, lr=lr,
                         seed=seed + 2, progress=progress),
    ]
    return losses


def reconstruct(qvit, batches, progress=None) -> list[UnitLoss]:
    """The ``pfcr`` method: the configuration's ``pfcr_base`` method calibrates, then every block is reconstructed
    in order (:func:`reconstruct_block`, ``pfcr_iterations`` steps per unit) on the float model's block inputs of
    all calibration images. Returns every unit's loss; deterministic for the same batches and ``search_seed``."""
    from tqdm import tqdm

    from intsim.quant.methods import METHODS

    config = qvit.context.config
    METHODS[config.pfcr_base].calibrate(qvit, batches, progress)
    pixels = torch.cat([torch.as_tensor(b) for b in batches])
    qvit.mode = "float"
    with torch.no_grad():
        x = qvit.embed(pixels)
    blocks = list(qvit.blocks)
    losses = []
    with tqdm(total=3 * len(blocks) * config.pfcr_iterations, desc="pfcr", unit="step") as bar:
        for index, block in enumerate(blocks):
            losses += reconstruct_block(qvit, block, x, iterations=config.pfcr_iterations, lr=LEARNING_RATE,
                                        seed=config.search_seed + 3 * index, progress=bar)
            qvit.mode = "float"
            with torch.no_grad():
                x = block(x)
    qvit.mode = "fast"
    qvit.reconstruction_losses = losses
    return losses


def _register() -> None:
    from intsim.quant.methods import Method, register_method

    register_method(Method("pfcr", reconstruct, "PFCR: a base calibration, then learned weight rounding unit by "
                                                "unit (attention, MLP, block), fine to coarse"))


_register()
