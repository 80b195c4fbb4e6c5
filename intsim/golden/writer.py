"""``intsim golden``: every op's inputs, outputs and parameters of a Program run on images, for RTL verification.

Tree layout (``STEP`` is zero-padded to at least 3 digits, so a plain ``ls`` lists files in program order)::

    manifest.json                 what every file is (schema: manifest.schema.json; docs/golden.md)
    params/STEP_NAME.FMT          every constant (weights, biases, multipliers, shifts, PTF factors, LUTs), once;
                                  STEP is the first op that reads it
    img0000/000_pixels.FMT        the Program input of image 0 (uint8 (3, H, W))
    img0000/STEP_NAME.FMT         the output NAME of op STEP (1-based), batch axis dropped
    img0001/...                   the next image

An op's inputs are earlier files (a previous op's output, ``pixels`` or a param), so each tensor is written once;
the manifest's ``ops`` list names, for every op, its inputs and outputs by role (``{"acc": ..., "multiplier": ...}``),
its params, integer attributes, rounding mode and the ``intsim.ops`` function (and ``golden/ops`` suite) that
computes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import io
import re

import numpy as np

import intsim
from intsim.golden.formats import FORMAT_LAYOUT, FORMATS, hex_digits, storage_dtype
from intsim.golden.manifest import SCHEMA_VERSION, input_roles, output_roles
from intsim.golden.tree import TreeWriter, tensor_record
from intsim.kinds.registry import get_op_kind
from intsim.program import Program

__all__ = ["DEFAULT_MAX_BYTES", "INLINE_PARAM_LIMIT", "GOLDEN_LAYOUT", "LAYOUT_RULES", "check_golden_size",
           "estimate_golden_bytes", "format_size", "golden_manifest_base", "op_entry", "op_function", "parse_size",
           "tensor_shapes", "write_golden"]

DEFAULT_MAX_BYTES = 2 * 2**30  # intsim golden refuses a tree estimated above this (--max-size) before writing

INLINE_PARAM_LIMIT = 4096  # vector params (rank <= 1) up to this many elements are also written into the manifest
LAYOUT_RULES = {  # recorded in every manifest's "layout" (with the formats' rules), so a tree explains itself
    "roles": "ops[].inputs and ops[].outputs map a role (the op kind's argument name, docs/golden.md) to a tensor "
             "name: match files by role, never by position; ops[].params lists the roles that are constants and "
             "ops[].param_values holds their values by role",
    "per_channel": "a param of shape (C,) holds one value per channel of the LAST axis of the tensor it applies to: "
                   "element i (in C order) uses param[i % C]; a param of shape (1,) applies to every element",
    "broadcast": "an operand with fewer or size-1 axes (ResidualAdd's b = pos_embed (1, N, C)) broadcasts to the "
                 "other by numpy's rules, axes aligned at the last",
    "zero_points": "every tensor's zero_point is the one the op's attributes give that operand or output (e.g. "
                   "Requantize's zero_point on its output, ResidualAdd's a/b/out zero points): real = (code - "
                   "zero_point) * scale; accumulators, params and indices have 0",
    "rounding": "ops[].rounding is the op's tie rule (half_up, half_even, half_away; null: the op does not round); "
                "the top-level rounding is the one every rounding op of the tree uses (null: none rounds)",
}
GOLDEN_LAYOUT = {
    "folders": "params/STEP_NAME.FMT: every constant, once (STEP = the first op reading it); "
               "imgNNNN/STEP_NAME.FMT: per image (see 'images'), the Program input (step 0) and the outputs of op "
               "STEP (see 'ops'); file names sort in program order",
    "batch_axis": "per-image files drop the batch axis: their shape is the tensor's 'shape'",
}


def _first_steps(program: Program) -> dict[str, int]:
    """Tensor name -> step: 0 for the input, op index + 1 for outputs and (first reader) constants."""
    steps = {name: 0 for name in program.input_names}
    for index, op in enumerate(program.ops, 1):
        for name in op.inputs:
            steps.setdefault(name, index)
        for name in op.outputs:
            steps[name] = index
    return steps


def tensor_shapes(program: Program) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of one golden file (batch axis dropped), for every tensor the Program reads or writes,
    from the declared shapes and each op kind's schema (no op is run)."""
    from intsim.kinds.registry import check_op
    from intsim.op_schema import OperandView

    shapes, bounds = {}, {}
    for name in program.input_names:
        shapes[name] = (None, *program.tensors[name].shape)
    for name, array in program.constants.items():
        array = np.asarray(array)
        shapes[name] = tuple(array.shape)
        bounds[name] = (int(array.min()), int(array.max())) if array.size else (0, 0)

    def view(name, shape, bound):
        spec = program.tensors[name]
        return OperandView(name, shape, int(spec.bits), bool(spec.signed), int(spec.zero_point), bound)

    for op in program.ops:
        written = check_op(op.kind, op.attrs, [view(n, shapes[n], bounds.get(n)) for n in op.inputs],
                           [n in bounds for n in op.inputs], [view(n, (), None) for n in op.outputs])
        for name, shape in zip(op.outputs, written):
            shapes[name] = tuple(shape)
    return {name: tuple(int(side) for side in (shape[1:] if shape and shape[0] is None else shape))
            for name, shape in shapes.items()}


def _file_bytes(shape, bits: int, signed: bool, fmt: str) -> int:
    """The size of one tensor file as :func:`intsim.golden.formats.encode` writes it."""
    count = int(np.prod(shape, dtype=np.int64))
    dtype = storage_dtype(bits, signed)
    if fmt == "hex":
        return count * (hex_digits(bits) + 1)
    if fmt == "bin":
        return count * dtype.itemsize
    header = np.lib.format.header_data_from_array_1_0(np.empty(0, dtype))
    header["shape"] = tuple(shape)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return len(buffer.getvalue()) + count * dtype.itemsize


def estimate_golden_bytes(program: Program, images: int, formats=FORMATS) -> dict:
    """What :func:`write_golden` of ``images`` images in ``formats`` writes, before writing it: ``per_image`` and
    ``params`` (the tensor files' exact bytes), ``manifest`` (an estimate) and ``total``."""
    shapes = tensor_shapes(program)
    per_tensor = {name: sum(_file_bytes(shapes[name], program.tensors[name].bits, program.tensors[name].signed, fmt)
                            for fmt in formats) for name in shapes}
    params = sum(per_tensor[name] for name in program.constants)
    per_image = sum(size for name, size in per_tensor.items() if name not in program.constants)
    per_image_tensors = len(per_tensor) - len(program.constants)
    manifest = (4096 + 40 * sum(np.size(array) for array in program.constants.values() if np.ndim(array) <= 1)
                + (200 * len(formats) + 100) * len(per_tensor) + 80 * len(formats) * per_image_tensors * images)
    total = params + per_image * images + int(manifest)
    return {"images": int(images), "per_image": int(per_image), "params": int(params), "manifest": int(manifest),
            "total": int(total)}


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str, option: str = "--max-size") -> int | None:
    """``"2G"``, ``"500M"``, ``"1.5GiB"``, ``"123456"`` (bytes; K/M/G/T are powers of 1024) -> bytes; ``"none"``:
    no limit (None). ``ValueError`` naming ``option`` otherwise."""
    if text.strip().lower() in ("none", "inf", "unlimited"):
        return None
    match = _SIZE.fullmatch(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"{option} {text!r}: expected a size such as 500M, 2G or 1.5GiB (K/M/G/T = powers of "
                         f"1024, plain number = bytes), or 'none' for no limit")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(size: int) -> str:
    """Bytes as ``"1.5 GiB"``, ``"812.0 MiB"``, ``"3.2 KiB"`` or ``"512 bytes"``."""
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} bytes"


def check_golden_size(program: Program, images: int, formats=FORMATS, max_bytes: int | None = DEFAULT_MAX_BYTES,
                      *, output=None) -> dict:
    """:func:`estimate_golden_bytes`; ``ValueError`` (one line: the size, the image count, ``--limit`` and
    ``--max-size``) when the total is above ``max_bytes`` (None: no limit)."""
    estimate = estimate_golden_bytes(program, images, formats)
    if max_bytes is not None and estimate["total"] > max_bytes:
        fit = max(0, (max_bytes - estimate["params"] - estimate["manifest"] // max(images, 1))
                  // max(estimate["per_image"] + estimate["manifest"] // max(images, 1), 1))
        where = f"--output {output}" if output is not None else "the golden tree"
        raise ValueError(f"{where} would hold about {format_size(estimate['total'])} ({images} images x "
                         f"{format_size(estimate['per_image'])} + {format_size(estimate['params'])} of params, formats "
                         f"{','.join(formats)}), above --max-size {format_size(max_bytes)}; give "
                         + (f"--limit N (about {fit} images fit)" if fit else "--limit N (not even 1 image fits)")
                         + f", fewer --formats, or a larger --max-size (e.g. --max-size "
                         f"{-(-estimate['total'] // 2**30)}G, or none)")
    return estimate


def op_function(kind: str, attrs: dict | None = None) -> str | None:
    """The ``intsim.ops`` function (and ``golden/ops`` suite) computing an op of ``kind`` (its registered
    :class:`~intsim.kinds.OpKind`'s ``function``); None for data movement. ``attrs`` is unused (a method variant is
    a kind of its own) and kept for callers."""
    return get_op_kind(kind).function


def op_entry(step: int, name: str, kind: str, *, function: str | None, inputs: dict, outputs: dict, params, attrs: dict,
             values: dict) -> dict:
    """One entry of the manifest's ``ops`` list. ``inputs`` / ``outputs``: role -> tensor name; ``params``: the
    roles that are constants; ``values``: role -> array of each param. Params of rank 0 or 1 with at most
    :data:`INLINE_PARAM_LIMIT` elements (multipliers, shifts, PTF factors, LUTs, biases), and the per-channel LUTs
    of a ``Lut`` op (rank 2, row-major), are also written inline as ``param_values``; weight matrices and position
    embeddings only as files. ``rounding`` is the ``rounding`` attribute (None when the op does not round)."""
    def inline(role) -> bool:
        rank_ok = np.ndim(values[role]) <= 1 or (kind == "Lut" and role == "table")
        return rank_ok and np.size(values[role]) <= INLINE_PARAM_LIMIT

    return {
        "step": step, "name": name, "kind": kind, "function": function, "rounding": attrs.get("rounding"),
        "inputs": dict(inputs), "outputs": dict(outputs), "params": list(params), "attrs": dict(attrs),
        "param_values": {role: [int(v) for v in np.asarray(values[role]).reshape(-1)] for role in params
                         if inline(role)},
    }


def golden_manifest_base(generator: str, formats, layout: dict) -> dict:
    """The keys every manifest starts with (``layout``: the tree's own rules, after the formats' and roles')."""
    return {"schema_version": SCHEMA_VERSION, "format": "intsim-golden", "generator": generator,
            "intsim_version": intsim.__version__, "formats": list(formats),
            "layout": {**FORMAT_LAYOUT, **LAYOUT_RULES, **layout}}


def write_golden(program: Program, images: Sequence[tuple[str, np.ndarray]], output, *, formats=FORMATS,
                 progress: bool = True) -> TreeWriter:
    """Run ``program`` on each ``(source, pixels (3, H, W) uint8)`` and write the golden tree to ``output``.

    Returns the (committed) :class:`TreeWriter`, whose ``files`` and ``bytes`` count what was written. Raises
    ``ValueError`` for an existing non-empty ``output``, no images, or a value outside its tensor's declared
    width, and :class:`~intsim.program.ProgramError` for pixels that do not fit the Program; nothing is left
    behind on error.
    """
    from tqdm.auto import tqdm

    from intsim.interpreter import run_program

    if not images:
        raise ValueError("intsim golden: no images to run")
    steps = _first_steps(program)
    digits = max(3, len(str(len(program.ops))))
    tensors: dict[str, dict] = {}

    def record_for(name: str, shape) -> dict:
        if name not in tensors:
            spec = program.tensors[name]
            tensors[name] = tensor_record(kind=spec.kind, step=steps[name], shape=shape, bits=spec.bits,
                                          signed=spec.signed, zero_point=spec.zero_point, scale=spec.scale)
        elif tuple(tensors[name]["shape"]) != tuple(shape):
            raise ValueError(f"tensor {name!r} has shape {tuple(shape)} on this image, "
                             f"{tuple(tensors[name]['shape'])} on the first")
        return tensors[name]

    with TreeWriter(output, formats) as tree, tqdm(total=len(program.constants) + len(images) * len(program.ops),
                                                   desc="golden", unit="tensor", disable=not progress) as bar:
        for name in sorted(program.constants, key=lambda n: (steps.get(n, 0), n)):
            array = program.constants[name]
            tree.add(record_for(name, array.shape), f"params/{steps.get(name, 0):0{digits}d}_{name}", array, name=name)
            bar.update()
        for index, (_, pixels) in enumerate(images):
            folder = f"img{index:04d}"

            def write_outputs(op, inputs, outputs, folder=folder):
                for name, value in zip(op.outputs, outputs):
                    array = np.asarray(value)[0]
                    tree.add(record_for(name, array.shape), f"{folder}/{steps[name]:0{digits}d}_{name}", array,
                             name=name)
                bar.update()

            pixels = np.asarray(pixels)
            run_program(program, pixels[None], trace=write_outputs)  # refuses pixels of the wrong shape or dtype
            (input_name,) = program.input_names
            tree.add(record_for(input_name, pixels.shape), f"{folder}/{0:0{digits}d}_{input_name}", pixels,
                     name=input_name)
        ops = []
        for step, op in enumerate(program.ops, 1):
            roles = input_roles(op.kind, op.inputs)
            params = [role for role, name in roles.items() if name in program.constants]
            ops.append(op_entry(step, op.name, op.kind, function=op_function(op.kind), inputs=roles,
                                outputs=output_roles(op.outputs), params=params, attrs=op.attrs,
                                values={role: program.constants[roles[role]] for role in params}))
        config = program.metadata.get("config")
        manifest = {
            **golden_manifest_base("intsim golden", formats, GOLDEN_LAYOUT),
            "program_sha256": program.sha256(),
            "model": program.metadata.get("model"),
            "config": config.get("name") if isinstance(config, dict) else None,
            "rounding": program.metadata.get("rounding"),
            "images": [{"dir": f"img{index:04d}", "source": str(source)} for index, (source, _) in enumerate(images)],
            "ops": ops,
            "tensors": tensors,
        }
        tree.commit(manifest)
    return tree
