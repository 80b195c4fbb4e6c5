"""Writing a golden tree: tensor files in every format, their SHA-256, the manifest, one atomic rename.

:class:`TreeWriter` writes into a hidden staging folder beside the output (``.NAME.*.partial``) and renames it
into place only after the manifest is written, so a failed or interrupted run (any exception: ``KeyboardInterrupt``,
``SystemExit``, one raised by a signal handler) leaves no partial tree. It refuses an output that exists and is not
an empty folder (a golden tree is never overwritten silently), or whose folder cannot be written
(:func:`check_output_folder`, which the commands call before any long work).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from intsim.atomic import ordinary_permissions
from intsim.golden.formats import FORMATS, encode, hex_digits, storage_dtype
from intsim.golden.manifest import MANIFEST_NAME, dumps, validate_manifest

__all__ = ["TreeWriter", "check_output_folder", "tensor_record"]

_SAFE_PATH = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")  # what the manifest schema allows


def tensor_record(*, kind: str, step: int, shape, bits: int, signed: bool, zero_point: int = 0, scale=None) -> dict:
    """The manifest entry of one tensor, before its files are written (``files``/``sha256`` fill as they are)."""
    dtype = storage_dtype(bits, signed)
    return {
        "kind": kind, "step": step, "shape": [int(side) for side in shape], "dtype": dtype.name,
        "bits": int(bits), "signed": bool(signed), "zero_point": int(zero_point), "scale": scale,
        "hex_digits": hex_digits(bits), "element_bytes": dtype.itemsize, "files": {}, "sha256": {},
    }


def check_output_folder(output: str | Path, option: str = "--output") -> Path:
    """Refuse, with one line naming ``output``, an output that exists and is not an empty folder, or that cannot be
    created: its nearest existing parent is no folder or is not writable. Returns ``output`` as a Path."""
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"{option} {output} exists and is not an empty folder; golden trees are never "
                         f"overwritten: remove it or choose another folder")
    parent = output.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {output}: cannot create it, {parent} is not a folder; choose another {option}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {output}: cannot create it, folder {parent} is not writable (permission "
                         f"denied); choose another {option} or make {parent} writable")
    return output


class TreeWriter:
    """A golden tree being written to ``output`` in ``formats`` (use as a context manager: the staging folder is
    made on entering and removed on any exception, ``BaseException`` included)."""

    def __init__(self, output: str | Path, formats=FORMATS):
        self.output = check_output_folder(output)
        self.formats = tuple(formats)
        self.staging: Path | None = None
        self.files = 0
        self.bytes = 0

    def __enter__(self) -> "TreeWriter":
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(dir=self.output.parent, prefix=f".{self.output.name}.",
                                                 suffix=".partial"))
        except OSError as error:
            raise ValueError(f"--output {self.output}: cannot create it in {self.output.parent}: "
                             f"{error.strerror or error}; choose another --output") from None
        try:
            ordinary_permissions(self.staging, folder=True)  # mkdtemp makes it private; a golden tree is for sharing
        except BaseException:
            self._remove_staging()
            raise
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self._remove_staging()  # still there: not committed, an exception (of any kind) happened

    def _remove_staging(self) -> None:
        if self.staging is None or not self.staging.exists():
            return
        try:
            shutil.rmtree(self.staging, ignore_errors=True)
        except BaseException:  # a second signal during the cleanup: finish it, then let that exception through
            shutil.rmtree(self.staging, ignore_errors=True)
            raise

    def add(self, record: dict, stem: str, array: np.ndarray, *, name: str) -> None:
        """Write ``array`` as ``stem.<format>`` (path relative to the tree) in every format; append the paths and
        digests to ``record``. ``name`` (the tensor) appears in the error if a value leaves its declared width or
        its name is not filesystem-safe (letters, digits, ``_``, ``.``, ``-``)."""
        if not _SAFE_PATH.fullmatch(stem) or ".." in stem.split("/"):
            raise ValueError(f"tensor {name!r}: file name {stem!r} is not filesystem-safe (use letters, digits, _ . -)")
        for fmt in self.formats:
            data = encode(array, fmt, record["bits"], record["signed"], name=name)
            relative = f"{stem}.{fmt}"
            path = self.staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            record["files"].setdefault(fmt, []).append(relative)
            record["sha256"].setdefault(fmt, []).append(hashlib.sha256(data).hexdigest())
            self.files += 1
            self.bytes += len(data)

    def commit(self, manifest: dict) -> Path:
        """Validate and write the manifest, then move the tree into place; return the manifest's path."""
        if self.staging is None:
            raise RuntimeError("TreeWriter.commit outside its with block")
        validate_manifest(manifest, f"{self.output / MANIFEST_NAME} (being written)")
        text = dumps(manifest).encode()
        (self.staging / MANIFEST_NAME).write_bytes(text)
        self.files += 1
        self.bytes += len(text)
        if self.output.is_dir():
            self.output.rmdir()  # empty (checked at the start)
        os.rename(self.staging, self.output)
        self.staging = None
        return self.output / MANIFEST_NAME
