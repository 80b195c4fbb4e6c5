"""End to end: calibrate a ViT, export its integer Program, run it; the numba interpreter must equal the torch
exact twins at every op output (every code), and the integer model must stay close to the float one.

Models: the embedded digits ViT (both named configurations, every rounding mode, generic 6/6/6 widths), small
random timm ViTs (plain and with LayerScale), random DeiT-S and DeiT-B (``slow``) at 224 on 2 images, and the
real ViT-Ti on 4 real ImageNet validation images (``realdata``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from intsim.data import Preprocess  # noqa: E402
from intsim.evaluate import (check_program, evaluate, kl_to_float_sum, labelled_batches, model_mismatch,  # noqa: E402
                             quantize)
from intsim.interpreter import run_program  # noqa: E402
from intsim.models.digits import digits_heldout  # noqa: E402
from intsim.ops.rounding import ROUNDING_MODES  # noqa: E402
from intsim.program import load_program, save_program  # noqa: E402
from intsim.quant.configs import Point, make_config  # noqa: E402
from intsim.quant.exact import run_exact  # noqa: E402
from intsim.quant.export import export_program  # noqa: E402
from intsim.quant.vit import QuantViT  # noqa: E402

CONFIGS = ("fqvit-w8a8a4", "fqvit-w8a8a8")
DIGITS_IMAGES = 64  # held-out digits compared code by code (all 360 are used for accuracy)

# Measured on the embedded digits ViT, all 360 held-out images (float top-1 98.89 %):
#   fqvit-w8a8a4: integer 97.50 % (-1.39 points = 5 images)   [97.78 % before PTF fc1/GELU and the LIS scale]
#   fqvit-w8a8a8: integer 98.61 % (-0.28 points = 1 image), top-1 agreement with float 99.72 %   [98.33 % before]
# (before the softmax read the scores accumulator and the PTF zero point was searched: 96.94 % and 97.78 %).
# The bounds allow more than twice the larger measured loss (4 points = 14 images), so a small calibration change
# passes and a broken op (which costs tens of points) fails.
MAX_TOP1_DROP_POINTS = 4.0
MIN_TOP1_AGREEMENT = 95.0


# ----------------------------------------------------------------------------------------------- helpers
def traced_codes(program, pixels):
    """Logits and every op output (name -> int64 array) of the numba interpreter and of the torch twins."""
    integer, exact = {}, {}

    def keep_numpy(op, inputs, outputs):
        integer.update({name: np.asarray(x).astype(np.int64) for name, x in zip(op.outputs, outputs)})

    def keep_torch(op, inputs, outputs):
        exact.update({name: x.cpu().numpy().astype(np.int64) for name, x in zip(op.outputs, outputs)})

    integer_logits = run_program(program, pixels, trace=keep_numpy)
    exact_logits = run_exact(program, pixels, trace=keep_torch)
    return (integer_logits, integer), (exact_logits.numpy(), exact)


def assert_exact_match(program, pixels):
    """Every op output of ``program`` equal between the interpreter and the twins (exact match rate 1.0 over
    all tensors), equal int32 logits, and every code inside its tensor's declared bit range."""
    (integer_logits, integer), (exact_logits, exact) = traced_codes(program, pixels)
    produced = [name for op in program.ops for name in op.outputs]
    assert set(integer) == set(exact) == set(produced)
    compared = equal = 0
    mismatched = []
    for name in produced:
        a, b = integer[name], exact[name]
        assert a.shape == b.shape, (name, a.shape, b.shape)
        same = int((a == b).sum())
        compared += a.size
        equal += same
        if same != a.size:
            mismatched.append(f"{name} ({a.size - same} of {a.size} differ, max |d| {int(np.abs(a - b).max())})")
    assert not mismatched, "interpreter != exact twins at: " + "; ".join(mismatched[:10])
    assert compared > 0 and equal / compared == 1.0
    assert integer_logits.dtype == np.int32 and exact_logits.dtype == np.int32
    np.testing.assert_array_equal(integer_logits, exact_logits)
    outside = []
    for name in produced:
        spec, codes = program.tensors[name], integer[name]
        low, high = int(codes.min()), int(codes.max())
        if low < spec.qmin or high > spec.qmax:
            outside.append(f"{name}: [{low}, {high}] outside declared {spec.bits}-bit [{spec.qmin}, {spec.qmax}]")
    assert not outside, "; ".join(outside[:10])
    return integer_logits, integer


def random_pixels(count: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3, size, size), dtype=np.uint8)


def quantize_timm(model, config_name: str, calib: np.ndarray, **overrides):
    """Calibrate ``model`` (mean/std from its timm data config) on ``calib`` and export; ``(qvit, program)``."""
    preprocess = Preprocess.from_timm_model(model)
    torch.manual_seed(0)
    qvit = QuantViT(model, make_config(config_name, **overrides), mean=preprocess.mean, std=preprocess.std)
    qvit.calibrate([torch.as_tensor(calib)])
    return qvit, export_program(qvit, model_name=type(model).__name__, preprocess=preprocess.to_config())


def digits_quantize(config):
    return quantize(None, None, None, config, workers=0)


# ------------------------------------------------------------------------------------- embedded digits
@pytest.fixture(scope="module", params=CONFIGS)
def digits(request):
    """``(qvit, program)`` of the embedded digits ViT under one named configuration."""
    return digits_quantize(make_config(request.param))


@pytest.fixture(scope="module")
def heldout_pixels():
    return np.array(digits_heldout()[0][:DIGITS_IMAGES])


def test_digits_interpreter_equals_exact_twins(digits, heldout_pixels):
    _, program = digits
    assert_exact_match(program, heldout_pixels)


def test_model_mismatch_accepts_the_source_model_and_names_another(digits):
    from intsim.models.digits import build_digits_vit, create_digits_vit

    _, program = digits
    assert model_mismatch(QuantViT.from_program(create_digits_vit(), program), program) is None
    torch.manual_seed(1)
    message = model_mismatch(QuantViT.from_program(build_digits_vit(), program), program)
    assert message is not None and message.startswith("layer patch_embed: ") and "weight codes differ" in message


def test_from_program_rebuilds_the_fast_model_of_the_calibration(digits, heldout_pixels):
    """The fake-quant model rebuilt from the Program (scales, PTF factors, LIS scales) gives the same codes at
    every quantization point as the calibrated one it was exported from."""
    from intsim.models.digits import create_digits_vit

    qvit, program = digits
    rebuilt = QuantViT.from_program(create_digits_vit(), program)
    _, want = qvit.run_fast(torch.as_tensor(heldout_pixels))
    _, got = rebuilt.run_fast(torch.as_tensor(heldout_pixels))
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, msg=name)


def test_digits_program_has_ptf_mlp_activations_and_calibrated_lis_scale(digits):
    """Default configurations: fc2 reads PTF GELU codes (x_shift), the GELU table has one row per factor pair,
    and LIS probabilities carry a calibrated scale below 1 (their rows sum to more than 1 at scale 1)."""
    qvit, program = digits
    ops = {op.name: op for op in program.ops}
    for index in range(len(qvit.model.blocks)):
        p = f"blocks.{index}.mlp"
        assert ops[f"{p}.fc2"].inputs[3] == f"{p}.fc2.x_shift"
        np.testing.assert_array_equal(program.constants[f"{p}.fc2.x_shift"], qvit.qparams[f"{p}.gelu"].alpha.numpy())
        rows, table = program.constants[f"{p}.gelu.rows"], program.constants[f"{p}.gelu.table"]
        assert table.shape == (int(rows.max()) + 1, 256)
        if program.metadata["config"]["post_softmax"]["quantizer"] == "lis":
            assert 0.5 < program.tensors[f"blocks.{index}.attn.probs"].scale < 1.0


def test_digits_program_uses_the_configured_softmax(digits):
    _, program = digits
    kinds = {op.kind for op in program.ops}
    lis = program.metadata["config"]["post_softmax"]["quantizer"] == "lis"
    assert ("LogIntSoftmax" in kinds) == lis and ("UniformSoftmax" in kinds) == (not lis)
    assert program.metadata["config"]["name"] in CONFIGS


def test_digits_logits_share_one_scale(digits, heldout_pixels):
    """The output rescales each class's head accumulator (scale s_x * s_w[c]) to one scale, the largest: its
    values are the real logits to half an output LSB, so their argmax is the prediction."""
    _, program = digits
    assert program.output_names == ["logits"]
    head_scales, out_scale = np.asarray(program.tensors["head.acc"].scale), program.tensors["logits"].scale
    assert out_scale == head_scales.max()
    seen = {}
    logits = run_program(program, heldout_pixels,
                         trace=lambda op, inputs, outputs: seen.update({op.name: np.asarray(outputs[0]).copy()}))
    real = seen["head"].astype(np.float64) * head_scales
    assert np.abs(logits * out_scale - real).max() <= out_scale * (0.5 + 1e-6)
    assert (np.abs(np.take_along_axis(real, logits.argmax(1)[:, None], 1)[:, 0] - real.max(1)) <= out_scale).all()


def test_digits_integer_top1_close_to_float(digits):
    qvit, program = digits
    preprocess = Preprocess.from_config(program.metadata["preprocess"])
    result = evaluate(qvit, program, labelled_batches(None, preprocess, limit=None, batch_size=128, workers=0))
    assert result["images"] == 360
    assert result["float"]["top1"] >= 98.0  # the shipped model's measured 98.89 %
    assert result["integer"]["top1"] >= result["float"]["top1"] - MAX_TOP1_DROP_POINTS, result
    assert result["fakequant"]["top1"] >= result["float"]["top1"] - MAX_TOP1_DROP_POINTS, result
    assert result["top1_agreement"]["integer_vs_float"] >= MIN_TOP1_AGREEMENT, result
    # a close quantized model is close in distribution too: a fraction of a nat, and never below zero
    assert 0.0 <= result["kl_to_float"]["integer"] < 0.5 and 0.0 <= result["kl_to_float"]["fakequant"] < 0.5, result


def test_kl_to_float_is_zero_for_the_same_prediction_and_positive_otherwise():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 10))
    assert abs(kl_to_float_sum(logits + 3.0, logits)) < 1e-12  # a shift of the logits is the same distribution
    other = logits.copy()
    other[:, 0] += 2.0
    expected = sum(float((np.exp(f - np.logaddexp.reduce(f)) * ((f - np.logaddexp.reduce(f)) -
                                                                 (o - np.logaddexp.reduce(o)))).sum())
                   for f, o in zip(logits, other))
    assert kl_to_float_sum(other, logits) > 0.0
    np.testing.assert_allclose(kl_to_float_sum(other, logits), expected, rtol=1e-12)


def test_program_save_load_round_trip(digits, heldout_pixels, tmp_path):
    _, program = digits
    path = save_program(program, tmp_path / "digits.intsim")
    loaded = load_program(path)
    assert loaded.sha256() == program.sha256()
    assert loaded.ops == program.ops and loaded.tensors == program.tensors
    assert set(loaded.constants) == set(program.constants)
    for name, array in program.constants.items():
        assert loaded.constants[name].dtype == array.dtype, name
        np.testing.assert_array_equal(loaded.constants[name], array, err_msg=name)
    np.testing.assert_array_equal(run_program(loaded, heldout_pixels), run_program(program, heldout_pixels))
    # a second save of the loaded Program reproduces the file byte for byte
    assert save_program(loaded, tmp_path / "again.intsim").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("config_name", CONFIGS)
def test_calibration_twice_gives_byte_identical_program_files(config_name, tmp_path):
    first = save_program(digits_quantize(make_config(config_name))[1], tmp_path / "first.intsim")
    second = save_program(digits_quantize(make_config(config_name))[1], tmp_path / "second.intsim")
    assert first.read_bytes() == second.read_bytes()
    assert load_program(first).sha256() == load_program(second).sha256()


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("rounding", sorted(ROUNDING_MODES))
def test_every_rounding_mode_exact_matches(config_name, rounding, heldout_pixels):
    _, program = digits_quantize(make_config(config_name, rounding=rounding))
    modes = {op.attrs["rounding"] for op in program.ops if "rounding" in op.attrs}
    assert modes == {rounding}
    assert program.metadata["rounding"] == rounding
    assert_exact_match(program, heldout_pixels[:32])


def test_a_bit_width_never_implies_a_quantizer():
    """LIS has 4 bits only: asking it for 6 names the quantizer and what it allows, instead of switching softmax."""
    with pytest.raises(ValueError, match="post_softmax bits = 6: lis allows 4..4"):
        make_config("fqvit-w8a8a4", attn_bits=6)
    assert make_config("fqvit-w8a8a8", attn_bits=4).post_softmax == Point("uniform_softmax", 4)


def test_generic_widths_6_6_6_exact_match(heldout_pixels):
    config = make_config("fqvit-w8a8a4", wbits=6, abits=6, attn_bits=6, softmax="uniform_softmax")
    assert config.softmax == "uniform_softmax" and config.name == (
        "fqvit-w8a8a4[abits=6,attn_bits=6,softmax=uniform_softmax,wbits=6]")
    _, program = digits_quantize(config)
    for name, spec in program.tensors.items():
        if name.endswith(".weight"):
            assert spec.bits == 6, name
            assert int(np.abs(program.constants[name].astype(np.int64)).max()) <= 2**5 - 1, name
    softmaxes = [op for op in program.ops if op.kind == "UniformSoftmax"]
    assert softmaxes and all(op.attrs["out_bits"] == 6 for op in softmaxes)
    assert all(program.tensors[f"blocks.{i}.mlp.fc1"].bits == 6 for i in range(len(softmaxes)))
    assert_exact_match(program, heldout_pixels[:32])


@pytest.mark.parametrize("config_name", ["w8a8a8-r12g12", "w8a8a4-r12g12"])
def test_wide_residual_and_gelu_index_exact_match(config_name, heldout_pixels):
    """12-bit residual stream (LayerNorm inputs, ResidualAdd outputs) and 12-bit GELU table index: the widths
    reach the Program, the table has one entry per 12-bit code, and the twins still agree on every code."""
    _, program = digits_quantize(make_config(config_name))
    depth = sum(op.kind == "Lut" for op in program.ops)
    assert depth and all(program.tensors[f"blocks.{i}.norm1.input"].bits == 12 for i in range(depth))
    assert all(op.attrs["bits"] == 12 for op in program.ops if op.kind == "LayerNorm")
    assert all(program.constants[f"blocks.{i}.mlp.gelu.table"].shape[-1] == 4096 for i in range(depth))
    assert all(program.tensors[f"blocks.{i}.mlp.gelu"].bits == 8 for i in range(depth))
    assert_exact_match(program, heldout_pixels[:32])


# -------------------------------------------------------------------------------- random timm models
def small_vit(**kwargs):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=96, depth=2, num_heads=3, num_classes=10, **kwargs).eval()


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("layer_scale", [False, True], ids=["plain", "layerscale"])
def test_random_small_vit_exact_match(config_name, layer_scale):
    model = small_vit(init_values=0.1) if layer_scale else small_vit()
    if layer_scale:
        assert isinstance(model.blocks[0].ls1, timm.layers.LayerScale)
    qvit, program = quantize_timm(model, config_name, random_pixels(2, 32, seed=1))
    pixels = random_pixels(2, 32, seed=2)
    assert_exact_match(program, pixels)
    # QuantViT's float mode (normalisation folded into the patch embedding, LayerScale folded into proj/fc2)
    # is the timm model itself
    preprocess = Preprocess.from_timm_model(model)
    with torch.no_grad():
        reference = model(torch.as_tensor(preprocess.normalize(pixels)))
    torch.testing.assert_close(qvit.run_float(torch.as_tensor(pixels)), reference, rtol=1e-4, atol=1e-5)


# Measured on 2 cores (OMP_WAIT_POLICY=PASSIVE): DeiT-S 10.0 s (a4) / 7.7 s (a8), DeiT-B 20.7 s / 15.6 s per test.
@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize(
    "model_name", ["deit_small_patch16_224", pytest.param("deit_base_patch16_224", marks=pytest.mark.slow)]
)
def test_random_deit_exact_match(model_name, config_name):
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False).eval()
    _, program = quantize_timm(model, config_name, random_pixels(2, 224, seed=1))
    assert_exact_match(program, random_pixels(2, 224, seed=2))


@pytest.mark.slow
def test_random_deit_small_adalog_w3a3_exact_match():
    """adalog-w3a3 (its search at the smallest budget) on a random-weight DeiT-S: every op bit-exact on 2 images
    (the 3-bit log codes, the zero-point expansion and the 48-bit accumulator bound at DeiT-S's widths)."""
    torch.manual_seed(0)
    model = timm.create_model("deit_small_patch16_224", pretrained=False).eval()
    _, program = quantize_timm(model, "adalog-w3a3", random_pixels(2, 224, seed=1), search_rounds=1, search_steps=1,
                               search_tokens=256)
    assert {op.kind for op in program.ops} >= {"LogEncode", "LogAttentionValues", "LogLinear", "AsymmetricLinear"}
    assert_exact_match(program, random_pixels(2, 224, seed=2))


# -------------------------------------------------------------------------------------- real ViT-Ti
VIT_TI_WEIGHTS = "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"


@pytest.mark.realdata
@pytest.mark.parametrize("config_name", CONFIGS)
def test_real_vit_tiny_check_program(shared_data, config_name):
    qvit, program = quantize("vit_tiny_patch16_224", str(shared_data / VIT_TI_WEIGHTS),
                             str(shared_data / "imagenet-calib-256"), make_config(config_name), limit=32, workers=0)
    preprocess = Preprocess.from_config(program.metadata["preprocess"])
    batches = labelled_batches(str(shared_data / "imagenet-val-500"), preprocess, limit=4, batch_size=4, workers=0)
    result = check_program(qvit, program, batches).as_json()
    assert result["images"] == 4
    assert result["exact_match_rate"] == 1.0, {k: v for k, v in result["per_point"].items() if v["exact_match_rate"] != 1.0}
