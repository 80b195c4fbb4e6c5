"""Architecture rules, checked on the source: generic modules name no quantization method, quantizer or bit width,
and the static import graph of ``intsim`` has no cycle.

Extend :data:`GENERIC_FILES` (files that must stay method-agnostic), :data:`FORBIDDEN_WORDS` (identifier or string
words, case-insensitive, matched on whole words after splitting CamelCase and snake_case) and
:data:`FORBIDDEN_PATTERNS` (regular expressions over the raw source) as the rules grow.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "intsim"

GENERIC_FILES = [
    "intsim/interpreter.py",
    "intsim/backends/__init__.py",
    "intsim/backends/base.py",
    "intsim/quant/export.py",
    "intsim/quant/layers.py",
    "intsim/quant/vit.py",
    "intsim/quant/builder.py",
]
"""Files that must name no quantization method, quantizer or bit width: they read everything from the registries."""

FORBIDDEN_WORDS = ["lis", "uniform", "ptf", "fqvit", "adalog", "apq"]
"""Method and quantizer names (whole words of identifiers, strings and comments: ``LisAttentionValues`` contains
the word ``Lis``; ``list`` contains none)."""

FORBIDDEN_PATTERNS = [
    (r"\bbits\b[\]\"')]*\s*(==|!=|<=|>=|<|>)\s*\d", "a bit-width test (bits == 4)"),
    (r"\d\s*(==|!=|<=|>=|<|>)\s*[\w.\[\]\"']*\bbits\b", "a bit-width test (4 == bits)"),
    (r"\b\w*_bits\b\s*(==|!=|<=|>=|<|>)\s*\d", "a bit-width test (attn_bits == 4)"),
]
"""(regular expression, what it catches) over the raw source of every generic file."""

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def _words(text: str) -> list[str]:
    """The words of identifiers and prose: ``LisAttentionValues`` -> lis, attention, values; ``attn_bits`` -> attn,
    bits; ``PTFLayer`` -> ptf, layer."""
    return [word.lower() for part in re.split(r"[^A-Za-z0-9]+", text) for word in _WORD.findall(part)]


def forbidden_uses(path: Path) -> list[str]:
    """``"LINE: WORD in TOKEN"`` / ``"LINE: WHAT: TEXT"`` for every forbidden word and pattern in ``path``."""
    source = path.read_text()
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.NAME, tokenize.STRING, tokenize.COMMENT):
            for word in _words(token.string):
                if word in FORBIDDEN_WORDS:
                    found.append(f"{token.start[0]}: {word!r} in {token.string[:60]!r}")
    for pattern, what in FORBIDDEN_PATTERNS:
        for match in re.finditer(pattern, source):
            found.append(f"{source.count(chr(10), 0, match.start()) + 1}: {what}: {match.group(0)!r}")
    return found


@pytest.mark.parametrize("name", GENERIC_FILES)
def test_generic_files_name_no_method_quantizer_or_bit_width(name):
    found = forbidden_uses(REPO / name)
    assert not found, f"{name} must stay generic (read kinds and backends from their registries):\n" + "\n".join(found)


def test_the_forbidden_word_check_catches_what_it_should(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('x = list(a)\nif a["probs"] == "lis":\n    pass\nkind = "LisAttentionValues"\n'
                      'if config.attn_bits == 4:\n    pass\nif spec.bits != 8:\n    pass\nPTFLayer = 1  # fqvit\n')
    found = "\n".join(forbidden_uses(sample))
    for expected in ("2: 'lis'", "4: 'lis'", "5: a bit-width test (attn_bits == 4)", "7: a bit-width test (bits == 4)",
                     "9: 'ptf'", "9: 'fqvit'"):
        assert expected in found, (expected, found)
    assert "1:" not in found  # "list" is not "lis"


# ------------------------------------------------------------------------------------------- import graph
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``intsim`` modules it imports (module-level and function-level imports alike). ``from P import
    N`` is an edge to ``P.N`` where that is a module, else to ``P``; an import of a name below a module is an edge
    to that module."""
    modules = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(target for alias in node.names if (target := resolve(alias.name)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    target = full if full in modules else resolve(base)
                    if target:
                        edges.add(target)
        edges.discard(module)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, deterministic order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_the_intsim_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"intsim.cli", "intsim.golden.cli", "intsim.interpreter", "intsim.kinds.registry"} <= set(graph)
    assert "intsim.cli_common" in graph["intsim.golden.cli"] and "intsim.cli" not in graph["intsim.golden.cli"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
