"""The search kernels equal the numpy expressions they replace, bit for bit (ties at half codes included)."""

import numpy as np
import pytest
import torch

from intsim.quant.log_quantizers import GELU_SHIFT, LogQParams
from intsim.quant.search_kernels import fake_uniform, log_decode, uniform_candidate_rows, uniform_rows_error


def _numpy_fake(x, s, z, bits):
    return (np.clip(np.round(x / s) + z, 0, 2**bits - 1) - z) * s


@pytest.fixture
def grid():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 50))
    x[:, :10] = (np.arange(10) - 4.5) * 0.25  # exact half codes at scale 0.25: ties to even
    scales = np.abs(rng.normal(0.3, 0.1, size=(6, 9))) + 0.01
    scales[:, 0] = 0.25
    zero_points = rng.integers(0, 16, size=(6, 9))
    return x, scales, zero_points


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_candidate_rows_and_their_error_equal_numpy(grid, bits):
    x, scales, zero_points = grid
    expected = _numpy_fake(x[:, None, :], scales[:, :, None], zero_points[:, :, None], bits)
    assert np.array_equal(uniform_candidate_rows(x, scales, zero_points, bits), expected)
    error = uniform_rows_error(x, scales, zero_points, bits)
    np.testing.assert_allclose(error, ((expected - x[:, None, :]) ** 2).sum(axis=-1), rtol=1e-13, atol=0)


def test_fake_uniform_equals_numpy(grid):
    x, _, _ = grid
    assert np.array_equal(fake_uniform(x, 0.25, 7, 4), _numpy_fake(x, 0.25, 7, 4))


@pytest.mark.parametrize("bits,q", [(3, 10), (4, 37), (4, 91), (6, 137)])
def test_log_decode_equals_the_quantizer(bits, q):
    rng = np.random.default_rng(q)
    qp = LogQParams(bits, q, 0.7, GELU_SHIFT)
    thresholds = qp.thresholds.numpy()
    x = np.concatenate([rng.uniform(-0.2, 0.8, 500), thresholds - GELU_SHIFT])  # values at the thresholds too
    expected = qp.dequantize(qp.quantize(torch.as_tensor(x))).numpy() - GELU_SHIFT
    assert np.array_equal(log_decode(x, qp.offset, thresholds[::-1], qp.values.numpy()), expected)
