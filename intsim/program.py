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

File format (version :data:`FORMAT_VERSION`)
    One ``.safetensors`` file: the constants are its tensors, and its string metadata has one key, ``intsim``,
    whose value is the JSON ``{"format": "intsim-program", "version": N, "program": {ops, tensors, metadata}}``
    (one key, because safetensors does not keep the order of several, and two saves must be byte-identical). The Program hash is the SHA-256 of that JSON plus every constant's name,
    dtype, shape and bytes, so it does not depend on the file's byte layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["FORMAT_VERSION", "Op", "Program", "ProgramError", "TensorSpec", "load_program", "save_program"]

FORMAT_NAME = "intsim-program"
FORMAT_VERSION = 3  # 2: optional Linear x_shift and Lut rows inputs (PTF MLP activations); 3: UniformSoftmax full_scale
_INTEGER_DTYPES = {"uint8", "int8", "uint16", "int16", "int32", "int64"}


class ProgramError(ValueError):
    """A Program file or structure is invalid; the message names the file or tensor and what is wrong."""


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
        """Check that every op reads tensors that exist before it and that constants are declared integers."""
        available = {name for name, spec in self.tensors.items() if spec.kind in ("input", "constant")}
        for name, spec in self.tensors.items():
            if spec.kind == "constant":
                if name not in self.constants:
                    raise ProgramError(f"tensor {name!r} is declared constant but has no data")
                if str(self.constants[name].dtype) not in _INTEGER_DTYPES:
                    raise ProgramError(f"constant {name!r} has dtype {self.constants[name].dtype}; integers only")
        for op in self.ops:
            for name in op.inputs:
                if name not in self.tensors:
                    raise ProgramError(f"op {op.name!r} reads undeclared tensor {name!r}")
                if name not in available:
                    raise ProgramError(f"op {op.name!r} reads {name!r} before any op writes it")
            for name in op.outputs:
                if name not in self.tensors:
                    raise ProgramError(f"op {op.name!r} writes undeclared tensor {name!r}")
                available.add(name)
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
            array = np.ascontiguousarray(self.constants[name])
            digest.update(f"{name}|{array.dtype}|{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()


def save_program(program: Program, path: str | os.PathLike) -> Path:
    """Write ``program`` to one safetensors file atomically (a failed write leaves no partial file)."""
    from safetensors.numpy import save

    program.validate()
    path = Path(path)
    header = f'{{"format":"{FORMAT_NAME}","program":{program.structure_json()},"version":{FORMAT_VERSION}}}'
    metadata = {"intsim": header}
    blob = save({name: np.ascontiguousarray(array) for name, array in program.constants.items()}, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(blob)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_program(path: str | os.PathLike) -> Program:
    """Read a Program file; raise :class:`ProgramError` naming the file for any defect (missing, truncated,
    not a Program, another format version, inconsistent structure)."""
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
    if envelope.get("version") != FORMAT_VERSION:
        raise ProgramError(
            f"{path}: Program format version {envelope.get('version')!r}, but this intsim reads version "
            f"{FORMAT_VERSION}; re-export it with this intsim version"
        )
    try:
        body = envelope["program"]
        program = Program(
            ops=[Op(**op) for op in body["ops"]],
            tensors={name: TensorSpec(**spec) for name, spec in body["tensors"].items()},
            constants=constants,
            metadata=body["metadata"],
        )
    except (KeyError, TypeError) as error:
        raise ProgramError(f"{path}: malformed Program structure: {error}") from None
    try:
        return program.validate()
    except ProgramError as error:
        raise ProgramError(f"{path}: {error}") from None
