"""Forms derived from constant operands (shifted weights, column sums, float32 copies, plans), kept per array.

Weights are Program constants: the interpreter hands the kernels the same array objects on every run, so what
the kernels derive from a weight (its PTF-shifted form, its column sums, its float32 copy, its product plan)
need not be derived again for every batch. :func:`derived` remembers such values while their source arrays are
the very same objects with the very same contents: each entry keeps a private copy of its sources and compares
it (``array_equal``: one pass over a weight's bytes, far cheaper than a derivation) before any reuse, so a weight
changed in place is derived again, never served stale. An entry holds its source arrays, so their ids cannot be
taken by other arrays while it lives. Least recently used entries are dropped beyond :data:`MAX_ENTRIES` entries
or :data:`MAX_BYTES` bytes (copies and derived arrays together). Derived arrays are returned read-only.
Called from the interpreter's thread only (never from the kernels' worker threads).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import numpy as np

MAX_ENTRIES = 512  # source arrays (or pairs) remembered
MAX_BYTES = 2**30  # ViT-Ti's forms take about 10 MB, DeiT-B's about 250-350 MB: below the limit, no form is derived twice


class _Entry:
    def __init__(self, sources: tuple[np.ndarray, ...]):
        self.sources = sources
        self.copies = tuple(np.array(a, copy=True) for a in sources)
        self.values: dict[str, object] = {}
        self.nbytes = sum(copy.nbytes for copy in self.copies)

    def holds(self, sources: tuple[np.ndarray, ...]) -> bool:
        return all(s is a for s, a in zip(self.sources, sources)) and all(
            np.array_equal(copy, a) for copy, a in zip(self.copies, sources)
        )


_ENTRIES: OrderedDict[tuple, _Entry] = OrderedDict()


def _nbytes(value) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    return sum(_nbytes(item) for item in value) if isinstance(value, tuple) else 0


def _read_only(value):
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif isinstance(value, tuple):
        for item in value:
            _read_only(item)


def derived(kind: str, sources: tuple[np.ndarray, ...], compute: Callable[..., object]):
    """``compute(*sources)``, remembered per ``kind`` while ``sources`` are the same arrays with the same contents.

    ``kind`` must name everything else the value depends on (e.g. ``"weight_plan/255"`` for a plan that also
    depends on an input bound of 255).
    """
    key = tuple((id(a), a.shape, a.strides, a.dtype.str) for a in sources)
    entry = _ENTRIES.get(key)
    if entry is None or not entry.holds(sources):
        entry = _ENTRIES[key] = _Entry(tuple(sources))
    _ENTRIES.move_to_end(key)
    if kind in entry.values:
        return entry.values[kind]
    value = compute(*sources)
    if any(value is a for a in sources):  # nothing derived: the caller's own array stays as it was
        return value
    _read_only(value)
    entry.values[kind] = value
    entry.nbytes += _nbytes(value)
    while len(_ENTRIES) > 1 and (len(_ENTRIES) > MAX_ENTRIES or sum(e.nbytes for e in _ENTRIES.values()) > MAX_BYTES):
        _ENTRIES.popitem(last=False)
    return value


def clear() -> None:
    """Forget every entry (tests; memory)."""
    _ENTRIES.clear()
