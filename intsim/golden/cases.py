"""Op-level vector cases for every op of :data:`intsim.ops.OPS`: explicit corner cases plus seeded random ones.

Each :class:`OpCases` names the op's manifest ``kind`` (the Program op kind it implements, docs/program.md, or the
CamelCase of a building block that is no Program op), says which keyword arguments of the op are data ``inputs``
and which are ``params`` (constants: multipliers, shifts, tables, ...) and under which **role** each appears in the
manifest (the Program kind's argument name: ``ptf_layernorm``'s ``q`` is LayerNorm's ``x``), which attribute gives
each operand's zero point, lists the corner cases (exact ties, saturation at both ends, zero-variance LayerNorm
rows, equal / one-hot / masked softmax rows, extreme codes, ...), draws random cases from a
``numpy.random.Generator``, and states the declared width of every array and of the output. Scalars (zero points,
ranges, rounding, ``bits``) and the integer fields of a constants object become the case's attributes.

Ops with a ``rounding`` argument (:func:`takes_rounding`: requantize, ptf_layernorm, residual_add) get one suite
per rounding mode: every case of it, corner or random, rounds that way, and its ``ties_<mode>`` case holds at
least 32 exact ties of both signs and both floor parities (built with :mod:`intsim.golden.ties`), so a DUT that
rounds another way fails it.

Declared widths: codes carry the width the op's contract gives them (``bits`` / ``signed`` arguments, ``qmin`` /
``qmax``); multipliers are 32-bit signed, shifts 6-bit unsigned; accumulator outputs (matmul, linear,
lis_attention_values, i_gelu, the AdaLog accumulators) are as wide as the bound the op proves from the declared input widths; other
values (an ``int_exp`` input, a LayerNorm bias, a GELU table's codes) the narrowest width holding them.
Floats appear only here, at plan time (``layernorm_constants``, ``i_exp_constants``, ...), never in an op.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from intsim.golden.formats import width_of_range
from intsim.golden.ties import layernorm_tie_constants, power_of_two_sigma_rows, tie_operand
from intsim.ops import (
    OPS,
    ZERO_CODE,
    adalog_mantissa_table,
    adalog_shift_table,
    adalog_thresholds,
    build_gelu_lut,
    i_exp_constants,
    i_gelu_constants,
    layernorm_constants,
    log_weight_table,
    residual_add_constants,
)
from intsim.ops.rounding import ROUNDING_MODES

__all__ = ["SUITES", "Case", "OpCases", "output_width", "takes_rounding"]

MODES = tuple(ROUNDING_MODES)
MULTIPLIER = (32, True)
SHIFT = (6, False)


@dataclass
class Case:
    """One call of the op: ``kwargs`` as the op takes them; ``widths``: array argument -> ``(bits, signed)``."""

    label: str
    kwargs: dict
    widths: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OpCases:
    """The suite of one op. ``corners(**mode)`` and ``random(rng, **mode)`` take ``rounding=MODE`` exactly when
    the op does (:func:`takes_rounding`)."""

    name: str  # the intsim.ops function
    kind: str  # the manifest's op kind
    inputs: tuple[str, ...]
    params: tuple[str, ...]
    corners: Callable[..., list[Case]]
    random: Callable[..., Case]
    output: Callable[[Case], tuple[int, bool]]  # declared width of the op's output for this case
    roles: dict = field(default_factory=dict)  # argument -> manifest role, where they differ
    zero_points: dict = field(default_factory=dict)  # argument (or "out") -> the attribute holding its zero point

    def role(self, argument: str) -> str:
        return self.roles.get(argument, argument)


def takes_rounding(op: str) -> bool:
    """Does the op of :data:`intsim.ops.OPS` named ``op`` take a ``rounding`` argument?"""
    spec = next(spec for spec in OPS if spec.name == op)
    return "rounding" in inspect.signature(spec.kernel).parameters


def _range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def _codes(rng, shape, bits, signed, dtype=np.int64):
    low, high = _range(bits, signed)
    return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)


def _code_dtype(bits: int, signed: bool):
    return np.dtype(f"{'i' if signed else 'u'}{1 if bits <= 8 else 2 if bits <= 16 else 4}") if bits <= 32 else np.int64


def _symmetric(bound: int) -> tuple[int, bool]:
    return width_of_range(-bound, bound)


def _span(zero_point: int, bits: int, signed: bool) -> int:
    """The largest ``|code - zero_point|`` over the declared code range."""
    low, high = _range(bits, signed)
    return max(zero_point - low, high - zero_point)


def _actual(array) -> tuple[int, bool]:
    array = np.asarray(array)
    return width_of_range(int(array.min()), int(array.max())) if array.size else (1, False)


def _output_range(case: Case) -> tuple[int, bool]:
    return width_of_range(case.kwargs["qmin"], case.kwargs["qmax"])


# ------------------------------------------------------------------------------------------- requantize
def _requantize(label, acc, acc_bits, multiplier, shift, *, zero_point=0, qmin=-128, qmax=127, rounding="half_up"):
    kwargs = dict(acc=np.asarray(acc, dtype=np.int64), multiplier=np.asarray(multiplier, dtype=np.int64),
                  shift=np.asarray(shift, dtype=np.int64), zero_point=zero_point, qmin=qmin, qmax=qmax,
                  rounding=rounding)
    return Case(label, kwargs, {"acc": (acc_bits, True), "multiplier": MULTIPLIER, "shift": SHIFT})


_REQUANT_TIE_CHANNELS = ((1, 1), (3 << 29, 32), (-(5 << 27), 31), (1 << 30, 40))  # (M, k): 0 to 30 trailing zeros
_TIE_TARGETS = tuple(range(-8, 8))  # floors of both signs and parities


def _requantize_ties(rounding):
    """``acc * M`` an exact tie of the shift ``k`` in every element: 16 rows (floors -8..7 and +-2**20) x 4 channels."""
    targets = (*_TIE_TARGETS, -(2**20), 2**20 - 1)
    acc = np.array([[tie_operand(0, m, k, target) for m, k in _REQUANT_TIE_CHANNELS] for target in targets])
    multiplier, shift = zip(*_REQUANT_TIE_CHANNELS)
    return _requantize(f"ties_{rounding}", acc, 32, multiplier, shift, zero_point=-5, qmin=-(2**31), qmax=2**31 - 1,
                       rounding=rounding)


def _requantize_corners(rounding):
    edges = np.array([-1000, -129, -128, -127, 0, 126, 127, 128, 1000])[:, None]
    extremes = np.array([[-(2**31)] * 2, [2**31 - 1] * 2, [-1] * 2, [0] * 2, [1] * 2])
    return [
        _requantize_ties(rounding),
        _requantize("saturation_both_ends", edges, 11, [2**30], [30], zero_point=128, qmin=0, qmax=255,
                    rounding=rounding),
        _requantize("extreme_codes", extremes, 32, [2**31 - 1, -(2**31 - 1)], [31, 62], zero_point=-128,
                    rounding=rounding),
        _requantize("zero_multiplier", np.arange(-3, 4)[:, None], 3, [0], [0], zero_point=5, rounding=rounding),
    ]


def _requantize_random(rng, rounding):
    rows, channels = int(rng.integers(1, 5)), int(rng.integers(1, 9))
    acc_bits = int(rng.integers(8, 33))
    acc = _codes(rng, (rows, channels), acc_bits, True)
    width = channels if rng.random() < 0.5 else 1
    multiplier = rng.integers(2**30, 2**31, size=width) * rng.choice([-1, 1], size=width)
    shift = np.clip(rng.integers(acc_bits + 18, acc_bits + 27, size=width), 0, 62)
    bits, signed = [(8, True), (8, False), (16, True), (4, False)][int(rng.integers(4))]
    qmin, qmax = _range(bits, signed)
    return _requantize("random", acc, acc_bits, multiplier, shift, zero_point=int(rng.integers(qmin, qmax + 1)),
                       qmin=qmin, qmax=qmax, rounding=rounding)


# ------------------------------------------------------------------------------------ matmul and linear
def _matmul(label, a, a_w, b, b_w, *, a_zero_point=0, b_zero_point=0, bias=None):
    kwargs = dict(a=np.asarray(a, dtype=_code_dtype(*a_w)), b=np.asarray(b, dtype=_code_dtype(*b_w)),
                  a_zero_point=a_zero_point, b_zero_point=b_zero_point)
    widths = {"a": a_w, "b": b_w}
    if bias is not None:
        kwargs["bias"] = np.asarray(bias, dtype=np.int64)
        widths["bias"] = (32, True)
    return Case(label, kwargs, widths)


def _matmul_output(case):
    k = case.kwargs
    bound = (k["a"].shape[-1] * _span(k["a_zero_point"], *case.widths["a"]) * _span(k["b_zero_point"], *case.widths["b"])
             + (int(np.abs(k["bias"]).max()) if "bias" in k and k["bias"].size else 0))
    return _symmetric(bound)


def _matmul_corners():
    a = np.full((2, 64), 255)
    a[1] = 0
    b = np.full((64, 3), -128)
    b[:, 1] = 127
    rng = np.random.default_rng(1)
    return [
        _matmul("extreme_codes_uint8_x_int8", a, (8, False), b, (8, True), bias=[-(2**31), 2**31 - 1, 0]),
        _matmul("zero_points_at_extremes", _codes(rng, (3, 16), 8, False), (8, False), _codes(rng, (16, 4), 8, True),
                (8, True), a_zero_point=255, b_zero_point=-128),
        _matmul("int16_extremes", [[-(2**15)] * 8, [2**15 - 1] * 8], (16, True), [[-(2**15)] * 2] * 8, (16, True)),
        _matmul("batch_broadcast", _codes(rng, (2, 3, 4), 8, False), (8, False), _codes(rng, (4, 5), 8, True),
                (8, True), a_zero_point=128, bias=_codes(rng, (5,), 16, True)),
        _matmul("k_equals_1", _codes(rng, (3, 1), 8, False), (8, False), _codes(rng, (1, 4), 8, True), (8, True),
                a_zero_point=7),
    ]


def _matmul_random(rng):
    m, k, n = int(rng.integers(1, 9)), int(rng.integers(1, 33)), int(rng.integers(1, 9))
    a_w = [(8, False), (8, True), (4, False)][int(rng.integers(3))]
    a_low, a_high = _range(*a_w)
    bias = _codes(rng, (n,), 32, True) if rng.random() < 0.5 else None
    return _matmul("random", _codes(rng, (m, k), *a_w), a_w, _codes(rng, (k, n), 8, True), (8, True),
                   a_zero_point=int(rng.integers(a_low, a_high + 1)), b_zero_point=0, bias=bias)


def _linear(label, x, x_w, weight, w_w, *, x_zero_point=0, bias=None, x_shift=None):
    kwargs = dict(x=np.asarray(x, dtype=_code_dtype(*x_w)), weight=np.asarray(weight, dtype=_code_dtype(*w_w)),
                  x_zero_point=x_zero_point)
    widths = {"x": x_w, "weight": w_w}
    if bias is not None:
        kwargs["bias"] = np.asarray(bias, dtype=np.int64)
        widths["bias"] = (32, True)
    if x_shift is not None:
        kwargs["x_shift"] = np.asarray(x_shift, dtype=np.uint8)
        widths["x_shift"] = (4, False)
    return Case(label, kwargs, widths)


def _linear_output(case):
    k = case.kwargs
    factors = 2 ** np.asarray(k.get("x_shift", np.zeros(k["x"].shape[-1])), dtype=np.int64)
    bound = (int(factors.sum()) * _span(k["x_zero_point"], *case.widths["x"]) * _span(0, *case.widths["weight"])
             + (int(np.abs(k["bias"]).max()) if "bias" in k and k["bias"].size else 0))
    return _symmetric(bound)


def _linear_corners():
    rng = np.random.default_rng(2)
    x = np.full((2, 64), 255)
    x[1] = 0
    weight = np.full((3, 64), -128)
    weight[1] = 127
    return [
        _linear("extreme_codes_uint8_x_int8", x, (8, False), weight, (8, True), bias=[-(2**31), 2**31 - 1, 0]),
        _linear("zero_point_at_extremes", _codes(rng, (3, 16), 8, False), (8, False), _codes(rng, (4, 16), 8, True),
                (8, True), x_zero_point=255),
        _linear("leading_dims", _codes(rng, (2, 3, 8), 8, False), (8, False), _codes(rng, (5, 8), 8, True),
                (8, True), x_zero_point=128, bias=_codes(rng, (5,), 16, True)),
        _linear("int4_weights", _codes(rng, (4, 12), 8, False), (8, False), _codes(rng, (6, 12), 4, True),
                (4, True), x_zero_point=3),
        # PTF input factors (fc2 over PTF GELU codes): every shift 0..15 once, extreme codes and weights
        _linear("ptf_input_shifts_0_to_15", x[:, :16], (8, False), weight[:, :16], (8, True), x_zero_point=7,
                x_shift=np.arange(16)),
    ]


def _linear_random(rng):
    rows, k, n = int(rng.integers(1, 9)), int(rng.integers(1, 33)), int(rng.integers(1, 9))
    bias = _codes(rng, (n,), 32, True) if rng.random() < 0.5 else None
    return _linear("random", _codes(rng, (rows, k), 8, False), (8, False), _codes(rng, (n, k), 8, True), (8, True),
                   x_zero_point=int(rng.integers(0, 256)), bias=bias)


# ------------------------------------------------------------------------------------------------ isqrt
def _isqrt(label, n):
    return Case(label, {"n": np.asarray(n, dtype=np.int64)}, {"n": (63, False)})


def _isqrt_corners():
    roots = [1, 2, 3, 255, 256, 65535, 65536, 2**31 - 1, 3037000499]
    around = sorted({r * r + d for r in roots for d in (-1, 0, 1)})
    return [
        _isqrt("small", np.arange(21)),
        _isqrt("perfect_squares_and_neighbours", around),
        _isqrt("largest", [2**62 - 1, 2**62, 2**63 - 2, 2**63 - 1]),
    ]


def _isqrt_random(rng):
    lengths = [int(b) for b in rng.integers(0, 64, size=16)]  # values of every bit length 0..63
    return _isqrt("random", [int(rng.integers(2 ** (b - 1), 2**b - 1, endpoint=True)) if b else 0 for b in lengths])


# ------------------------------------------------------------------------------------------ ptf_layernorm
def _layernorm(label, q, alpha, gamma, beta, out_scale, *, zero_point, bits=8, signed=False, out_zero_point=128,
               qmin=0, qmax=255, rounding="half_up", constants=None):
    q = np.asarray(q, dtype=np.int64)
    channels = q.shape[-1]
    if constants is None:
        constants = layernorm_constants(np.broadcast_to(gamma, channels), np.broadcast_to(beta, channels), out_scale)
        constants = constants._asdict()
    kwargs = dict(q=q.astype(_code_dtype(bits, signed)), zero_point=zero_point,
                  alpha=np.broadcast_to(np.asarray(alpha, dtype=np.int64), (channels,)).copy(),
                  multiplier=np.asarray(constants["multiplier"], dtype=np.int64),
                  bias=np.asarray(constants["bias"], dtype=np.int64), shift=np.asarray(constants["shift"], dtype=np.int64),
                  out_zero_point=out_zero_point, qmin=qmin, qmax=qmax, bits=bits, signed=signed, rounding=rounding)
    widths = {"q": (bits, signed), "alpha": (3, False), "multiplier": MULTIPLIER, "bias": _actual(kwargs["bias"]),
              "shift": SHIFT}
    return Case(label, kwargs, widths)


_LN_TIE_ALPHA = (0, 1, 0, 0, 1, 0, 0, 1)
_LN_TIE_M = (1, -1, 2, 1, -1, 1, -2, 1)  # the output of a row is t * m * 2**(4 - p) + b + 1/2, t = C x_hat - S1
_LN_TIE_SHIFT = (42, 42, 20, 12, 42, 30, 25, 42)
_LN_TIE_BIAS = (-2, 0, 1, -1, 2, 0, -3, 1)


def _layernorm_ties(rounding):
    """6 rows whose sigma is 16 (or a smaller power of two), constants that make every ``n * M + B`` an exact tie."""
    rows, _ = power_of_two_sigma_rows(6, _LN_TIE_ALPHA, zero_point=128, spread=3, max_log2=4, seed=2)
    multiplier, bias, shift = layernorm_tie_constants(_LN_TIE_M, _LN_TIE_SHIFT, _LN_TIE_BIAS, 4)
    return _layernorm(f"ties_{rounding}", rows, _LN_TIE_ALPHA, None, None, None, zero_point=128, out_zero_point=128,
                      rounding=rounding, constants={"multiplier": multiplier, "bias": bias, "shift": shift})


def _layernorm_corners(rounding):
    rng = np.random.default_rng(3)
    gamma, beta = rng.normal(1.0, 0.3, 8), rng.normal(0.0, 0.5, 8)
    constant_rows = np.array([[128] * 8, [200] * 8, [0] * 8, [255] * 8])
    spread = _codes(rng, (3, 16), 8, False)
    return [
        _layernorm_ties(rounding),
        _layernorm("zero_variance_rows", constant_rows, 2, gamma, beta, 0.05, zero_point=128, rounding=rounding),
        _layernorm("single_channel", [[0], [17], [255]], 1, [1.5], [0.25], 0.05, zero_point=100, rounding=rounding),
        _layernorm("saturation_both_ends", spread, 0, 1.0, 0.0, 0.001, zero_point=128, rounding=rounding),
        _layernorm("extreme_codes_alpha_0_to_7", np.tile([0, 255], (2, 8)), np.arange(16) % 8, rng.normal(1, 0.3, 16),
                   rng.normal(0, 0.5, 16), 0.05, zero_point=0, rounding=rounding),
        _layernorm("signed_4bit_input", _codes(rng, (3, 8), 4, True), rng.integers(0, 4, 8), gamma, beta, 0.05,
                   zero_point=-3, bits=4, signed=True, out_zero_point=0, qmin=-128, qmax=127, rounding=rounding),
    ]


def _layernorm_random(rng, rounding):
    rows = int(rng.integers(1, 5))
    channels = int(rng.choice([1, 2, 3, 8, 16, 64]))
    return _layernorm("random", _codes(rng, (rows, channels), 8, False), rng.integers(0, 4, channels),
                      rng.normal(1.0, 0.3, channels), rng.normal(0.0, 0.5, channels), float(rng.uniform(0.02, 0.1)),
                      zero_point=int(rng.integers(0, 256)), out_zero_point=int(rng.integers(0, 256)),
                      rounding=rounding)


# ----------------------------------------------------------------------------------------------- int_exp
def _int_exp(label, x, scale):
    x = np.asarray(x, dtype=np.int64)
    return Case(label, {"x": x, "constants": i_exp_constants(scale)}, {"x": _actual(np.append(x, 0))})


def _int_exp_output(case):
    return width_of_range(0, case.kwargs["constants"].e_max)


def _int_exp_corners():
    cases = []
    for scale, tag in ((0.01, "0p01"), (0.08, "0p08"), (0.5, "0p5"), (1.5, "1p5")):
        c = i_exp_constants(scale)
        x0, n = c.x0, c.n
        x = [0, -1, x0 + 1, x0, x0 - 1, 2 * x0, 2 * x0 - 1, n * x0 + 1, n * x0, n * x0 - 1, 2 * n * x0, -(2**31)]
        cases.append(_int_exp(f"halving_boundaries_and_clamp_scale_{tag}", x, scale))
    return cases


def _int_exp_random(rng):
    scale = float(np.exp(rng.uniform(np.log(0.005), np.log(1.5))))
    c = i_exp_constants(scale)
    return _int_exp("random", rng.integers(int(1.2 * c.n * c.x0), 1, size=16), scale)


# ----------------------------------------------------------------------------------------------- softmax
def _softmax(label, q, scale, *, zero_point, bits=8, signed=False, mask=None, out_bits=None, full_scale=None):
    kwargs = dict(q=np.asarray(q, dtype=_code_dtype(bits, signed)), zero_point=zero_point,
                  constants=i_exp_constants(scale), bits=bits, signed=signed)
    widths = {"q": (bits, signed)}
    if out_bits is not None:
        kwargs["out_bits"] = out_bits
    if full_scale is not None:
        kwargs["full_scale"] = full_scale
    if mask is not None:
        kwargs["mask"] = np.asarray(mask, dtype=bool)
        widths["mask"] = (1, False)
    return Case(label, kwargs, widths)


_THRESHOLD_LENGTHS = (1, 2, 3, 4, 5, 6, 11, 12, 23, 24, 47, 48)  # log_round steps at R = 2 and 3 * 2**(m-2)


def _softmax_corners(out_bits):
    rng = np.random.default_rng(4)
    longest = max(_THRESHOLD_LENGTHS)
    equal_mask = np.arange(longest)[None, :] < np.array(_THRESHOLD_LENGTHS)[:, None]
    equal = np.full((len(_THRESHOLD_LENGTHS), longest), 77)
    one_hot = np.zeros((4, 16), dtype=np.int64)
    one_hot[np.arange(4), [0, 5, 10, 15]] = 255
    masked = _codes(rng, (4, 12), 8, False)
    mask = rng.random((4, 12)) < 0.6
    mask[3] = False  # a fully masked row
    extreme = np.where(rng.random((3, 10)) < 0.5, -128, 127)
    return [
        _softmax("equal_rows_lengths_1_to_48", equal, 0.08, zero_point=128, mask=equal_mask, out_bits=out_bits),
        _softmax("one_hot_rows", one_hot, 0.2, zero_point=0, out_bits=out_bits),
        _softmax("masked_rows_one_fully_masked", masked, 0.08, zero_point=100, mask=mask, out_bits=out_bits),
        _softmax("extreme_codes_signed", extreme, 0.05, zero_point=0, bits=8, signed=True, out_bits=out_bits),
        _softmax("vit_tiny_row_length_197", _codes(rng, (2, 197), 8, False), 0.03, zero_point=120, out_bits=out_bits),
    ]


def _softmax_random(rng, out_bits):
    rows, length = int(rng.integers(1, 5)), int(rng.integers(1, 33))
    bits, signed = [(8, False), (8, True), (4, False)][int(rng.integers(3))]
    low, high = _range(bits, signed)
    mask = rng.random((rows, length)) < 0.8 if rng.random() < 0.3 else None
    return _softmax("random", _codes(rng, (rows, length), bits, signed), float(rng.uniform(0.02, 0.5)),
                    zero_point=int(rng.integers(low, high + 1)), bits=bits, signed=signed, mask=mask, out_bits=out_bits)


def _uniform_corners():
    cases = _softmax_corners(8)
    rng = np.random.default_rng(5)
    cases.append(_softmax("out_bits_16", _codes(rng, (2, 9), 8, False), 0.1, zero_point=128, out_bits=16))
    cases.append(_softmax("out_bits_4", _codes(rng, (2, 9), 8, False), 0.1, zero_point=128, out_bits=4))
    # a calibrated full scale (the code of probability 1 beyond 255): large probabilities saturate at 255
    cases.append(_softmax("full_scale_566_one_hot_saturates", np.eye(4, 16, dtype=np.int64) * 255, 0.2, zero_point=0,
                          out_bits=8, full_scale=566))
    cases.append(_softmax("full_scale_566_vit_tiny_row_length_197", _codes(rng, (2, 197), 8, False), 0.03,
                          zero_point=120, out_bits=8, full_scale=566))
    cases.append(_softmax("full_scale_2_pow_20", _codes(rng, (2, 9), 8, False), 0.1, zero_point=128, out_bits=8,
                          full_scale=2**20))
    # one full scale per head (APQ-ViT's MPQ): F[h] for the rows of q[:, h]
    cases.append(_softmax("full_scale_per_head_4_bit", _codes(rng, (2, 3, 4, 9), 8, False), 0.1, zero_point=128,
                          out_bits=4, full_scale=[15, 47, 566]))
    return cases


def _uniform_random(rng):
    return _softmax_random(rng, int(rng.choice([4, 5, 6, 7, 8, 16])))


# ---------------------------------------------------------------------------------- lis_attention_values
def _lis(label, codes, v, v_w, *, v_zero_point):
    kwargs = dict(codes=np.asarray(codes, dtype=np.uint8), v=np.asarray(v, dtype=_code_dtype(*v_w)),
                  v_zero_point=v_zero_point)
    return Case(label, kwargs, {"codes": (5, False), "v": v_w})


def _lis_output(case):
    k = case.kwargs
    return _symmetric(k["codes"].shape[-1] * _span(k["v_zero_point"], *case.widths["v"]) * 2**15)


def _lis_corners():
    rng = np.random.default_rng(6)
    return [
        _lis("all_probability_zero", np.full((3, 5), ZERO_CODE), _codes(rng, (5, 4), 8, False), (8, False),
             v_zero_point=128),
        _lis("code_0_extreme_values_high", np.zeros((2, 8)), np.full((8, 3), 255), (8, False), v_zero_point=0),
        _lis("code_0_extreme_values_low", np.zeros((2, 8)), np.zeros((8, 3)), (8, False), v_zero_point=255),
        _lis("every_code", np.tile(np.arange(ZERO_CODE + 1), (2, 1)), _codes(rng, (ZERO_CODE + 1, 4), 8, False),
             (8, False), v_zero_point=130),
        _lis("batch_dims", rng.integers(0, ZERO_CODE + 1, (2, 3, 4, 5)), _codes(rng, (2, 3, 5, 6), 8, True), (8, True),
             v_zero_point=-5),
    ]


def _lis_random(rng):
    n, m, d = (int(rng.integers(1, 9)) for _ in range(3))
    return _lis("random", rng.integers(0, ZERO_CODE + 1, (n, m)), _codes(rng, (m, d), 8, False), (8, False),
                v_zero_point=int(rng.integers(0, 256)))


# -------------------------------------------------------------------------------------------- lut_lookup
def _lut(label, codes, bits, signed, table, table_w, rows=None):
    kwargs = dict(codes=np.asarray(codes, dtype=_code_dtype(bits, signed)),
                  table=np.asarray(table, dtype=_code_dtype(*table_w)), bits=bits, signed=signed)
    widths = {"codes": (bits, signed), "table": table_w}
    if rows is not None:
        kwargs["rows"] = np.asarray(rows, dtype=np.uint8)
        widths["rows"] = (8, False)
    return Case(label, kwargs, widths)


def _lut_corners():
    rng = np.random.default_rng(7)
    gelu = build_gelu_lut(in_scale=0.05, in_zero_point=128, out_scale=0.03, out_zero_point=10)
    return [
        _lut("gelu_table_every_code", np.arange(256), 8, False, gelu, (8, False)),
        _lut("every_code_int4_table_int8", np.arange(-8, 8), 4, True, _codes(rng, (16,), 8, True), (8, True)),
        _lut("every_code_10bit_table_int16", np.arange(-512, 512), 10, True, _codes(rng, (1024,), 16, True), (16, True)),
        _lut("extreme_codes_1bit", [[0, 1], [1, 0]], 1, False, [-(2**31), 2**31 - 1], (32, True)),
        # per-channel tables (GELU on PTF codes): three tables, channel c reads row rows[c]
        _lut("per_channel_rows_every_code", np.tile(np.arange(256)[:, None], (1, 3)), 8, False,
             np.stack([gelu, gelu[::-1], _codes(rng, (256,), 8, False)]), (8, False), rows=[2, 0, 1]),
    ]


def _lut_random(rng):
    bits = int(rng.integers(1, 9))
    signed = bool(rng.random() < 0.5)
    table_w = [(8, False), (8, True), (16, True)][int(rng.integers(3))]
    return _lut("random", _codes(rng, (int(rng.integers(1, 5)), 8), bits, signed), bits, signed,
                _codes(rng, (2**bits,), *table_w), table_w)


# ------------------------------------------------------------------------------------------------ i_gelu
def _i_gelu(label, x, x_bits, scale):
    return Case(label, {"x": np.asarray(x, dtype=np.int64), "constants": i_gelu_constants(scale)},
                {"x": (x_bits, True)})


def _i_gelu_output(case):
    c = case.kwargs["constants"]
    factor = ((c.b_int**2 + abs(c.c_int)) >> c.shift) + 1 + abs(c.one)
    return _symmetric(2 ** (case.widths["x"][0] - 1) * factor)


def _i_gelu_corners():
    cases = []
    for scale, tag in ((1e-4, "1em4"), (1e-3, "1em3"), (5e-3, "5em3")):
        clip = -i_gelu_constants(scale).b_int
        x = [0, 1, -1, clip - 1, clip, clip + 1, -(clip - 1), -clip, -(clip + 1), 2**31 - 1, -(2**31)]
        cases.append(_i_gelu(f"clip_points_and_extremes_scale_{tag}", x, 32, scale))
    return cases


def _i_gelu_random(rng):
    scale = float(np.exp(rng.uniform(np.log(1e-4), np.log(5e-3))))
    bits = int(rng.integers(16, 33))
    return _i_gelu("random", _codes(rng, (16,), bits, True), bits, scale)


# ------------------------------------------------------------------------------------------ residual_add
def _residual(label, a, a_w, b, b_w, a_multiplier, b_multiplier, shift, *, a_zero_point, b_zero_point,
              out_zero_point=0, qmin=-128, qmax=127, rounding="half_up"):
    kwargs = dict(a=np.asarray(a, dtype=_code_dtype(*a_w)), b=np.asarray(b, dtype=_code_dtype(*b_w)),
                  a_zero_point=a_zero_point, b_zero_point=b_zero_point,
                  a_multiplier=np.asarray(a_multiplier, dtype=np.int64),
                  b_multiplier=np.asarray(b_multiplier, dtype=np.int64), shift=np.asarray(shift, dtype=np.int64),
                  out_zero_point=out_zero_point, qmin=qmin, qmax=qmax, rounding=rounding)
    widths = {"a": a_w, "b": b_w, "a_multiplier": MULTIPLIER, "b_multiplier": MULTIPLIER, "shift": SHIFT}
    return Case(label, kwargs, widths)


_RESIDUAL_TIE_CHANNELS = ((1, 1, 1), (15 << 20, 1 << 20, 24), (33 << 25, -(3 << 25), 30), (7 << 28, 5 << 28, 36))


def _residual_ties(rounding):
    """``(a - 120) * Ma + (b + 3) * Mb`` an exact tie of the shift in every element (16 rows x 4 (Ma, Mb, k))."""
    a = np.array([[120 + (7 * r + 3 * c) % 41 - 20 for c in range(4)] for r in range(len(_TIE_TARGETS))])
    b = np.array([[tie_operand((a[r, c] - 120) * ma, mb, k, target) - 3 for c, (ma, mb, k) in
                   enumerate(_RESIDUAL_TIE_CHANNELS)] for r, target in enumerate(_TIE_TARGETS)])
    ma, mb, k = zip(*_RESIDUAL_TIE_CHANNELS)
    return _residual(f"ties_{rounding}", a, (8, False), b, (32, True), ma, mb, k, a_zero_point=120, b_zero_point=-3,
                     out_zero_point=100, qmin=0, qmax=255, rounding=rounding)


def _residual_corners(rounding):
    rng = np.random.default_rng(8)
    edge_a = np.array([0, 255, 0, 255, 128])[:, None]
    edge_b = np.array([-200, 200, 0, 0, 0])[:, None]
    ma, mb, k = residual_add_constants(np.full(8, 0.05) * 2.0 ** rng.integers(0, 4, 8), 1e-4 * rng.uniform(0.5, 2, 8), 0.06)
    return [
        _residual_ties(rounding),
        _residual("saturation_both_ends", edge_a, (8, False), edge_b, (32, True), [2**30], [2**30], [30],
                  a_zero_point=128, b_zero_point=0, out_zero_point=128, qmin=0, qmax=255, rounding=rounding),
        _residual("extreme_codes_int32_b", np.array([[0, 255]] * 3),
                  (8, False), np.array([[-(2**31), 2**31 - 1], [2**31 - 1, -(2**31)], [0, 0]]), (32, True),
                  [2**30, 2**30 - 1], [2**30, 2**30 - 1], [62, 40], a_zero_point=255, b_zero_point=0,
                  out_zero_point=0, qmin=-(2**15), qmax=2**15 - 1, rounding=rounding),
        _residual("per_channel_ptf", _codes(rng, (4, 8), 8, False), (8, False), _codes(rng, (4, 8), 20, True),
                  (20, True), ma, mb, k, a_zero_point=120, b_zero_point=0, out_zero_point=125, qmin=0, qmax=255,
                  rounding=rounding),
    ]


def _residual_random(rng, rounding):
    rows, channels = int(rng.integers(1, 5)), int(rng.integers(1, 9))
    ma, mb, k = residual_add_constants(rng.uniform(0.01, 0.1, channels), rng.uniform(1e-5, 1e-3, channels),
                                       float(rng.uniform(0.02, 0.1)))
    return _residual("random", _codes(rng, (rows, channels), 8, False), (8, False),
                     _codes(rng, (rows, channels), 20, True), (20, True), ma, mb, k,
                     a_zero_point=int(rng.integers(0, 256)), b_zero_point=0, out_zero_point=int(rng.integers(0, 256)),
                     qmin=0, qmax=255, rounding=rounding)


# ------------------------------------------------------------------------------- AdaLog (intsim.ops.logquant)
_SOFTMAX_FULL = 2**16 - 1  # LogEncode reads the 16-bit uniform softmax codes


def _tables(bits, q, extra=0):
    shift, mantissa = adalog_shift_table(bits, q), adalog_mantissa_table(bits, q)
    return shift, mantissa, int(shift.max()) + extra


def _fitting_q(rng, bits, limit=40):
    """A q in [10, 137] whose weight table W = M << (max SH - SH) stays below 2**limit (random cases)."""
    for _ in range(200):
        q = int(rng.integers(10, 138))
        if (2 ** (bits + 1) << ((2**bits - 1) * q // 37)) < 2**limit:
            return q
    return 10


def _log_encode(label, x, thresholds):
    x = np.asarray(x, dtype=np.int64)
    dtype, width = (np.uint16, (16, False)) if x.size == 0 or x.max() <= _SOFTMAX_FULL else (np.int64, _actual(x))
    t = np.asarray(thresholds, dtype=np.int64)
    return Case(label, dict(x=x.astype(dtype), thresholds=t), {"x": width, "thresholds": _actual(t)})


def _log_encode_output(case):
    return width_of_range(0, case.kwargs["thresholds"].shape[0])


def _log_encode_corners():
    rng = np.random.default_rng(11)
    t = adalog_thresholds(4, 37, float(_SOFTMAX_FULL))
    ties = np.unique(np.concatenate([t, t - 1, t + 1, [0, _SOFTMAX_FULL]]).clip(0, _SOFTMAX_FULL))
    return [
        _log_encode("ties_at_every_threshold", ties.reshape(1, -1), t),  # x == T_k: the lower code
        _log_encode("zero_and_full_scale", [[0, 1, _SOFTMAX_FULL - 1, _SOFTMAX_FULL]],
                    adalog_thresholds(3, 20, float(_SOFTMAX_FULL))),
        _log_encode("bits_1", rng.integers(0, _SOFTMAX_FULL + 1, (3, 7)), adalog_thresholds(1, 37, 3000.0)),
        _log_encode("bits_8", rng.integers(0, _SOFTMAX_FULL + 1, (4, 64)), adalog_thresholds(8, 11, float(_SOFTMAX_FULL))),
        _log_encode("clipped_thresholds", [[0, 5, _SOFTMAX_FULL]], adalog_thresholds(3, 10, 1e30)),
        _log_encode("batch_dims", rng.integers(0, _SOFTMAX_FULL + 1, (2, 3, 4, 5)),
                    adalog_thresholds(4, 60, float(_SOFTMAX_FULL))),
    ]


def _log_encode_random(rng):
    bits, q = int(rng.integers(1, 9)), int(rng.integers(10, 138))
    ratio = float(_SOFTMAX_FULL) * float(2.0 ** rng.uniform(-4, 4))
    n, m = int(rng.integers(1, 9)), int(rng.integers(1, 17))
    return _log_encode("random", rng.integers(0, _SOFTMAX_FULL + 1, (n, m)), adalog_thresholds(bits, q, ratio))


def _log_values(label, codes, v, v_w, tables, *, v_zero_point):
    shift, mantissa, max_shift = tables
    zero = shift.shape[0]
    kwargs = dict(codes=np.asarray(codes, dtype=np.uint16 if zero > 255 else np.uint8),
                  v=np.asarray(v, dtype=_code_dtype(*v_w)), shift=shift, mantissa=mantissa,
                  v_zero_point=v_zero_point, max_shift=max_shift)
    return Case(label, kwargs, {"codes": width_of_range(0, zero), "v": v_w, "shift": (6, False),
                                "mantissa": _actual(mantissa)})


def _log_values_output(case):
    k = case.kwargs
    w_max = int(log_weight_table(k["shift"], k["mantissa"], k["max_shift"]).max())
    return _symmetric(k["codes"].shape[-1] * _span(k["v_zero_point"], *case.widths["v"]) * w_max)


def _log_values_corners():
    rng = np.random.default_rng(12)
    t4 = _tables(4, 37)
    return [
        _log_values("every_code", np.tile(np.arange(17), (2, 1)), _codes(rng, (17, 4), 8, False), (8, False), t4,
                    v_zero_point=128),
        _log_values("all_zero_code", np.full((3, 5), 16), _codes(rng, (5, 4), 8, False), (8, False), t4,
                    v_zero_point=3),
        _log_values("code_0_extreme_values_high", np.zeros((2, 8)), np.full((8, 3), 255), (8, False), t4,
                    v_zero_point=0),
        _log_values("code_0_extreme_values_low", np.zeros((2, 8)), np.zeros((8, 3)), (8, False), t4,
                    v_zero_point=255),
        _log_values("largest_shift_q137", rng.integers(0, 9, (3, 6)), _codes(rng, (6, 4), 8, True), (8, True),
                    _tables(3, 137), v_zero_point=-7),
        _log_values("max_shift_above_the_largest", rng.integers(0, 9, (2, 5)), _codes(rng, (5, 3), 8, False),
                    (8, False), _tables(3, 50, extra=3), v_zero_point=100),
        _log_values("batch_heads", rng.integers(0, 17, (2, 3, 4, 5)), _codes(rng, (2, 3, 5, 6), 8, False), (8, False),
                    t4, v_zero_point=128),
    ]


def _log_values_random(rng):
    bits = int(rng.integers(1, 7))
    n, m, d = (int(rng.integers(1, 9)) for _ in range(3))
    return _log_values("random", rng.integers(0, 2**bits + 1, (n, m)), _codes(rng, (m, d), 8, False), (8, False),
                       _tables(bits, _fitting_q(rng, bits)), v_zero_point=int(rng.integers(0, 256)))


def _asym(label, x, x_w, weight, w_w, weight_zero_point, bias, *, x_zero_point=0, x_shift=None):
    kwargs = dict(x=np.asarray(x, dtype=_code_dtype(*x_w)), weight=np.asarray(weight, dtype=_code_dtype(*w_w)),
                  weight_zero_point=np.asarray(weight_zero_point, dtype=np.int64),
                  bias=np.asarray(bias, dtype=np.int64), x_zero_point=x_zero_point)
    widths = {"x": x_w, "weight": w_w, "weight_zero_point": (32, True), "bias": (32, True)}
    if x_shift is not None:
        kwargs["x_shift"] = np.asarray(x_shift, dtype=np.uint8)
        widths["x_shift"] = (4, False)
    return Case(label, kwargs, widths)


def _weight_span(case):
    k = case.kwargs
    return max((_span(int(z), *case.widths["weight"]) for z in k["weight_zero_point"]), default=0)


def _bias_abs(case):
    bias = case.kwargs["bias"]
    return int(np.abs(bias).max()) if bias.size else 0


def _asym_output(case):
    k = case.kwargs
    factors = 2 ** np.asarray(k.get("x_shift", np.zeros(k["x"].shape[-1])), dtype=np.int64)
    return _symmetric(int(factors.sum()) * _span(k["x_zero_point"], *case.widths["x"]) * _weight_span(case)
                      + _bias_abs(case))


def _asym_corners():
    rng = np.random.default_rng(13)
    x = np.full((2, 64), 255)
    x[1] = 0
    weight = np.zeros((3, 64))
    weight[1] = 255
    return [
        _asym("extreme_codes", x, (8, False), weight, (8, False), [255, 0, 128], [-(2**31), 2**31 - 1, 0]),
        _asym("zero_points_at_extremes", _codes(rng, (3, 16), 8, False), (8, False), _codes(rng, (4, 16), 8, False),
              (8, False), [0, 255, 0, 255], [0, 0, 0, 0], x_zero_point=255),
        _asym("leading_dims", _codes(rng, (2, 3, 8), 8, False), (8, False), _codes(rng, (5, 8), 8, False), (8, False),
              _codes(rng, (5,), 8, False), _codes(rng, (5,), 16, True), x_zero_point=128),
        _asym("int4_weights", _codes(rng, (4, 12), 8, False), (8, False), _codes(rng, (6, 12), 4, False), (4, False),
              _codes(rng, (6,), 4, False), _codes(rng, (6,), 16, True), x_zero_point=3),
        # PTF input factors (fc2 over APQ-ViT's per-channel GELU codes): every shift 0..15 once, extreme codes
        _asym("ptf_input_shifts_0_to_15", x[:, :16], (8, False), weight[:, :16], (8, False), [255, 0, 128],
              [-(2**31), 2**31 - 1, 0], x_zero_point=7, x_shift=np.arange(16)),
    ]


def _asym_random(rng):
    rows, k, n = int(rng.integers(1, 9)), int(rng.integers(1, 33)), int(rng.integers(1, 9))
    return _asym("random", _codes(rng, (rows, k), 8, False), (8, False), _codes(rng, (n, k), 8, False), (8, False),
                 _codes(rng, (n,), 8, False), _codes(rng, (n,), 32, True), x_zero_point=int(rng.integers(0, 256)))


def _log_lin(label, x, weight, w_w, weight_zero_point, bias, tables):
    shift, mantissa, max_shift = tables
    zero = shift.shape[0]
    bias = np.asarray(bias, dtype=np.int64)
    kwargs = dict(x=np.asarray(x, dtype=np.uint16 if zero > 255 else np.uint8),
                  weight=np.asarray(weight, dtype=_code_dtype(*w_w)),
                  weight_zero_point=np.asarray(weight_zero_point, dtype=np.int64), bias=bias, shift=shift,
                  mantissa=mantissa, max_shift=max_shift)
    return Case(label, kwargs, {"x": width_of_range(0, zero), "weight": w_w, "weight_zero_point": (32, True),
                                "bias": (64, True), "shift": (6, False), "mantissa": _actual(mantissa)})


def _log_lin_output(case):
    k = case.kwargs
    w_max = int(log_weight_table(k["shift"], k["mantissa"], k["max_shift"]).max())
    return _symmetric(k["x"].shape[-1] * w_max * _weight_span(case) + _bias_abs(case))


def _log_lin_corners():
    rng = np.random.default_rng(14)
    t4 = _tables(4, 37)
    weight = np.zeros((3, 17))
    weight[1] = 255
    return [
        _log_lin("every_code", np.tile(np.arange(17), (2, 1)), _codes(rng, (3, 17), 8, False), (8, False),
                 [0, 128, 255], [-(2**40), 2**40, 7], t4),
        _log_lin("all_zero_code", np.full((2, 17), 16), _codes(rng, (3, 17), 8, False), (8, False), [1, 2, 3],
                 [5, -6, 2**50], t4),
        _log_lin("code_0_extreme_weights", np.zeros((2, 17)), weight, (8, False), [255, 0, 128], [0, 0, 0], t4),
        _log_lin("largest_shift_q137", rng.integers(0, 9, (3, 6)), _codes(rng, (4, 6), 8, False), (8, False),
                 _codes(rng, (4,), 8, False), _codes(rng, (4,), 32, True), _tables(3, 137)),
        _log_lin("leading_dims", rng.integers(0, 17, (2, 3, 8)), _codes(rng, (5, 8), 4, False), (4, False),
                 _codes(rng, (5,), 4, False), _codes(rng, (5,), 48, True), _tables(4, 60, extra=2)),
    ]


def _log_lin_random(rng):
    bits = int(rng.integers(1, 7))
    rows, k, n = int(rng.integers(1, 9)), int(rng.integers(1, 33)), int(rng.integers(1, 9))
    return _log_lin("random", rng.integers(0, 2**bits + 1, (rows, k)), _codes(rng, (n, k), 8, False), (8, False),
                    _codes(rng, (n,), 8, False), _codes(rng, (n,), 40, True), _tables(bits, _fitting_q(rng, bits)))


# -------------------------------------------------------------------------------------------- the table
SUITES: dict[str, OpCases] = {suite.name: suite for suite in (
    OpCases("requantize", "Requantize", ("acc",), ("multiplier", "shift"), _requantize_corners, _requantize_random,
            _output_range, zero_points={"out": "zero_point"}),
    OpCases("integer_matmul", "IntegerMatmul", ("a", "b"), ("bias",), _matmul_corners, _matmul_random, _matmul_output,
            zero_points={"a": "a_zero_point", "b": "b_zero_point"}),
    OpCases("integer_linear", "Linear", ("x",), ("weight", "bias", "x_shift"), _linear_corners, _linear_random,
            _linear_output, zero_points={"x": "x_zero_point"}),
    OpCases("isqrt", "Isqrt", ("n",), (), _isqrt_corners, _isqrt_random, lambda case: (32, False)),
    OpCases("ptf_layernorm", "LayerNorm", ("q",), ("alpha", "multiplier", "bias", "shift"), _layernorm_corners,
            _layernorm_random, _output_range, roles={"q": "x"},
            zero_points={"q": "zero_point", "out": "out_zero_point"}),
    OpCases("int_exp", "IntExp", ("x",), (), _int_exp_corners, _int_exp_random, _int_exp_output),
    OpCases("log_int_softmax", "LogIntSoftmax", ("q", "mask"), (), lambda: _softmax_corners(None),
            lambda rng: _softmax_random(rng, None), lambda case: (5, False), roles={"q": "logits"},
            zero_points={"q": "zero_point"}),
    OpCases("uniform_int_softmax", "UniformSoftmax", ("q", "mask"), (), _uniform_corners, _uniform_random,
            lambda case: (case.kwargs["out_bits"], False), roles={"q": "logits"}, zero_points={"q": "zero_point"}),
    OpCases("lis_attention_values", "LisAttentionValues", ("codes", "v"), (), _lis_corners, _lis_random, _lis_output,
            roles={"codes": "probs"}, zero_points={"v": "v_zero_point"}),
    OpCases("lut_lookup", "Lut", ("codes",), ("table", "rows"), _lut_corners, _lut_random,
            lambda case: case.widths["table"], roles={"codes": "x"}),
    OpCases("i_gelu", "IGelu", ("x",), (), _i_gelu_corners, _i_gelu_random, _i_gelu_output),
    OpCases("residual_add", "ResidualAdd", ("a", "b"), ("a_multiplier", "b_multiplier", "shift"), _residual_corners,
            _residual_random, _output_range,
            zero_points={"a": "a_zero_point", "b": "b_zero_point", "out": "out_zero_point"}),
    OpCases("log_encode", "LogEncode", ("x",), ("thresholds",), _log_encode_corners, _log_encode_random,
            _log_encode_output),
    OpCases("log_attention_values", "LogAttentionValues", ("codes", "v"), ("shift", "mantissa"), _log_values_corners,
            _log_values_random, _log_values_output,
            roles={"codes": "probs", "shift": "shift_table", "mantissa": "mantissa_table"},
            zero_points={"v": "v_zero_point"}),
    OpCases("asymmetric_linear", "AsymmetricLinear", ("x",), ("weight", "weight_zero_point", "bias", "x_shift"),
            _asym_corners,
            _asym_random, _asym_output, zero_points={"x": "x_zero_point"}),
    OpCases("log_linear", "LogLinear", ("x",), ("weight", "weight_zero_point", "bias", "shift", "mantissa"),
            _log_lin_corners, _log_lin_random, _log_lin_output,
            roles={"shift": "shift_table", "mantissa": "mantissa_table"}),
)}


def output_width(op: str, case: Case) -> tuple[int, bool]:
    """The declared ``(bits, signed)`` of ``op``'s output for ``case``."""
    return SUITES[op].output(case)
