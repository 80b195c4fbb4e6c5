"""The integer Program: a topologically ordered list of ops over named integer tensors.

A Program is what the exporter produces and what the interpreter, the golden-vector writer and an RTL team
consume. It needs numpy (and safetensors for its file) only: no torch.

Structure
    ``tensors``   name -> :class:`TensorSpec` (bits, signed, zero point, scale as float metadata, shape, kind:
                  ``input`` / ``constant`` / ``activation`` / ``output``);
    ``constants`` name -> integer numpy array (weights, biases, multipliers, shifts, LUTs, PTF factors);
    ``ops``       list of :class:`Op` in execution order; each names its input and output tensors and carries
                  integer attributes (and the names of constant tensors it reads);
    ``metadata``  free JSON (model name, configuration, rounding mode, class names, preprocessing).

Checks (:meth:`Program.validate`, run by the exporter, :func:`save_program` and :func:`load_program`)
    every tensor spec typed; every constant integer, of its declared shape, its values within its declared bits;
    exactly one input and one output tensor; every op of a registered kind (:mod:`intsim.kinds`), matching its
    schema (inputs, outputs, attributes, operand shapes and value ranges), reading tensors written before it, writing declared
    tensors no other op writes; the output written. A violation raises :class:`ProgramError` naming the op or
    tensor, what was expected and what was found.

File format (version :data:`FORMAT_VERSION`)
    One ``.safetensors`` file: the constants are its tensors, and its string metadata has one key, ``intsim``,
    whose value is the JSON envelope ``{"constants_sha256": {name: hex}, "format": "intsim-program", "program":
    {ops, tensors, metadata}, "sha256": hex, "version": N}`` (one key, because safetensors does not keep the order
    of several, and two saves must be byte-identical). ``constants_sha256`` holds :func:`constant_sha256` of every
    constant, ``sha256`` the Program hash :meth:`Program.sha256`; loading recomputes both and refuses a mismatch,
    naming the constant. Format 4 files load after their checksums are verified on the stored form, upgraded
    (:func:`_upgrade`: attn @ V of Log-Int-Softmax codes became the kind ``LisAttentionValues``); format 3 files (no
    checksums) load upgraded and unchecked, with one :class:`UncheckedProgramWarning`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from intsim.kinds.registry import check_op
from intsim.op_schema import OperandView, SchemaError, is_int

__all__ = ["FORMAT_VERSION", "Op", "Program", "ProgramError", "TensorSpec", "UncheckedProgramWarning",
           "constant_sha256", "load_program", "save_program"]

FORMAT_NAME = "intsim-program"
FORMAT_VERSION = 5  # 2: Linear x_shift, Lut rows; 3: UniformSoftmax full_scale; 4: checksums; 5: LisAttentionValues
_UNCHECKED_VERSION = 3  # the oldest version still read: no checksums
_READ_VERSIONS = (3, 4, 5)  # older ones are upgraded on load (:func:`_upgrade`)
TENSOR_KINDS = ("input", "constant", "activation", "output")
_INTEGER_DTYPES = {"uint8", "int8", "uint16", "int16", "int32", "int64"}
_MAX_BITS = 64


class ProgramError(ValueError):
    """A Program file or structure is invalid; the message names the file or tensor and what is wrong."""


class UncheckedProgramWarning(UserWarning):
    """A Program file of format 3 was loaded: it has no checksums, so corrupt data would go unnoticed."""


@dataclass
class TensorSpec:
    """Declared type of one named tensor: ``real = (q - zero_point) * scale``.

    ``scale`` is float metadata (a number, or a per-channel list along the last axis); ``shape`` omits the batch
    axis for activations (``None`` when it depends on the op).
    """

    bits: int
    signed: bool
    zero_point: int = 0
    scale: float | list[float] | None = None
    shape: list[int] | None = None
    kind: str = "activation"

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    def describe(self) -> str:
        return f"{self.bits}-bit {'signed' if self.signed else 'unsigned'} range [{self.qmin}, {self.qmax}]"


@dataclass
class Op:
    """One integer operation: ``kind`` selects the semantics (see docs/semantics.md), attributes are ints/strings."""

    kind: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)


@dataclass
class Program:
    ops: list[Op]
    tensors: dict[str, TensorSpec]
    constants: dict[str, np.ndarray]
    metadata: dict = field(default_factory=dict)

    def validate(self) -> "Program":
        """Run every check of the module docstring; return ``self`` or raise :class:`ProgramError`."""
        if not isinstance(self.metadata, dict):
            raise ProgramError(f"metadata: expected a JSON object, got {self.metadata!r}")
        for name, spec in self.tensors.items():
            _check_spec(name, spec)
        bounds = _check_constants(self)
        _check_graph(self, bounds)
        return self

    @property
    def input_names(self) -> list[str]:
        return [name for name, spec in self.tensors.items() if spec.kind == "input"]

    @property
    def output_names(self) -> list[str]:
        return [name for name, spec in self.tensors.items() if spec.kind == "output"]

    def structure_json(self) -> str:
        """Canonical JSON of everything but the constant data (sorted keys, no whitespace variance)."""
        body = dict(
            ops=[asdict(op) for op in self.ops],
            tensors={name: asdict(spec) for name, spec in self.tensors.items()},
            metadata=self.metadata,
        )
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        """Content hash: structure JSON plus each constant's name, dtype, shape and bytes, in sorted order."""
        digest = hashlib.sha256(self.structure_json().encode())
        for name in sorted(self.constants):
            _hash_constant(digest, name, self.constants[name])
        return digest.hexdigest()


def _hash_constant(digest, name: str, array: np.ndarray) -> None:
    """Feed ``f"{name}|{dtype}|{shape}"`` (numpy dtype name, Python tuple) and the C-order bytes into ``digest``."""
    array = np.ascontiguousarray(array)
    digest.update(f"{name}|{array.dtype}|{array.shape}".encode())
    digest.update(array.tobytes())


def constant_sha256(name: str, array: np.ndarray) -> str:
    """SHA-256 (hex) of one constant: ``f"{name}|{dtype}|{shape}"`` in UTF-8 followed by its C-order bytes, as
    :meth:`Program.sha256` hashes each constant (e.g. ``patch_embed.bias|int32|(64,)`` then 256 bytes)."""
    digest = hashlib.sha256()
    _hash_constant(digest, name, array)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ checks
def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_spec(name: str, spec: TensorSpec) -> None:
    """Every field of a tensor spec has its type; the zero point lies in the declared range."""
    def refuse(field_name: str, expected: str) -> ProgramError:
        return ProgramError(f"tensor {name!r}: field {field_name!r}: expected {expected}, "
                            f"got {getattr(spec, field_name)!r}")

    if not isinstance(spec, TensorSpec):
        raise ProgramError(f"tensor {name!r}: expected a TensorSpec, got {spec!r}")
    if not (is_int(spec.bits) and 1 <= spec.bits <= _MAX_BITS):
        raise refuse("bits", f"an int in [1, {_MAX_BITS}]")
    if not isinstance(spec.signed, (bool, np.bool_)):
        raise refuse("signed", "a bool")
    if spec.kind not in TENSOR_KINDS:
        raise refuse("kind", "one of " + ", ".join(map(repr, TENSOR_KINDS)))
    if not (spec.scale is None or _is_number(spec.scale)
            or (isinstance(spec.scale, (list, tuple)) and all(map(_is_number, spec.scale)))):
        raise refuse("scale", "a number, a list of numbers or null")
    if not (spec.shape is None or (isinstance(spec.shape, (list, tuple))
                                   and all(is_int(size) and size >= 0 for size in spec.shape))):
        raise refuse("shape", "a list of non-negative ints or null")
    if spec.shape is None and spec.kind in ("input", "constant"):
        raise refuse("shape", f"a list of ints (the shape of the {spec.kind})")
    if not (is_int(spec.zero_point) and spec.qmin <= spec.zero_point <= spec.qmax):
        raise refuse("zero_point", f"an int within its declared {spec.describe()}")


def _first_outside(array: np.ndarray, low: int, high: int) -> str:
    """``"V at index (i, j)"``: the first element (C order) of ``array`` outside ``[low, high]``."""
    index = np.unravel_index(int(np.argmax((array < low) | (array > high))), array.shape)
    return f"{int(array[index])} at index {tuple(int(i) for i in index)}"


def _check_constants(program: Program) -> dict[str, tuple[int, int]]:
    """Every declared constant has integer data of its declared shape within its declared bits (and every array is
    a declared constant); returns each constant's ``(min, max)``."""
    for name in program.constants:
        spec = program.tensors.get(name)
        if spec is None or spec.kind != "constant":
            raise ProgramError(f"constant {name!r}: data in the Program but no tensor of kind 'constant' declared")
    bounds = {}
    for name, spec in program.tensors.items():
        if spec.kind != "constant":
            continue
        if name not in program.constants:
            raise ProgramError(f"tensor {name!r} is declared constant but has no data")
        array = np.asarray(program.constants[name])
        if str(array.dtype) not in _INTEGER_DTYPES:
            raise ProgramError(f"constant {name!r} has dtype {array.dtype}; integers only "
                               f"({', '.join(sorted(_INTEGER_DTYPES))})")
        if tuple(array.shape) != tuple(spec.shape):
            raise ProgramError(f"constant {name!r}: data of shape {tuple(array.shape)}, declared shape {tuple(spec.shape)}")
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low < spec.qmin or high > spec.qmax:
            raise ProgramError(f"constant {name!r}: holds {_first_outside(array, spec.qmin, spec.qmax)}, outside its "
                               f"declared {spec.describe()}")
        bounds[name] = (low, high)
    return bounds


def _the_one(program: Program, kind: str) -> str:
    names = [name for name, spec in program.tensors.items() if spec.kind == kind]
    if len(names) != 1:
        raise ProgramError(f"expected exactly one tensor of kind {kind!r}, got {len(names)}"
                           + (f": {', '.join(map(repr, names))}" if names else ""))
    return names[0]


def _check_op_fields(index: int, op: Op) -> None:
    where = f"op #{index}" + (f" {op.name!r}" if isinstance(op.name, str) else "")
    if not isinstance(op.kind, str) or not isinstance(op.name, str) or not op.name:
        raise ProgramError(f"{where}: expected a kind and a non-empty name (strings), got {op.kind!r}, {op.name!r}")
    for field_name in ("inputs", "outputs"):
        names = getattr(op, field_name)
        if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
            raise ProgramError(f"{where}: field {field_name!r}: expected a list of tensor names, got {names!r}")
    if not (isinstance(op.attrs, dict) and all(isinstance(key, str) for key in op.attrs)):
        raise ProgramError(f"{where}: field 'attrs': expected a JSON object, got {op.attrs!r}")


def _check_graph(program: Program, bounds: dict[str, tuple[int, int]]) -> None:
    """One input and one output; ops read tensors written before them, write each tensor once, match their schema."""
    input_name, output_name = _the_one(program, "input"), _the_one(program, "output")
    shapes = {input_name: (None, *program.tensors[input_name].shape)}  # with the batch axis (None)
    shapes.update((name, tuple(np.shape(program.constants[name]))) for name in bounds)
    writers: dict[str, str] = {}  # tensor -> the op that writes it
    op_names = set()
    for index, op in enumerate(program.ops):
        _check_op_fields(index, op)
        prefix = f"op {op.name!r} ({op.kind})"
        if op.name in op_names:
            raise ProgramError(f"{prefix}: op name used twice")
        op_names.add(op.name)
        for name in op.inputs:
            if name not in program.tensors:
                raise ProgramError(f"{prefix}: reads undeclared tensor {name!r}")
            if name not in shapes:
                raise ProgramError(f"{prefix}: reads {name!r} before any op writes it")
        for name in op.outputs:
            spec = program.tensors.get(name)
            if spec is None:
                raise ProgramError(f"{prefix}: writes undeclared tensor {name!r}")
            if spec.kind not in ("activation", "output"):
                raise ProgramError(f"{prefix}: writes {name!r}, a tensor of kind {spec.kind!r}")
            if name in writers:
                raise ProgramError(f"{prefix}: writes {name!r}, already written by op {writers[name]!r}")
        views = [_view(name, program.tensors[name], shapes[name], bounds.get(name)) for name in op.inputs]
        outputs = [_view(name, program.tensors[name], (), None) for name in op.outputs]
        try:
            written = check_op(op.kind, op.attrs, views, [name in bounds for name in op.inputs], outputs)
        except SchemaError as error:
            raise ProgramError(f"{prefix}: {error}") from None
        for name, shape in zip(op.outputs, written):
            declared = program.tensors[name].shape
            if declared is not None and list(declared) != list(shape[1:] if shape and shape[0] is None else shape):
                raise ProgramError(f"{prefix}: writes {name!r} of shape {list(shape[1:])} (without the batch axis), "
                                   f"declared shape {list(declared)}")
            shapes[name], writers[name] = shape, op.name
    if output_name not in writers:
        raise ProgramError(f"output tensor {output_name!r} is written by no op")


def _view(name: str, spec: TensorSpec, shape: tuple, bounds) -> OperandView:
    return OperandView(name, shape, int(spec.bits), bool(spec.signed), int(spec.zero_point), bounds)


# ------------------------------------------------------------------------------------------------ file
def save_program(program: Program, path: str | os.PathLike) -> Path:
    """Validate ``program`` and write it, with its checksums, to one safetensors file atomically (a failed write
    leaves no partial file; ordinary permissions). Two saves of one Program are byte-identical."""
    from safetensors.numpy import save

    from intsim.atomic import write_atomically

    program.validate()
    path = Path(path)
    checksums = {name: constant_sha256(name, array) for name, array in program.constants.items()}
    header = (f'{{"constants_sha256":{json.dumps(checksums, sort_keys=True, separators=(",", ":"))},'
              f'"format":"{FORMAT_NAME}","program":{program.structure_json()},"sha256":"{program.sha256()}",'
              f'"version":{FORMAT_VERSION}}}')
    blob = save({name: np.ascontiguousarray(array) for name, array in program.constants.items()},
                metadata={"intsim": header})
    return write_atomically(path, blob)


def _record(cls, value, where: str):
    """``cls(**value)`` for a JSON object holding exactly the fields of dataclass ``cls``."""
    if not isinstance(value, dict):
        raise ProgramError(f"{where}: expected a JSON object, got {value!r}")
    names = [item.name for item in dataclasses.fields(cls)]
    missing, unknown = [n for n in names if n not in value], [n for n in value if n not in names]
    if missing or unknown:
        problem = f"missing field {missing[0]!r}" if missing else f"unknown field {unknown[0]!r}"
        raise ProgramError(f"{where}: {problem} (expected {', '.join(names)})")
    return cls(**value)


def _program_from_json(body, constants: dict) -> Program:
    if not isinstance(body, dict) or sorted(body) != ["metadata", "ops", "tensors"]:
        raise ProgramError(f"malformed Program structure: expected an object of ops, tensors and metadata, got "
                           f"{sorted(body) if isinstance(body, dict) else body!r}")
    if not isinstance(body["ops"], list) or not isinstance(body["tensors"], dict):
        raise ProgramError("malformed Program structure: expected ops a list and tensors an object")
    ops = [_record(Op, op, f"op #{index}" + (f" {op.get('name')!r}" if isinstance(op, dict) else ""))
           for index, op in enumerate(body["ops"])]
    tensors = {name: _record(TensorSpec, spec, f"tensor {name!r}") for name, spec in body["tensors"].items()}
    return Program(ops=ops, tensors=tensors, constants=constants, metadata=body["metadata"])


def _verify_constants(recorded, constants: dict) -> None:
    """Each constant's :func:`constant_sha256` equals the one recorded in the envelope (and the names agree)."""
    if not isinstance(recorded, dict):
        raise ProgramError("the envelope has no constants_sha256 map (corrupt file?)")
    for name in sorted(set(recorded) | set(constants)):
        if name not in constants:
            raise ProgramError(f"constant {name!r}: has a checksum but no data (corrupt file?)")
        if name not in recorded:
            raise ProgramError(f"constant {name!r}: has data but no checksum (corrupt file?)")
        if constant_sha256(name, constants[name]) != recorded[name]:
            raise ProgramError(f"constant {name!r}: data checksum mismatch (corrupt file?)")


def _upgrade_attention_values(op: Op) -> Op:
    """Format 4 -> 5: ``AttentionValues`` with ``probs: "lis"`` became the kind ``LisAttentionValues``, with
    ``probs: "uniform"`` stays ``AttentionValues``; the ``probs`` attribute is gone (a method is a kind of its own)."""
    if op.kind != "AttentionValues" or not isinstance(op.attrs, dict) or "probs" not in op.attrs:
        return op
    attrs = {key: value for key, value in op.attrs.items() if key != "probs"}
    kind = {"lis": "LisAttentionValues", "uniform": "AttentionValues"}.get(op.attrs["probs"])
    if kind is None:
        raise ProgramError(f"op {op.name!r} (AttentionValues, format 4): attribute 'probs': expected one of 'lis', "
                           f"'uniform', got {op.attrs['probs']!r}")
    return dataclasses.replace(op, kind=kind, attrs=attrs)


_UPGRADES = {  # stored format -> the op rewrite to the next format (3 -> 4 added checksums only)
    3: lambda op: op,
    4: _upgrade_attention_values,
}


def _upgrade(program: Program, version: int) -> Program:
    """The Program of a file of format ``version`` in the current format: each format's op rewrite in turn."""
    ops = program.ops
    for step in range(version, FORMAT_VERSION):
        ops = [_UPGRADES[step](op) for op in ops]
    return dataclasses.replace(program, ops=ops)


def _verify_structure(envelope: dict, program: Program) -> None:
    if envelope.get("sha256") != program.sha256():
        raise ProgramError("Program checksum mismatch: the structure is not the one saved (corrupt or "
                           "hand-edited header? edit Programs in Python and save them with save_program)")


def load_program(path: str | os.PathLike) -> Program:
    """Read and check a Program file; raise :class:`ProgramError` naming the file for any defect (missing,
    truncated, not a Program, another format version, a checksum mismatch, a check of :meth:`Program.validate`).

    Files of an older format are upgraded to the current one after their checksums are verified on the stored
    form (format 4: ``AttentionValues`` with ``probs`` becomes ``AttentionValues`` / ``LisAttentionValues``); format
    3 files (no checksums) are loaded after the same checks, with one :class:`UncheckedProgramWarning`.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        raise ProgramError(f"{path}: no such Program file")
    data = path.read_bytes()
    try:
        constants = load(data)
        header_length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_length])
    except (SafetensorError, ValueError, UnicodeDecodeError) as error:
        raise ProgramError(f"{path}: not a readable Program file (truncated or corrupt?): {error}") from None
    try:
        envelope = json.loads((header.get("__metadata__") or {}).get("intsim", "null")) or {}
    except json.JSONDecodeError as error:
        raise ProgramError(f"{path}: malformed Program header: {error}") from None
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT_NAME:
        raise ProgramError(f"{path}: not an intsim Program (a safetensors file without intsim metadata)")
    version = envelope.get("version")
    if type(version) is not int or version not in _READ_VERSIONS:
        raise ProgramError(
            f"{path}: Program format version {version!r}, but this intsim reads version "
            f"{FORMAT_VERSION} (and {', '.join(map(str, _READ_VERSIONS[1:-1]))}, upgraded on load; "
            f"{_UNCHECKED_VERSION}, unchecked); re-export it with this intsim version"
        )
    checked = version != _UNCHECKED_VERSION
    try:
        program = _program_from_json(envelope.get("program"), constants)
        if checked:
            _verify_constants(envelope.get("constants_sha256"), constants)
        if version != FORMAT_VERSION:  # the checksums cover the stored form: verify it first, then upgrade
            if checked:
                _verify_structure(envelope, program)
            program = _upgrade(program, version)
        program.validate()
        if version == FORMAT_VERSION:
            _verify_structure(envelope, program)
    except ProgramError as error:
        raise ProgramError(f"{path}: {error}") from None
    if not checked:
        warnings.warn(f"{path}: Program format {version} has no data checksum; loaded unchecked - re-save it to "
                      "add one", UncheckedProgramWarning, stacklevel=2)
    return program
