"""Interpreter backends: the protocol (:class:`~intsim.backends.base.Backend`) and a registry of named backends.

Built in: ``"numba"`` (:class:`~intsim.backends.numba_backend.NumbaBackend`, the default: the kernels of
:mod:`intsim.ops`, with its fusion table) and ``"torch"`` (:class:`~intsim.backends.torch_backend.TorchBackend`:
the torch twins on int64 tensors; option ``device``). :func:`register_backend` adds one;
:func:`get_backend` makes (and keeps, per name and options) an instance, so its prepared Programs are reused.
"""

from __future__ import annotations

from typing import Callable

from intsim.backends.base import ArrayBackend, Backend, Fusion, Prepared, plan_fusions

__all__ = ["ArrayBackend", "Backend", "Fusion", "Prepared", "default_backend", "get_backend", "plan_fusions",
           "register_backend"]


def _numba(**options):
    from intsim.backends.numba_backend import NumbaBackend

    return NumbaBackend(**options)


def _torch(**options):
    from intsim.backends.torch_backend import TorchBackend

    return TorchBackend(**options)


_FACTORIES: dict[str, Callable[..., Backend]] = {"numba": _numba, "torch": _torch}
_INSTANCES: dict[tuple, Backend] = {}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Make ``get_backend(name, **options)`` return ``factory(**options)`` (``ValueError`` if the name is taken)."""
    if name in _FACTORIES:
        raise ValueError(f"backend {name!r} is already registered")
    _FACTORIES[name] = factory


def get_backend(name: str = "numba", **options) -> Backend:
    """The backend ``name`` with ``options`` (e.g. ``get_backend("torch", device="cuda")``), one instance per name
    and options; ``ValueError`` naming the known backends for an unknown name."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(sorted(_FACTORIES))}")
    key = (name, tuple(sorted((option, str(value)) for option, value in options.items())))
    if key not in _INSTANCES:
        _INSTANCES[key] = _FACTORIES[name](**options)
    return _INSTANCES[key]


def default_backend() -> Backend:
    """The default backend: the validated numba kernels of :mod:`intsim.ops` and numpy data movement."""
    return get_backend("numba")
