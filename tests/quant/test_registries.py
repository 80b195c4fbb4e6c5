"""The quantizer and method registries: every registered quantizer at every bit width it allows, at every kind of
point it serves, exports a Program that the interpreter and the torch twins run to the same codes; a method and a
quantizer registered from outside the package plug in without touching intsim; the fast model is differentiable
and rebuilt from a Program's own constants."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from intsim.interpreter import run_program
from intsim.quant.configs import CONFIGS, POINT_KINDS, Point, QuantConfig, validate_config
from intsim.quant.exact import run_exact
from intsim.quant.export import export_program
from intsim.quant.methods import METHODS, Method, observe, register_method, unregister_method
from intsim.quant.quantizers import QUANTIZERS, QuantizerKind, UniformQuantizer, register_quantizer, unregister_quantizer
from intsim.quant.vit import QuantViT

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _tiny_vit(seed: int = 0, depth: int = 1) -> VisionTransformer:
    """A one-block (or ``depth``-block) ViT whose activations have trained-like magnitudes (timm's init, std 0.02, leaves q and k so
    small that no softmax constants exist at their scores' scale)."""
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=depth, num_heads=2, mlp_ratio=2.0,
                              num_classes=5).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, module.in_features**-0.5)
        model.pos_embed.normal_(0.0, 0.5)
        model.cls_token.normal_(0.0, 0.5)
    return model


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).integers(0, 256, size=(6, 3, 16, 16), dtype=np.uint8)


def _program(config: QuantConfig, pixels, model=None):
    qvit = QuantViT(model or _tiny_vit(), config, mean=MEAN, std=STD)
    qvit.calibrate([torch.as_tensor(pixels)])
    return qvit, export_program(qvit, preprocess={"mean": MEAN, "std": STD})


def _assert_bit_exact(program, pixels) -> None:
    integer = run_program(program, pixels)
    exact = run_exact(program, pixels).numpy()
    np.testing.assert_array_equal(integer, exact)


def _assert_from_program_rebuilds(qvit, program, pixels) -> None:
    """``QuantViT.from_program`` gives the same fast logits as the calibrated model (every searched parameter is in
    the Program)."""
    rebuilt = QuantViT.from_program(qvit.model, program)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.run_fast(torch.as_tensor(pixels))[0],
                                   qvit.run_fast(torch.as_tensor(pixels))[0], rtol=0, atol=0)


def _every_point_choice():
    """(kind, quantizer, bits) for every registered quantizer, every kind it serves, every bit width it allows."""
    for kind in POINT_KINDS:
        for name, entry in sorted(QUANTIZERS.items()):
            if kind in entry.points:
                for bits in entry.allowed_bits(kind):
                    yield kind, name, bits


CHOICES = list(_every_point_choice())


def test_every_kind_of_point_has_a_quantizer_and_the_table_covers_them():
    assert {kind for kind, _, _ in CHOICES} == set(POINT_KINDS)
    assert {name for _, name, _ in CHOICES} == set(QUANTIZERS)


@pytest.mark.parametrize("kind, quantizer, bits", CHOICES, ids=[f"{k}-{q}-{b}" for k, q, b in CHOICES])
def test_every_quantizer_at_every_bit_width_exports_and_runs_bit_exact(kind, quantizer, bits, pixels):
    base = CONFIGS["fqvit-w8a8a8"] if quantizer != "lis" else CONFIGS["fqvit-w8a8a4"]
    if quantizer == "asymmetric_channel":  # its integer GEMM takes no per-channel input shifts: no PTF inputs
        base = replace(CONFIGS["adalog-w6a6"], method="fqvit")
    config = validate_config(replace(base, name=f"{kind}-{quantizer}-{bits}", **{kind: Point(quantizer, bits)}))
    qvit, program = _program(config, pixels)
    spec = program.tensors[next(name for name, q in qvit.points.items() if q.kind == kind)] if kind != "weights" \
        else program.tensors["blocks.0.attn.qkv.weight"]
    if quantizer in ("adalog", "log2"):  # b-bit log codes plus the zero code 2**b
        assert spec.bits == bits + 1
    elif quantizer != "lis":  # LIS codes are 5-bit (0..16) whatever it is called
        assert spec.bits == bits
    _assert_bit_exact(program, pixels)


def test_a_point_refuses_a_quantizer_or_width_it_does_not_allow():
    base = CONFIGS["fqvit-w8a8a8"]
    with pytest.raises(ValueError, match="quantizer 'lis' cannot quantize qkv points"):
        validate_config(replace(base, qkv=Point("lis", 4)))
    with pytest.raises(ValueError, match="qkv bits = 9: uniform allows 2..8 there"):
        validate_config(replace(base, qkv=Point("uniform", 9)))
    with pytest.raises(ValueError, match="residual quantizer"):
        validate_config(replace(base, residual=Point("ptff", 8)))


def test_a_method_registered_outside_the_package_calibrates_and_exports(pixels):
    """A toy method: FQ-ViT's observers, then every uniform activation scale widened by 2 (the Program must carry
    the method's choice, and stay bit-exact)."""
    def widened(qvit, batches, progress=None):
        observe(qvit, batches, progress)
        for quantizer in qvit.points.values():
            quantizer.finish()
            if isinstance(quantizer, UniformQuantizer):
                quantizer.qparams = replace(quantizer.qparams, scale=quantizer.qparams.scale * 2)
        for linear in qvit.linears_q.values():
            linear.finish()

    register_method(Method("test-widened", widened))
    try:
        _, reference = _program(CONFIGS["fqvit-w8a8a8"], pixels)
        _, program = _program(replace(CONFIGS["fqvit-w8a8a8"], name="widened", method="test-widened"), pixels)
        assert program.tensors["blocks.0.norm1"].scale == 2 * reference.tensors["blocks.0.norm1"].scale
        assert program.metadata["config"]["method"] == "test-widened"
        _assert_bit_exact(program, pixels)
        with pytest.raises(ValueError, match="already registered"):
            register_method(Method("test-widened", widened))
    finally:
        unregister_method("test-widened")
    assert "test-widened" not in METHODS


def test_a_quantizer_registered_outside_the_package_can_be_named(pixels):
    """A uniform quantizer whose range always includes [-1, 1]: registered, named by a configuration, bit-exact."""
    class AtLeastUnit(UniformQuantizer):
        def from_observer(self, observer):
            from intsim.quant.qparams import asymmetric_qparams

            low, high = observer.range()
            return asymmetric_qparams(min(low, -1.0), max(high, 1.0), self.bits)

    register_quantizer(QuantizerKind("test-at-least-unit", AtLeastUnit, ("post_layernorm", "qkv"), (2, 8)))
    try:
        config = validate_config(replace(CONFIGS["fqvit-w8a8a4"], name="unit", qkv=Point("test-at-least-unit", 6)))
        _, program = _program(config, pixels)
        assert program.tensors["blocks.0.attn.q"].scale >= 2.0 / 63
        _assert_bit_exact(program, pixels)
    finally:
        unregister_quantizer("test-at-least-unit")


def test_fast_mode_is_differentiable_with_straight_through_rounding(pixels):
    qvit, _ = _program(CONFIGS["fqvit-w8a8a4"], pixels)
    qvit.mode = "fast"
    with torch.no_grad():
        reference = qvit(torch.as_tensor(pixels))
    logits = qvit(torch.as_tensor(pixels))
    logits.sum().backward()
    gradient = qvit.model.blocks[0].norm1.weight.grad
    assert gradient is not None and bool(gradient.abs().sum() > 0)
    torch.testing.assert_close(logits.detach(), reference, rtol=0, atol=0)  # the gradient path changes no value


def test_from_program_reads_the_programs_own_weight_codes(pixels):
    """A Program whose weight codes differ from the float weights' rounding (as learned rounding makes them):
    the fast model rebuilt from it computes with the Program's codes, and its codes match the integer run."""
    model = _tiny_vit()
    _, program = _program(CONFIGS["fqvit-w8a8a8"], pixels, model)
    codes = program.constants["head.weight"]
    moved = np.where(codes < 127, codes + 1, codes - 1).astype(codes.dtype)
    program.constants["head.weight"] = moved
    rebuilt = QuantViT.from_program(model, program.validate())
    np.testing.assert_array_equal(rebuilt.weights["head"].codes.numpy(), moved)
    assert (rebuilt.weights["head"].float_codes().numpy() != moved).all()


def test_per_tensor_weights_share_one_scale_per_layer(pixels):
    config = validate_config(replace(CONFIGS["fqvit-w8a8a8"], name="tensor-w", weights=Point("symmetric_tensor", 8)))
    _, program = _program(config, pixels)
    for name, spec in program.tensors.items():
        if name.endswith(".weight"):
            assert len(set(spec.scale)) == 1, name
            assert int(np.abs(program.constants[name].astype(np.int64)).max()) == 127, name
