"""The backend protocol of the interpreter, and :class:`ArrayBackend`, the base both built-in backends share.

A backend is what :func:`intsim.interpreter.run_program` runs a Program on:

``name``
    a label (``"numba"``, ``"torch"``), for messages only: nothing branches on it.
``ops``
    the op functions, by the names of :mod:`intsim.ops` and with their signatures (the numba kernels, or the torch
    twins of :mod:`intsim.quant.torch_ops`); every kind's executor calls ``backend.ops.<function>``.
``fusions``
    the backend's fusion table: :class:`Fusion` entries (op sequences it can run as one kernel), tried in order
    at each op; ``()`` for none.
``prepare(program) -> Prepared``
    the Program's constants converted once to the backend's arrays, and its fusion plan; a backend keeps it per
    Program (not per batch), so a run converts nothing.
data movement
    ``patchify(pixels, patch)``, ``split(x, sizes)``, ``prepend(x, token)``, ``broadcast_to(x, shape)``,
    ``to_int32(x)`` (the logits returned), on the backend's arrays.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

__all__ = ["ArrayBackend", "Backend", "Fusion", "Prepared", "plan_fusions", "readers_of"]

Fetch = Callable[[str], Any]


@dataclass(frozen=True)
class Fusion:
    """One entry of a backend's fusion table.

    ``match(program, index, readers)``: how many ops starting at ``index`` this fusion runs as one (0: none);
    ``readers``: tensor name -> how many op inputs read it. ``run(ops, fetch)``: the outputs of the group's last
    op(s) (one per op, in order, from the end), or ``None`` where the fused kernel declines (then the ops run one
    by one). A fused run must compute exactly the composition of the ops.
    """

    name: str
    match: Callable[[Any, int, Mapping[str, int]], int]
    run: Callable[[list, Fetch], list | None]


@dataclass(frozen=True)
class Prepared:
    """A Program made ready for one backend: ``constants`` (name -> backend array) and ``fusions`` (start index ->
    (number of ops, runner))."""

    constants: Mapping[str, Any]
    fusions: Mapping[int, tuple[int, Callable]] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """What :func:`intsim.interpreter.run_program` needs of a backend (see the module docstring)."""

    name: str
    ops: Any
    fusions: tuple[Fusion, ...]

    def prepare(self, program) -> Prepared: ...

    def patchify(self, pixels, patch: int): ...

    def split(self, x, sizes): ...

    def prepend(self, x, token): ...

    def broadcast_to(self, x, shape): ...

    def to_int32(self, x): ...


def readers_of(program) -> dict[str, int]:
    """Tensor name -> the number of op inputs that read it."""
    readers: dict[str, int] = {}
    for op in program.ops:
        for name in op.inputs:
            readers[name] = readers.get(name, 0) + 1
    return readers


def plan_fusions(program, fusions) -> dict[int, tuple[int, Callable]]:
    """Start index -> (number of ops, runner) for every op where an entry of ``fusions`` matches (the first wins)."""
    if not fusions:
        return {}
    readers = readers_of(program)
    found = {}
    for index in range(len(program.ops)):
        for fusion in fusions:
            count = fusion.match(program, index, readers)
            if count:
                found[index] = (count, fusion.run)
                break
    return found


class ArrayBackend:
    """A backend over one array library: :meth:`prepare` converts each constant with :meth:`asarray` and plans
    :attr:`fusions` once per Program, and keeps the result while the Program lives (a Program whose ops or constant
    arrays were replaced since is prepared again; constant arrays are taken as immutable)."""

    name = "array"
    fusions: tuple[Fusion, ...] = ()

    def __init__(self, ops_module):
        self.ops = ops_module
        self._prepared: dict[int, tuple] = {}

    def asarray(self, constant: np.ndarray):
        """One Program constant as this backend's array."""
        return constant

    def prepare(self, program) -> Prepared:
        key = id(program)
        fingerprint = (tuple(map(id, program.ops)),
                       tuple((name, id(array)) for name, array in program.constants.items()))
        cached = self._prepared.get(key)
        if cached is not None and cached[0]() is program and cached[1] == fingerprint:
            return cached[2]
        prepared = Prepared({name: self.asarray(array) for name, array in program.constants.items()},
                            plan_fusions(program, self.fusions))
        cache = self._prepared
        reference = weakref.ref(program, lambda _, key=key: cache.pop(key, None))
        cache[key] = (reference, fingerprint, prepared)
        return prepared

    def patchify(self, pixels, patch: int):
        raise NotImplementedError

    def split(self, x, sizes):
        raise NotImplementedError

    def prepend(self, x, token):
        raise NotImplementedError

    def broadcast_to(self, x, shape):
        raise NotImplementedError

    def to_int32(self, x):
        raise NotImplementedError
