"""``intsim vectors OP``: op-level vector suites (corner cases + seeded random cases) in the golden formats.

Tree layout::

    manifest.json                          one ``ops`` entry per case, same schema as intsim golden
    case0000_ties_half_up/acc.FMT          the case's arguments (inputs and params), by manifest role
    case0000_ties_half_up/out.FMT          the op's output
    case0001_.../                          the next case; random cases are labelled ``random``

Each entry's ``kind`` is the Program op kind the function implements (``Requantize``, ``LisAttentionValues``;
building blocks that are no Program op: ``IntegerMatmul``, ``Isqrt``, ``IntExp``, ``IGelu``) and ``function`` the
``intsim.ops`` name; ``inputs`` / ``outputs`` map roles (the Program kind's argument names: ``ptf_layernorm``'s
``q`` is ``x``, the softmaxes' ``q`` is ``logits``, ``lut_lookup``'s ``codes`` is ``x``, ``lis_attention_values``'
``codes`` is ``probs``) to tensors ``<case folder>.<role>``. Every tensor carries the zero point the case's
attributes give it. Scalar arguments (zero points, ranges, rounding, ``bits``) and the integer fields of a
constants object (``IExpConstants``: ``x0, b_int, c_int, n`` as in the Program; ``IGeluConstants``) are the
entry's ``attrs``. An op with a ``rounding`` argument gets one suite per rounding mode (``rounding=``): every case
rounds that way, and the manifest's top-level ``rounding`` says which. Every output is computed by the numba op
**and** its numpy reference, which must agree before anything is written. :func:`load_cases` reads a suite back
into keyword arguments, so a test bench can replay it.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import numpy as np

from intsim.golden.cases import SUITES, Case, takes_rounding
from intsim.golden.formats import FORMATS, read_tensor
from intsim.golden.manifest import read_manifest
from intsim.golden.tree import TreeWriter, check_output_folder, tensor_record
from intsim.golden.writer import golden_manifest_base, op_entry
from intsim.ops import OPS, IExpConstants, IGeluConstants
from intsim.ops.rounding import ROUNDING_MODES

__all__ = ["DEFAULT_ROUNDING", "VECTORS_LAYOUT", "build_cases", "load_cases", "write_vectors"]

DEFAULT_ROUNDING = "half_up"  # the ops' default, for a suite of a rounding op written without rounding=
VECTORS_LAYOUT = {
    "folders": "caseNNNN_LABEL/ROLE.FMT: one folder per case (see 'cases' and 'ops'), the op's array arguments "
               "by role and its output as out.FMT",
    "batch_axis": "suite files hold the op's arguments whole: nothing is dropped, leading axes are rows / batch",
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


def _suite_rounding(op: str, rounding: str | None) -> str | None:
    """The suite's rounding mode: ``rounding`` (default :data:`DEFAULT_ROUNDING`) for an op that rounds, None else."""
    _op_spec(op)
    if not takes_rounding(op):
        if rounding is not None:
            raise ValueError(f"{op} does not round: its suite takes no rounding mode (got {rounding!r})")
        return None
    rounding = DEFAULT_ROUNDING if rounding is None else rounding
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {rounding!r}; known: {', '.join(ROUNDING_MODES)}")
    return rounding


def build_cases(op: str, count: int, seed: int, rounding: str | None = None) -> list[Case]:
    """The corner cases of ``op`` followed by ``count`` random cases drawn with ``numpy.random.default_rng(seed)``;
    for an op that rounds, every case rounds with ``rounding`` (default :data:`DEFAULT_ROUNDING`)."""
    if count < 0 or seed < 0:
        raise ValueError(f"--count and --seed must be at least 0, got {count} and {seed}")
    rounding = _suite_rounding(op, rounding)
    mode = {} if rounding is None else {"rounding": rounding}
    suite = SUITES[op]
    rng = np.random.default_rng(seed)
    return suite.corners(**mode) + [suite.random(rng, **mode) for _ in range(count)]


def _attrs(kwargs: dict, arrays: set) -> dict:
    """The case's non-array arguments; a constants object contributes its integer fields, flat (as in a Program)."""
    attrs = {}
    for key, value in kwargs.items():
        if key in arrays:
            continue
        if dataclasses.is_dataclass(value):
            attrs.update({f.name: int(getattr(value, f.name)) for f in dataclasses.fields(value)
                          if isinstance(getattr(value, f.name), (int, np.integer))})
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


def write_vectors(op: str, output, *, count: int = 8, seed: int = 0, rounding: str | None = None, formats=FORMATS,
                  progress: bool = True) -> TreeWriter:
    """Write the vector suite of ``op`` (an :data:`intsim.ops.OPS` name) to the folder ``output``; an op that rounds
    gets the suite of one rounding mode (``rounding``, default :data:`DEFAULT_ROUNDING`)."""
    from tqdm.auto import tqdm

    rounding = _suite_rounding(op, rounding)
    cases = build_cases(op, count, seed, rounding)
    check_output_folder(output)  # before the outputs are computed
    suite = SUITES[op]
    outputs = [_computed_output(op, case) for case in tqdm(cases, desc=f"vectors {op}", unit="case",
                                                           disable=not progress)]
    tensors, ops, folders = {}, [], []
    with TreeWriter(output, formats) as tree:
        for step, (case, result) in enumerate(zip(cases, outputs), 1):
            folder = f"case{step - 1:04d}_{case.label}"
            folders.append({"dir": folder, "label": case.label})
            present = [arg for arg in (*suite.inputs, *suite.params) if case.kwargs.get(arg) is not None]
            roles = {}
            for arg in (*present, "out"):
                role = suite.role(arg)
                array = np.asarray(result if arg == "out" else case.kwargs[arg])
                bits, signed = suite.output(case) if arg == "out" else case.widths[arg]
                kind = "output" if arg == "out" else "constant" if arg in suite.params else "input"
                scale = getattr(case.kwargs.get("constants"), "out_scale", None) if arg == "out" else None
                zero_point = case.kwargs[suite.zero_points[arg]] if arg in suite.zero_points else 0
                roles[role] = name = f"{folder}.{role}"
                tensors[name] = tensor_record(kind=kind, step=step, shape=array.shape, bits=bits, signed=signed,
                                              zero_point=zero_point, scale=scale)
                tree.add(tensors[name], f"{folder}/{role}", array, name=name)
            params = [suite.role(arg) for arg in suite.params if arg in present]
            output = {"out": roles.pop("out")}
            ops.append(op_entry(step, folder, suite.kind, function=op, inputs=roles, outputs=output, params=params,
                                attrs=_attrs(case.kwargs, set(present)),
                                values={suite.role(arg): case.kwargs[arg] for arg in suite.params if arg in present}))
        manifest = {
            **golden_manifest_base("intsim vectors", formats, VECTORS_LAYOUT),
            "program_sha256": None, "rounding": rounding, "op": op, "seed": int(seed), "count": int(count),
            "cases": folders, "ops": ops, "tensors": tensors,
        }
        tree.commit(manifest)
    return tree


def load_cases(folder: str | Path, fmt: str = "npy") -> list[tuple[dict, dict, np.ndarray]]:
    """Read a suite written by :func:`write_vectors`: ``(manifest op entry, kwargs, expected output)`` per case.

    ``kwargs`` are the op's keyword arguments (arrays read from ``fmt`` files by role and renamed to the op's
    arguments, ``mask`` as bool, constants objects rebuilt from the attributes), ready for
    ``intsim.ops.<op>(**kwargs)`` or a hardware model.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest["generator"] != "intsim vectors":
        raise ValueError(f"{folder}: not an op-level vector suite (written by {manifest['generator']})")
    op = manifest["op"]
    suite = SUITES[op]
    arguments = {suite.role(arg): arg for arg in (*suite.inputs, *suite.params)}
    loaded = []
    for entry in manifest["ops"]:
        def read(name):
            record = manifest["tensors"][name]
            return read_tensor(folder / record["files"][fmt][0], fmt, shape=record["shape"], bits=record["bits"],
                               signed=record["signed"]).astype(record["dtype"])

        kwargs = {arguments[role]: read(name) for role, name in entry["inputs"].items()}
        if "mask" in kwargs:
            kwargs["mask"] = kwargs["mask"].astype(bool)
        attrs = dict(entry["attrs"])
        if op in _CONSTANTS_TYPES:
            constants_type = _CONSTANTS_TYPES[op]
            fields = {f.name: attrs.pop(f.name) for f in dataclasses.fields(constants_type) if f.name in attrs}
            if op == "i_gelu":
                fields["out_scale"] = manifest["tensors"][entry["outputs"]["out"]]["scale"]
            kwargs["constants"] = constants_type(**fields)
        kwargs.update(attrs)
        loaded.append((entry, kwargs, read(entry["outputs"]["out"])))
    return loaded
