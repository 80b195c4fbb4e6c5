"""Helpers shared by the golden-vector tests (a plain module: ``conftest`` names clash across test folders)."""

from __future__ import annotations

import math
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np

from intsim.golden.formats import read_tensor
from intsim.ops import ROUNDING_MODES
from intsim.testing.oracles import exact_round

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "golden"
COMMITTED_PROGRAM = COMMITTED / "programs" / "digits-fqvit-w8a8a4.intsim"  # tools/make_golden.py E2E_PROGRAM
_PROGRESS = re.compile(r"\[\d+:\d\d")  # a tqdm bar


def message_lines(err: str) -> list[str]:
    """The stderr lines that are not progress bars."""
    return [line for line in re.split(r"[\r\n]", err) if line.strip() and not _PROGRESS.search(line)]


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ exact ties, independent of intsim's kernels
OUTPUT_ZERO_POINT = {"Requantize": "zero_point", "ResidualAdd": "out_zero_point", "LayerNorm": "out_zero_point"}


def _ints(array) -> np.ndarray:
    return np.asarray(array).astype(np.int64).astype(object)  # Python ints: no overflow, exact


def exact_values(kind: str, inputs: dict, attrs: dict) -> np.ndarray:
    """The exact rational each output element of a rounding op rounds (before its zero point), with Python ints
    from docs/semantics.md; ``inputs`` by manifest role. An object array of ``Fraction``."""
    if kind == "Requantize":
        acc, multiplier, shift = (_ints(inputs[role]) for role in ("acc", "multiplier", "shift"))
        numerator, shift = acc * multiplier, np.broadcast_to(shift, acc.shape)
    elif kind == "ResidualAdd":
        a, b, ma, mb, shift = (_ints(inputs[role]) for role in ("a", "b", "a_multiplier", "b_multiplier", "shift"))
        numerator = (a - attrs["a_zero_point"]) * ma + (np.broadcast_to(b, a.shape) - attrs["b_zero_point"]) * mb
        shift = np.broadcast_to(shift, a.shape)
    else:  # LayerNorm, its normalised value rounded exactly with the op's mode
        x, alpha, multiplier, bias, shift = (_ints(inputs[role])
                                             for role in ("x", "alpha", "multiplier", "bias", "shift"))
        x_hat = np.vectorize(lambda v, a: (v - attrs["zero_point"]) << a, otypes=[object])(
            x, np.broadcast_to(alpha, x.shape))
        channels = x.shape[-1]
        s1, s2 = x_hat.sum(axis=-1, keepdims=True), (x_hat * x_hat).sum(axis=-1, keepdims=True)
        sigma = np.vectorize(math.isqrt, otypes=[object])(channels * s2 - s1 * s1)
        inverse = np.vectorize(lambda s: (1 << 48) // s if s else 0, otypes=[object])(sigma)
        n = np.vectorize(lambda v: exact_round(Fraction(v, 1 << 32), attrs["rounding"]), otypes=[object])(
            (channels * x_hat - s1) * inverse)
        numerator, shift = n * multiplier + bias, np.broadcast_to(shift, x.shape)
    return np.vectorize(lambda v, k: Fraction(v, 1 << k), otypes=[object])(numerator, shift)


def expected_codes(kind: str, values: np.ndarray, attrs: dict, rounding: str) -> np.ndarray:
    """``sat(round(value) + zero point)`` with the tie rule ``rounding``, exactly."""
    zero_point = attrs[OUTPUT_ZERO_POINT[kind]]
    return np.vectorize(lambda v: min(max(exact_round(v, rounding) + zero_point, attrs["qmin"]), attrs["qmax"]),
                        otypes=[object])(values).astype(np.int64)


def distinguishing_ties(kind: str, values: np.ndarray, attrs: dict) -> np.ndarray:
    """Elements that are exact ties (fraction exactly 1/2) and whose rounded code is unsaturated in every mode."""
    ties = np.vectorize(lambda v: v - math.floor(v) == Fraction(1, 2), otypes=[bool])(values)
    for mode in ROUNDING_MODES:
        codes = expected_codes(kind, values, attrs, mode)
        ties &= (codes > attrs["qmin"]) & (codes < attrs["qmax"])
    return ties


def tie_classes(values: np.ndarray, ties: np.ndarray) -> Counter:
    """``(sign, floor parity)`` -> count over the tie elements: what separates half_even ('even') and half_away
    from half_up ('-')."""
    return Counter(("-" if v < 0 else "+", "even" if math.floor(v) % 2 == 0 else "odd") for v in values[ties])


def read_roles(folder: Path, manifest: dict, roles: dict, fmt: str = "hex") -> dict:
    """Role -> array of the tensors ``roles`` (role -> name) of a golden tree, read from its ``fmt`` files."""
    arrays = {}
    for role, name in roles.items():
        record = manifest["tensors"][name]
        arrays[role] = read_tensor(folder / record["files"][fmt][0], fmt, shape=record["shape"], bits=record["bits"],
                                   signed=record["signed"])
    return arrays
