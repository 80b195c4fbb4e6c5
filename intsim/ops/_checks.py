"""Backend-neutral argument validation: one place, run before any kernel (numba, numpy or torch).

Every public op, and its torch twin (:mod:`intsim.quant.torch_ops`), validates its arguments and proves its
int64 bounds through these functions, in plain Python, so that a user sees the same ``TypeError``,
``ValueError`` or ``OverflowError`` naming the op and the argument from every backend, never a numba typing
traceback and never a silently wrapped int64.

How a backend takes part
    Scalars (zero points, code ranges, bits, rounding modes) are Python ints and strings; per-channel
    parameters (multipliers, shifts, ``alpha``, ``bias``, table rows: at most one value per channel) are
    validated as small numpy arrays (:func:`per_channel_vector`) and come back as int64 numpy arrays, which a
    twin converts once to its own tensors. The (large) integer operands stay with their backend: a check sees
    one through the :class:`Operand` protocol, i.e. its shape, the value range of its dtype and exact
    reductions of its values as Python ints, computed by the backend only when a check needs them.
    :class:`ArrayOperand` is the numpy implementation; the torch twins have their own.
"""

from __future__ import annotations

import difflib
import math
from typing import Protocol

import numpy as np

from intsim.limits import INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "ArrayOperand",
    "Operand",
    "abs_max",
    "as_int_array",
    "check_bool",
    "check_choice",
    "check_code_range",
    "check_in_range",
    "check_int",
    "check_int_bounds_fit",
    "check_output_range",
    "column_abs_max",
    "declared_code_range",
    "int_range",
    "max_abs",
    "per_channel_vector",
    "size_of",
    "smallest_code_dtype",
]


# ------------------------------------------------------------------------------------------------ operands


class Operand(Protocol):
    """An integer operand as the backend-neutral checks see it; every value is an exact Python int.

    ``shape``          the operand's shape (a tuple of ints).
    ``dtype_range``    ``(min, max)`` of the operand's (original) dtype: lets a check skip a pass over the data.
    ``bounds()``       ``(min, max)`` of the values, ``None`` when the operand is empty.
    ``column_bounds()`` ``(lows, highs)``: lists of the per-channel minima and maxima over the last axis (one
                       channel for a 0-d operand); only called on non-empty operands.
    ``index_of(v)``    the index (a tuple) of the first element, in C order, equal to ``v`` (for error messages).
    """

    shape: tuple[int, ...]
    dtype_range: tuple[int, int]

    def bounds(self) -> tuple[int, int] | None: ...

    def column_bounds(self) -> tuple[list[int], list[int]]: ...

    def index_of(self, value: int) -> tuple[int, ...]: ...


class ArrayOperand:
    """The numpy :class:`Operand`: an integer array (validated by :func:`as_int_array`); ``bounds`` is computed once."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.shape = tuple(array.shape)
        info = np.iinfo(array.dtype)
        self.dtype_range = (int(info.min), int(info.max))
        self._bounds: tuple[int, int] | None | bool = False

    def bounds(self) -> tuple[int, int] | None:
        if self._bounds is False:
            self._bounds = (int(self.array.min()), int(self.array.max())) if self.array.size else None
        return self._bounds

    def column_bounds(self) -> tuple[list[int], list[int]]:
        columns = self.array.reshape(-1, self.shape[-1] if self.shape else 1)
        return columns.min(axis=0).tolist(), columns.max(axis=0).tolist()

    def index_of(self, value: int) -> tuple[int, ...]:
        index = np.unravel_index(int(np.argmax(self.array == value)), self.array.shape)
        return tuple(int(i) for i in index)


def abs_max(operand: Operand, zero_point: int = 0) -> int:
    """``max |x - zero_point|`` of an operand as an exact Python int (0 for an empty operand)."""
    found = operand.bounds()
    return 0 if found is None else max(abs(found[0] - zero_point), abs(found[1] - zero_point))


def column_abs_max(operand: Operand, zero_point: int = 0) -> list[int]:
    """``max |x - zero_point|`` per channel of the last axis (exact Python ints; non-empty operands only)."""
    lows, highs = operand.column_bounds()
    return [max(abs(lo - zero_point), abs(hi - zero_point)) for lo, hi in zip(lows, highs)]


def check_in_range(operand: Operand, name: str, op: str, lo: int, hi: int, *, where: str | None = None,
                   locate: bool = True) -> None:
    """Raise ``ValueError`` if a value of ``operand`` lies outside ``[lo, hi]``, naming the value and its index.

    No pass over the data when the dtype alone proves the range (e.g. uint8 codes declared 8-bit unsigned).
    ``where`` replaces the default ``"its declared code range [lo, hi]"``; ``locate=False`` leaves the index out.
    """
    dtype_lo, dtype_hi = operand.dtype_range
    if lo <= dtype_lo and dtype_hi <= hi:
        return
    found = operand.bounds()
    if found is None or (lo <= found[0] and found[1] <= hi):
        return
    bad = found[0] if found[0] < lo else found[1]
    at = f" at index {operand.index_of(bad)}" if locate else ""
    raise ValueError(f"{op}: {name} holds {bad}{at}, outside {where or f'its declared code range [{lo}, {hi}]'}")


# ------------------------------------------------------------------------------------------------ arrays


def as_int_array(value, name: str, op: str) -> np.ndarray:
    """Return ``value`` as a numpy integer array, or raise ``TypeError`` naming ``op`` and ``name``.

    Booleans, floats, objects and uint64 (which does not fit int64 arithmetic) are refused.
    """
    array = np.asarray(value)
    if array.dtype == np.bool_ or array.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must be an integer array, got dtype {array.dtype}")
    if array.dtype == np.uint64:
        raise TypeError(f"{op}: {name} has dtype uint64, which does not fit int64 arithmetic; use int64")
    return array


def check_code_range(array: np.ndarray, name: str, op: str, lo: int, hi: int) -> None:
    """:func:`check_in_range` of a numpy array (its declared code range ``[lo, hi]``)."""
    check_in_range(ArrayOperand(array), name, op, lo, hi)


def max_abs(array: np.ndarray, zero_point: int = 0) -> int:
    """``max |array - zero_point|`` of an integer array as an exact Python int (0 for an empty array)."""
    if array.size == 0:
        return 0
    return max(abs(int(array.min()) - zero_point), abs(int(array.max()) - zero_point))


def per_channel_vector(value, name: str, op: str, channels: int, lo: int, hi: int, *, of: str = "") -> np.ndarray:
    """A per-tensor (scalar or ``(1,)``) or per-channel (``(C,)``) integer parameter with every value in ``[lo, hi]``,
    returned as a contiguous int64 numpy array of shape ``(C,)``; ``of`` describes the channel axis in errors."""
    array = as_int_array(value, name, op)
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] not in (1, channels)):
        raise ValueError(
            f"{op}: {name} must be a scalar or a per-channel vector of length {channels}{of}, got shape {array.shape}"
        )
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < lo or high > hi:
            bad = low if low < lo else high
            at = f"at channel {int(np.argmax(array.reshape(-1) == bad))}" if array.size > 1 else "for every channel"
            raise ValueError(f"{op}: {name} = {bad} is outside its allowed range [{lo}, {hi}] ({name} holds {bad} {at})")
    return np.ascontiguousarray(np.broadcast_to(array.astype(np.int64).reshape(-1), (channels,)))


# ------------------------------------------------------------------------------------------------ scalars


def check_int(value, name: str, op: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` as a Python int in ``[lo, hi]``, or raise naming ``op`` and ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{op}: {name} = {value} is outside its allowed range [{lo}, {hi}]")
    return value


def check_bool(value, name: str, op: str) -> bool:
    """Return ``value`` as a bool, or raise ``TypeError`` unless it is a Python or numpy bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def check_choice(value, name: str, op: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{op}: unknown {name} {value!r}{hint}; known: {', '.join(map(repr, choices))}")


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """The inclusive code range of a ``bits``-wide integer: ``[-2**(bits-1), 2**(bits-1)-1]`` or ``[0, 2**bits-1]``."""
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def declared_code_range(bits, signed, op: str, *, max_bits: int) -> tuple[int, int]:
    """Validate a declared code width (``bits`` in ``[1, max_bits]``, ``signed`` a bool); return ``(qmin, qmax)``."""
    bits = check_int(bits, "bits", op, lo=1, hi=max_bits)
    return int_range(bits, check_bool(signed, "signed", op))


def check_output_range(qmin, qmax, zero_point, op: str, zero_point_name: str = "zero_point") -> tuple[int, int, int]:
    """An output code range inside int32 and its zero point inside it: ``(qmin, qmax, zero_point)`` as ints."""
    qmin = check_int(qmin, "qmin", op, lo=INT32_MIN, hi=INT32_MAX)
    qmax = check_int(qmax, "qmax", op, lo=qmin, hi=INT32_MAX)
    return qmin, qmax, check_int(zero_point, zero_point_name, op, lo=qmin, hi=qmax)


def check_int_bounds_fit(bound: int, what: str, op: str, limit: int = INT64_MAX) -> None:
    """Raise ``OverflowError`` when an exact worst-case ``bound`` (a Python int) exceeds ``limit``."""
    if bound > limit:
        raise OverflowError(
            f"{op}: {what} can reach {bound} (about 2**{bound.bit_length() - 1}), which overflows "
            f"int64 (limit {limit}); reduce the operand ranges, the multiplier or the shift"
        )


def smallest_code_dtype(qmin: int, qmax: int) -> np.dtype:
    """The narrowest of uint8/int8/uint16/int16/int32/int64 that holds every code in ``[qmin, qmax]``."""
    for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64):
        info = np.iinfo(dtype)
        if info.min <= qmin and qmax <= info.max:
            return np.dtype(dtype)
    raise OverflowError(f"code range [{qmin}, {qmax}] does not fit int64")


def size_of(shape) -> int:
    """The number of elements of an array of ``shape``."""
    return math.prod(shape)
