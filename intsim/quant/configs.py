"""Named quantization configurations: bit widths, observer, PTF, softmax and GELU choices, rounding.

``fqvit-w8a8a4`` is FQ-ViT's 8/8/4 (int8 weights, uint8 activations, PTF LayerNorm inputs, 4-bit
Log-Int-Softmax); ``fqvit-w8a8a8`` the same with an 8-bit uniform integer softmax. Generic widths come from
:func:`make_config` (the CLI's ``--wbits/--abits/--attn-bits``): attention bits 4 means Log-Int-Softmax,
5..8 a uniform integer softmax of that width.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from intsim.ops._checks import check_choice
from intsim.ops.rounding import ROUNDING_MODES

__all__ = ["CONFIGS", "QuantConfig", "get_config", "make_config"]


@dataclass(frozen=True)
class QuantConfig:
    """Everything that selects how a model is quantized (all integers/strings: it is stored in the Program)."""

    name: str
    wbits: int = 8  # weights: symmetric per output channel, codes in [-(2**(w-1)-1), 2**(w-1)-1]
    abits: int = 8  # activations: unsigned asymmetric per tensor (LayerNorm inputs: PTF per channel)
    attn_bits: int = 4  # 4: Log-Int-Softmax codes; 5..8: uniform integer softmax of that width
    observer: str = "minmax"  # minmax | ema | percentile | omse (activations; weights are always minmax)
    ptf: bool = True  # power-of-two factors for LayerNorm inputs; False: per-tensor
    ptf_alpha_max: int = 7  # PTF factors 2**alpha, alpha in 0..ptf_alpha_max (FQ-ViT: 3; ViT-Ti needs 7)
    ptf_search_zero_point: bool = True  # PTF zero point by least squared error (FQ-ViT: from the layer-wide range)
    lis_scale: bool = True  # calibrate the LIS value scale so rows sum to 1 on average (FQ-ViT: 1; attn_bits 4)
    softmax_minmax: bool = True  # uniform softmax (attn_bits 5..8): scale = largest calibrated probability / (2**b - 1)
    #                              (FQ-ViT's minmax observer on the softmax output); False: 1 / (2**b - 1)
    mlp_ptf: bool = True  # power-of-two factors for the fc1 output (GELU index) and the GELU output (fc2 input)
    gelu: str = "lut"  # per-code table built at export
    residual_bits: int | None = None  # residual stream (LayerNorm inputs, PTF) width; None: abits (FQ-ViT)
    gelu_input_bits: int | None = None  # fc1 output = GELU table index width; None: abits (FQ-ViT: float GELU)
    rounding: str = "half_up"

    @property
    def softmax(self) -> str:
        return "lis" if self.attn_bits == 4 else "uniform"

    @property
    def residual_width(self) -> int:
        return self.abits if self.residual_bits is None else self.residual_bits

    @property
    def gelu_input_width(self) -> int:
        return self.abits if self.gelu_input_bits is None else self.gelu_input_bits

    @property
    def ptf_levels(self) -> int:
        return self.ptf_alpha_max + 1 if self.ptf else 1

    @property
    def mlp_ptf_levels(self) -> int:
        return self.ptf_alpha_max + 1 if self.mlp_ptf else 1


def _validate(config: QuantConfig) -> QuantConfig:
    for field, value, lo, hi in (("wbits", config.wbits, 2, 8), ("abits", config.abits, 4, 8), ("attn_bits", config.attn_bits, 4, 8),
                                 ("residual_bits", config.residual_width, 4, 16), ("gelu_input_bits", config.gelu_input_width, 4, 16)):
        if not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"quantization config {config.name!r}: {field} = {value!r} outside [{lo}, {hi}]")
    from intsim.quant.observers import OBSERVERS

    check_choice(config.observer, "observer", f"config {config.name!r}", tuple(OBSERVERS))
    check_choice(config.rounding, "rounding mode", f"config {config.name!r}", tuple(ROUNDING_MODES))
    check_choice(config.gelu, "gelu", f"config {config.name!r}", ("lut",))
    return config


CONFIGS: dict[str, QuantConfig] = {
    config.name: config
    for config in (
        QuantConfig("fqvit-w8a8a4", attn_bits=4),
        QuantConfig("fqvit-w8a8a8", attn_bits=8),
    )
}


def _derived(base: str, name: str, **changes) -> QuantConfig:
    return replace(CONFIGS[base], name=name, **changes)


# FQ-ViT-style ablation rows (docs/sweeps.md; `intsim sweep --configs fqvit-ablation`). Each row is a fqvit-*
# configuration with the switches its name states and every other field inherited, so two rows differ only by
# what their names say. A name without "-ptf" has per-tensor LayerNorm inputs; "a8" is the 8-bit uniform softmax,
# "a4" the 4-bit Log-Int-Softmax (LIS).
CONFIGS.update(
    (config.name, config)
    for config in (
        *(_derived("fqvit-w8a8a8", f"w8a8a8-{observer}", observer=observer, ptf=False, mlp_ptf=False)
          for observer in ("minmax", "ema", "percentile", "omse")),
        _derived("fqvit-w8a8a8", "w8a8a8-minmax-ptf", observer="minmax", ptf=True),
        # PTF on the LayerNorm inputs only (FQ-ViT's placement): per-tensor fc1 and GELU outputs
        _derived("fqvit-w8a8a8", "w8a8a8-minmax-ptf-lnonly", observer="minmax", ptf=True, mlp_ptf=False),
        # wider non-matmul activations (the MAC inputs stay 8-bit): 12-bit residual stream and GELU table index
        _derived("fqvit-w8a8a8", "w8a8a8-r12g12", residual_bits=12, gelu_input_bits=12),
        _derived("fqvit-w8a8a4", "w8a8a4-r12g12", residual_bits=12, gelu_input_bits=12),
        # FQ-ViT's own PTF: factors 2**0..2**3, zero point from the layer-wide range
        _derived("fqvit-w8a8a8", "w8a8a8-minmax-ptf-fqvit", observer="minmax", ptf=True, ptf_alpha_max=3,
                 ptf_search_zero_point=False, mlp_ptf=False),
        _derived("fqvit-w8a8a4", "w8a8a4-minmax-ptf-lis", observer="minmax", ptf=True),
        # the uniform softmax at the fixed scale 1/255 (the whole [0, 1]) instead of the calibrated largest probability
        _derived("fqvit-w8a8a8", "w8a8a8-minmax-ptf-softmax-unscaled", observer="minmax", ptf=True, softmax_minmax=False),
        # FQ-ViT's LIS values 2**-A (scale 1): rows sum to about 1.1 on ViT-Ti
        _derived("fqvit-w8a8a4", "w8a8a4-minmax-ptf-lis-unscaled", observer="minmax", ptf=True, lis_scale=False),
        *(_derived("fqvit-w8a8a4", f"fqvit-w{wbits}a{abits}a4", wbits=wbits, abits=abits)
          for wbits, abits in ((6, 6), (4, 8), (4, 4))),
    )
)


def get_config(name: str) -> QuantConfig:
    """The named configuration; ``ValueError`` listing the known names otherwise."""
    return CONFIGS[check_choice(name, "configuration", "intsim", tuple(CONFIGS))]


def make_config(base: str = "fqvit-w8a8a4", **overrides) -> QuantConfig:
    """``base`` with some fields replaced (``None`` values are ignored); the name records the overrides."""
    config = get_config(base)
    changes = {key: value for key, value in overrides.items() if value is not None and getattr(config, key) != value}
    if changes:
        suffix = ",".join(f"{key}={value}" for key, value in sorted(changes.items()))
        config = replace(config, name=f"{base}[{suffix}]", **changes)
    return _validate(config)
