"""Learned rounding and PFCR's unit reconstruction on a tiny ViT: the unit losses fall, the learned codes are the
exported Program's weights, and that Program runs bit-exact and rebuilds the reconstructed fast model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_registries import _assert_bit_exact, _assert_from_program_rebuilds, _program, pixels  # noqa: F401

from intsim.quant.configs import CONFIGS, validate_config
from intsim.quant.export import export_program
from intsim.quant.reconstruct import SoftRounding, reconstruct_block, reconstruct_unit
from test_registries import MEAN, STD


@pytest.fixture(scope="module", params=["asymmetric", "symmetric"])
def reconstructed(request, pixels):
    # 4-bit weights: asymmetric per channel (APQ-ViT's, uniform activations) or symmetric per channel (FQ-ViT's)
    base = CONFIGS["apq-w4a4"] if request.param == "asymmetric" else CONFIGS["fqvit-w8a8a4"]
    config = validate_config(replace(base, method="fqvit", weights=replace(base.weights, bits=4)))
    qvit, _ = _program(config, pixels)
    nearest = {name: linear.codes.clone() for name, linear in qvit.linears_q.items()}
    qvit.mode = "float"
    with torch.no_grad():
        x = qvit.embed(torch.as_tensor(pixels))
    losses = reconstruct_block(qvit, qvit.blocks[0], x, iterations=200, lr=0.05, seed=0)
    qvit.mode = "fast"
    return qvit, nearest, losses


def test_soft_rounding_starts_at_the_float_weight_and_hardens_to_a_neighbouring_code(reconstructed):
    qvit, nearest, _ = reconstructed
    linear = qvit.blocks[0].mlp.fc1
    fresh = SoftRounding(linear)
    start = fresh.weight().double()
    inside = (start - linear.weight).abs() < 1e-3 * linear.scales[:, None]  # codes not clamped at the range's ends
    assert inside.float().mean() > 0.9
    codes = linear.codes
    floor = fresh.floor.to(torch.int64)
    assert bool(((codes == floor) | (codes == floor + 1) | (codes == fresh.low) | (codes == fresh.high)).all())


def test_the_unit_losses_fall_and_the_codes_move(reconstructed):
    qvit, nearest, losses = reconstructed
    assert [loss.name for loss in losses] == ["blocks.0.attention", "blocks.0.mlp", "blocks.0"]
    for loss in losses[:2]:
        assert loss.after < loss.before, loss
    assert losses[2].after <= losses[2].before * (1 + 1e-6), losses[2]
    changed = sum(int((qvit.linears_q[n].codes != nearest[n]).sum()) for n in ("blocks.0.attn.qkv", "blocks.0.mlp.fc1"))
    assert changed > 0


def test_the_learned_codes_are_the_programs_weights_and_it_runs_bit_exact(reconstructed, pixels):
    qvit, _, _ = reconstructed
    program = export_program(qvit, preprocess={"mean": MEAN, "std": STD})
    for name in ("blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2"):
        np.testing.assert_array_equal(program.constants[f"{name}.weight"].astype(np.int64),
                                      qvit.linears_q[name].codes.numpy())
    _assert_bit_exact(program, pixels)
    _assert_from_program_rebuilds(qvit, program, pixels)


def test_finish_keeps_learned_codes_and_refuses_changed_scales(reconstructed):
    qvit, _, _ = reconstructed
    linear = qvit.blocks[0].mlp.fc2
    codes = linear.codes.clone()
    linear.finish()
    assert torch.equal(linear.codes, codes)
    with pytest.raises(ValueError, match="learned codes of shape"):
        linear.set_learned_codes(codes[:1])


def test_the_pfcr_method_calibrates_with_its_base_then_reconstructs_every_block(pixels):
    from intsim.quant.configs import config_metadata, make_config

    base = replace(CONFIGS["apq-w4a4"], weights=replace(CONFIGS["apq-w4a4"].weights, bits=4))
    config = validate_config(replace(base, method="pfcr", pfcr_base="fqvit", pfcr_iterations=30))
    qvit, program = _program(config, pixels)
    calibrated, _ = _program(validate_config(replace(base, method="fqvit")), pixels)
    assert [loss.name for loss in qvit.reconstruction_losses] == ["embed", "blocks.0.attention", "blocks.0.mlp",
                                                                  "blocks.0", "head"]
    changed = sum(int((linear.codes != calibrated.linears_q[name].codes).sum()) for name, linear in qvit.linears_q.items())
    assert changed > 0  # learned codes, at the base method's scales
    assert all(torch.equal(linear.scales, calibrated.linears_q[name].scales) for name, linear in qvit.linears_q.items())
    _assert_bit_exact(program, pixels)
    _assert_from_program_rebuilds(qvit, program, pixels)
    again, _ = _program(config, pixels)
    assert all(torch.equal(linear.codes, again.linears_q[name].codes) for name, linear in qvit.linears_q.items())
    stored = config_metadata(config)
    assert stored["pfcr_iterations"] == 30 and "pfcr_base" not in stored  # stored only where changed
    assert "pfcr_iterations" not in config_metadata(make_config("apq-w4a4"))
    with pytest.raises(ValueError, match="pfcr_base"):
        validate_config(replace(config, pfcr_base="pfcr"))
    with pytest.raises(ValueError, match="pfcr_iterations"):
        validate_config(replace(config, pfcr_iterations=0))


def test_pfcr_learns_step_sizes_groups_blocks_and_resumes_from_a_checkpoint(pixels, tmp_path, monkeypatch):
    from test_registries import _tiny_vit

    from intsim.quant import reconstruct as engine

    base = CONFIGS["apq-w4a4"]
    config = validate_config(replace(base, method="pfcr", pfcr_base="fqvit", pfcr_iterations=20, pfcr_group_blocks=2))
    calibrated, _ = _program(validate_config(replace(base, method="fqvit")), pixels, _tiny_vit(depth=2))
    whole, program = _program(config, pixels, _tiny_vit(depth=2))
    names = [loss.name for loss in whole.reconstruction_losses]
    assert names == ["embed", *(f"blocks.{b}{u}" for b in (0, 1) for u in (".attention", ".mlp", "")), "blocks.0-1",
                     "head"]
    learned = {name: q.qparams.scale for name, q in whole.points.items() if engine.LearnedScale.applies(q)}
    assert learned and any(scale != calibrated.points[name].qparams.scale for name, scale in learned.items())
    _assert_bit_exact(program, pixels)
    _assert_from_program_rebuilds(whole, program, pixels)

    calls = []
    original = engine.reconstruct_unit

    def interrupted(*args, **kwargs):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "reconstruct_unit", interrupted)
    with engine.run_options(checkpoint=str(tmp_path)), pytest.raises(KeyboardInterrupt):
        _program(config, pixels, _tiny_vit(depth=2))
    monkeypatch.setattr(engine, "reconstruct_unit", original)
    with engine.run_options(checkpoint=str(tmp_path)):
        resumed, again = _program(config, pixels, _tiny_vit(depth=2))
    assert [loss.name for loss in resumed.reconstruction_losses] == names
    for name, linear in whole.linears_q.items():
        assert torch.equal(linear.codes, resumed.linears_q[name].codes), name
    assert {name: resumed.points[name].qparams.scale for name in learned} == learned
    assert again.sha256() == program.sha256()  # the same Program, bit for bit


def test_a_unit_whose_loss_rises_is_put_back_to_its_start(pixels):
    # the target is the calibrated fast model's own output, so the start's loss is 0 and any moved code raises it
    config = validate_config(replace(CONFIGS["fqvit-w8a8a4"], weights=replace(CONFIGS["fqvit-w8a8a4"].weights, bits=4)))
    qvit, _ = _program(config, pixels)
    block = qvit.blocks[0]
    linears = [block.mlp.fc1, block.mlp.fc2]
    start = [linear.codes.clone() for linear in linears]
    x = torch.as_tensor(pixels)
    with torch.no_grad():
        h = qvit.embed(x)
        target = block(h)
    roundings = [SoftRounding(linear) for linear in linears]
    variables = [r.variables.detach().clone() for r in roundings]
    loss = reconstruct_unit("blocks.0", block, roundings, h, target, iterations=30, lr=0.05, weight=0.0, qvit=qvit)
    assert loss.before == 0.0 and loss.after > 0.0 and not loss.kept, loss
    for linear, codes, rounding, v in zip(linears, start, roundings, variables):
        assert linear.learned_codes is None
        torch.testing.assert_close(linear.codes, codes, rtol=0, atol=0)
        torch.testing.assert_close(rounding.variables.detach(), v, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(block(h), target, rtol=0, atol=0)
