"""Helpers every ``intsim`` subcommand shares (:mod:`intsim.cli` and :mod:`intsim.golden.cli` both import them, and
neither imports the other for them).

Every command that reads a Program reads it through :func:`load_program_argument`, so a corrupt or hand-edited
Program (checked on load: docs/program.md) is refused the same way by ``run``, ``check``, ``golden`` and ``report``:
one ``ProgramError`` line, which ``intsim.cli.main`` prints with status 2.

:func:`interruptible` turns SIGINT, SIGTERM and SIGHUP into :class:`Interrupted` (a ``KeyboardInterrupt``, so every
``finally`` / ``except BaseException`` cleanup runs: atomic writers remove their hidden ``.partial`` files) and
:func:`quiet_broken_pipe` points stdout at the null device when the reader of a pipe has gone (``intsim ... | head``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import warnings
from pathlib import Path

from intsim.atomic import write_atomically

__all__ = ["Interrupted", "check_output", "close_progress_bars", "interrupted_message", "interruptible", "load_program_argument",
           "quiet_broken_pipe", "write_json"]

# The signals an interactive user or a job scheduler stops a command with; exit status 128 + number (130, 143, 129).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A stop signal received by the main thread. A ``KeyboardInterrupt`` subclass, so code that already cleans
    up on Ctrl-C (``finally``, ``except BaseException``) cleans up on SIGTERM and SIGHUP too."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def _raise_interrupted(signum, _frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def interruptible():
    """Within the block, SIGINT (unless ignored), SIGTERM and SIGHUP (unless ignored, e.g. under ``nohup``) raise
    :class:`Interrupted` in the main thread; the previous handlers are restored on exit. Outside the main thread
    (where handlers cannot be set) it does nothing."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if handler is signal.SIG_IGN:
                continue  # nohup / a background job: the user asked for this signal to be ignored
            previous[signum] = handler
            signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def interrupted_message(command: str | None, error: KeyboardInterrupt) -> tuple[str, int]:
    """``(one line, exit status)`` for an interrupted command: 130 for SIGINT / Ctrl-C, 143 SIGTERM, 129 SIGHUP."""
    signum = error.signum if isinstance(error, Interrupted) else int(signal.SIGINT)
    name = signal.Signals(signum).name
    prefix = f"intsim {command}" if command else "intsim"
    return (f"{prefix}: interrupted by {name}; no partial output was left (outputs appear only when complete)",
            128 + signum)


def close_progress_bars() -> None:
    """Close the tqdm bars still open (one left mid-line by an exception), so that a message printed next starts on
    a line of its own."""
    module = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(module, "tqdm", None), "_instances", ()) or ()):
        try:
            if getattr(bar, "sp", None) is not None and not hasattr(bar, "last_print_t"):
                # stopped inside tqdm's __init__ after its first display: let close() end that line
                bar.last_print_t = bar.start_t = bar._time()
            bar.close()
        except Exception:  # noqa: BLE001 - cosmetic; never hide the message that follows
            pass


def quiet_broken_pipe() -> int:
    """After a ``BrokenPipeError`` on stdout (the reader of ``intsim ... | head`` has gone): point stdout at the null
    device so that the interpreter's final flush raises nothing, and return the exit status, 141 (128 + SIGPIPE,
    what a shell reports for a command stopped by a closed pipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # stdout is not a real file (in-process tests): replace the object
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit
    return 141


def write_json(path: str | None, payload: dict) -> None:
    """Write ``payload`` as indented, key-sorted JSON to ``path`` atomically (nothing for no path); print it."""
    if not path:
        return
    path = write_atomically(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")


def check_output(path: str | None, option: str) -> None:
    """Refuse, before any work is done, an output path that is a folder or that cannot be written: its folder (or
    the nearest existing folder above it, when it is to be created) must be a writable folder, which is checked with
    ``os.access`` and by creating and removing a hidden probe file in it (``os.access`` misses some read-only
    mounts and network file systems)."""
    if not path:
        return
    if Path(path).is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")
    parent = Path(path).parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a folder, so the output folder {parent} "
                         f"cannot be created; give a path in a folder")
    needed = "" if existing == parent else f" (needed to create {parent})"
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: folder {existing} is not writable{needed}; give a path in a writable "
                         f"folder or change its permissions")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".intsim-probe.", suffix=".partial")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"{option} {path}: cannot create a file in folder {existing}{needed} ({reason}); give a "
                         f"path in a writable folder") from None


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
