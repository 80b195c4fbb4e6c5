"""The schema machinery of Program op kinds: operands, attributes and the checks of the rules between them.

Every op kind of the registry :mod:`intsim.kinds` carries an :class:`OpSchema` (its operands, attributes, number of
outputs and ``rule``: operand shapes and cross-attribute ranges -> output shapes); this module holds the types and
:func:`check_schema`, which checks one op against its kind's schema, plus the helpers the rules are written with
(:func:`axes`, :func:`zero_point_of`, ...). :meth:`intsim.program.Program.validate` checks every op (through
:func:`intsim.kinds.check_op`), so a Program that passes runs without reaching Python internals: every attribute
has the type and range the executor and the ``intsim.ops`` kernel accept, every operand the shape and values they
accept. The ranges are the documented contracts of ``intsim.ops`` (``MAX_SHIFT``, ``MULTIPLIER_BITS``,
``MAX_INPUT_SHIFT``, ``MAX_PTF_ALPHA``, ...), read from :mod:`intsim.limits` (no numba, no torch), which the ops
read too. What depends on the data at run time (the int64 bound proofs of the kernels, the codes of an activation)
stays with the kernels.

Contract of :func:`check_schema`:
    * every attribute is required; an unknown one is refused (a typo would otherwise be ignored);
    * ``int`` means a Python or numpy integer, never a bool and never a float (``4.0`` is refused), ``bool`` a bool,
      ``str`` a string, ``ints`` a list of ints;
    * operands carry their shape **with** the batch axis: ``None`` first for activations, the stored shape for
      constants; the rule of the kind checks the operands and returns the output shapes the same way;
    * any violation raises :class:`SchemaError` with a message naming the attribute or operand, what was expected
      and what was found; the caller prefixes the op (``op 'blocks.0.attn.scores' (AttentionScores): ...``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from intsim import limits

__all__ = ["Attribute", "OpSchema", "OpView", "Operand", "OperandView", "SchemaError", "attribute_error", "axes",
           "channels", "check_schema", "declared_input", "did_you_mean", "heads_dividing", "int_attribute",
           "input_count", "int_range", "is_int", "markdown_row", "number", "operand_error", "output_codes",
           "output_count", "output_holds", "per_channel", "shape_is", "shape_text", "zero_point_of"]

# The contracts of intsim.ops, as ranges (the numbers live in intsim.limits, shared with the ops and twins).
INT32 = (limits.INT32_MIN, limits.INT32_MAX)
INT64 = (limits.INT64_MIN, limits.INT64_MAX)
MULTIPLIER = (-limits.MAX_MULTIPLIER, limits.MAX_MULTIPLIER)  # |M| < 2**31
SHIFT = (0, limits.MAX_SHIFT)  # a right shift of round_shift
INPUT_SHIFT = (0, limits.MAX_INPUT_SHIFT)  # Linear's x_shift (input factors of the MAC)
PTF_ALPHA = (0, limits.MAX_PTF_ALPHA)
LAYERNORM_INPUT_BITS = limits.LAYERNORM_MAX_INPUT_BITS
LAYERNORM_MAX_CHANNELS = limits.LAYERNORM_MAX_CHANNELS
SOFTMAX_INPUT_BITS = limits.SOFTMAX_MAX_INPUT_BITS
SOFTMAX_OUT_BITS = limits.SOFTMAX_MAX_OUT_BITS
MAX_FULL_SCALE = limits.MAX_FULL_SCALE
LUT_BITS = limits.LUT_MAX_BITS
LIS_ZERO_CODE = limits.LIS_ZERO_CODE  # Log-Int-Softmax codes are 0..16
ROUNDING_MODES = limits.ROUNDING_MODES


class SchemaError(ValueError):
    """One violation of the op schema (the message names the attribute or operand; the caller names the op)."""


@dataclass(frozen=True)
class Attribute:
    """A required attribute: ``type`` is ``int``, ``bool``, ``str``, ``ints`` (list of ints) or ``int_or_ints`` (an
    int, or a list of ints: one per slice of some axis); ints lie in ``[lo, hi]`` (``None``: unbounded), strings in
    ``choices``."""

    name: str
    type: str
    lo: int | None = None
    hi: int | None = None
    choices: tuple[str, ...] = ()

    def expected(self) -> str:
        """What a valid value looks like, in words (the ``expected ...`` of a message)."""
        if self.type == "bool":
            return "a bool"
        if self.type == "str":
            return "one of " + ", ".join(map(repr, self.choices))
        noun = {"int": "an int", "ints": "a non-empty list of ints"}.get(self.type, "an int or a non-empty list of ints")
        if self.lo is not None and self.hi is not None:
            return f"{noun} in [{number(self.lo)}, {number(self.hi)}]"
        return f"{noun} >= {number(self.lo)}" if self.lo is not None else noun


@dataclass(frozen=True)
class Operand:
    """An op input: ``constant`` ones must be constant tensors, whose values lie in ``values`` (``None``: any);
    ``optional`` ones may be left off (trailing inputs only)."""

    role: str
    constant: bool = False
    values: tuple[int, int] | None = None
    optional: bool = False


@dataclass(frozen=True)
class OpSchema:
    """One op kind: its inputs, attributes, number of outputs (an int, or the name of the list attribute whose
    length it is) and its ``rule`` (operands' shapes and cross-attribute ranges -> output shapes)."""

    kind: str
    inputs: tuple[Operand, ...]
    attributes: tuple[Attribute, ...]
    rule: Callable[["OpView"], list[tuple]]
    outputs: int | str = 1
    checks: str = ""  # the rule in words (docs/program.md)


@dataclass(frozen=True)
class OperandView:
    """What a rule sees of one tensor: ``shape`` with the batch axis (``None`` first for activations), the declared
    range ``qmin..qmax`` and zero point, and ``bounds`` (min, max of the data; constants only)."""

    name: str
    shape: tuple
    bits: int
    signed: bool
    zero_point: int
    bounds: tuple[int, int] | None = None

    @property
    def code_range(self) -> tuple[int, int]:
        return int_range(self.bits, self.signed)

    def describe(self) -> str:
        low, high = self.code_range
        return f"the {self.bits}-bit {'signed' if self.signed else 'unsigned'} range [{low}, {high}] of {self.name!r}"


@dataclass(frozen=True)
class OpView:
    """An op as its rule sees it: attributes (already type- and range-checked), inputs and outputs."""

    attrs: dict
    inputs: list[OperandView]
    outputs: list[OperandView]


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def number(value: int) -> str:
    """Large bounds as powers of two (``2**31 - 1``, ``-(2**31 - 1)``), small ones as decimals."""
    magnitude = abs(value)
    if magnitude >= 2**16 and magnitude & (magnitude - 1) == 0:
        return f"{'-' if value < 0 else ''}2**{magnitude.bit_length() - 1}"
    if magnitude >= 2**16 and magnitude & (magnitude + 1) == 0:
        power = f"2**{magnitude.bit_length()} - 1"
        return f"-({power})" if value < 0 else power
    return str(value)


# ------------------------------------------------------------------------------------------------ rule helpers
def int_attribute(name: str, bounds: tuple[int, int] | None = None) -> Attribute:
    """A required int attribute in ``bounds`` (``(lo, hi)``; either may be None: unbounded)."""
    low, high = bounds or (None, None)
    return Attribute(name, "int", low, high)


def int_or_ints_attribute(name: str, bounds: tuple[int, int] | None = None) -> Attribute:
    """A required int, or non-empty list of ints (one per slice of an axis the op names), in ``bounds``."""
    low, high = bounds or (None, None)
    return Attribute(name, "int_or_ints", low, high)


def did_you_mean(value, choices) -> str:
    """`` (did you mean 'x'?)`` for a string close to one of ``choices``, else ``""``."""
    close = difflib.get_close_matches(value, list(choices), n=1) if isinstance(value, str) else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def attribute_error(name: str, expected: str, got) -> SchemaError:
    return SchemaError(f"attribute {name!r}: expected {expected}, got {got!r}")


def operand_error(operand: OperandView, expected: str, got) -> SchemaError:
    return SchemaError(f"input {operand.name!r}: expected {expected}, got {got}")


def axes(operand: OperandView, layout: str) -> tuple:
    """The shape of an operand that must have ``len(layout.split(','))`` axes (``layout`` names them)."""
    count = len(layout.split(","))
    if len(operand.shape) != count:
        raise operand_error(operand, f"{count} axes {layout}", f"shape {shape_text(operand.shape)}")
    return operand.shape


def channels(operand: OperandView) -> int:
    """The last axis of an operand (channels), which must exist besides the batch axis."""
    if not operand.shape or operand.shape[-1] is None:
        raise operand_error(operand, "a last (channel) axis besides the batch axis", f"shape {shape_text(operand.shape)}")
    return operand.shape[-1]


def shape_is(operand: OperandView, shape: tuple, meaning: str) -> None:
    if tuple(operand.shape) != tuple(shape):
        raise operand_error(operand, f"shape {shape_text(shape)} ({meaning})", f"shape {shape_text(operand.shape)}")


def per_channel(operand: OperandView, channels: int, of: OperandView) -> None:
    """A per-channel constant: shape ``(1,)`` (whole tensor) or ``(C,)`` with ``C`` the last axis of ``of``."""
    if len(operand.shape) != 1 or operand.shape[0] not in (1, channels):
        raise operand_error(operand, f"shape (1,) or ({channels},) (one value per channel of {of.name!r})",
                             f"shape {shape_text(operand.shape)}")


def shape_text(shape) -> str:
    sizes = ", ".join("batch" if size is None else str(size) for size in shape)
    return f"({sizes}{',' if len(shape) == 1 else ''})"


def zero_point_of(view: OpView, name: str, operand: OperandView) -> None:
    """Attribute ``name`` is the zero point of ``operand``: it lies in the operand's declared code range."""
    low, high = operand.code_range
    if not low <= view.attrs[name] <= high:
        raise attribute_error(name, f"a zero point within {operand.describe()}", view.attrs[name])


def output_codes(view: OpView, zero_point: str) -> None:
    """``qmin <= qmax``, both within the output's declared range, and the zero point ``zero_point`` between them."""
    qmin, qmax = view.attrs["qmin"], view.attrs["qmax"]
    out = view.outputs[0]
    low, high = out.code_range
    if qmin > qmax:
        raise attribute_error("qmin", f"an int <= qmax ({qmax})", qmin)
    for name, value in (("qmin", qmin), ("qmax", qmax)):
        if not low <= value <= high:
            raise attribute_error(name, f"an int within {out.describe()}", value)
    if not qmin <= view.attrs[zero_point] <= qmax:
        raise attribute_error(zero_point, f"an int in [qmin, qmax] = [{qmin}, {qmax}]", view.attrs[zero_point])


def declared_input(view: OpView, operand: OperandView) -> None:
    """Attributes ``bits``/``signed`` declare the codes of ``operand``: its declared range lies within theirs, and
    attribute ``zero_point`` (if any) within both."""
    bits, signed = view.attrs["bits"], view.attrs["signed"]
    low, high = int_range(bits, signed)
    found_low, found_high = operand.code_range
    if found_low < low or found_high > high:
        raise attribute_error("bits", f"a width whose {'signed' if signed else 'unsigned'} range [{low}, {high}] "
                                       f"holds {operand.describe()}", bits)
    if "zero_point" in view.attrs:
        zero_point_of(view, "zero_point", operand)


def heads_dividing(view: OpView, channels: int) -> int:
    heads = view.attrs["heads"]
    if channels % heads:
        raise attribute_error("heads", f"an int dividing {channels} (the channels)", heads)
    return heads


def output_holds(view: OpView, low: int, high: int, what: str) -> None:
    out = view.outputs[0]
    out_low, out_high = out.code_range
    if low < out_low or high > out_high:
        raise SchemaError(f"output {out.name!r}: expected a declared range holding {what} [{low}, {high}], "
                          f"got [{out_low}, {out_high}]")


# ------------------------------------------------------------------------------------------------ checking
def is_int(value) -> bool:
    """A Python or numpy integer, and not a bool (``True`` is no head count, ``4.0`` no int)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_attribute(attribute: Attribute, value) -> None:
    if attribute.type == "bool":
        valid = isinstance(value, (bool, np.bool_))
    elif attribute.type == "str":
        valid = isinstance(value, str) and value in attribute.choices
    else:
        single = attribute.type == "int" or (attribute.type == "int_or_ints" and not isinstance(value, (list, tuple)))
        items = [value] if single else value
        valid = (isinstance(items, (list, tuple)) and len(items) > 0 and all(
            is_int(item) and (attribute.lo is None or item >= attribute.lo)
            and (attribute.hi is None or item <= attribute.hi) for item in items))
    if not valid:
        raise attribute_error(attribute.name, attribute.expected() + did_you_mean(value, attribute.choices), value)


def _check_attributes(schema: OpSchema, attrs: dict) -> None:
    known = {attribute.name for attribute in schema.attributes}
    for name in attrs:
        if name not in known:
            raise SchemaError(f"unknown attribute {name!r}{did_you_mean(name, known)}; {schema.kind} takes "
                              f"{', '.join(sorted(known)) or 'none'}")
    for attribute in schema.attributes:
        if attribute.name not in attrs:
            raise SchemaError(f"attribute {attribute.name!r}: missing (expected {attribute.expected()})")
        _check_attribute(attribute, attrs[attribute.name])


def input_count(schema: OpSchema) -> tuple[int, int]:
    """``(fewest, most)`` inputs of a kind (optional inputs are trailing)."""
    return sum(not operand.optional for operand in schema.inputs), len(schema.inputs)


def output_count(schema: OpSchema, attrs: dict) -> int:
    return schema.outputs if isinstance(schema.outputs, int) else len(attrs[schema.outputs])


def _check_operands(schema: OpSchema, inputs: list[OperandView], is_constant: list[bool]) -> None:
    fewest, most = input_count(schema)
    if not fewest <= len(inputs) <= most:
        roles = ", ".join(f"[{operand.role}]" if operand.optional else operand.role for operand in schema.inputs)
        count = str(most) if fewest == most else f"{fewest} to {most}"
        raise SchemaError(f"expected {count} inputs ({roles}), got {len(inputs)}")
    for operand, view, constant in zip(schema.inputs, inputs, is_constant):
        if operand.constant and not constant:
            raise operand_error(view, f"a constant tensor (the {operand.role})", "an activation")
        if operand.values and (view.bounds[0] < operand.values[0] or view.bounds[1] > operand.values[1]):
            bad = view.bounds[0] if view.bounds[0] < operand.values[0] else view.bounds[1]
            low, high = operand.values
            raise operand_error(view, f"{operand.role} values in [{number(low)}, {number(high)}]", f"value {bad}")


def check_schema(schema: OpSchema, attrs: dict, inputs: list[OperandView], is_constant: list[bool],
                 outputs: list[OperandView]) -> list[tuple]:
    """Check one op against ``schema``; return the shapes (with batch axis) of its outputs.

    ``inputs``/``outputs``: the op's tensors in order (an output's ``shape`` is unused); ``is_constant[i]``: whether
    input ``i`` is a constant tensor. Raises :class:`SchemaError` (wrong input or output count, attribute missing /
    unknown / mistyped / out of range, operand shape or values, cross-attribute range).
    """
    _check_attributes(schema, attrs)
    _check_operands(schema, inputs, is_constant)
    expected = output_count(schema, attrs)
    if len(outputs) != expected:
        reason = "" if isinstance(schema.outputs, int) else f" (one per entry of {schema.outputs})"
        raise SchemaError(f"expected {expected} output{'s' if expected != 1 else ''}{reason}, got {len(outputs)}")
    return schema.rule(OpView(attrs, inputs, outputs))


def markdown_row(schema: OpSchema) -> list[str]:
    """The inputs, outputs, attributes and checks of ``schema`` as the cells of a Markdown table row."""
    inputs = []
    for operand in schema.inputs:
        text = operand.role + (" (constant" + (f", {number(operand.values[0])}..{number(operand.values[1])}"
                                                if operand.values else "") + ")" if operand.constant else "")
        inputs.append(f"[{text}]" if operand.optional else text)
    outputs = str(schema.outputs) if isinstance(schema.outputs, int) else f"len({schema.outputs})"
    groups: list[tuple[list[str], str]] = []  # consecutive attributes of one type share an entry
    for attribute in schema.attributes:
        if groups and groups[-1][1] == attribute.expected():
            groups[-1][0].append(attribute.name)
        else:
            groups.append(([attribute.name], attribute.expected()))
    attributes = "; ".join(", ".join(f"`{name}`" for name in names) + f" {expected}" for names, expected in groups)
    return [", ".join(inputs), outputs, attributes or "none", schema.checks]
