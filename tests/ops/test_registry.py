"""Every registered op has a reference twin with the same signature, a section in docs/semantics.md,
and appears in the public API; the registry is what the CLI, the benchmarks and these tests iterate."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import intsim.ops as ops

SEMANTICS = Path(__file__).resolve().parents[2] / "docs" / "semantics.md"


@pytest.mark.parametrize("spec", ops.OPS, ids=lambda spec: spec.name)
def test_kernel_and_reference_are_twins(spec):
    assert spec.kernel.__name__ == spec.name
    assert spec.reference.__name__ == f"{spec.name}_reference"
    assert inspect.signature(spec.kernel) == inspect.signature(spec.reference)
    assert spec.kernel.__module__ == spec.reference.__module__
    assert getattr(ops, spec.name) is spec.kernel and spec.name in ops.__all__


@pytest.mark.parametrize("spec", ops.OPS, ids=lambda spec: spec.name)
def test_every_op_is_documented_with_its_reference(spec):
    text = SEMANTICS.read_text()
    assert f"## {spec.name}" in text, f"docs/semantics.md lacks a section '## {spec.name}'"
    assert f"{spec.reference.__module__}.{spec.reference.__name__}" in text


@pytest.mark.parametrize("spec", ops.OPS, ids=lambda spec: spec.name)
def test_every_op_states_its_integer_contract(spec):
    module_doc = inspect.getmodule(spec.kernel).__doc__ or ""
    text = (spec.kernel.__doc__ or "") + module_doc
    for word in ("Integer contract", "ounding"):
        assert word in text, f"{spec.name}: docstring (or its module's) lacks '{word}'"
