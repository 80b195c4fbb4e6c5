"""The op-kind registry: kind string -> :class:`~intsim.kinds.base.OpKind`, built-in kinds first.

Everything that handles ops iterates this one table: :meth:`intsim.program.Program.validate` (through
:func:`check_op`), the interpreter (each kind's executor), the accumulator report (its intermediates), the golden
writer (its ``intsim.ops`` function and operand roles) and ``docs/program.md`` (:func:`markdown_table`).
:func:`register_op_kind` adds a kind from outside (a new method or a new version of a kind: a change of semantics
is a new kind string, ``Name_vN``, so old Programs keep their meaning); built-in kinds can be neither replaced nor
removed.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import MappingProxyType

from intsim.kinds import attention, linear, logquant, movement, normalization
from intsim.kinds.base import OpKind
from intsim.op_schema import OperandView, SchemaError, check_schema, did_you_mean, markdown_row

__all__ = ["BUILTIN_KINDS", "OP_KINDS", "check_op", "get_op_kind", "markdown_table", "op_kinds", "register_op_kind",
           "registered_op_kind", "unregister_op_kind"]

_KINDS: dict[str, OpKind] = {}
OP_KINDS = MappingProxyType(_KINDS)
"""Read-only view: kind string -> :class:`OpKind`, in registration order (built-in kinds first)."""

_ORDER = ("Patchify", "Linear", "Requantize", "Split", "PrependToken", "ResidualAdd", "LayerNorm", "AttentionScores",
          "LogIntSoftmax", "UniformSoftmax", "AttentionValues", "LisAttentionValues", "LogEncode", "LogAttentionValues", "AsymmetricLinear", "LogLinear", "Lut",
          "SelectToken")


def register_op_kind(kind: OpKind) -> OpKind:
    """Add ``kind`` to the registry (and so to validation, the interpreter, the report and the golden writer).

    ``ValueError`` if its kind string is taken: a kind of changed semantics takes a new version
    (``OpKind(..., version=2)``: kind string ``Name_v2``). Returns ``kind``.
    """
    if not isinstance(kind, OpKind):
        raise TypeError(f"register_op_kind: expected an OpKind, got {type(kind).__name__}")
    if kind.kind in _KINDS:
        raise ValueError(f"op kind {kind.kind!r} is already registered; a kind of new semantics needs a new version "
                         f"(kind string {kind.name}_v{kind.version + 1})")
    _KINDS[kind.kind] = kind
    return kind


def unregister_op_kind(kind: str | OpKind) -> OpKind:
    """Remove a kind added by :func:`register_op_kind` (``ValueError`` for a built-in or unknown one); return it."""
    name = kind.kind if isinstance(kind, OpKind) else kind
    if name in BUILTIN_KINDS:
        raise ValueError(f"op kind {name!r} is built in; it cannot be removed")
    if name not in _KINDS:
        raise ValueError(f"op kind {name!r} is not registered")
    return _KINDS.pop(name)


@contextmanager
def registered_op_kind(kind: OpKind):
    """``with registered_op_kind(kind): ...``: the kind is registered inside the block only."""
    register_op_kind(kind)
    try:
        yield kind
    finally:
        unregister_op_kind(kind)


def get_op_kind(kind: str) -> OpKind:
    """The registered :class:`OpKind` of a kind string; :class:`~intsim.op_schema.SchemaError` naming the known
    kinds (and the closest one) otherwise."""
    found = _KINDS.get(kind) if isinstance(kind, str) else None
    if found is None:
        raise SchemaError(f"unknown kind {kind!r}{did_you_mean(kind, _KINDS)}; known: {', '.join(sorted(_KINDS))}")
    return found


def op_kinds() -> tuple[OpKind, ...]:
    """Every registered kind, built-in ones first (in the order of ``docs/program.md``)."""
    return tuple(_KINDS.values())


def check_op(kind: str, attrs: dict, inputs: list[OperandView], is_constant: list[bool],
             outputs: list[OperandView]) -> list[tuple]:
    """Check one op of ``kind`` against its registered schema (:func:`intsim.op_schema.check_schema`); return the
    shapes (with batch axis) of its outputs. :class:`SchemaError` for an unknown kind or any violation."""
    return check_schema(get_op_kind(kind).schema, attrs, inputs, is_constant, outputs)


def markdown_table(kinds=None) -> str:
    """The kinds as the Markdown table of ``docs/program.md`` (one row per kind; default: the built-in ones)."""
    lines = ["| kind | inputs | outputs | attributes | checks | `intsim.ops` function | report intermediates |",
             "|---|---|---|---|---|---|---|"]
    for kind in (kinds if kinds is not None else [_KINDS[name] for name in BUILTIN_KINDS]):
        inputs, outputs, attributes, checks = markdown_row(kind.schema)
        function = f"`{kind.function}`" if kind.function else "none (data movement)"
        intermediates = ", ".join(f"`{name}`" for name in kind.intermediates) or "none"
        lines.append(f"| {kind.kind} | {inputs} | {outputs} | {attributes} | {checks} | {function} | {intermediates} |")
    return "\n".join(lines)


def _register_builtins() -> tuple[str, ...]:
    found = {kind.kind: kind for module in (movement, linear, normalization, attention, logquant) for kind in module.KINDS}
    if sorted(found) != sorted(_ORDER):
        raise RuntimeError(f"built-in kinds {sorted(found)} differ from the documented order {sorted(_ORDER)}")
    for name in _ORDER:
        register_op_kind(found[name])
    return _ORDER


BUILTIN_KINDS: tuple[str, ...] = _register_builtins()
"""The kind strings of the built-in kinds (those the exporter emits), in documentation order."""
