"""Argument validation shared by every op: one place, run before any numba call.

Every public op validates its arguments here, in plain Python, so that a user sees a ``TypeError``,
``ValueError`` or ``OverflowError`` naming the op and the argument, never a numba typing traceback
and never a silently wrapped int64.
"""

from __future__ import annotations

import difflib

import numpy as np

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "as_int_array",
    "check_choice",
    "check_code_range",
    "declared_code_range",
    "check_int",
    "check_int_bounds_fit",
    "int_range",
    "max_abs",
    "smallest_code_dtype",
]


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


def check_int(value, name: str, op: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` as a Python int in ``[lo, hi]``, or raise naming ``op`` and ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{op}: {name} = {value} is outside its allowed range [{lo}, {hi}]")
    return value


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


def max_abs(array: np.ndarray) -> int:
    """The largest ``|value|`` of an integer array as an exact Python int (0 for an empty array)."""
    if array.size == 0:
        return 0
    return max(abs(int(array.min())), abs(int(array.max())))


def declared_code_range(bits, signed, op: str, *, max_bits: int) -> tuple[int, int]:
    """Validate a declared code width (``bits`` in ``[1, max_bits]``, ``signed`` a bool); return ``(qmin, qmax)``."""
    bits = check_int(bits, "bits", op, lo=1, hi=max_bits)
    if not isinstance(signed, (bool, np.bool_)):
        raise TypeError(f"{op}: signed must be a bool, got {type(signed).__name__} {signed!r}")
    return int_range(bits, bool(signed))


def check_code_range(array: np.ndarray, name: str, op: str, lo: int, hi: int) -> None:
    """Raise ``ValueError`` if any element of ``array`` lies outside ``[lo, hi]`` (its declared code range).

    No scan when the dtype alone proves the range (e.g. uint8 codes declared 8-bit unsigned).
    """
    info = np.iinfo(array.dtype)
    if array.size == 0 or (lo <= info.min and info.max <= hi):
        return
    found_lo, found_hi = int(array.min()), int(array.max())
    if found_lo < lo or found_hi > hi:
        bad = found_lo if found_lo < lo else found_hi
        index = np.unravel_index(int(np.argmax(array == bad)), array.shape)
        raise ValueError(
            f"{op}: {name} holds {bad} at index {tuple(int(i) for i in index)}, "
            f"outside its declared code range [{lo}, {hi}]"
        )


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
