"""Public test helpers: hypothesis strategies that generate integer-op cases, corner values included.

Users drive their own hardware models with the same cases as intsim's property tests::

    from intsim.testing import strategies, softmax_strategies
    @given(softmax_strategies.softmax_cases())
    def test_my_rtl_softmax(case): ...

Modules: :mod:`~intsim.testing.strategies` (corner values, integer arrays, requantization cases) and one
module per op family: ``matmul_strategies``, ``layernorm_strategies``, ``softmax_strategies``,
``gelu_strategies`` (GELU and residual add); :mod:`~intsim.testing.oracles` holds exact-arithmetic oracles
(Python ints and Fractions) to check results against.
"""

from intsim.testing import (
    gelu_strategies,
    layernorm_strategies,
    matmul_strategies,
    oracles,
    softmax_strategies,
    strategies,
)

__all__ = ["oracles", "strategies", "matmul_strategies", "layernorm_strategies", "softmax_strategies", "gelu_strategies"]
