"""The schema of every Program op kind: operands, attributes and the shape and range rules between them.

One table, :data:`SCHEMAS` (kind -> :class:`OpSchema`), covers the kinds the interpreter executes
(``intsim.interpreter.EXECUTORS``). :meth:`intsim.program.Program.validate` checks every op against it, so a
Program that passes runs without reaching Python internals: every attribute has the type and range the executor and
the ``intsim.ops`` kernel accept, every operand the shape and values they accept. The ranges are the documented
contracts of ``intsim.ops`` (``MAX_SHIFT``, ``MULTIPLIER_BITS``, ``MAX_INPUT_SHIFT``, ``MAX_PTF_ALPHA``, ...),
repeated here so that this module needs numpy only, and tested equal to them. What depends on the data at run
time (the int64 bound proofs of the kernels, the codes of an activation) stays with the kernels.

Contract of :func:`check_op` (the one entry point):
    * every attribute is required; an unknown one is refused (a typo would otherwise be ignored);
    * ``int`` means a Python or numpy integer, never a bool and never a float (``4.0`` is refused), ``bool`` a bool,
      ``str`` a string, ``ints`` a list of ints;
    * operands carry their shape **with** the batch axis: ``None`` first for activations, the stored shape for
      constants; the rule of the kind checks the operands and returns the output shapes the same way;
    * any violation raises :class:`SchemaError` with a message naming the attribute or operand, what was expected
      and what was found; the caller prefixes the op (``op 'blocks.0.attn.scores' (AttentionScores): ...``).

``docs/program.md`` shows the table as rendered by :func:`markdown_table` (a test keeps them equal).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Attribute", "Operand", "OpSchema", "OperandView", "SCHEMAS", "SchemaError", "check_op", "is_int",
           "markdown_table"]

# The contracts of intsim.ops (tests/test_program_checks.py asserts these equal the ops' own constants).
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
MULTIPLIER = (-(2**31 - 1), 2**31 - 1)  # requant.MULTIPLIER_BITS: |M| < 2**31
SHIFT = (0, 62)  # requant.MAX_SHIFT: a right shift of round_shift
INPUT_SHIFT = (0, 15)  # matmul.MAX_INPUT_SHIFT: Linear's x_shift (PTF factors of the input)
PTF_ALPHA = (0, 7)  # layernorm.MAX_PTF_ALPHA
LAYERNORM_INPUT_BITS = 16  # layernorm.MAX_INPUT_BITS
LAYERNORM_MAX_CHANNELS = 2**14  # layernorm.MAX_CHANNELS
SOFTMAX_INPUT_BITS = 32  # softmax._MAX_BITS
SOFTMAX_OUT_BITS = 16  # softmax._check_out_bits
MAX_FULL_SCALE = 2**20  # softmax.MAX_FULL_SCALE
LUT_BITS = 16  # gelu.MAX_LUT_BITS
LIS_ZERO_CODE = 16  # softmax.ZERO_CODE: Log-Int-Softmax codes are 0..16
ROUNDING_MODES = ("half_up", "half_even", "half_away")  # rounding.ROUNDING_MODES


class SchemaError(ValueError):
    """One violation of the op schema (the message names the attribute or operand; the caller names the op)."""


@dataclass(frozen=True)
class Attribute:
    """A required attribute: ``type`` is ``int``, ``bool``, ``str`` or ``ints`` (list of ints); ints lie in
    ``[lo, hi]`` (``None``: unbounded), strings in ``choices``."""

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
        noun = "an int" if self.type == "int" else "a non-empty list of ints"
        if self.lo is not None and self.hi is not None:
            return f"{noun} in [{_number(self.lo)}, {_number(self.hi)}]"
        return f"{noun} >= {_number(self.lo)}" if self.lo is not None else noun


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
        return _int_range(self.bits, self.signed)

    def describe(self) -> str:
        low, high = self.code_range
        return f"the {self.bits}-bit {'signed' if self.signed else 'unsigned'} range [{low}, {high}] of {self.name!r}"


@dataclass(frozen=True)
class OpView:
    """An op as its rule sees it: attributes (already type- and range-checked), inputs and outputs."""

    attrs: dict
    inputs: list[OperandView]
    outputs: list[OperandView]


def _int_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def _number(value: int) -> str:
    """Large bounds as powers of two (``2**31 - 1``, ``-(2**31 - 1)``), small ones as decimals."""
    magnitude = abs(value)
    if magnitude >= 2**16 and magnitude & (magnitude - 1) == 0:
        return f"{'-' if value < 0 else ''}2**{magnitude.bit_length() - 1}"
    if magnitude >= 2**16 and magnitude & (magnitude + 1) == 0:
        power = f"2**{magnitude.bit_length()} - 1"
        return f"-({power})" if value < 0 else power
    return str(value)


# ------------------------------------------------------------------------------------------------ rule helpers
def _did_you_mean(value, choices) -> str:
    """`` (did you mean 'x'?)`` for a string close to one of ``choices``, else ``""``."""
    close = difflib.get_close_matches(value, list(choices), n=1) if isinstance(value, str) else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def _attribute_error(name: str, expected: str, got) -> SchemaError:
    return SchemaError(f"attribute {name!r}: expected {expected}, got {got!r}")


def _operand_error(operand: OperandView, expected: str, got) -> SchemaError:
    return SchemaError(f"input {operand.name!r}: expected {expected}, got {got}")


def _axes(operand: OperandView, layout: str) -> tuple:
    """The shape of an operand that must have ``len(layout.split(','))`` axes (``layout`` names them)."""
    count = len(layout.split(","))
    if len(operand.shape) != count:
        raise _operand_error(operand, f"{count} axes {layout}", f"shape {_shape_text(operand.shape)}")
    return operand.shape


def _channels(operand: OperandView) -> int:
    """The last axis of an operand (channels), which must exist besides the batch axis."""
    if not operand.shape or operand.shape[-1] is None:
        raise _operand_error(operand, "a last (channel) axis besides the batch axis", f"shape {_shape_text(operand.shape)}")
    return operand.shape[-1]


def _shape_is(operand: OperandView, shape: tuple, meaning: str) -> None:
    if tuple(operand.shape) != tuple(shape):
        raise _operand_error(operand, f"shape {_shape_text(shape)} ({meaning})", f"shape {_shape_text(operand.shape)}")


def _per_channel(operand: OperandView, channels: int, of: OperandView) -> None:
    """A per-channel constant: shape ``(1,)`` (whole tensor) or ``(C,)`` with ``C`` the last axis of ``of``."""
    if len(operand.shape) != 1 or operand.shape[0] not in (1, channels):
        raise _operand_error(operand, f"shape (1,) or ({channels},) (one value per channel of {of.name!r})",
                             f"shape {_shape_text(operand.shape)}")


def _shape_text(shape) -> str:
    sizes = ", ".join("batch" if size is None else str(size) for size in shape)
    return f"({sizes}{',' if len(shape) == 1 else ''})"


def _zero_point_of(view: OpView, name: str, operand: OperandView) -> None:
    """Attribute ``name`` is the zero point of ``operand``: it lies in the operand's declared code range."""
    low, high = operand.code_range
    if not low <= view.attrs[name] <= high:
        raise _attribute_error(name, f"a zero point within {operand.describe()}", view.attrs[name])


def _output_codes(view: OpView, zero_point: str) -> None:
    """``qmin <= qmax``, both within the output's declared range, and the zero point ``zero_point`` between them."""
    qmin, qmax = view.attrs["qmin"], view.attrs["qmax"]
    out = view.outputs[0]
    low, high = out.code_range
    if qmin > qmax:
        raise _attribute_error("qmin", f"an int <= qmax ({qmax})", qmin)
    for name, value in (("qmin", qmin), ("qmax", qmax)):
        if not low <= value <= high:
            raise _attribute_error(name, f"an int within {out.describe()}", value)
    if not qmin <= view.attrs[zero_point] <= qmax:
        raise _attribute_error(zero_point, f"an int in [qmin, qmax] = [{qmin}, {qmax}]", view.attrs[zero_point])


def _declared_input(view: OpView, operand: OperandView) -> None:
    """Attributes ``bits``/``signed`` declare the codes of ``operand``: its declared range lies within theirs, and
    attribute ``zero_point`` (if any) within both."""
    bits, signed = view.attrs["bits"], view.attrs["signed"]
    low, high = _int_range(bits, signed)
    found_low, found_high = operand.code_range
    if found_low < low or found_high > high:
        raise _attribute_error("bits", f"a width whose {'signed' if signed else 'unsigned'} range [{low}, {high}] "
                                       f"holds {operand.describe()}", bits)
    if "zero_point" in view.attrs:
        _zero_point_of(view, "zero_point", operand)


def _heads(view: OpView, channels: int) -> int:
    heads = view.attrs["heads"]
    if channels % heads:
        raise _attribute_error("heads", f"an int dividing {channels} (the channels)", heads)
    return heads


def _output_holds(view: OpView, low: int, high: int, what: str) -> None:
    out = view.outputs[0]
    out_low, out_high = out.code_range
    if low < out_low or high > out_high:
        raise SchemaError(f"output {out.name!r}: expected a declared range holding {what} [{low}, {high}], "
                          f"got [{out_low}, {out_high}]")


# ------------------------------------------------------------------------------------------------ the rules
def _patchify(view: OpView) -> list[tuple]:
    (x,) = view.inputs
    batch, channels, height, width = _axes(x, "(batch, channels, height, width)")
    patch = view.attrs["patch"]
    if height % patch or width % patch:
        raise _attribute_error("patch", f"an int dividing the height {height} and width {width} of {x.name!r}", patch)
    return [(batch, (height // patch) * (width // patch), channels * patch * patch)]


def _linear(view: OpView) -> list[tuple]:
    x, weight, bias, *x_shift = view.inputs
    outputs, inputs = _axes(weight, "(N, K)")
    if _channels(x) != inputs:
        raise _operand_error(x, f"a last axis of K = {inputs} (the weight {weight.name!r} is {outputs} x {inputs})",
                             f"shape {_shape_text(x.shape)}")
    _shape_is(bias, (outputs,), "N, one per output channel")
    for shift in x_shift:
        _shape_is(shift, (inputs,), "K, one per input channel")
    _zero_point_of(view, "x_zero_point", x)
    return [x.shape[:-1] + (outputs,)]


def _requantize(view: OpView) -> list[tuple]:
    acc, multiplier, shift = view.inputs
    channels = _channels(acc)
    for constant in (multiplier, shift):
        _per_channel(constant, channels, acc)
    _output_codes(view, "zero_point")
    return [acc.shape]


def _split(view: OpView) -> list[tuple]:
    (x,) = view.inputs
    sizes = view.attrs["sizes"]
    if sum(sizes) != _channels(x):
        raise _attribute_error("sizes", f"sizes summing to {x.shape[-1]} (the last axis of {x.name!r})", sizes)
    return [x.shape[:-1] + (size,) for size in sizes]


def _prepend_token(view: OpView) -> list[tuple]:
    x, token = view.inputs
    batch, tokens, channels = _axes(x, "(batch, tokens, channels)")
    _shape_is(token, (channels,), f"C, the channels of {x.name!r}")
    return [(batch, tokens + 1, channels)]


def _residual_add(view: OpView) -> list[tuple]:
    a, b, *constants = view.inputs
    if len(b.shape) > len(a.shape) or any(sb not in (sa, 1) for sa, sb in zip(a.shape[::-1], b.shape[::-1])):
        raise _operand_error(b, f"a shape that broadcasts to {_shape_text(a.shape)} (the shape of {a.name!r})",
                             f"shape {_shape_text(b.shape)}")
    channels = _channels(a)
    for constant in constants:
        _per_channel(constant, channels, a)
    _zero_point_of(view, "a_zero_point", a)
    _zero_point_of(view, "b_zero_point", b)
    _output_codes(view, "out_zero_point")
    return [a.shape]


def _layernorm(view: OpView) -> list[tuple]:
    x, *constants = view.inputs
    channels = _channels(x)
    if channels > LAYERNORM_MAX_CHANNELS:
        raise _operand_error(x, f"at most {LAYERNORM_MAX_CHANNELS} channels", channels)
    for constant in constants:
        _per_channel(constant, channels, x)
    _declared_input(view, x)
    _output_codes(view, "out_zero_point")
    return [x.shape]


def _attention_scores(view: OpView) -> list[tuple]:
    q, k = view.inputs
    batch, queries, channels = _axes(q, "(batch, tokens, channels)")
    _, keys, k_channels = _axes(k, "(batch, tokens, channels)")
    if k_channels != channels:
        raise _operand_error(k, f"{channels} channels (those of {q.name!r})", k_channels)
    heads = _heads(view, channels)
    _zero_point_of(view, "q_zero_point", q)
    _zero_point_of(view, "k_zero_point", k)
    return [(batch, heads, queries, keys)]


def _softmax(view: OpView) -> list[tuple]:
    (logits,) = view.inputs
    _channels(logits)
    _declared_input(view, logits)
    _output_holds(view, 0, LIS_ZERO_CODE, "the Log-Int-Softmax codes")
    return [logits.shape]


def _uniform_softmax(view: OpView) -> list[tuple]:
    (logits,) = view.inputs
    _channels(logits)
    _declared_input(view, logits)
    levels = 2 ** view.attrs["out_bits"] - 1
    if not levels <= view.attrs["full_scale"] <= MAX_FULL_SCALE:
        raise _attribute_error("full_scale", f"an int in [2**out_bits - 1, 2**20] = [{levels}, {MAX_FULL_SCALE}]",
                               view.attrs["full_scale"])
    _output_holds(view, 0, levels, "the probability codes")
    return [logits.shape]


def _attention_values(view: OpView) -> list[tuple]:
    probs, v = view.inputs
    batch, heads, queries, keys = _axes(probs, "(batch, heads, tokens, tokens)")
    _, tokens, channels = _axes(v, "(batch, tokens, channels)")
    if heads != view.attrs["heads"]:
        raise _attribute_error("heads", f"{heads} (the heads axis of {probs.name!r})", view.attrs["heads"])
    if tokens != keys:
        raise _operand_error(v, f"{keys} tokens (the last axis of {probs.name!r})", tokens)
    _heads(view, channels)
    _zero_point_of(view, "v_zero_point", v)
    return [(batch, queries, channels)]


def _lut(view: OpView) -> list[tuple]:
    x, table, *rows = view.inputs
    entries = 2 ** view.attrs["bits"]
    if rows:
        count, _ = _axes(table, "(rows, entries)")
        _shape_is(table, (count, entries), f"R tables of 2**bits = {entries} entries")
        _shape_is(rows[0], (_channels(x),), f"C, one table row per channel of {x.name!r}")
        low, high = rows[0].bounds
        if low < 0 or high >= count:
            raise _operand_error(rows[0], f"rows in [0, {count - 1}] (the tables of {table.name!r})",
                                 f"value {low if low < 0 else high}")
    else:
        _shape_is(table, (entries,), f"2**bits = {entries} entries")
    _declared_input(view, x)
    _output_holds(view, *table.bounds, f"the entries of {table.name!r}")
    return [x.shape]


def _select_token(view: OpView) -> list[tuple]:
    (x,) = view.inputs
    batch, tokens, channels = _axes(x, "(batch, tokens, channels)")
    if view.attrs["index"] >= tokens:
        raise _attribute_error("index", f"an int in [0, {tokens - 1}] (the tokens of {x.name!r})", view.attrs["index"])
    return [(batch, channels)]


# ------------------------------------------------------------------------------------------------ the table
def _int(name: str, bounds: tuple[int, int] | None = None) -> Attribute:
    low, high = bounds or (None, None)
    return Attribute(name, "int", low, high)


_ROUNDING = Attribute("rounding", "str", choices=ROUNDING_MODES)
_SIGNED = Attribute("signed", "bool")
_OUTPUT_CODES = (_int("qmin", INT32), _int("qmax", INT32))
_EXP_CONSTANTS = (_int("x0", (-(2**30), -1)), _int("b_int", (-(2**30), 2**30)), _int("c_int", (-(2**61), 2**61)),
                  _int("n", (0, 62)))  # softmax.IExpConstants
_SOFTMAX_INPUT = (_int("zero_point", INT64), _int("bits", (1, SOFTMAX_INPUT_BITS)), _SIGNED)
_MULTIPLIER = Operand("multiplier", constant=True, values=MULTIPLIER)
_SHIFT = Operand("shift", constant=True, values=SHIFT)
_DECLARED_INPUT = "bits/signed hold the input's declared range, zero_point within it"
_DECLARED_X = "bits/signed hold x's declared range"

SCHEMAS: dict[str, OpSchema] = {schema.kind: schema for schema in (
    OpSchema("Patchify", (Operand("pixels"),), (_int("patch", (1, None)),), _patchify,
             checks="pixels (B, C, H, W); patch divides H and W"),
    OpSchema("Linear", (Operand("x"), Operand("weight", constant=True), Operand("bias", constant=True, values=INT32),
                        Operand("x_shift", constant=True, values=INPUT_SHIFT, optional=True)),
             (_int("x_zero_point", INT64),), _linear,
             checks="weight (N, K), x (..., K), bias (N,), x_shift (K,); x_zero_point within x's declared range"),
    OpSchema("Requantize", (Operand("acc"), _MULTIPLIER, _SHIFT), (_int("zero_point", INT32), *_OUTPUT_CODES, _ROUNDING),
             _requantize, checks="multiplier, shift (1,) or (C,); qmin <= zero_point <= qmax within the output's "
                                 "declared range"),
    OpSchema("Split", (Operand("x"),), (Attribute("sizes", "ints", 1),), _split, outputs="sizes",
             checks="sizes sum to x's last axis; one output per size"),
    OpSchema("PrependToken", (Operand("x"), Operand("token", constant=True)), (), _prepend_token,
             checks="x (B, N, C), token (C,)"),
    OpSchema("ResidualAdd", (Operand("a"), Operand("b"), Operand("a_multiplier", constant=True, values=MULTIPLIER),
                             Operand("b_multiplier", constant=True, values=MULTIPLIER), _SHIFT),
             (_int("a_zero_point", INT32), _int("b_zero_point", INT32), _int("out_zero_point", INT32), *_OUTPUT_CODES,
              _ROUNDING), _residual_add,
             checks="b broadcasts to a; constants (1,) or (C,); a/b zero points within a's/b's declared ranges; "
                    "qmin <= out_zero_point <= qmax within the output's declared range"),
    OpSchema("LayerNorm", (Operand("x"), Operand("alpha", constant=True, values=PTF_ALPHA), _MULTIPLIER,
                           Operand("bias", constant=True), _SHIFT),
             (_int("zero_point", INT64), _int("out_zero_point", INT32), *_OUTPUT_CODES,
              _int("bits", (1, LAYERNORM_INPUT_BITS)), _SIGNED, _ROUNDING), _layernorm,
             checks=f"C <= 2**14; constants (1,) or (C,); {_DECLARED_INPUT}; qmin <= out_zero_point <= qmax within "
                    "the output's declared range"),
    OpSchema("AttentionScores", (Operand("q"), Operand("k")),
             (_int("heads", (1, None)), _int("q_zero_point", INT64), _int("k_zero_point", INT64)), _attention_scores,
             checks="q, k (B, N, C); heads divides C; zero points within q's and k's declared ranges"),
    OpSchema("LogIntSoftmax", (Operand("logits"),), (*_SOFTMAX_INPUT, *_EXP_CONSTANTS), _softmax,
             checks=f"{_DECLARED_INPUT}; the output holds 0..16"),
    OpSchema("UniformSoftmax", (Operand("logits"),),
             (*_SOFTMAX_INPUT, *_EXP_CONSTANTS, _int("out_bits", (1, SOFTMAX_OUT_BITS)),
              _int("full_scale", (1, MAX_FULL_SCALE))),
             _uniform_softmax,
             checks=f"{_DECLARED_INPUT}; 2**out_bits - 1 <= full_scale; the output holds 0..2**out_bits - 1"),
    OpSchema("AttentionValues", (Operand("probs"), Operand("v")),
             (_int("heads", (1, None)), _int("v_zero_point", INT64), Attribute("probs", "str", choices=("lis", "uniform"))),
             _attention_values,
             checks="probs (B, heads, N, M), v (B, M, C); heads divides C; v_zero_point within v's declared range"),
    OpSchema("Lut", (Operand("x"), Operand("table", constant=True), Operand("rows", constant=True, optional=True)),
             (_int("bits", (1, LUT_BITS)), _SIGNED), _lut,
             checks=f"table (2**bits,), or (R, 2**bits) with rows (C,) in [0, R); {_DECLARED_X}; the output "
                    "holds the table's values"),
    OpSchema("SelectToken", (Operand("x"),), (_int("index", (0, None)),), _select_token,
             checks="x (B, N, C); index < N"),
)}


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
        items = [value] if attribute.type == "int" else value
        valid = (isinstance(items, (list, tuple)) and len(items) > 0 and all(
            is_int(item) and (attribute.lo is None or item >= attribute.lo)
            and (attribute.hi is None or item <= attribute.hi) for item in items))
    if not valid:
        raise _attribute_error(attribute.name, attribute.expected() + _did_you_mean(value, attribute.choices), value)


def _check_attributes(schema: OpSchema, attrs: dict) -> None:
    known = {attribute.name for attribute in schema.attributes}
    for name in attrs:
        if name not in known:
            raise SchemaError(f"unknown attribute {name!r}{_did_you_mean(name, known)}; {schema.kind} takes "
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
            raise _operand_error(view, f"a constant tensor (the {operand.role})", "an activation")
        if operand.values and (view.bounds[0] < operand.values[0] or view.bounds[1] > operand.values[1]):
            bad = view.bounds[0] if view.bounds[0] < operand.values[0] else view.bounds[1]
            low, high = operand.values
            raise _operand_error(view, f"{operand.role} values in [{_number(low)}, {_number(high)}]", f"value {bad}")


def check_op(kind: str, attrs: dict, inputs: list[OperandView], is_constant: list[bool],
             outputs: list[OperandView]) -> list[tuple]:
    """Check one op of ``kind`` against its schema; return the shapes (with batch axis) of its outputs.

    ``inputs``/``outputs``: the op's tensors in order (an output's ``shape`` is unused); ``is_constant[i]``: whether
    input ``i`` is a constant tensor. Raises :class:`SchemaError` (unknown kind, wrong input or output count,
    attribute missing / unknown / mistyped / out of range, operand shape or values, cross-attribute range).
    """
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise SchemaError(f"unknown kind {kind!r}{_did_you_mean(kind, SCHEMAS)}; known: {', '.join(sorted(SCHEMAS))}")
    _check_attributes(schema, attrs)
    _check_operands(schema, inputs, is_constant)
    expected = output_count(schema, attrs)
    if len(outputs) != expected:
        reason = "" if isinstance(schema.outputs, int) else f" (one per entry of {schema.outputs})"
        raise SchemaError(f"expected {expected} output{'s' if expected != 1 else ''}{reason}, got {len(outputs)}")
    return schema.rule(OpView(attrs, inputs, outputs))


def markdown_table() -> str:
    """The schema as the Markdown table of ``docs/program.md`` (one row per kind)."""
    lines = ["| kind | inputs | outputs | attributes | checks |", "|---|---|---|---|---|"]
    for schema in SCHEMAS.values():
        inputs = []
        for operand in schema.inputs:
            text = operand.role + (" (constant" + (f", {_number(operand.values[0])}..{_number(operand.values[1])}"
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
        lines.append(f"| {schema.kind} | {', '.join(inputs)} | {outputs} | {attributes or 'none'} | {schema.checks} |")
    return "\n".join(lines)
