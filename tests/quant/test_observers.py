"""Quantizer parameters and calibration observers: hand-computed examples, numpy oracles, properties, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from intsim.quant.qparams import snap_scale
from intsim.quant import (
    MIN_SCALE,
    OBSERVERS,
    EmaObserver,
    MinMaxObserver,
    OmseObserver,
    PerChannelMinMaxObserver,
    PercentileObserver,
    PtfQParams,
    QParams,
    asymmetric_qparams,
    batch_quantiles,
    make_observer,
    ptf_qparams,
    symmetric_weight_qparams,
)

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, allow_subnormal=False)
bits_st = st.sampled_from([4, 5, 6, 7, 8, 16])


def float_arrays(*, max_side=12, max_dims=3, elements=finite):
    return hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=max_dims, max_side=max_side), elements=elements)


def generated(shape, seed, low=-1.0, high=1.0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(shape, generator=gen, dtype=dtype)


# --- QParams ------------------------------------------------------------------------------------------------


def test_qparams_code_ranges():
    assert (QParams(1.0, 0, 8, False).qmin, QParams(1.0, 0, 8, False).qmax) == (0, 255)
    assert (QParams(1.0, 0, 8, True).qmin, QParams(1.0, 0, 8, True).qmax) == (-128, 127)
    assert (QParams(1.0, 3, 4, False).qmin, QParams(1.0, 3, 4, False).qmax) == (0, 15)
    assert QParams(1.0, 0, 16, True).qmin == -32768


def test_quantize_rounds_half_even_before_adding_the_zero_point():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 0.49, -300.0, 300.0], dtype=torch.float64)
    # rhe: 0, 2, 2, -0, -2, 0; then + zp = 1 (FQ-ViT's rhe(x + 1) would give 2, 2, 4, 0, 0 on the ties)
    got = QParams(scale=1.0, zero_point=1, bits=8, signed=False).quantize(x)
    assert got.tolist() == [1.0, 3.0, 3.0, 1.0, 0.0, 1.0, 0.0, 255.0]
    assert got.dtype == torch.float64
    # signed 4 bit: -18 -> -8, 7.48 -> 7, 7.52 -> 8 -> 7, 18 -> 7
    assert QParams(0.5, 0, 4, True).quantize(torch.tensor([-9.0, 3.74, 3.76, 9.0])).tolist() == [-8.0, 7.0, 7.0, 7.0]


def test_dequantize_promotes_integer_codes_and_keeps_float_dtype():
    qp = QParams(scale=0.25, zero_point=10, bits=8, signed=False)
    out = qp.dequantize(torch.tensor([0, 10, 255], dtype=torch.uint8))
    assert out.dtype == torch.float64 and out.tolist() == [-2.5, 0.0, 61.25]
    assert qp.dequantize(torch.tensor([12.0], dtype=torch.float32)).dtype == torch.float32


@given(lo=finite, width=st.floats(0.0, 1e4, allow_subnormal=False), bits=bits_st, data=st.data())
def test_fake_quant_error_is_at_most_half_a_step_inside_the_range(lo, width, bits, data):
    hi = lo + width
    qp = asymmetric_qparams(lo, hi, bits)
    lo_, hi_ = min(lo, 0.0), max(hi, 0.0)
    x = torch.from_numpy(
        data.draw(hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(lo_, hi_, allow_subnormal=False)))
    )
    codes = qp.quantize(x)
    assert torch.equal(codes, codes.round()) and int(codes.min()) >= 0 and int(codes.max()) <= qp.qmax
    err = (qp.dequantize(codes) - x).abs().max().item()
    assert err <= qp.scale / 2 * (1 + 1e-9) + 1e-12 * max(abs(lo_), abs(hi_))


@given(bits=bits_st, signed=st.booleans(), scale=st.floats(1e-6, 1e3), data=st.data())
def test_quantize_of_dequantized_codes_is_the_identity(bits, signed, scale, data):
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    zp = data.draw(st.integers(lo, hi))
    qp = QParams(scale, zp, bits, signed)
    codes = torch.tensor(data.draw(st.lists(st.integers(lo, hi), min_size=1, max_size=20)), dtype=torch.float64)
    assert torch.equal(qp.quantize(qp.dequantize(codes)), codes)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(scale=0.0, zero_point=0, bits=8, signed=False), ValueError, "scale must be > 0"),
        (dict(scale=-1.0, zero_point=0, bits=8, signed=False), ValueError, "scale must be > 0"),
        (dict(scale=math.nan, zero_point=0, bits=8, signed=False), ValueError, "scale must be finite"),
        (dict(scale=1.0, zero_point=256, bits=8, signed=False), ValueError, "zero_point = 256 is outside"),
        (dict(scale=1.0, zero_point=-1, bits=8, signed=False), ValueError, "zero_point = -1 is outside"),
        (dict(scale=1.0, zero_point=1.5, bits=8, signed=False), TypeError, "zero_point must be an integer"),
        (dict(scale=1.0, zero_point=0, bits=1, signed=False), ValueError, "bits = 1 is outside"),
        (dict(scale=1.0, zero_point=0, bits=17, signed=False), ValueError, "bits = 17 is outside"),
        (dict(scale=1.0, zero_point=0, bits=8, signed=1), TypeError, "signed must be a bool"),
        (dict(scale="1", zero_point=0, bits=8, signed=False), TypeError, "scale must be a real number"),
    ],
)
def test_qparams_rejects_bad_fields(kwargs, error, message):
    with pytest.raises(error, match=message):
        QParams(**kwargs)


def test_quantize_rejects_non_float_tensors():
    qp = QParams(1.0, 0, 8, False)
    with pytest.raises(TypeError, match="QParams.quantize: x must be a floating-point tensor"):
        qp.quantize(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="QParams.quantize: x must be a torch.Tensor"):
        qp.quantize(np.array([1.0]))


# --- asymmetric_qparams --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lo, hi, bits, scale, zero_point",
    [
        (-1.0, 3.0, 8, snap_scale(4.0 / 255), 64),  # -1 / (4/255) = -63.75 -> 64
        (-127.5 / 128, 127.5 / 128, 8, 2.0**-7, 128),  # on the grid; -127.5 exactly: half to even -> zp 128
        (-1.0, 1.0, 8, snap_scale(2.0 / 255), 127),  # 2/255 rounded up: -1 / scale = -127.499.. -> zp 127
        (2.0, 5.0, 4, snap_scale(5.0 / 15), 0),  # all positive: widened to [0, 5], zp 0
        (-5.0, -2.0, 8, snap_scale(5.0 / 255), 255),  # all negative: widened to [-5, 0], zp = qmax
        (0.0, 0.0, 8, MIN_SCALE, 0),  # zero width: floor scale, never 0
        (3.0, 3.0, 8, snap_scale(3.0 / 255), 0),  # zero width away from 0: [0, 3]
        (-1e-9, 1e-9, 8, MIN_SCALE, 0),  # tiny range: floored scale, zp from the floored scale
        (-0.5, 15.5, 16, snap_scale(16.0 / 65535), 2048),
    ],
)
def test_asymmetric_qparams_examples(lo, hi, bits, scale, zero_point):
    qp = asymmetric_qparams(lo, hi, bits)
    assert qp.scale == scale
    assert qp.zero_point == zero_point
    assert (qp.bits, qp.signed, qp.qmin, qp.qmax) == (bits, False, 0, 2**bits - 1)


@given(lo=finite, width=st.floats(0.0, 1e4, allow_subnormal=False), bits=bits_st)
def test_asymmetric_qparams_range_contains_zero_and_the_input(lo, width, bits):
    hi = lo + width
    qp = asymmetric_qparams(lo, hi, bits)
    assert qp.scale >= MIN_SCALE and 0 <= qp.zero_point <= qp.qmax
    assert qp.dequantize(qp.quantize(torch.zeros(1, dtype=torch.float64))).item() == 0.0
    if qp.scale > MIN_SCALE:  # the representable interval covers [lo, hi] up to half a step at each end
        assert -qp.zero_point * qp.scale <= min(lo, 0.0) + qp.scale / 2 * (1 + 1e-9)
        assert (qp.qmax - qp.zero_point) * qp.scale >= max(hi, 0.0) - qp.scale / 2 * (1 + 1e-9)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((2.0, 1.0, 8), ValueError, r"lo = 2.0 is greater than hi = 1.0"),
        ((math.nan, 1.0, 8), ValueError, "lo must be finite"),
        ((0.0, math.inf, 8), ValueError, "hi must be finite"),
        ((0.0, 1.0, 0), ValueError, "asymmetric_qparams: bits = 0 is outside"),
        ((0.0, 1.0, 8.0), TypeError, "asymmetric_qparams: bits must be an integer"),
        (("a", 1.0, 8), TypeError, "lo must be a real number"),
    ],
)
def test_asymmetric_qparams_rejects_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        asymmetric_qparams(*args)


# --- symmetric weights ---------------------------------------------------------------------------------------


def test_symmetric_weight_qparams_examples_and_all_zero_channel():
    w = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [2.0, 1.0, -2.0]])
    scales, codes = symmetric_weight_qparams(w, 8)
    assert scales.dtype == torch.float64 and codes.dtype == torch.int8
    assert scales.tolist() == [1.0 / 127, 1.0, 2.0 / 127]
    # +absmax and -absmax are exactly +-127 (FQ-ViT's /127.5 would clip +absmax); 63.5 -> 64 and 31.75 -> 32
    assert codes.tolist() == [[64, -127, 32], [0, 0, 0], [127, 64, -127]]


def test_symmetric_weight_qparams_keeps_shape_and_widens_codes_above_8_bits():
    w = generated((6, 3, 2, 2), seed=1, dtype=torch.float32)
    scales, codes = symmetric_weight_qparams(w, 12)
    assert scales.shape == (6,) and codes.shape == w.shape and codes.dtype == torch.int16
    assert codes.abs().amax(dim=(1, 2, 3)).tolist() == [2047] * 6
    _, codes4 = symmetric_weight_qparams(w, 4)
    assert int(codes4.abs().max()) == 7 and codes4.dtype == torch.int8


@given(w=float_arrays(max_dims=3), bits=st.sampled_from([2, 4, 8, 16]))
def test_symmetric_weight_codes_reconstruct_within_half_a_step(w, bits):
    wt = torch.from_numpy(w)
    scales, codes = symmetric_weight_qparams(wt, bits)
    n = 2 ** (bits - 1) - 1
    assert int(codes.abs().max()) <= n
    per_channel = [1] * (w.ndim - 1)
    recon = codes.to(torch.float64) * scales.reshape(-1, *per_channel)
    assert bool(((recon - wt).abs() <= scales.reshape(-1, *per_channel) / 2 * (1 + 1e-12)).all())
    absmax = wt.reshape(w.shape[0], -1).abs().amax(dim=1)
    nonzero = absmax > MIN_SCALE * n
    channel_max_code = codes.reshape(w.shape[0], -1).abs().amax(dim=1).to(torch.int64)
    assert channel_max_code[nonzero].tolist() == [n] * int(nonzero.sum())
    assert bool((scales[absmax == 0] == 1.0).all())


@pytest.mark.parametrize(
    "w, error, message",
    [
        (torch.tensor([[1, 2]]), TypeError, "symmetric_weight_qparams: w must be a floating-point tensor"),
        (torch.tensor([[1.0, math.nan]]), ValueError, "w contains NaN or inf"),
        (torch.tensor(1.0), ValueError, "at least one dimension"),
        (torch.zeros(3, 0), ValueError, "w is empty"),
    ],
)
def test_symmetric_weight_qparams_rejects_bad_input(w, error, message):
    with pytest.raises(error, match=message):
        symmetric_weight_qparams(w, 8)


# --- PTF -------------------------------------------------------------------------------------------------------


def ptf_batch():
    """(4, 50, 6) batch: channels 0, 1, 4 in [-1, 1], channel 2 in [-2, 2], 3 in [-4, 4], 5 in [-8, 8] (outlier)."""
    widths = torch.tensor([1.0, 1.0, 2.0, 4.0, 1.0, 8.0], dtype=torch.float64)
    x = generated((4, 50, 6), seed=3) * widths
    x[0, 0] = -widths  # make every channel's running range exactly [-width, width]
    x[0, 1] = widths
    return x


def test_ptf_picks_alpha_zero_for_ordinary_channels_and_larger_for_wide_ones():
    x = ptf_batch()
    lo_c, hi_c = x.reshape(-1, 6).amin(0), x.reshape(-1, 6).amax(0)
    p = ptf_qparams(x, lo_c, hi_c)
    assert p.alpha.dtype == torch.int64
    assert p.alpha.tolist() == [0, 0, 1, 2, 0, 3]
    scale8 = snap_scale(16.0 / 255)  # on the scale grid: rounded up from 16/255
    assert p.base_scale == scale8 / 8
    assert p.zero_point == 127  # -(-8 / scale8) = 127.499.. -> 127, from scale8, shared
    assert p.scales.tolist() == [p.base_scale * 2.0**a for a in [0, 0, 1, 2, 0, 3]]
    codes = p.quantize(x)
    assert int(codes.min()) >= 0 and int(codes.max()) <= 255
    assert float((p.dequantize(codes)[..., 5] - x[..., 5]).abs().max()) <= scale8 / 2 + 1e-12


def test_ptf_alpha_is_the_first_minimum_of_a_brute_force_search():
    x = ptf_batch()
    x[..., 4] = 0.0  # every alpha is exact for an all-zero channel: tie -> alpha 0
    lo_c, hi_c = x.reshape(-1, 6).amin(0), x.reshape(-1, 6).amax(0)
    p = ptf_qparams(x, lo_c, hi_c, bits=6, levels=3)
    for c in range(6):
        scores = []
        for a in range(3):
            forced = PtfQParams(p.base_scale, p.zero_point, torch.full((1,), a), bits=6, levels=3)
            scores.append(float(((forced.fake_quant(x[..., c : c + 1]) - x[..., c : c + 1]) ** 2).mean()))
        assert p.alpha[c].item() == scores.index(min(scores)), (c, scores)
    assert p.alpha[4].item() == 0


def test_ptf_zero_point_search_lowers_the_error_and_keeps_the_range():
    """One one-sided outlier channel puts FQ-ViT's shared zero point near 0; the search moves it so ordinary
    channels keep room below zero: smaller total error, and [lo, hi] still representable at the largest factor."""
    x = generated((4, 50, 6), seed=5) * torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    x[..., 5] = x[..., 5].abs() * 60.0  # one-sided outlier channel in [0, 60]
    lo_c, hi_c = x.reshape(-1, 6).amin(0), x.reshape(-1, 6).amax(0)
    fqvit = ptf_qparams(x, lo_c, hi_c, bits=8, levels=8)
    searched = ptf_qparams(x, lo_c, hi_c, bits=8, levels=8, search_zero_point=True)

    def total_error(p):
        return float(((p.fake_quant(x) - x) ** 2).sum())

    assert searched.zero_point > fqvit.zero_point
    assert total_error(searched) < total_error(fqvit)
    top = searched.base_scale * 2.0**7
    assert (0 - searched.zero_point) * top <= float(lo_c.min()) + 1e-12
    assert (255 - searched.zero_point) * top >= float(hi_c.max()) - 1e-12


def test_ptf_range_includes_zero_and_rejects_bad_input():
    x = generated((10, 3), seed=4, low=1.0, high=2.0)
    p = ptf_qparams(x, [1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    assert p.zero_point == 0 and p.base_scale == snap_scale(2.0 / 255) / 8
    with pytest.raises(ValueError, match="lo_per_channel has 2 values but x_last has 3 channels"):
        ptf_qparams(x, [0.0, 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"lo_per_channel\[1\] = 3.0 > hi_per_channel\[1\] = 2.0"):
        ptf_qparams(x, [1.0, 3.0, 1.0], [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="ptf_qparams: levels = 0 is outside"):
        ptf_qparams(x, [1.0] * 3, [2.0] * 3, levels=0)
    with pytest.raises(ValueError, match="last axis of the input must have 3 channels"):
        p.quantize(torch.zeros(2, 4))


# --- observers -------------------------------------------------------------------------------------------------


def test_minmax_observer_running_range():
    obs = MinMaxObserver()
    obs.update(torch.tensor([[0.5, -1.0], [2.0, 0.0]]))
    obs.update(torch.tensor([3.0, 1.0]))
    obs.update(torch.tensor([-0.5]))
    assert obs.range() == (-1.0, 3.0) and obs.num_updates == 3
    assert obs.qparams() == asymmetric_qparams(-1.0, 3.0, 8)
    obs.reset()
    with pytest.raises(RuntimeError, match="MinMaxObserver.range: no batch observed yet"):
        obs.range()


def test_ema_observer_arithmetic_by_hand():
    obs = EmaObserver(bits=4)
    obs.update(torch.tensor([-1.0, 0.0, 2.0]))  # initialises: (-1, 2)
    assert obs.range() == (-1.0, 2.0)
    obs.update(torch.tensor([-3.0, 4.0]))  # lo = -1 + 0.01 * (-3 + 1) = -1.02; hi = 2 + 0.01 * (4 - 2) = 2.02
    lo, hi = obs.range()
    assert lo == pytest.approx(-1.02, abs=1e-15) and hi == pytest.approx(2.02, abs=1e-15)
    obs.update(torch.tensor([0.0, 1.0]))  # lo = -1.02 + 0.01 * 1.02 = -1.0098; hi = 2.02 + 0.01 * (1 - 2.02) = 2.0098
    lo, hi = obs.range()
    assert lo == pytest.approx(-1.0098, abs=1e-15) and hi == pytest.approx(2.0098, abs=1e-15)
    assert obs.qparams().bits == 4


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 5000])
def test_percentile_observer_matches_numpy_quantile_then_ema(n):
    a = generated((n,), seed=5, low=-3.0, high=5.0)
    b = generated((n,), seed=6, low=-2.0, high=9.0)
    obs = PercentileObserver()
    obs.update(a)
    qa = np.quantile(a.numpy(), [1e-5, 1 - 1e-5])
    assert obs.range() == (qa[0], qa[1])
    obs.update(b)
    qb = np.quantile(b.numpy(), [1e-5, 1 - 1e-5])
    lo, hi = obs.range()
    assert lo == pytest.approx(qa[0] + 0.01 * (qb[0] - qa[0]), rel=1e-15)
    assert hi == pytest.approx(qa[1] + 0.01 * (qb[1] - qa[1]), rel=1e-15)


def _layout(name: str, n: int) -> torch.Tensor:
    x = generated((n,), seed=7, low=-1.0, high=1.0)
    if name == "sorted":
        x = x.sort().values
    elif name == "reversed":
        x = x.sort(descending=True).values
    elif name == "ties":
        x = (x * 4).round() / 4
    elif name == "outlier_blocks":  # whole blocks of huge values at both ends of memory
        x[:3000] = 50.0 + x[:3000]
        x[-2500:] = -70.0 + x[-2500:]
    return x


@pytest.mark.parametrize("layout", ["random", "sorted", "reversed", "ties", "outlier_blocks"])
@pytest.mark.parametrize("q", [1e-5, 1e-4, 2e-3])
def test_batch_quantiles_block_pruning_is_exact(layout, q):
    x = _layout(layout, 400_001)  # 390 blocks of 1024 plus a partial block: the pruned path
    want = np.quantile(x.numpy(), [q, 1 - q])
    assert batch_quantiles(x, q, 1 - q) == (want[0], want[1])
    assert batch_quantiles(x.reshape(7, -1)[:, ::3], q, 1 - q) == tuple(
        np.quantile(x.reshape(7, -1)[:, ::3].numpy(), [q, 1 - q])
    )  # non-contiguous input


def test_percentile_observer_beyond_torch_quantile_size_limit():
    n = 2**24 + 5  # torch.quantile refuses more than 2**24 elements
    x = torch.zeros(n, dtype=torch.float32)
    x[::100_000] = torch.arange(1, 169, dtype=torch.float32)  # 168 values 1..168, the rest zeros ...
    x[7::100_000] = -torch.arange(1, 169, dtype=torch.float32)  # ... and 168 values -1..-168
    obs = PercentileObserver()
    obs.update(x)
    # sorted: -168..-1 at 0..167, zeros, 1..168 at n-168..n-1; h = (n - 1) q
    h_lo, h_hi = (n - 1) * 1e-5, (n - 1) * (1 - 1e-5)
    assert math.floor(h_lo) == 167 and math.floor(h_hi) == n - 169  # both between a +-1 and a zero
    want_lo = -1.0 + (h_lo - 167)  # lerp(-1, 0, frac)
    want_hi = h_hi - (n - 169)  # lerp(0, 1, frac)
    assert obs.range() == pytest.approx((want_lo, want_hi), rel=1e-9)


def test_omse_observer_keeps_the_full_range_for_uniform_data():
    obs = OmseObserver()
    obs.update(torch.linspace(-1.0, 1.0, 100_001, dtype=torch.float64))
    assert obs.range() == (-1.0, 1.0) == obs.minmax_range()


def test_omse_observer_clips_a_huge_outlier():
    x = generated((1 << 20,), seed=8, low=0.0, high=1.0, dtype=torch.float32)
    x[12345] = 10.0
    obs = OmseObserver()
    obs.update(x)
    lo, hi = obs.range()
    assert obs.minmax_range()[1] == 10.0
    assert 0.0 <= lo <= obs.minmax_range()[0] and 1.0 < hi < 6.0  # optimum near 10 / (1 + N / 780300)


def omse_oracle(t: torch.Tensor, lo: float, hi: float, bits: int) -> tuple[float, float]:
    """FQ-ViT's OMSE search written plainly: first of the 90 shrunken ranges with the least squared error."""
    flat = t.reshape(-1)
    best, best_range = math.inf, None
    for i in range(90):
        cand = (lo * (1.0 - i * 0.01), hi * (1.0 - i * 0.01))
        score = float(((asymmetric_qparams(*cand, bits).fake_quant(flat) - flat) ** 2).sum())
        if score < best:
            best, best_range = score, cand
    return best_range


@settings(max_examples=120)  # 180 searches of 90 candidates per example
@given(x=float_arrays(max_side=20, max_dims=2), bits=st.sampled_from([2, 4, 8]))
def test_omse_observer_matches_a_brute_force_search(x, bits):
    t = torch.from_numpy(x)
    obs = OmseObserver(bits=bits)
    obs.update(t)
    assert obs.range() == omse_oracle(t, float(t.min()), float(t.max()), bits)


def test_omse_observer_scores_only_the_last_batch_and_copies_it():
    obs = OmseObserver(bits=4)
    first = torch.linspace(-20.0, 0.0, 5001, dtype=torch.float64)
    first[0] = -100.0
    obs.update(first)
    clipped = obs.range()
    assert -50.0 < clipped[0] < -20.0 and clipped[1] == 0.0  # the outlier is clipped: optimum near -100 / 2.85
    last = generated((3, 1000), seed=9, low=-60.0, high=0.0)
    want_last = omse_oracle(last, -100.0, 0.0, 4)
    assert want_last != clipped
    obs.update(last)
    last.fill_(0.0)  # the observer holds its own copy
    assert obs.minmax_range() == (-100.0, 0.0)
    assert obs.range() == want_last


def test_per_channel_observer_and_its_ptf_parameters():
    obs = PerChannelMinMaxObserver()
    obs.update(torch.tensor([[[1.0, -2.0, 0.0]], [[3.0, 5.0, -1.0]]]))
    obs.update(torch.tensor([[-4.0, 1.0, 0.5]]))
    lo_c, hi_c = obs.channel_range()
    assert lo_c.tolist() == [-4.0, -2.0, -1.0] and hi_c.tolist() == [3.0, 5.0, 0.5]
    assert lo_c.dtype == torch.float64 and obs.range() == (-4.0, 5.0)
    assert obs.last_batch.tolist() == [[-4.0, 1.0, 0.5]]
    x = ptf_batch()
    obs.reset()
    obs.update(x[:2])
    obs.update(x[2:])
    lo_all, hi_all = x.reshape(-1, 6).amin(0), x.reshape(-1, 6).amax(0)
    got, want = obs.ptf_qparams(), ptf_qparams(x[2:], lo_all, hi_all)
    assert (got.base_scale, got.zero_point) == (want.base_scale, want.zero_point)
    assert torch.equal(got.alpha, want.alpha)
    with pytest.raises(ValueError, match="x has 4 channels .last axis., earlier batches had 6"):
        obs.update(torch.zeros(2, 4))


@pytest.mark.parametrize("name", sorted(OBSERVERS))
def test_make_observer_builds_each_registered_observer(name):
    obs = make_observer(name, 6)
    assert type(obs) is OBSERVERS[name] and obs.bits == 6 and obs.name == name
    obs.update(torch.linspace(-2.0, 3.0, 101))
    lo, hi = obs.range()
    assert -2.0 <= lo < 0.0 < hi <= 3.0


def test_make_observer_unknown_name_lists_the_known_ones():
    known = "known: 'minmax', 'ema', 'percentile', 'omse'"
    with pytest.raises(ValueError, match=r"make_observer: unknown observer 'minmx' \(did you mean 'minmax'\?\); " + known):
        make_observer("minmx", 8)
    with pytest.raises(ValueError, match="make_observer: bits = 20 is outside"):
        make_observer("ema", 20)


@pytest.mark.parametrize(
    "cls", [MinMaxObserver, EmaObserver, PercentileObserver, OmseObserver, PerChannelMinMaxObserver]
)
@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.tensor([1, 2]), TypeError, "x must be a floating-point tensor"),
        ([1.0, 2.0], TypeError, "x must be a torch.Tensor"),
        (torch.zeros(0, 3), ValueError, "x is empty"),
        (torch.tensor([1.0, math.nan]), ValueError, "x contains NaN or inf"),
        (torch.tensor([-math.inf, 1.0]), ValueError, "x contains NaN or inf"),
    ],
)
def test_observers_reject_bad_batches(cls, x, error, message):
    obs = cls()
    with pytest.raises(error, match=f"{cls.__name__}.update: {message}"):
        obs.update(x)
    assert obs.num_updates == 0


def test_batch_quantiles_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"batch_quantiles: q_hi must be in \[0, 1\], got 1.5"):
        batch_quantiles(torch.zeros(3), 0.0, 1.5)
    with pytest.raises(TypeError, match="batch_quantiles: x must be a floating-point tensor"):
        batch_quantiles(torch.zeros(3, dtype=torch.int32), 0.1, 0.9)
    assert batch_quantiles(torch.tensor([3.0, 1.0, 2.0]), 0.0, 1.0) == (1.0, 3.0)
    assert batch_quantiles(torch.tensor([3.0, 1.0, 2.0, 4.0]), 0.5, 0.25) == (2.5, 1.75)


# ------------------------------------------------------------------------------------- LIS scale, PTF search
def test_lis_scale_observer_makes_rows_sum_to_one_on_average():
    from intsim.quant.observers import LisScaleObserver
    from intsim.quant.qparams import LisQParams

    probs = torch.softmax(torch.randn(4, 3, 17, 17, generator=torch.Generator().manual_seed(0)) * 3, dim=-1)
    observer = LisScaleObserver()
    observer.update(probs[:2])
    observer.update(probs[2:])
    qp = observer.qparams()
    values = qp.dequantize(LisQParams.quantize(probs.double()))
    assert float(values.sum(-1).mean()) == pytest.approx(1.0, rel=2.0**-15)  # the scale is on the grid
    unit = LisQParams().dequantize(LisQParams.quantize(probs.double()))
    assert qp.scale == snap_scale(unit[..., 0].numel() / float(unit.sum()))


def test_lis_quantizer_codes_equal_the_integer_rule():
    from intsim.quant.qparams import LisQParams

    # code A for p in (2/3 * 2**-A, 4/3 * 2**-A]: the power of two nearest to p (arithmetic midpoints); 16 = zero
    probs = torch.tensor([1.0, 0.67, 0.66, 0.5, 0.34, 0.33, 2.0**-15, 2.0**-17, 0.0], dtype=torch.float64)
    assert LisQParams.quantize(probs).tolist() == [0, 0, 1, 1, 1, 2, 15, 16, 16]
    with pytest.raises(ValueError, match="LisQParams: scale must be > 0"):
        LisQParams(0.0)


def test_ptf_zero_point_search_skips_zero_points_that_cannot_hold_the_range():
    # a post-GELU-like channel set: a small negative floor, one channel ~1000x the others (its FQ-ViT zero point
    # rounds to 0, which cannot hold the negative values at any factor)
    from intsim.quant.qparams import ptf_qparams

    x = torch.rand(64, 8, generator=torch.Generator().manual_seed(0)) - 0.17
    x[:, 0] *= 1000.0
    qp = ptf_qparams(x, x.amin(0), x.amax(0), bits=8, levels=8, search_zero_point=True)
    assert math.isfinite(qp.base_scale) and qp.zero_point > 0
    assert torch.isfinite(qp.fake_quant(x)).all()
