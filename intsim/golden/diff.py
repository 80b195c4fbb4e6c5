"""``intsim diff GOLDEN DUT``: compare a DUT dump with a golden tree and name the first op that departs.

``DUT`` is a folder of the golden layout holding every golden tensor in at least one of the formats (npy, hex or
bin; e.g. what an RTL simulation dumped); a tensor with no DUT file in any format is **missing**, which makes the
verdict "differ" (exit 1) unless ``subset=True`` (``--subset``: compare only what is present, count the skipped).
Every DUT file at a golden path is read (hex: line by line, at the tensor's width) and
compared element by element with the golden tensor. Tensors are visited in program order (the Program input,
then for every op its params and its outputs), so the **first mismatch** is the first op, in program order, whose
output (or param) differs: downstream differences usually follow from it. A DUT value outside the tensor's
declared width (``3fffff`` in a 22-bit signed hex file) is counted apart (``out_of_range``) and reported as such.

Bad input raises ``ValueError`` naming the file (and line): a folder without a golden manifest (or with one of
another schema version: regenerate it), a DUT holding no
golden file, a DUT manifest of another Program (or suite) or listing files that are missing, a DUT file of the wrong
size or shape, a malformed hex line, a golden file that no longer matches its manifest's SHA-256.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from intsim.golden.formats import FORMATS, _code_range, hex_digits, read_tensor
from intsim.golden.manifest import MANIFEST_NAME, read_manifest

__all__ = ["Comparison", "diff_trees", "format_table", "range_text", "verdict_status"]


@dataclass
class Comparison:
    """One DUT file against its golden tensor (``delta = dut - golden``)."""

    tensor: str
    op: str | None  # the op writing the tensor (role output) or first reading it (param); None for the input
    role: str  # "input", "param" or "output"
    item: str | None  # image (intsim golden) or case folder (intsim vectors)
    format: str
    path: str
    elements: int
    mismatches: int
    first_index: list[int] | None
    golden_value: int | None
    dut_value: int | None
    max_abs_delta: int
    above: int  # elements where dut > golden
    below: int  # elements where dut < golden
    mean_delta: float  # over the mismatching elements (the signed bias of the error); 0.0 when equal
    out_of_range: int = 0  # DUT elements outside the declared bits / signed range (counted in mismatches too)
    out_of_range_index: list[int] | None = None  # the first of them (C order) and its value
    out_of_range_value: int | None = None


def _program_order(manifest: dict) -> list[tuple[str, str | None, str]]:
    """``(tensor, op, role)`` in program order: the inputs, then per op its params and outputs."""
    order, seen = [], set()
    for name, record in sorted(manifest["tensors"].items(), key=lambda item: item[1]["step"]):
        if record["kind"] == "input" and record["step"] == 0:
            order.append((name, None, "input"))
            seen.add(name)
    for entry in manifest["ops"]:
        for role, name in entry["inputs"].items():
            if name not in seen and manifest["tensors"].get(name, {}).get("kind") in ("constant", "input"):
                order.append((name, entry["name"], "param" if role in entry["params"] else "input"))
                seen.add(name)
        for name in entry["outputs"].values():
            order.append((name, entry["name"], "output"))
            seen.add(name)
    return order


def _items(manifest: dict) -> list[str]:
    return [item["dir"] for item in manifest.get("images") or manifest.get("cases") or []]


def _check_dut_manifest(golden: Path, dut: Path, manifest: dict) -> None:
    if not (dut / MANIFEST_NAME).is_file():
        return
    theirs = read_manifest(dut)
    for key in ("program_sha256", "generator", "op"):
        if theirs.get(key) != manifest.get(key):
            raise ValueError(f"{dut / MANIFEST_NAME} is of another {'Program' if key == 'program_sha256' else 'tree'}: "
                             f"{key} {theirs.get(key)!r}, the golden {golden / MANIFEST_NAME} has {manifest.get(key)!r}")
    for record in theirs["tensors"].values():
        for paths in record["files"].values():
            for relative in paths:
                if not (dut / relative).is_file():
                    raise ValueError(f"{dut / relative}: missing (listed in {dut / MANIFEST_NAME})")


def _read_golden(golden: Path, record: dict, index: int) -> np.ndarray:
    fmt = "npy" if "npy" in record["files"] else next(iter(record["files"]))
    path = golden / record["files"][fmt][index]
    if not path.is_file():
        raise ValueError(f"{path}: golden file missing (listed in {golden / MANIFEST_NAME})")
    if hashlib.sha256(path.read_bytes()).hexdigest() != record["sha256"][fmt][index]:
        raise ValueError(f"{path}: golden file does not match the SHA-256 in {golden / MANIFEST_NAME} (modified?)")
    return read_tensor(path, fmt, shape=record["shape"], bits=record["bits"], signed=record["signed"])


def _compare(expected: np.ndarray, actual: np.ndarray) -> dict:
    delta = actual - expected
    differs = delta != 0
    count = int(differs.sum())
    if not count:
        return dict(mismatches=0, first_index=None, golden_value=None, dut_value=None, max_abs_delta=0, above=0,
                    below=0, mean_delta=0.0)
    first = np.unravel_index(int(np.argmax(differs)), expected.shape)
    return dict(mismatches=count, first_index=[int(i) for i in first], golden_value=int(expected[first]),
                dut_value=int(actual[first]), max_abs_delta=int(np.abs(delta).max()), above=int((delta > 0).sum()),
                below=int((delta < 0).sum()), mean_delta=float(delta[differs].mean()))


def _out_of_range(actual: np.ndarray, bits: int, signed: bool) -> dict:
    low, high = _code_range(bits, signed)
    outside = (actual < low) | (actual > high)
    count = int(outside.sum())
    if not count:
        return {}
    first = np.unravel_index(int(np.argmax(outside)), actual.shape)
    return dict(out_of_range=count, out_of_range_index=[int(i) for i in first], out_of_range_value=int(actual[first]))


def range_text(bits: int, signed: bool) -> str:
    low, high = _code_range(bits, signed)
    return f"{bits}-bit {'signed' if signed else 'unsigned'} range [{low}, {high}]"


def diff_trees(golden: str | Path, dut: str | Path, *, subset: bool = False) -> dict:
    """Compare every DUT file at a golden path; return the JSON-ready result (``comparisons`` in program order,
    ``first_mismatch`` or ``None``, ``out_of_range`` (every file holding a value outside its declared width),
    ``missing`` (golden tensor files, as paths without the format suffix, with no DUT file in any format; the
    verdict is "differ" when any is missing unless ``subset``), ``unknown_files``: DUT files in a golden format at
    no golden path, ``ops``: the per-op summary)."""
    golden, dut = Path(golden), Path(dut)
    manifest = read_manifest(golden)
    if not dut.is_dir():
        raise ValueError(f"{dut}: no such DUT folder")
    _check_dut_manifest(golden, dut, manifest)
    items = _items(manifest)
    comparisons: list[Comparison] = []
    known = set()
    missing: list[str] = []
    for name, op, role in _program_order(manifest):
        record = manifest["tensors"][name]
        for index in range(len(next(iter(record["files"].values())))):
            expected = None
            present = [fmt for fmt in FORMATS
                       if fmt in record["files"] and (dut / record["files"][fmt][index]).is_file()]
            if not present:
                first_path = next(iter(record["files"].values()))[index]
                missing.append(first_path.rsplit(".", 1)[0])
            for fmt in FORMATS:
                if fmt not in record["files"]:
                    continue
                relative = record["files"][fmt][index]
                known.add(relative)
                if not (dut / relative).is_file():
                    continue
                if expected is None:
                    expected = _read_golden(golden, record, index)
                actual = read_tensor(dut / relative, fmt, shape=record["shape"], bits=record["bits"],
                                     signed=record["signed"])
                item = Path(relative).parts[0] if len(Path(relative).parts) > 1 else None
                item = item if item in items else None
                comparisons.append(Comparison(tensor=name, op=op, role=role, item=item, format=fmt, path=relative,
                                              elements=int(expected.size), **_compare(expected, actual),
                                              **_out_of_range(actual, record["bits"], record["signed"])))
    if not comparisons:
        raise ValueError(f"{dut}: holds none of the {len(known)} files of the golden tree {golden} "
                         f"(expected the same layout, e.g. {sorted(known)[0] if known else 'no files'})")
    unknown = sorted(str(path.relative_to(dut)) for path in dut.rglob("*")
                     if path.is_file() and path.suffix.lstrip(".") in FORMATS
                     and str(path.relative_to(dut)) not in known)
    first = next((c for c in comparisons if c.mismatches), None)
    kinds = {entry["name"]: entry["kind"] for entry in manifest["ops"]}
    ops: dict[str, dict] = {}
    for c in comparisons:
        key = c.op if c.op is not None else "(input)"
        row = ops.setdefault(key, {"op": c.op, "kind": kinds.get(c.op, "input"), "files": 0, "differing_files": 0,
                                   "out_of_range_files": 0, "first_mismatch": None})
        row["files"] += 1
        row["differing_files"] += bool(c.mismatches)
        row["out_of_range_files"] += bool(c.out_of_range)
        if c.mismatches and row["first_mismatch"] is None:
            row["first_mismatch"] = {"tensor": c.tensor, "role": c.role, "item": c.item, "format": c.format,
                                     "path": c.path, "index": c.first_index, "golden": c.golden_value,
                                     "dut": c.dut_value}
    records = manifest["tensors"]
    return {
        "golden": str(golden), "dut": str(dut), "program_sha256": manifest["program_sha256"],
        "compared_files": len(comparisons), "differing_files": sum(1 for c in comparisons if c.mismatches),
        "first_mismatch": None if first is None else {
            "op": first.op, "tensor": first.tensor, "role": first.role, "item": first.item, "format": first.format,
            "path": first.path, "index": first.first_index, "golden": first.golden_value, "dut": first.dut_value},
        "out_of_range": [{"path": c.path, "tensor": c.tensor, "op": c.op, "format": c.format,
                          "bits": records[c.tensor]["bits"], "signed": records[c.tensor]["signed"],
                          "elements": c.out_of_range, "index": c.out_of_range_index, "value": c.out_of_range_value,
                          "element": int(np.ravel_multi_index(c.out_of_range_index, records[c.tensor]["shape"]))
                          if records[c.tensor]["shape"] else 0}
                         for c in comparisons if c.out_of_range],
        "subset": bool(subset),
        "golden_tensor_files": len(missing) + len({(c.tensor, c.path.rsplit(".", 1)[0]) for c in comparisons}),
        "missing": missing,
        "ops": list(ops.values()),
        "comparisons": [asdict(c) for c in comparisons],
        "unknown_files": unknown,
    }


def verdict_status(result: dict) -> int:
    """0: everything compared agrees (and, without ``subset``, nothing is missing); 1 otherwise."""
    if result["first_mismatch"] is not None or result["out_of_range"]:
        return 1
    return 1 if result["missing"] and not result["subset"] else 0


def _out_of_range_line(entry: dict, digits: int) -> str:
    value = entry["value"]
    shown = f"{value}"
    if entry["format"] == "hex":
        shown += f" (hex {value & ((1 << 4 * digits) - 1):0{digits}x})"
    more = f"; {entry['elements']} elements of this file are outside it" if entry["elements"] > 1 else ""
    where = f"line {entry['element'] + 1}, " if entry["format"] == "hex" else ""
    return (f"out of range: {entry['path']}: {where}element {entry['element']} (index {tuple(entry['index'])}) is "
            f"{shown}, outside the "
            f"declared {range_text(entry['bits'], entry['signed'])} of tensor {entry['tensor']}{more}")


def format_table(result: dict, *, verbose: bool = False) -> str:
    """The human-readable report of :func:`diff_trees`' result: one row per op (``verbose``: per file), then the
    verdict."""
    lines = _op_table(result) if not verbose else _file_table(result)
    lines.append("")
    lines += _verdict(result)
    return "\n".join(lines)


def _first_text(first: dict) -> str:
    return (f"{first['tensor']}" + (f" of {first['item']}" if first["item"] else "")
            + f" ({first['format']}) at {tuple(first['index'])}: golden {first['golden']}, dut {first['dut']}")


def _op_table(result: dict) -> list[str]:
    rows = result["ops"]
    first_op = next((row for row in rows if row["differing_files"]), None)
    width = max([len("op")] + [len(row["op"] or "(input)") for row in rows])
    lines = [f"   {'op':<{width}} {'kind':<18} {'files':>6} {'differ':>6}  first mismatch"]
    for row in rows:
        mark = "=> " if row is first_op else "   "
        first = "" if row["first_mismatch"] is None else _first_text(row["first_mismatch"])
        if row["out_of_range_files"]:
            first += f" [{row['out_of_range_files']} file(s) out of range]"
        lines.append(f"{mark}{row['op'] or '(input)':<{width}} {row['kind']:<18} {row['files']:>6} "
                     f"{row['differing_files']:>6}  {first}".rstrip())
    if first_op is not None:
        lines.append(f"=> marks the first op that differs: {first_op['op'] or '(input)'}")
    return lines


def _file_table(result: dict) -> list[str]:
    lines = [f"{'tensor':<40} {'item':<26} {'fmt':<4} {'mismatches':>17} {'first index':<16} {'max|d|':>8} "
             f"{'bias (mean d, +n/-n)':<22}"]
    for c in result["comparisons"]:
        counts = f"{c['mismatches']}/{c['elements']}"
        first = "" if c["first_index"] is None else str(tuple(c["first_index"]))
        bias = "" if not c["mismatches"] else f"{c['mean_delta']:+.3g} (+{c['above']}/-{c['below']})"
        lines.append(f"{c['tensor']:<40} {c['item'] or '':<26} {c['format']:<4} {counts:>17} {first:<16} "
                     f"{c['max_abs_delta']:>8} {bias:<22}".rstrip())
    return lines


def _verdict(result: dict) -> list[str]:
    lines = [f"compared {result['compared_files']} files, {result['differing_files']} differ"]
    first = result["first_mismatch"]
    if first is None:
        lines.append("first mismatch: none" + (" (all agree)" if not result["out_of_range"] and not (
            result["missing"] and not result["subset"]) else ""))
    else:
        where = f"{first['role']} {first['tensor']}" + (f" of {first['item']}" if first["item"] else "")
        lines.append(f"first mismatch: op {first['op']} ({where}, {first['format']}) at index {tuple(first['index'])}: "
                     f"golden {first['golden']}, dut {first['dut']}")
    if result["unknown_files"]:
        shown = ", ".join(result["unknown_files"][:5])
        lines.append(f"not compared: {len(result['unknown_files'])} DUT files at no golden path ({shown}"
                     f"{', ...' if len(result['unknown_files']) > 5 else ''})")
    for entry in result["out_of_range"][:5]:
        lines.append(_out_of_range_line(entry, hex_digits(entry["bits"])))
    if len(result["out_of_range"]) > 5:
        lines.append(f"out of range: {len(result['out_of_range'])} files in all (see --json)")
    missing = result["missing"]
    if missing:
        shown = ", ".join(f"{stem}.*" for stem in missing[:3]) + (", ..." if len(missing) > 3 else "")
        counts = f"{len(missing)} of {result['golden_tensor_files']} golden tensor files"
        if result["subset"]:
            lines.append(f"skipped (--subset): {counts} have no DUT file in any format ({shown})")
        else:
            lines.append(f"incomplete DUT: {counts} have no DUT file in any of npy, hex, bin ({shown}); the DUT "
                         f"differs (exit 1): dump them, or give --subset to compare only the files present")
    status = verdict_status(result)
    lines.append("verdict: " + ("all agree" + (f" ({len(missing)} skipped)" if missing else "") if status == 0 else
                                "DUT differs" if result["first_mismatch"] is not None or result["out_of_range"] else
                                "incomplete DUT"))
    return lines
