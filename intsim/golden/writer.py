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

import numpy as np

import intsim
from intsim.golden.formats import FORMAT_LAYOUT, FORMATS
from intsim.golden.manifest import SCHEMA_VERSION, input_roles, output_roles
from intsim.golden.tree import TreeWriter, tensor_record
from intsim.kinds.registry import get_op_kind
from intsim.program import Program

__all__ = ["INLINE_PARAM_LIMIT", "GOLDEN_LAYOUT", "LAYOUT_RULES", "golden_manifest_base", "op_entry", "op_function",
           "write_golden"]

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
