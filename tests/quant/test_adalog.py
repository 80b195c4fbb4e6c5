"""The adalog method: FPCS finds what it ranks, the Gram metric is the output error, the post-LayerNorm
reparameterization keeps the float function, and an AdaLog Program runs bit-exact and is rebuilt by from_program."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_registries import (MEAN, STD, _assert_bit_exact, _assert_from_program_rebuilds, _program,  # noqa: F401
                             _tiny_vit, pixels)  # pixels: a fixture

from intsim.quant.adalog import weight_candidates
from intsim.quant.configs import CONFIGS, validate_config
from intsim.quant.fpcs import GramError, fpcs
from intsim.quant.search_kernels import uniform_candidate_rows
from intsim.quant.vit import QuantViT


def test_fpcs_converges_on_each_rows_minimum_and_keeps_the_fixed_coordinate():
    targets = np.array([0.3, 1.7, 5.0])
    scales = np.tile(np.linspace(0.1, 6.0, 16), (3, 8))
    fixed = np.repeat(np.arange(8), 16)[None, :].repeat(3, axis=0)

    def error(s, z):
        return (s - targets[:, None]) ** 2 + 0.01 * (z != 3)
    best_s, best_z, best_e = fpcs(scales, fixed, np.full(3, 5.9 / 15), error, keep=16, steps=6)
    np.testing.assert_allclose(best_s, targets, atol=1e-3)
    assert best_z.tolist() == [3, 3, 3]
    again = fpcs(scales, fixed, np.full(3, 5.9 / 15), error, keep=16, steps=6)
    assert all(np.array_equal(a, b) for a, b in zip(again, (best_s, best_z, best_e)))  # deterministic


def test_the_gram_metric_is_the_layer_output_squared_error():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 12))
    xq = np.round(x * 4) / 4
    weight = rng.normal(size=(5, 12))
    scales, zps, _ = weight_candidates(weight, 4)
    candidates = uniform_candidate_rows(weight, scales, zps, 4)
    direct = ((np.einsum("tk,nck->nct", xq, candidates) - (x @ weight.T).T[:, None, :]) ** 2).sum(axis=-1)
    np.testing.assert_allclose(GramError.of(xq, x, weight)(candidates), direct, rtol=1e-9, atol=1e-9)


def test_the_layernorm_reparameterization_keeps_the_float_function():
    model = _tiny_vit()
    qvit = QuantViT(model, CONFIGS["adalog-w4a4"], mean=MEAN, std=STD)
    norm, linear = next(qvit.layernorm_consumers())
    x = torch.randn(4, 5, 16, dtype=torch.float64)
    before = torch.nn.functional.layer_norm(x, (16,), *norm.affine(), norm.norm.eps) @ linear.weight.T + linear.bias
    r, beta = torch.rand(16, dtype=torch.float64) + 0.5, torch.randn(16, dtype=torch.float64)
    norm.reparameterize(r, beta, linear)
    after = torch.nn.functional.layer_norm(x, (16,), *norm.affine(), norm.norm.eps) @ linear.weight.T + linear.bias
    torch.testing.assert_close(after, before, rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def adalog_program(pixels):
    config = validate_config(replace(CONFIGS["adalog-w4a4"], search_rounds=1, search_steps=3))
    return _program(config, pixels)


def test_an_adalog_program_uses_the_log_kinds_and_runs_bit_exact(adalog_program, pixels):
    qvit, program = adalog_program
    kinds = {op.kind for op in program.ops}
    assert {"LogEncode", "LogAttentionValues", "AsymmetricLinear", "LogLinear"} <= kinds
    searched = program.metadata["quantizer_parameters"]
    assert "blocks.0.mlp.gelu" in searched and "blocks.0.norm1.reparam" in searched
    _assert_bit_exact(program, pixels)


def test_from_program_rebuilds_the_searched_fast_model(adalog_program, pixels):
    _assert_from_program_rebuilds(*adalog_program, pixels)


def test_the_search_beats_the_unsearched_quantizers_on_the_model_output(adalog_program, pixels):
    qvit, _ = adalog_program
    unsearched, _ = _program(validate_config(replace(CONFIGS["adalog-w4a4"], method="fqvit")), pixels)
    with torch.no_grad():
        reference = qvit.run_float(torch.as_tensor(pixels))
        errors = [float(((model.run_fast(torch.as_tensor(pixels))[0] - reference) ** 2).mean())
                  for model in (qvit, unsearched)]
    assert errors[0] < errors[1]


def test_adalog_q_min_sets_the_searched_range_and_is_stored_only_where_changed():
    # adalog-w6a6 searches q from 2 (its searches sat at AdaLog's 10 in every layer); the other configurations keep
    # AdaLog's [10, 137], and their Program metadata (hence the committed golden Programs) does not name the field
    from intsim.quant.configs import config_from_metadata, config_metadata, make_config
    from intsim.quant.quantizers import make_quantizer

    w6, w4 = make_config("adalog-w6a6"), make_config("adalog-w4a4")
    assert make_quantizer(w6, "post_gelu", "g").q_range == (2, 137)
    assert make_quantizer(w6, "post_softmax", "p").q_range == (2, 137)
    assert make_quantizer(w4, "post_gelu", "g").q_range == (10, 137)
    assert make_quantizer(make_config("adalog-w4a4-softmax-log2"), "post_softmax", "p").q_range == (37, 37)
    assert "adalog_q_min" not in config_metadata(w4) and config_metadata(w6)["adalog_q_min"] == 2
    assert config_from_metadata(config_metadata(w6)).adalog_q_min == 2
    assert config_from_metadata(config_metadata(w4)).adalog_q_min == 10
    with pytest.raises(ValueError, match="adalog_q_min = 0 must be an int in"):
        make_config("adalog-w4a4", adalog_q_min=0)
