"""What one Program op kind is: :class:`OpKind`, the one description the whole toolchain reads.

An :class:`OpKind` bundles everything intsim knows about a kind: its kind string (``name``, and ``version``: the
string is the name for version 1 and ``Name_vN`` from version 2 on), its schema (:class:`~intsim.op_schema.OpSchema`:
operands, attributes, rule), its executor, the ``intsim.ops`` function it runs, and the intermediates the
accumulator report (``intsim report``) recomputes. The registry (:mod:`intsim.kinds.registry`) holds them; the
Program loader, the interpreter, the report, the golden writer and ``docs/program.md`` all read it.

Executors are backend-neutral: ``execute(backend, attrs, *inputs)`` calls ``backend.ops.<function>`` (the numba
kernels of :mod:`intsim.ops` or their torch twins of :mod:`intsim.quant.torch_ops`: same names, same signatures)
and the backend's data movement (``patchify``, ``split``, ``prepend``, ``broadcast_to``); it returns one array, or a
tuple for a kind of several outputs.

This module also holds the helpers the kinds' report recomputations share (:func:`span`, :func:`clipped`, ...):
numpy only, so a kind module imports no kernel until its report runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from intsim import op_schema as s
from intsim.op_schema import Attribute, Operand, OpSchema

__all__ = ["OpKind", "clipped", "kind_string", "max_abs", "merge_heads", "parse_kind", "shifted_bound", "span",
           "split_heads"]

_NAME = re.compile(r"[A-Z][A-Za-z0-9]*\Z")  # CamelCase, no underscore: "_vN" is the version suffix
_KIND = re.compile(r"(?P<name>[A-Z][A-Za-z0-9]*?)(?:_v(?P<version>[2-9]|[1-9][0-9]+))?\Z")


def kind_string(name: str, version: int = 1) -> str:
    """The Program's kind string of ``name`` at ``version``: ``name`` for version 1, ``f"{name}_v{version}"`` after.

    A change of semantics is a new version, hence a new kind string: a Program keeps the meaning it was saved with.
    """
    return name if version == 1 else f"{name}_v{version}"


def parse_kind(kind: str) -> tuple[str, int]:
    """``(name, version)`` of a kind string (``"Linear"`` -> ``("Linear", 1)``, ``"Linear_v2"`` -> ``("Linear", 2)``);
    ``ValueError`` for a string that is no kind string."""
    match = _KIND.match(kind) if isinstance(kind, str) else None
    if match is None:
        raise ValueError(f"{kind!r} is not a kind string (CamelCase name, optionally _vN with N >= 2)")
    return match["name"], int(match["version"] or 1)


@dataclass(frozen=True)
class OpKind:
    """One op kind of the Program vocabulary.

    ``name``, ``version``     the kind string :attr:`kind` (:func:`kind_string`)
    ``schema``                operands, attributes, number of outputs and rule (``schema.kind`` is :attr:`kind`)
    ``execute``               ``execute(backend, attrs, *inputs) -> output`` (a tuple for several outputs)
    ``function``              the ``intsim.ops`` function it runs (= its torch twin's name = the golden suite
                              ``golden/ops/<function>/``); ``None`` for pure data movement
    ``summary``               inputs -> outputs in words (docs/program.md)
    ``intermediates``         the names of the quantities the accumulator report shows for it, in order
    ``recompute``             ``recompute(report, program, op, inputs, outputs)``: adds those quantities to the
                              report (``report.add``, ``report.count``) and returns what they give for the op's
                              first output (the report checks it equals the traced output), or ``None``
    """

    name: str
    schema: OpSchema
    execute: Callable
    function: str | None
    version: int = 1
    summary: str = ""
    intermediates: tuple[str, ...] = ()
    recompute: Callable | None = None

    def __post_init__(self):
        if not (isinstance(self.name, str) and _NAME.match(self.name)):
            raise ValueError(f"op kind name {self.name!r}: expected a CamelCase identifier without underscores")
        if not (isinstance(self.version, int) and not isinstance(self.version, bool) and self.version >= 1):
            raise ValueError(f"op kind {self.name!r}: version must be an int >= 1, got {self.version!r}")
        if not isinstance(self.schema, OpSchema) or self.schema.kind != self.kind:
            raise ValueError(f"op kind {self.kind!r}: expected an OpSchema of kind {self.kind!r}, got "
                             f"{getattr(self.schema, 'kind', self.schema)!r}")
        if not callable(self.execute):
            raise ValueError(f"op kind {self.kind!r}: execute must be callable")
        if self.function is not None and not (isinstance(self.function, str) and self.function.isidentifier()):
            raise ValueError(f"op kind {self.kind!r}: function must be an intsim.ops name or None, got "
                             f"{self.function!r}")
        if self.recompute is not None and not callable(self.recompute):
            raise ValueError(f"op kind {self.kind!r}: recompute must be callable or None")

    @property
    def kind(self) -> str:
        """The kind string Programs carry (``Op.kind``)."""
        return kind_string(self.name, self.version)

    @property
    def input_roles(self) -> tuple[str, ...]:
        """The inputs' roles in argument order (the manifest's names for them)."""
        return tuple(operand.role for operand in self.schema.inputs)


# ------------------------------------------------------------------------------------------ shared vocabulary
ROUNDING = Attribute("rounding", "str", choices=s.ROUNDING_MODES)
SIGNED = Attribute("signed", "bool")
OUTPUT_CODES = (s.int_attribute("qmin", s.INT32), s.int_attribute("qmax", s.INT32))
MULTIPLIER = Operand("multiplier", constant=True, values=s.MULTIPLIER)
SHIFT = Operand("shift", constant=True, values=s.SHIFT)
DECLARED_INPUT = "bits/signed hold the input's declared range, zero_point within it"


def split_heads(x, heads: int):
    """(B, N, C) -> (B, H, N, C/H): the head split of timm's attention (channels grouped head-major); numpy or torch."""
    batch, tokens, channels = x.shape
    return x.reshape(batch, tokens, heads, channels // heads).swapaxes(1, 2)


def merge_heads(x):
    """(B, H, N, d) -> (B, N, H*d); numpy or torch."""
    batch, heads, tokens, width = x.shape
    return x.swapaxes(1, 2).reshape(batch, tokens, heads * width)


# ------------------------------------------------------------------------------------------ report helpers
def span(spec, zero_point: int) -> int:
    """The largest ``|code - zero_point|`` over the declared code range of a :class:`~intsim.program.TensorSpec`."""
    return max(zero_point - spec.qmin, spec.qmax - zero_point)


def max_abs(array) -> int:
    array = np.asarray(array)
    return max(abs(int(array.min())), abs(int(array.max()))) if array.size else 0


def linear_partial_sum_bound(x_span: int, abs_weight: np.ndarray, shift) -> int:
    """The declared bound of a linear's partial sums before the bias: ``K * x_span * max|w|`` without input shifts,
    else each input channel's span times its factor times the largest ``|w|`` of its column (``abs_weight (N, K)``
    the magnitudes of the (centred) weight, ``shift (K,)`` or ``None``)."""
    if shift is None:
        return abs_weight.shape[1] * x_span * max_abs(abs_weight)
    return x_span * int((abs_weight.max(axis=0, initial=0) << shift).sum())


def shifted_bound(value_bound, shift) -> int:
    """The largest ``|round_shift(v, k)|`` for ``|v| <= value_bound`` (per channel, exact Python ints)."""
    bounds = np.broadcast_arrays(np.asarray(value_bound, dtype=object), np.asarray(shift, dtype=object))
    return max(((int(v) + ((1 << int(k)) >> 1)) >> int(k)) for v, k in zip(bounds[0].ravel(), bounds[1].ravel()))


def clipped(report, rounded: np.ndarray, attrs: dict) -> np.ndarray:
    """Count the values of ``rounded`` below ``qmin`` / above ``qmax`` (the op's saturation); return them clipped."""
    qmin, qmax = attrs["qmin"], attrs["qmax"]
    report.count("clipped", qmin, qmax, int((rounded < qmin).sum()), int((rounded > qmax).sum()), rounded.size)
    return np.clip(rounded, qmin, qmax)
