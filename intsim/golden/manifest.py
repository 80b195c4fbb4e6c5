"""The golden manifest: ``manifest.json`` at the root of a golden tree, its JSON schema and its byte format.

The schema ships in the package (``intsim/golden/manifest.schema.json``, :func:`load_schema`) and is documented
in ``docs/golden.md``. Every op entry names its tensors by **role** (:data:`INPUT_ROLES`: the argument names of
docs/program.md; outputs ``out``, or ``out0``, ``out1``, ... for a Split), never by position. :func:`dumps` writes the one canonical byte form (sorted keys, one-space indent, lists
of numbers on one line, a final newline, no timestamps), so two runs give identical bytes.
:func:`read_manifest` loads and validates a tree's manifest, raising ``ValueError`` naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path

from intsim.kinds.registry import BUILTIN_KINDS, OP_KINDS

__all__ = ["INPUT_ROLES", "MANIFEST_NAME", "SCHEMA_VERSION", "dumps", "input_roles", "load_schema", "output_roles",
           "read_manifest", "roles_table", "validate_manifest"]

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 2  # 2: roles, real zero points in op suites, per-op rounding and function, layout rules


class _InputRoles(Mapping):
    """A live read-only view of the registry: kind string -> its inputs' roles (kinds registered later included)."""

    def __getitem__(self, kind: str) -> tuple[str, ...]:
        return OP_KINDS[kind].input_roles

    def __iter__(self):
        return iter(OP_KINDS)

    def __len__(self) -> int:
        return len(OP_KINDS)


INPUT_ROLES: Mapping[str, tuple[str, ...]] = _InputRoles()
"""Program op kind -> its inputs' roles in argument order: the operand roles of its schema in the registry
:mod:`intsim.kinds` (docs/program.md), so the manifest and the load checks name every operand the same way."""


def input_roles(kind: str, inputs) -> dict[str, str]:
    """Role -> tensor name for the ``inputs`` (in argument order) of an op of ``kind``; trailing optional inputs
    (Linear's ``x_shift``, Lut's ``rows``) may be absent. ``ValueError`` for an unknown kind or too many inputs."""
    roles = INPUT_ROLES.get(kind)
    if roles is None or len(inputs) > len(roles):
        raise ValueError(f"op kind {kind!r} with {len(inputs)} inputs has no manifest roles "
                         f"(known kinds: {', '.join(INPUT_ROLES)})")
    return dict(zip(roles, inputs))


def roles_table() -> str:
    """The input roles and ``function`` of every built-in kind as the Markdown table of ``docs/golden.md``."""
    lines = ["| kind | input roles | `function` |", "|---|---|---|"]
    for kind in (OP_KINDS[name] for name in BUILTIN_KINDS):
        roles = ", ".join(f"`{operand.role}`" + (" (optional)" if operand.optional else "")
                          for operand in kind.schema.inputs)
        lines.append(f"| {kind.kind} | {roles} | {f'`{kind.function}`' if kind.function else 'null'} |")
    return "\n".join(lines)


def output_roles(outputs) -> dict[str, str]:
    """Role -> tensor name of an op's outputs: ``out`` for one output, ``out0``, ``out1``, ... for several."""
    outputs = list(outputs)
    return {"out": outputs[0]} if len(outputs) == 1 else {f"out{index}": name for index, name in enumerate(outputs)}


@cache
def load_schema() -> dict:
    """The manifest's JSON schema (draft 2020-12), shipped as package data."""
    return json.loads(resources.files("intsim.golden").joinpath("manifest.schema.json").read_text())


def validate_manifest(manifest: dict, where: str = MANIFEST_NAME) -> None:
    """Check ``manifest`` against the schema; ``ValueError`` naming ``where`` and the first violation.

    Uses ``jsonschema`` when it is installed; otherwise checks the schema version and the required keys only.
    """
    if not isinstance(manifest, dict):
        raise ValueError(f"{where}: a manifest is a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != "intsim-golden":
        raise ValueError(f"{where}: not an intsim golden manifest (format {manifest.get('format')!r})")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{where}: manifest schema version {manifest.get('schema_version')!r}, but this intsim reads "
                         f"version {SCHEMA_VERSION}; regenerate the tree with this intsim (intsim golden / intsim "
                         f"vectors, or python tools/make_golden.py for the committed set)")
    try:
        import jsonschema
    except ImportError:
        missing = [key for key in load_schema()["required"] if key not in manifest]
        if missing:
            raise ValueError(f"{where}: missing keys {', '.join(missing)}") from None
        return
    validator = jsonschema.Draft202012Validator(load_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(_abridged(manifest)))
    if error is not None:
        place = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ValueError(f"{where}: does not follow the manifest schema at {place}: {error.message[:300]}")


def _abridged(value):
    """``value`` with every list of more than 8 numbers of one type (all ints or all floats) cut to 8 items.

    The schema constrains such lists (param values, per-channel scales, list attributes) only by their items'
    type, which the cut keeps checked in full; validating ViT-Ti's manifest then takes a fraction of a second.
    """
    if isinstance(value, dict):
        return {key: _abridged(item) for key, item in value.items()}
    if isinstance(value, list):
        if len(value) > 8 and len({type(item) for item in value}) == 1 and type(value[0]) in (int, float):
            return value[:8]
        return [_abridged(item) for item in value]
    return value


def read_manifest(folder: str | Path) -> dict:
    """Load and validate ``folder/manifest.json``; ``ValueError`` naming the file for any defect."""
    path = Path(folder) / MANIFEST_NAME
    if not Path(folder).is_dir():
        raise ValueError(f"{folder}: no such golden folder")
    if not path.is_file():
        raise ValueError(f"{path}: no manifest (is {folder} a tree written by intsim golden / intsim vectors?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
    validate_manifest(manifest, str(path))
    return manifest


def dumps(value) -> str:
    """Canonical JSON: keys sorted, objects indented by one space per level, lists of scalars on one line."""
    return _dump(value, 0) + "\n"


def _dump(value, level: int) -> str:
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = " " * (level + 1)
        items = [f"{inner}{json.dumps(str(key))}: {_dump(value[key], level + 1)}" for key in sorted(value)]
        return "{\n" + ",\n".join(items) + "\n" + " " * level + "}"
    if isinstance(value, (list, tuple)):
        if all(not isinstance(item, (dict, list, tuple)) for item in value):
            return "[" + ", ".join(json.dumps(item) for item in value) + "]"
        inner = " " * (level + 1)
        return "[\n" + ",\n".join(inner + _dump(item, level + 1) for item in value) + "\n" + " " * level + "]"
    return json.dumps(value, allow_nan=False)
