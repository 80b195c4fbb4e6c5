"""Helpers every ``intsim`` subcommand shares (:mod:`intsim.cli` and :mod:`intsim.golden.cli` both import them, and
neither imports the other for them).

Every command that reads a Program reads it through :func:`load_program_argument`, so a corrupt or hand-edited
Program (checked on load: docs/program.md) is refused the same way by ``run``, ``check``, ``golden`` and ``report``:
one ``ProgramError`` line, which ``intsim.cli.main`` prints with status 2.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from intsim.atomic import write_atomically

__all__ = ["check_output", "load_program_argument", "write_json"]


def write_json(path: str | None, payload: dict) -> None:
    """Write ``payload`` as indented, key-sorted JSON to ``path`` atomically (nothing for no path); print it."""
    if not path:
        return
    path = write_atomically(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")


def check_output(path: str | None, option: str) -> None:
    """Refuse an output path that is a folder before any work is done."""
    if path and Path(path).is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")


def load_program_argument(args):
    """The Program file ``args.program``, loaded and checked by :func:`intsim.program.load_program`; the one way
    every command reads a Program. A defect raises ``ProgramError`` (``main`` prints it as one line, status 2); the
    warning of a format-3 file is printed as one line ``intsim COMMAND: warning: ...``."""
    from intsim.program import UncheckedProgramWarning, load_program

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UncheckedProgramWarning)
        program = load_program(args.program)
    for warning in caught:
        print(f"intsim {args.command}: warning: {warning.message}", file=sys.stderr)
    return program
