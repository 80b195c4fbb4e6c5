"""``intsim vectors OP``: op-level vector suites (corner cases + seeded random cases) in the golden formats.

Tree layout::

    manifest.json                          one ``ops`` entry per case (``kind`` = OP), same schema as intsim golden
    case0000_ties_half_up/acc.FMT          the case's arguments (inputs and params), by argument name
    case0000_ties_half_up/out.FMT          the op's output
    case0001_.../                          the next case; random cases are labelled ``random``

Tensor names are ``<case folder>.<argument>`` (and ``.out``); scalar arguments (zero points, ranges, rounding,
``bits``) and the integer fields of a constants object (``IExpConstants``, ``IGeluConstants``) are the entry's
``attrs``. Every output is computed by the numba op **and** its numpy reference, which must agree before anything
is written. :func:`load_cases` reads a suite back into keyword arguments, so a test bench can replay it.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import numpy as np

from intsim.golden.cases import SUITES, Case
from intsim.golden.formats import FORMAT_LAYOUT, FORMATS, read_tensor
from intsim.golden.manifest import read_manifest
from intsim.golden.tree import TreeWriter, tensor_record
from intsim.golden.writer import golden_manifest_base, op_entry
from intsim.ops import OPS, IExpConstants, IGeluConstants

__all__ = ["VECTORS_LAYOUT", "build_cases", "load_cases", "write_vectors"]

VECTORS_LAYOUT = {
    **FORMAT_LAYOUT,
    "folders": "caseNNNN_LABEL/ARGUMENT.FMT: one folder per case (see 'cases' and 'ops'), the op's array arguments "
               "by name and its output as out.FMT",
}
_CONSTANTS_TYPES = {"int_exp": IExpConstants, "log_int_softmax": IExpConstants, "uniform_int_softmax": IExpConstants,
                    "i_gelu": IGeluConstants}


def _op_spec(op: str):
    for spec in OPS:
        if spec.name == op:
            return spec
    names = [spec.name for spec in OPS]
    close = difflib.get_close_matches(str(op), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown op {op!r}{hint}; known (intsim ops): {', '.join(names)}")


def build_cases(op: str, count: int, seed: int) -> list[Case]:
    """The corner cases of ``op`` followed by ``count`` random cases drawn with ``numpy.random.default_rng(seed)``."""
    _op_spec(op)
    if count < 0 or seed < 0:
        raise ValueError(f"--count and --seed must be at least 0, got {count} and {seed}")
    suite = SUITES[op]
    rng = np.random.default_rng(seed)
    return suite.corners() + [suite.random(rng) for _ in range(count)]


def _attrs(kwargs: dict, arrays: set) -> dict:
    attrs = {}
    for key, value in kwargs.items():
        if key in arrays:
            continue
        if dataclasses.is_dataclass(value):
            attrs[key] = {f.name: int(getattr(value, f.name)) for f in dataclasses.fields(value)
                          if isinstance(getattr(value, f.name), (int, np.integer))}
        else:
            attrs[key] = value.item() if isinstance(value, np.generic) else value
    return attrs


def _computed_output(op: str, case: Case) -> np.ndarray:
    """The op's output for ``case``: the numba kernel, checked equal to the numpy reference."""
    spec = _op_spec(op)
    kernel, reference = np.asarray(spec.kernel(**case.kwargs)), np.asarray(spec.reference(**case.kwargs))
    if kernel.shape != reference.shape or not np.array_equal(kernel, reference):
        raise RuntimeError(f"intsim vectors {op}: the numba kernel and the numpy reference disagree on case "
                           f"{case.label!r}; this is an intsim bug, please report it")
    return kernel


def write_vectors(op: str, output, *, count: int = 8, seed: int = 0, formats=FORMATS, progress: bool = True) -> TreeWriter:
    """Write the vector suite of ``op`` (an :data:`intsim.ops.OPS` name) to the folder ``output``."""
    from tqdm.auto import tqdm

    cases = build_cases(op, count, seed)
    suite = SUITES[op]
    outputs = [_computed_output(op, case) for case in tqdm(cases, desc=f"vectors {op}", unit="case",
                                                           disable=not progress)]
    tensors, ops, folders = {}, [], []
    with TreeWriter(output, formats) as tree:
        for step, (case, result) in enumerate(zip(cases, outputs), 1):
            folder = f"case{step - 1:04d}_{case.label}"
            folders.append({"dir": folder, "label": case.label})
            present = [arg for arg in (*suite.inputs, *suite.params) if case.kwargs.get(arg) is not None]
            for arg in present:
                bits, signed = case.widths[arg]
                array = np.asarray(case.kwargs[arg])
                name = f"{folder}.{arg}"
                tensors[name] = tensor_record(kind="constant" if arg in suite.params else "input", step=step,
                                              shape=array.shape, bits=bits, signed=signed)
                tree.add(tensors[name], f"{folder}/{arg}", array, name=name)
            bits, signed = suite.output(case)
            constants = case.kwargs.get("constants")
            scale = getattr(constants, "out_scale", None)
            out_name = f"{folder}.out"
            tensors[out_name] = tensor_record(kind="output", step=step, shape=result.shape, bits=bits, signed=signed,
                                              scale=scale)
            tree.add(tensors[out_name], f"{folder}/out", result, name=out_name)
            params = [f"{folder}.{arg}" for arg in suite.params if arg in present]
            ops.append(op_entry(step, folder, op, [f"{folder}.{arg}" for arg in present], [out_name], params,
                                _attrs(case.kwargs, set(present)),
                                {f"{folder}.{arg}": case.kwargs[arg] for arg in suite.params if arg in present}))
        manifest = {
            **golden_manifest_base("intsim vectors", formats, VECTORS_LAYOUT),
            "program_sha256": None, "rounding": None, "op": op, "seed": int(seed), "count": int(count),
            "cases": folders, "ops": ops, "tensors": tensors,
        }
        tree.commit(manifest)
    return tree


def load_cases(folder: str | Path, fmt: str = "npy") -> list[tuple[dict, dict, np.ndarray]]:
    """Read a suite written by :func:`write_vectors`: ``(manifest op entry, kwargs, expected output)`` per case.

    ``kwargs`` are the op's keyword arguments (arrays read from ``fmt`` files, ``mask`` as bool, constants
    objects rebuilt from the attributes), ready for ``intsim.ops.<op>(**kwargs)`` or a hardware model.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest["generator"] != "intsim vectors":
        raise ValueError(f"{folder}: not an op-level vector suite (written by {manifest['generator']})")
    op = manifest["op"]
    loaded = []
    for entry in manifest["ops"]:
        def read(name):
            record = manifest["tensors"][name]
            return read_tensor(folder / record["files"][fmt][0], fmt, shape=record["shape"], bits=record["bits"],
                               signed=record["signed"]).astype(record["dtype"])

        kwargs = {name.rsplit(".", 1)[1]: read(name) for name in entry["inputs"]}
        if "mask" in kwargs:
            kwargs["mask"] = kwargs["mask"].astype(bool)
        for key, value in entry["attrs"].items():
            if key == "constants":
                extra = {"out_scale": manifest["tensors"][entry["outputs"][0]]["scale"]} if op == "i_gelu" else {}
                value = _CONSTANTS_TYPES[op](**value, **extra)
            kwargs[key] = value
        loaded.append((entry, kwargs, read(entry["outputs"][0])))
    return loaded
