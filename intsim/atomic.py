"""Outputs that appear whole or not at all, with ordinary permissions.

A file is written to a hidden ``.NAME.xxxx.partial`` beside its destination and renamed over it when complete
(``os.replace``: atomic on one file system); on any error, including ``KeyboardInterrupt``, the partial file is
removed. ``tempfile`` creates private files (mode 0600) and folders (0700); outputs are for sharing, so they get
the permissions an ordinary ``open``/``mkdir`` would give under the process's umask (typically 0644 / 0755).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["ordinary_permissions", "write_atomically"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ordinary_permissions(path: Path, *, folder: bool = False) -> None:
    """Give ``path`` the mode a plain ``open`` (0666) or ``mkdir`` (0777) would, less the umask."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def write_atomically(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` whole or not at all (see the module docstring); creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb" if isinstance(data, bytes) else "w") as stream:
            stream.write(data)
        ordinary_permissions(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
