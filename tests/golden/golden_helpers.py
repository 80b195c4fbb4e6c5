"""Helpers shared by the golden-vector tests (a plain module: ``conftest`` names clash across test folders)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "golden"
_PROGRESS = re.compile(r"\[\d+:\d\d")  # a tqdm bar


def message_lines(err: str) -> list[str]:
    """The stderr lines that are not progress bars."""
    return [line for line in re.split(r"[\r\n]", err) if line.strip() and not _PROGRESS.search(line)]


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
