"""Named quantization configurations: a method, and for each kind of quantization point a quantizer and its bits.

A configuration says *what* is quantized *how*, independently: each kind of point (:data:`POINT_KINDS`) names
a registered quantizer (:mod:`intsim.quant.quantizers`) and its bit width, and ``method`` names the registered
calibration procedure (:mod:`intsim.quant.methods`). Nothing is implied by a bit width: a 4-bit uniform softmax
and a 4-bit Log-Int-Softmax are two different quantizer names.

``fqvit-w8a8a4`` is FQ-ViT's 8/8/4 (int8 weights, uint8 activations, PTF LayerNorm inputs, 4-bit
Log-Int-Softmax); ``fqvit-w8a8a8`` the same with an 8-bit uniform integer softmax. Generic widths come from
:func:`make_config` (the CLI's ``--wbits/--abits/--attn-bits/--softmax``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from intsim.limits import ROUNDING_MODES
from intsim.ops._checks import check_choice

__all__ = ["CONFIGS", "POINT_KINDS", "Point", "QuantConfig", "config_from_metadata", "get_config", "make_config"]

APQ_METRICS = ("bbc", "layerwise_mse")
APQ_INPUT_GRIDS = ("ptq4vit", "port")

POINT_KINDS = ("weights", "residual", "pos_embed", "post_layernorm", "qkv", "post_softmax", "attn_output",
               "gelu_input", "post_gelu")
"""The kinds of quantization point of a ViT, in the order a block meets them:

``weights``        every Linear's weights (per output channel)
``residual``       the residual stream: the inputs of every LayerNorm and the outputs of every residual add
``pos_embed``      the position embedding (a constant added to the patch accumulators)
``post_layernorm`` LayerNorm outputs (the inputs of qkv, fc1 and the head)
``qkv``            q, k and v (the operands of both attention matmuls)
``post_softmax``   attention probabilities (the softmax is the quantizer's own integer op)
``attn_output``    the attention context (``probs @ v``, the input of proj)
``gelu_input``     fc1's output (the GELU table's index)
``post_gelu``      GELU's output (the input of fc2)
"""


@dataclass(frozen=True)
class Point:
    """A kind of point's quantizer (a name of :data:`intsim.quant.quantizers.QUANTIZERS`) and bit width."""

    quantizer: str
    bits: int


@dataclass(frozen=True)
class QuantConfig:
    """Everything that selects how a model is quantized (plain values: it is stored in the Program's metadata)."""

    name: str
    method: str = "fqvit"
    weights: Point = Point("symmetric_channel", 8)  # codes in [-(2**(w-1)-1), 2**(w-1)-1], one scale per channel
    residual: Point = Point("ptf", 8)  # power-of-two factors per channel (FQ-ViT's PTF)
    pos_embed: Point = Point("uniform", 8)
    post_layernorm: Point = Point("uniform", 8)  # unsigned asymmetric per tensor
    qkv: Point = Point("uniform", 8)
    post_softmax: Point = Point("lis", 4)  # lis: Log-Int-Softmax (4 bits); uniform_softmax: 2..16 bits
    attn_output: Point = Point("uniform", 8)
    gelu_input: Point = Point("ptf", 8)  # ptf: a few hidden units carry values ~100x the others
    post_gelu: Point = Point("ptf", 8)
    # options of the quantizers (each is read by the quantizers that name it)
    observer: str = "minmax"  # uniform: minmax | ema | percentile | omse (weights are always minmax)
    ptf_alpha_max: int = 7  # ptf: factors 2**alpha, alpha in 0..ptf_alpha_max (FQ-ViT: 3; ViT-Ti needs 7)
    ptf_search_zero_point: bool = True  # ptf: zero point by least squared error (FQ-ViT: from the layer-wide range)
    lis_scale: bool = True  # lis: calibrate the value scale so rows sum to 1 on average (FQ-ViT: 1)
    softmax_minmax: bool = True  # uniform_softmax: scale = largest calibrated probability / (2**b - 1)
    #                              (FQ-ViT's minmax observer on the softmax output); False: 1 / (2**b - 1)
    gelu: str = "lut"  # GELU as a per-code table built at export
    rounding: str = "half_up"  # every requantization's rounding
    # options of the search methods (adalog): FPCS rounds and steps, rows ranked per activation candidate, seed
    search_rounds: int = 3
    search_steps: int = 6
    search_tokens: int = 1024
    search_seed: int = 0
    # adalog: the smallest base exponent q searched (base 2**(q/37)); AdaLog's code: 10. At 6 bits its searches sit
    # at 10 in every layer, so adalog-w6a6 starts lower (docs/quantization.md, AdaLog section)
    adalog_q_min: int = 10
    # apq: the calibration metric (bbc: APQ-ViT's bottom-eliminated, gradient-weighted error of each block's output;
    # layerwise_mse: the MSE of each searched layer's own output, the ablation) and how many of the calibration
    # images it is evaluated on (the observers and the starting ranges see them all)
    apq_metric: str = "bbc"
    apq_metric_images: int = 8
    # apq: the grid of the Linears' input quantizers: "ptq4vit" (a in [0.01, 1.2), PTQ4ViT's, which can clip ViT-Ti's
    # massive post-GELU values) or "port" (a in [0.7, 1.1), the APQ-ViT port's); docs/quantization.md, APQ-ViT
    apq_input_grid: str = "ptq4vit"
    # pfcr: the calibration method the reconstruction starts from, and Adam's steps per unit (docs/quantization.md,
    # PFCR section: attention unit, MLP unit, block, for each block)
    pfcr_base: str = "fqvit"
    pfcr_iterations: int = 500
    # pfcr: blocks per group of the coarsest stage (1: no group stage), and the images the base calibration sees
    # (the reconstruction sees all the calibration images)
    pfcr_group_blocks: int = 4
    pfcr_base_images: int = 32
    # pfcr: what feeds each unit: the float model's inputs ("float", AdaLog's), the quantized prefix's
    # ("quantized", BRECQ's) or each element from either with probability 1/2 ("mix", QDrop's)
    pfcr_inputs: str = "mix"

    def point(self, kind: str) -> Point:
        return getattr(self, kind)

    @property
    def wbits(self) -> int:
        return self.weights.bits

    @property
    def abits(self) -> int:
        return self.post_layernorm.bits

    @property
    def attn_bits(self) -> int:
        return self.post_softmax.bits

    @property
    def softmax(self) -> str:
        return self.post_softmax.quantizer

    def describe(self) -> str:
        """One line: the method and each kind of point's quantizer and bits."""
        points = ", ".join(f"{kind} {self.point(kind).quantizer}/{self.point(kind).bits}" for kind in POINT_KINDS)
        return f"{self.name}: method {self.method}; {points}; rounding {self.rounding}"


def validate_config(config: QuantConfig) -> QuantConfig:
    """``config`` if every point names a registered quantizer that serves that kind of point at its bits, and
    every option is known; ``ValueError`` naming the configuration and the field otherwise."""
    from intsim.quant.observers import OBSERVERS
    from intsim.quant.registered import METHODS
    from intsim.quant.quantizers import check_point

    where = f"config {config.name!r}"
    check_choice(config.method, "method", where, tuple(METHODS))
    for kind in POINT_KINDS:
        point = config.point(kind)
        if not isinstance(point, Point):
            raise TypeError(f"{where}: {kind} must be a Point(quantizer, bits), got {point!r}")
        check_point(kind, point, where)
    check_choice(config.observer, "observer", where, tuple(OBSERVERS))
    check_choice(config.rounding, "rounding mode", where, tuple(ROUNDING_MODES))
    check_choice(config.gelu, "gelu", where, ("lut",))
    for key, low in (("search_rounds", 0), ("search_steps", 1), ("search_tokens", 16), ("search_seed", 0)):
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{where}: {key} = {value!r} must be an int >= {low}")
    if not isinstance(config.adalog_q_min, int) or isinstance(config.adalog_q_min, bool) or not 1 <= config.adalog_q_min <= 137:
        raise ValueError(f"{where}: adalog_q_min = {config.adalog_q_min!r} must be an int in [1, 137]")
    check_choice(config.apq_metric, "apq_metric", where, APQ_METRICS)
    check_choice(config.apq_input_grid, "apq_input_grid", where, APQ_INPUT_GRIDS)
    check_choice(config.pfcr_base, "pfcr_base", where, tuple(name for name in METHODS if name != "pfcr"))
    check_choice(config.pfcr_inputs, "pfcr_inputs", where, ("float", "quantized", "mix"))
    for key in ("apq_metric_images", "pfcr_iterations", "pfcr_group_blocks", "pfcr_base_images"):
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{where}: {key} = {value!r} must be an int >= 1")
    if not isinstance(config.ptf_alpha_max, int) or not 0 <= config.ptf_alpha_max <= 7:
        raise ValueError(f"{where}: ptf_alpha_max = {config.ptf_alpha_max!r} outside [0, 7]")
    return config


def config_from_metadata(values: dict) -> QuantConfig:
    """The configuration stored in a Program's metadata (``dataclasses.asdict`` of it), including the form of
    Programs written before configurations named their quantizers (``wbits``/``abits``/``attn_bits``/``ptf``/
    ``mlp_ptf``/``residual_bits``/``gelu_input_bits``: attention bits 4 meant Log-Int-Softmax)."""
    values = dict(values)
    if "wbits" in values:  # the earlier form
        abits = values.pop("abits", 8)
        attn = values.pop("attn_bits", 4)
        residual = values.pop("residual_bits", None) or abits
        gelu_input = values.pop("gelu_input_bits", None) or abits
        ptf, mlp = ("ptf" if values.pop(key, True) else "uniform" for key in ("ptf", "mlp_ptf"))
        values.update(weights=Point("symmetric_channel", values.pop("wbits", 8)), residual=Point(ptf, residual),
                      pos_embed=Point("uniform", abits), post_layernorm=Point("uniform", abits),
                      qkv=Point("uniform", abits), attn_output=Point("uniform", abits),
                      post_softmax=Point("lis", 4) if attn == 4 else Point("uniform_softmax", attn),
                      gelu_input=Point(mlp, gelu_input), post_gelu=Point(mlp, abits))
    known = {field.name for field in fields(QuantConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Program metadata: unknown configuration fields {', '.join(unknown)}")
    for kind in POINT_KINDS:
        if isinstance(values.get(kind), dict):
            values[kind] = Point(**values[kind])
        elif isinstance(values.get(kind), (list, tuple)):
            values[kind] = Point(*values[kind])
    return QuantConfig(**values)


_LATER_FIELDS = ("search_rounds", "search_steps", "search_tokens", "search_seed")
"""Fields added after Programs were first committed: stored only where they differ from their defaults, so the
Programs (and golden files) of configurations that do not use them keep their bytes and hashes."""
_DEFAULT_ONLY_WHEN_CHANGED = ("adalog_q_min", "apq_metric", "apq_metric_images", "apq_input_grid", "pfcr_base",
                              "pfcr_iterations", "pfcr_group_blocks", "pfcr_base_images",
                              "pfcr_inputs")
"""Fields added after the AdaLog Programs: stored, for every method, only where they differ from their defaults."""


def config_metadata(config: QuantConfig) -> dict:
    """The JSON form stored in a Program (:func:`config_from_metadata` reads it back)."""
    values = asdict(config)
    defaults = QuantConfig(name=config.name)
    for key in _LATER_FIELDS:
        if config.method == "fqvit" and values[key] == getattr(defaults, key):
            del values[key]
    for key in _DEFAULT_ONLY_WHEN_CHANGED:
        if values[key] == getattr(defaults, key):
            del values[key]
    return values


def _with_bits(config: QuantConfig, name: str, **kinds_bits) -> QuantConfig:
    return replace(config, name=name, **{kind: replace(config.point(kind), bits=bits) for kind, bits in kinds_bits.items()})


_ACTIVATION_KINDS = ("pos_embed", "post_layernorm", "qkv", "attn_output", "post_gelu")
"""The kinds of point that ``abits`` sets (the residual stream and the GELU index follow when they had abits)."""


def _abits(config: QuantConfig, abits: int) -> dict:
    changes = {kind: abits for kind in _ACTIVATION_KINDS}
    for kind in ("residual", "gelu_input"):
        if config.point(kind).bits == config.abits:
            changes[kind] = abits
    return changes


FQVIT_W8A8A4 = QuantConfig("fqvit-w8a8a4")
FQVIT_W8A8A8 = replace(FQVIT_W8A8A4, name="fqvit-w8a8a8", post_softmax=Point("uniform_softmax", 8))

CONFIGS: dict[str, QuantConfig] = {config.name: config for config in (FQVIT_W8A8A4, FQVIT_W8A8A8)}


def adalog_config(name: str, bits: int, **changes) -> QuantConfig:
    """AdaLog at ``bits`` (weights, every MAC input, the log codes of post-softmax and post-GELU values) with the
    residual stream, the position embedding and the GELU table index at 16-bit uniform codes (the non-MAC
    activations AdaLog leaves in floating point; see docs/quantization.md)."""
    wide = Point("uniform", 16)
    points = dict(weights=Point("asymmetric_channel", bits), residual=wide, pos_embed=wide,
                  post_layernorm=Point("uniform", bits), qkv=Point("uniform", bits), post_softmax=Point("adalog", bits),
                  attn_output=Point("uniform", bits), gelu_input=wide, post_gelu=Point("adalog", bits))
    return QuantConfig(name, **{"method": "adalog", **points, **changes})


CONFIGS.update((config.name, config) for config in (adalog_config("adalog-w6a6", 6, adalog_q_min=2),
                                                     adalog_config("adalog-w4a4", 4),
                                                     adalog_config("adalog-w3a3", 3)))
# PFCR (docs/quantization.md, PFCR section): reconstruction on AdaLog's quantizers at 4 and 3 bits, on FQ-ViT's at 8
CONFIGS.update((config.name, config) for config in (
    adalog_config("pfcr-w4a4", 4, method="pfcr", pfcr_base="adalog"),
    adalog_config("pfcr-w3a3", 3, method="pfcr", pfcr_base="adalog"),
    replace(FQVIT_W8A8A8, name="pfcr-w8a8", method="pfcr", pfcr_base="fqvit")))

def apq_config(name: str, wbits: int, abits: int, **changes) -> QuantConfig:
    """APQ-ViT at ``wbits``/``abits``: asymmetric per-channel weights, every MAC input uniform at ``abits`` (the MPQ
    softmax codes too) but the GELU output, which has FQ-ViT's power-of-two channel factors at ``abits`` (APQ-ViT:
    uniform per tensor, the ``-gelu-uniform`` rows; its port: PTQ4ViT's twin uniform), the non-MAC activations
    (residual stream, position embedding, GELU index) at 16-bit uniform codes, as in :func:`adalog_config` (APQ-ViT
    leaves them in floating point)."""
    wide = Point("uniform", 16)
    points = dict(weights=Point("asymmetric_channel", wbits), residual=wide, pos_embed=wide,
                  post_layernorm=Point("uniform", abits), qkv=Point("uniform", abits),
                  post_softmax=Point("mpq", abits), attn_output=Point("uniform", abits), gelu_input=wide,
                  post_gelu=Point("ptf", abits))
    return QuantConfig(name, method="apq", **{**points, **changes})


CONFIGS.update((config.name, config) for config in (apq_config("apq-w8a8", 8, 8), apq_config("apq-w6a6", 6, 6),
                                                     apq_config("apq-w4a8", 4, 8), apq_config("apq-w4a4", 4, 4)))

# APQ-ViT ablation rows at W4A4 (`intsim sweep --configs apq-ablation`): MPQ against the 4-bit Log-Int-Softmax, base-2
# log codes and the uniform softmax at its minmax range (not searched); BBC against the layerwise MSE; the paper's
# per-tensor uniform GELU output against the PTF one
CONFIGS.update(
    (config.name, config)
    for config in (
        apq_config("apq-w4a4-softmax-lis", 4, 4, post_softmax=Point("lis", 4)),
        apq_config("apq-w4a4-softmax-log2", 4, 4, post_softmax=Point("log2", 4)),
        apq_config("apq-w4a4-softmax-minmax", 4, 4, post_softmax=Point("uniform_softmax", 4)),
        apq_config("apq-w4a4-layerwise", 4, 4, apq_metric="layerwise_mse"),
        apq_config("apq-w6a6-layerwise", 6, 6, apq_metric="layerwise_mse"),
        apq_config("apq-w8a8-port-grid", 8, 8, apq_input_grid="port"),
        apq_config("apq-w8a8-gelu-uniform", 8, 8, post_gelu=Point("uniform", 8)),
        apq_config("apq-w6a6-gelu-uniform", 6, 6, post_gelu=Point("uniform", 6)),
    )
)

# AdaLog ablation rows at W4A4 (`intsim sweep --configs adalog-ablation`): the post-softmax and post-GELU
# quantizers (AdaLog / base-2 log / uniform), and the widths of the non-MAC activations (residual stream, position
# embedding, GELU index) that AdaLog's own code leaves in floating point.
_W4_UNIFORM_SOFTMAX = Point("uniform_softmax", 4)
CONFIGS.update(
    (config.name, config)
    for config in (
        adalog_config("adalog-w4a4-softmax-log2", 4, post_softmax=Point("log2", 4)),
        adalog_config("adalog-w4a4-softmax-uniform", 4, post_softmax=_W4_UNIFORM_SOFTMAX),
        adalog_config("adalog-w4a4-gelu-log2", 4, post_gelu=Point("log2", 4)),
        adalog_config("adalog-w4a4-gelu-uniform", 4, post_gelu=Point("uniform", 4)),
        adalog_config("adalog-w4a4-log2", 4, post_softmax=Point("log2", 4), post_gelu=Point("log2", 4)),
        adalog_config("adalog-w4a4-uniform", 4, post_softmax=_W4_UNIFORM_SOFTMAX, post_gelu=Point("uniform", 4)),
        *(adalog_config(f"adalog-w4a4-r{bits}", 4, residual=Point("uniform", bits), pos_embed=Point("uniform", bits),
                        gelu_input=Point("uniform", bits))
          for bits in (12, 10, 8)),
    )
)


def _derived(base: str, name: str, **changes) -> QuantConfig:
    return replace(CONFIGS[base], name=name, **changes)


_PER_TENSOR = dict(residual=Point("uniform", 8))
_MLP_PER_TENSOR = dict(gelu_input=Point("uniform", 8), post_gelu=Point("uniform", 8))

# FQ-ViT-style ablation rows (docs/sweeps.md; `intsim sweep --configs fqvit-ablation`). Each row is a fqvit-*
# configuration with the switches its name states and every other field inherited, so two rows differ only by
# what their names say. A name without "-ptf" has per-tensor residual-stream quantizers (the LayerNorm inputs);
# "a8" is the 8-bit uniform softmax, "a4" the 4-bit Log-Int-Softmax (LIS).
CONFIGS.update(
    (config.name, config)
    for config in (
        *(_derived("fqvit-w8a8a8", f"w8a8a8-{observer}", observer=observer, **_PER_TENSOR, **_MLP_PER_TENSOR)
          for observer in ("minmax", "ema", "percentile", "omse")),
        _derived("fqvit-w8a8a8", "w8a8a8-minmax-ptf", observer="minmax"),
        # PTF on the LayerNorm inputs only (FQ-ViT's placement): per-tensor fc1 and GELU outputs
        _derived("fqvit-w8a8a8", "w8a8a8-minmax-ptf-lnonly", observer="minmax", **_MLP_PER_TENSOR),
        # wider non-matmul activations (the MAC inputs stay 8-bit): 12-bit residual stream and GELU table index
        _with_bits(CONFIGS["fqvit-w8a8a8"], "w8a8a8-r12g12", residual=12, gelu_input=12),
        _with_bits(CONFIGS["fqvit-w8a8a4"], "w8a8a4-r12g12", residual=12, gelu_input=12),
        # FQ-ViT's own PTF: factors 2**0..2**3, zero point from the layer-wide range
        _derived("fqvit-w8a8a8", "w8a8a8-minmax-ptf-fqvit", observer="minmax", ptf_alpha_max=3,
                 ptf_search_zero_point=False, **_MLP_PER_TENSOR),
        _derived("fqvit-w8a8a4", "w8a8a4-minmax-ptf-lis", observer="minmax"),
        # the uniform softmax at the fixed scale 1/255 (the whole [0, 1]) instead of the calibrated largest probability
        _derived("fqvit-w8a8a8", "w8a8a8-minmax-ptf-softmax-unscaled", observer="minmax", softmax_minmax=False),
        # FQ-ViT's LIS values 2**-A (scale 1): rows sum to about 1.1 on ViT-Ti
        _derived("fqvit-w8a8a4", "w8a8a4-minmax-ptf-lis-unscaled", observer="minmax", lis_scale=False),
        *(_with_bits(CONFIGS["fqvit-w8a8a4"], f"fqvit-w{wbits}a{abits}a4", weights=wbits,
                     **_abits(CONFIGS["fqvit-w8a8a4"], abits))
          for wbits, abits in ((6, 6), (4, 8), (4, 4))),
    )
)


def get_config(name: str) -> QuantConfig:
    """The named configuration; ``ValueError`` listing the known names otherwise."""
    return CONFIGS[check_choice(name, "configuration", "intsim", tuple(CONFIGS))]


def make_config(base: str = "fqvit-w8a8a4", *, wbits: int | None = None, abits: int | None = None,
                attn_bits: int | None = None, softmax: str | None = None, **overrides) -> QuantConfig:
    """``base`` with some choices replaced (``None`` values are ignored); the name records the overrides.

    ``wbits`` sets the weights' bits; ``abits`` every activation point's (and the residual stream's and the GELU
    index's where they had the activation bits); ``attn_bits`` and ``softmax`` the post-softmax point's bits and
    quantizer (``lis`` or ``uniform_softmax``; leaving a LIS base at other than 4 bits needs ``softmax``); other
    keywords replace fields of :class:`QuantConfig` (options, or whole :class:`Point` values).
    """
    config = get_config(base)
    requested = dict(wbits=wbits, abits=abits, attn_bits=attn_bits, softmax=softmax, **overrides)
    requested = {key: value for key, value in requested.items() if value is not None}
    changes = {key: value for key, value in overrides.items() if value is not None}
    if wbits is not None:
        changes["weights"] = replace(config.weights, bits=wbits)
    if abits is not None:
        changes.update({kind: replace(config.point(kind), bits=bits) for kind, bits in _abits(config, abits).items()})
    if attn_bits is not None or softmax is not None:
        changes["post_softmax"] = Point(softmax or config.softmax, config.attn_bits if attn_bits is None else attn_bits)
    shown = {key: value for key, value in requested.items() if getattr(config, key, None) != value}
    changes = {key: value for key, value in changes.items() if getattr(config, key) != value}
    if changes:
        suffix = ",".join(f"{key}={value}" for key, value in sorted(shown.items()))
        config = replace(config, name=f"{base}[{suffix}]", **changes)
    return validate_config(config)
