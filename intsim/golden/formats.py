"""File formats of golden vectors: ``.npy``, ``$readmemh`` hex and packed little-endian binary.

Every tensor file holds one integer array in C order (row-major: the last axis varies fastest). Its hardware
width is the tensor's declared ``bits`` / ``signed`` (from the Program, or from the op's proven bound):

``npy``  numpy's format (version 1.0 header), dtype :func:`storage_dtype` (the narrowest of int8/uint8/int16/
         uint16/int32/uint32/int64 holding the declared range), little endian.
``hex``  ``$readmemh``: one element per line, :func:`hex_digits` = ``ceil(bits / 4)`` lowercase hex digits,
         two's complement at ``4 * hex_digits`` bits (a signed 22-bit ``-1`` is ``ffffff``), no ``0x``, no
         comments, no blank lines, every line (the last too) ends with ``\\n``.
``bin``  the raw elements, packed with no header and no padding: ``storage_dtype(bits, signed).itemsize`` bytes
         per element, little endian, two's complement.

Readers accept what a DUT may write: npy of any integer dtype, hex lines of 1 to ``hex_digits`` digits in either
case (leading zeros may be omitted; signed values are sign-extended from ``4 * hex_digits`` bits), ``\\r\\n`` line
ends. A malformed file raises ``ValueError`` naming the file (and, for hex, the line).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

__all__ = [
    "FORMATS",
    "FORMAT_LAYOUT",
    "encode",
    "hex_digits",
    "parse_formats",
    "read_tensor",
    "storage_dtype",
    "width_of_range",
]

FORMATS = ("npy", "hex", "bin")
FORMAT_LAYOUT = {  # recorded in every manifest's "layout", so a tree explains itself
    "element_order": "C order (row-major): the last axis varies fastest; shapes are the tensors' 'shape'",
    "npy": "numpy .npy version 1.0, dtype 'dtype' (the narrowest holding 'bits'), little endian",
    "hex": "$readmemh: one element per line, 'hex_digits' = ceil(bits / 4) lowercase digits, two's complement at "
           "4 * hex_digits bits, no 0x, no comments, every line ends with a newline",
    "bin": "packed little-endian two's complement, 'element_bytes' per element, no header, no padding",
}
MAX_BITS = 64  # signed; unsigned tensors may be at most 63 bits (they are stored as int64 above 32 bits)

_HEX_CHARS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_VALUE = np.full(256, 255, dtype=np.uint8)  # byte -> nibble value, 255 for a byte that is no hex digit
for _value, _char in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_char] = _value
    _HEX_VALUE[ord(chr(_char).upper())] = _value
_HEX_LINE = re.compile(rb"[0-9a-fA-F]+")


def parse_formats(text: str) -> tuple[str, ...]:
    """``"npy,hex"`` -> ``("npy", "hex")`` in the canonical order; ``ValueError`` for an unknown or empty list."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(FORMATS))
    if unknown or not names:
        raise ValueError(f"--formats {text!r}: choose one or more of {', '.join(FORMATS)} (comma-separated)")
    return tuple(name for name in FORMATS if name in names)


def width_of_range(low: int, high: int) -> tuple[int, bool]:
    """``(bits, signed)`` of the narrowest two's-complement (``low < 0``) or unsigned register holding
    ``[low, high]`` (at least 1 bit)."""
    low, high = int(low), int(high)
    if low < 0:
        return max(high.bit_length(), (-low - 1).bit_length()) + 1, True
    return max(high.bit_length(), 1), False


def storage_dtype(bits: int, signed: bool) -> np.dtype:
    """The narrowest numpy dtype holding every ``bits``-wide code (unsigned above 32 bits: int64)."""
    if not 1 <= bits <= (MAX_BITS if signed else MAX_BITS - 1):
        raise ValueError(f"a tensor of {bits} bits ({'signed' if signed else 'unsigned'}) cannot be stored")
    for size in (8, 16, 32):
        if bits <= size:
            return np.dtype(f"<{'i' if signed else 'u'}{size // 8}")
    return np.dtype("<i8")


def hex_digits(bits: int) -> int:
    """Hex digits per element: the declared width rounded up to a nibble."""
    return -(-bits // 4)


def _code_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def encode(array: np.ndarray, fmt: str, bits: int, signed: bool, *, name: str) -> bytes:
    """The bytes of ``array`` in format ``fmt`` at the declared width; ``ValueError`` naming the tensor
    ``name`` if a value does not fit ``bits`` / ``signed``."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype.kind not in "iu":
        raise TypeError(f"tensor {name!r}: golden vectors are integers, got dtype {array.dtype}")
    dtype = storage_dtype(bits, signed)
    if array.size:
        low, high = int(array.min()), int(array.max())
        qmin, qmax = _code_range(bits, signed)
        if low < qmin or high > qmax:
            raise ValueError(f"tensor {name!r} holds values in [{low}, {high}], outside its declared "
                             f"{bits}-bit {'signed' if signed else 'unsigned'} range [{qmin}, {qmax}]")
    stored = np.ascontiguousarray(array, dtype=dtype)
    if fmt == "npy":
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, stored, version=(1, 0), allow_pickle=False)
        return buffer.getvalue()
    if fmt == "bin":
        return stored.tobytes()
    if fmt == "hex":
        return _encode_hex(stored.reshape(-1), hex_digits(bits))
    raise ValueError(f"unknown golden format {fmt!r}; known: {', '.join(FORMATS)}")


def _encode_hex(flat: np.ndarray, digits: int) -> bytes:
    # two's complement at 4*digits bits: reinterpret int64 as uint64 (wraps negatives), keep the low bits
    words = flat.astype(np.int64).view(np.uint64)
    if digits < 16:
        words = words & np.uint64((1 << (4 * digits)) - 1)
    text = np.empty((flat.size, digits + 1), dtype=np.uint8)
    for position in range(digits):
        shift = np.uint64(4 * (digits - 1 - position))
        text[:, position] = _HEX_CHARS[((words >> shift) & np.uint64(15)).astype(np.intp)]
    text[:, digits] = ord("\n")
    return text.tobytes()


def read_tensor(path: str | Path, fmt: str, *, shape, bits: int, signed: bool) -> np.ndarray:
    """Read one tensor file as int64 of ``shape``; ``ValueError`` naming the file for a missing file, a file
    that is not of its format, a wrong element count or shape, or (hex) the first malformed line."""
    path = Path(path)
    shape = tuple(shape)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if fmt == "npy":
        return _read_npy(path, shape)
    data = path.read_bytes()
    count = int(np.prod(shape, dtype=np.int64))
    if fmt == "bin":
        dtype = storage_dtype(bits, signed)
        if len(data) != count * dtype.itemsize:
            raise ValueError(f"{path}: {len(data)} bytes, expected {count} elements of {dtype.itemsize} bytes "
                             f"({dtype.name}) = {count * dtype.itemsize} for shape {shape}")
        return np.frombuffer(data, dtype=dtype).astype(np.int64).reshape(shape)
    if fmt == "hex":
        return _decode_hex(data, path, count, hex_digits(bits), signed).reshape(shape)
    raise ValueError(f"{path}: unknown golden format {fmt!r}; known: {', '.join(FORMATS)}")


def _read_npy(path: Path, shape: tuple) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npy file: {error}") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iub":
        raise ValueError(f"{path}: holds dtype {getattr(array, 'dtype', type(array).__name__)}, expected integers")
    if array.shape != shape:
        raise ValueError(f"{path}: shape {array.shape}, expected {shape}")
    if array.dtype == np.uint64 and array.size and int(array.max()) >= 2**63:
        raise ValueError(f"{path}: uint64 values above 2**63 - 1 cannot be golden codes")
    return array.astype(np.int64)


def _decode_hex(data: bytes, path: Path, count: int, digits: int, signed: bool) -> np.ndarray:
    if data and not data.endswith(b"\n"):
        data += b"\n"  # tolerate a missing final newline
    raw = np.frombuffer(data, dtype=np.uint8)
    words = None
    stride = digits + 1
    if b"\r" not in data and raw.size % stride == 0 and np.all(raw[digits::stride] == ord("\n")):
        nibbles = _HEX_VALUE[raw.reshape(-1, stride)[:, :digits]]  # fast path: every line has `digits` digits
        if not np.any(nibbles == 255):
            words = np.zeros(nibbles.shape[0], dtype=np.uint64)
            for position in range(digits):
                words = (words << np.uint64(4)) | nibbles[:, position].astype(np.uint64)
    if words is None:
        words = _decode_hex_lines(data, path, digits)
    if words.size != count:
        raise ValueError(f"{path}: {words.size} lines, expected {count} (one element per line)")
    if signed:
        width = 4 * digits
        values = words.view(np.int64) if width == 64 else words.astype(np.int64)
        if width < 64:
            values = np.where(values >= 1 << (width - 1), values - (1 << width), values)
        return values
    if digits == 16 and words.size and int(words.max()) >= 2**63:
        raise ValueError(f"{path}: a value above 2**63 - 1 cannot be a golden code")
    return words.astype(np.int64)


def _decode_hex_lines(data: bytes, path: Path, digits: int) -> np.ndarray:
    """The slow path: line by line, so the first malformed line can be named."""
    lines = data.split(b"\n")[:-1]  # the data ends with a newline
    values = np.empty(len(lines), dtype=np.uint64)
    for number, line in enumerate(lines, 1):
        line = line.rstrip(b"\r")
        if not _HEX_LINE.fullmatch(line) or len(line) > digits:
            shown = line[:40].decode("ascii", "replace")
            raise ValueError(f"{path}: line {number}: {shown!r} is not 1 to {digits} hex digits "
                             f"(one element per line, no 0x, no comments)")
        values[number - 1] = int(line, 16)
    return values
