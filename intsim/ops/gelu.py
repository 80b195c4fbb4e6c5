"""GELU on integer codes: a per-code lookup table (the default, a ROM) and I-BERT's LUT-free i-GELU.

Two integer realisations of ``GELU(x) = x/2 * (1 + erf(x / sqrt(2)))`` (DESIGN.md section 2 item 7):

``lut`` (default)
    Plan time, :func:`build_gelu_lut` evaluates the exact float64 GELU once per input code and quantizes
    it to the output grid; the table is *data* (a Program attribute, listed in the golden manifest,
    a ROM of ``2**in_bits`` words in hardware), so float arithmetic there is allowed. Run time,
    :func:`lut_lookup` is a pure integer gather ``table[code - qmin]``: no arithmetic, no rounding.

``i_gelu`` (I-BERT, LUT-free)
    Plan time, :func:`i_gelu_constants` turns the accumulator scale ``s`` into the integers
    ``b_int``, ``c_int``, ``one`` (and the fixed shift 14). Run time, :func:`i_gelu` evaluates
    I-BERT's second-order erf polynomial with int64 adds, one square, an arithmetic shift and one
    multiply, on int32/int64 accumulator codes. The result is an int64 code at scale ``out_scale``
    (which is negative, see :class:`IGeluConstants`), normally requantized right after.

FQ-ViT computes GELU in float (no integer GELU exists there); I-ViT uses ShiftGELU (``x*sigmoid(1.702x)``),
which intsim does not implement. Every run-time function here is integer only.

Checks (backend-neutral: the kernels, the references and the torch twins call the same functions):
:func:`check_lut_lookup` (with :func:`check_lut_table_shape` and :func:`table_rows`) and :func:`check_i_gelu`.
:func:`lookup_table` is the numpy table (validated, narrowed to its output dtype) that fused kernels look codes up in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import prange

from intsim._jit import parallel_kernel
from intsim.limits import MAX_SHIFT
from intsim.limits import LUT_MAX_BITS as MAX_LUT_BITS
from intsim.ops._checks import (
    ArrayOperand,
    Operand,
    abs_max,
    as_int_array,
    check_in_range,
    check_int,
    check_int_bounds_fit,
    declared_code_range,
    int_range,
    smallest_code_dtype,
)

__all__ = [
    "IGELU_A",
    "IGELU_B",
    "IGELU_C",
    "IGELU_K",
    "IGELU_SHIFT",
    "IGeluConstants",
    "MAX_LUT_BITS",
    "build_gelu_lut",
    "check_i_gelu",
    "check_lut_lookup",
    "check_lut_table_shape",
    "gelu_real",
    "i_gelu",
    "i_gelu_constants",
    "i_gelu_reference",
    "lut_lookup",
    "lut_lookup_reference",
    "lookup_table",
    "table_rows",
]

# MAX_LUT_BITS = 16 (intsim.limits.LUT_MAX_BITS): a 65536-word ROM; wider inputs should use i_gelu or a requant first
MAX_OUT_BITS = 32

# I-BERT IntGELU constants (fairseq/quantization/utils/quant_modules.py): erf(u) ~ sgn(u) * (a*(min(|u|,-b)+b)**2 + c)
IGELU_A = -0.2888
IGELU_B = -1.769
IGELU_C = 1.0
IGELU_K = 1.4142  # I-BERT's sqrt(2), as written in its code (the polynomial was fitted with this value)
IGELU_SHIFT = 14  # I-BERT's n: y is divided by 2**14 (an arithmetic shift) to keep x*(y+one) small
IGELU_MIN_ONE = 16  # |one| = |floor(1/s_e)| below this resolves erf to fewer than 4 bits: refused


# --------------------------------------------------------------------------------------------------
# plan time helpers (float allowed: they turn float metadata into integer data)


def gelu_real(x: float) -> float:
    """Plan time: the exact GELU ``x/2 * (1 + erf(x/sqrt(2)))`` in float64 (``math.erf``)."""
    x = float(x)
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


def _check_scale(value, name: str, op: str) -> float:
    """A positive finite float scale, or ``TypeError``/``ValueError`` naming ``op`` and ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: {name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{op}: {name} = {value!r} must be a finite number > 0")
    return value


def build_gelu_lut(
    *,
    in_scale: float,
    in_zero_point: int,
    in_bits: int = 8,
    in_signed: bool = False,
    out_scale: float,
    out_zero_point: int,
    out_bits: int = 8,
    out_signed: bool = False,
) -> np.ndarray:
    """Plan time: the GELU table, one entry per input code (index ``code - in_qmin``).

    ``entry[i] = clip(round_half_even(gelu(real) / out_scale) + out_zero_point, out_qmin, out_qmax)`` with
    ``real = (in_qmin + i - in_zero_point) * in_scale`` and the exact float64 GELU (``math.erf``). The
    table is data, stored in the Program and the golden manifest (hardware holds it in a ROM), so
    floats here never reach the integer execution path; its values are reproducible because every step
    is a correctly rounded float64 operation plus ``math.erf`` (within 1 ulp on every libm).

    Returns a 1-D array of length ``2**in_bits`` in the narrowest dtype holding the output range
    (``smallest_code_dtype``). Raises ``TypeError``/``ValueError`` for non-positive or non-finite
    scales, zero points outside their code ranges, ``in_bits`` outside ``[1, 16]`` and ``out_bits``
    outside ``[1, 32]``.

    >>> build_gelu_lut(in_scale=0.5, in_zero_point=4, in_bits=3, out_scale=0.25, out_zero_point=1, out_bits=4).tolist()
    [1, 1, 0, 0, 1, 2, 4, 7]
    """
    op = "build_gelu_lut"
    in_scale = _check_scale(in_scale, "in_scale", op)
    out_scale = _check_scale(out_scale, "out_scale", op)
    in_bits = check_int(in_bits, "in_bits", op, lo=1, hi=MAX_LUT_BITS)
    out_bits = check_int(out_bits, "out_bits", op, lo=1, hi=MAX_OUT_BITS)
    in_qmin, in_qmax = int_range(in_bits, bool(in_signed))
    out_qmin, out_qmax = int_range(out_bits, bool(out_signed))
    in_zero_point = check_int(in_zero_point, "in_zero_point", op, lo=in_qmin, hi=in_qmax)
    out_zero_point = check_int(out_zero_point, "out_zero_point", op, lo=out_qmin, hi=out_qmax)
    entries = []
    for code in range(in_qmin, in_qmax + 1):
        value = round(gelu_real((code - in_zero_point) * in_scale) / out_scale) + out_zero_point  # round(): half-even
        entries.append(min(max(value, out_qmin), out_qmax))
    return np.array(entries, dtype=smallest_code_dtype(out_qmin, out_qmax))


# --------------------------------------------------------------------------------------------------
# lut_lookup: run time gather


def check_lut_table_shape(table_shape, bits, signed, with_rows: bool, op="lut_lookup") -> tuple[int, int]:
    """Validate lut_lookup's declared code width (``bits`` in ``[1, 16]``, ``signed``) and the table's shape: 1-D of
    ``2**bits`` entries, or with ``rows`` 2-D ``(R, 2**bits)`` with ``R >= 1``. Returns ``(qmin, qmax)``."""
    table_shape = tuple(table_shape)
    qmin, qmax = declared_code_range(bits, signed, op, max_bits=MAX_LUT_BITS)
    entries = qmax - qmin + 1  # 2**bits
    if not with_rows and (len(table_shape) != 1 or table_shape[0] != entries):
        raise ValueError(
            f"{op}: table must be 1-D with one entry per {int(bits)}-bit code (length {entries}), got shape {table_shape}"
        )
    if with_rows and (len(table_shape) != 2 or table_shape[0] < 1 or table_shape[1] != entries):
        raise ValueError(
            f"{op}: with rows, table must be 2-D (R, {entries}) with R >= 1 tables of one entry per {int(bits)}-bit "
            f"code, got shape {table_shape}"
        )
    return qmin, qmax


def table_rows(rows, codes_shape, table_count: int, op="lut_lookup") -> np.ndarray:
    """Validate ``rows``: integers ``(C,)`` (C = the codes' last axis) in ``[0, table_count)``; return int64."""
    rows = as_int_array(rows, "rows", op)
    channels = codes_shape[-1] if len(codes_shape) else None
    if rows.ndim != 1 or channels is None or rows.shape[0] != channels:
        raise ValueError(f"{op}: rows must have shape (C,) = ({channels},) (one table row per channel, the last "
                         f"axis of codes), got shape {rows.shape}")
    check_in_range(ArrayOperand(rows), "rows", op, 0, table_count - 1, locate=False,
                   where=f"the table's rows [0, {table_count - 1}]")
    return np.ascontiguousarray(rows, dtype=np.int64)


def check_lut_lookup(codes: Operand, table_shape, bits, signed, rows, op="lut_lookup"):
    """Validate a lut_lookup call (the contract of :func:`lut_lookup`): the table's shape, ``rows`` (when given) and
    every code inside the declared range. Returns ``(qmin, qmax, rows)`` with ``rows`` int64 ``(C,)`` or ``None``.
    Backend-neutral (``codes`` an :class:`~intsim.ops._checks.Operand`, ``rows`` a small host array)."""
    qmin, qmax = check_lut_table_shape(table_shape, bits, signed, rows is not None, op)
    if rows is not None:
        rows = table_rows(rows, codes.shape, table_shape[0], op)
    check_in_range(codes, "codes", op, qmin, qmax)
    return qmin, qmax, rows


def _narrowed_table(table: np.ndarray) -> np.ndarray:
    """The table in the smallest dtype holding its values (the output dtype), C-contiguous."""
    return np.ascontiguousarray(table.astype(smallest_code_dtype(int(table.min()), int(table.max()))))


def lookup_table(table, bits, signed, op="lut_lookup", *, rows=None):
    """Validate lut_lookup's ``table``, ``bits``, ``signed`` (and ``rows``: then ``table`` is 2-D, one table per
    row); return the table narrowed to its output dtype (C-contiguous) and the declared code range
    ``(qmin, qmax)``."""
    table = as_int_array(table, "table", op)
    qmin, qmax = check_lut_table_shape(table.shape, bits, signed, rows is not None, op)
    return _narrowed_table(table), qmin, qmax


def _prepare_lookup(codes, table, bits, signed, rows=None, op="lut_lookup"):
    """Validate lut_lookup's arguments once; return codes, the table narrowed to its output dtype, qmin and the
    int64 rows (``None`` for a 1-D table)."""
    codes = as_int_array(codes, "codes", op)
    table = as_int_array(table, "table", op)
    qmin, _, rows = check_lut_lookup(ArrayOperand(codes), table.shape, bits, signed, rows, op)
    return codes, _narrowed_table(table), qmin, rows


def lut_lookup_reference(codes, table, *, bits=8, signed=False, rows=None):
    """Reference (the specification): ``table[codes - qmin]``, or ``table[rows[c], codes[..., c] - qmin]`` with
    ``rows``, by numpy fancy indexing."""
    codes, table, qmin, rows = _prepare_lookup(codes, table, bits, signed, rows)
    if rows is None:
        return table[codes.astype(np.intp) - qmin]
    return table[rows, codes.astype(np.intp) - qmin]


_BLOCK = 1 << 14  # elements per parallel task: each thread runs a plain (vectorisable) loop over a block


@parallel_kernel
def _lut_kernel(raw_codes, full_table, out):
    n = raw_codes.shape[0]
    for block in prange((n + _BLOCK - 1) // _BLOCK):
        for i in range(block * _BLOCK, min(block * _BLOCK + _BLOCK, n)):
            out[i] = full_table[raw_codes[i]]


def _unsigned(dtype: np.dtype) -> np.dtype:
    """The unsigned integer dtype of the same width (a bit-for-bit view)."""
    return np.dtype(f"u{np.dtype(dtype).itemsize}")


def _raw_index_plan(codes: np.ndarray, table: np.ndarray, qmin: int):
    """Indices and a table such that ``full_table[raw] == table[codes - qmin]`` with unsigned ``raw``.

    8/16-bit codes are viewed bit for bit as uint8/uint16 and the table is spread over all 256/65536
    raw patterns (the patterns of codes outside the declared range stay 0 and are never read: codes
    were validated); wider code arrays are turned into uint16 indices ``code - qmin`` (bits <= 16).
    The kernel then compiles for at most two index types and four output widths.
    """
    flat = codes.reshape(-1)
    width = codes.dtype.itemsize
    if width <= 2:
        info = np.iinfo(codes.dtype)
        lo, hi = max(qmin, int(info.min)), min(qmin + table.shape[0] - 1, int(info.max))
        values = np.arange(lo, hi + 1, dtype=np.int64)
        full = np.zeros(2 ** (8 * width), dtype=table.dtype)
        full[values.astype(codes.dtype).view(_unsigned(codes.dtype))] = table[values - qmin]
        return np.ascontiguousarray(flat).view(_unsigned(codes.dtype)), full
    return (flat.astype(np.int64) - qmin).astype(np.uint16), table


@parallel_kernel
def _lut_rows_kernel(codes, table, rows, qmin, out):
    """``out[i, c] = table[rows[c], codes[i, c] - qmin]`` (codes ``(M, C)``, validated)."""
    for i in prange(codes.shape[0]):
        for c in range(codes.shape[1]):
            out[i, c] = table[rows[c], np.int64(codes[i, c]) - qmin]


def lut_lookup(codes, table, *, bits=8, signed=False, rows=None):
    """Look every code up in a per-code table: ``out = table[codes - qmin]`` (integer gather, no arithmetic).

    Integer contract
        ``codes``  integer array of ``bits``-wide codes (``signed`` selects ``[-2**(bits-1), 2**(bits-1)-1]``
                   or ``[0, 2**bits-1]``), ``bits`` in ``[1, 16]``; every code is checked against that range.
        ``table``  integer 1-D array of length exactly ``2**bits`` (index = ``code - qmin``), e.g. from
                   :func:`build_gelu_lut`.
        ``rows``   optional: integers ``(C,)`` in ``[0, R)``, one per channel (the last axis of ``codes``); then
                   ``table`` is 2-D ``(R, 2**bits)`` and ``out[..., c] = table[rows[c], codes[..., c] - qmin]``
                   (per-channel tables, e.g. GELU on power-of-two-factor codes: one table per pair of input and
                   output factors).
        result     same shape as ``codes``, dtype = the narrowest of uint8/int8/uint16/int16/int32/int64 that
                   holds ``[table.min(), table.max()]`` (``smallest_code_dtype`` of the table's value range).
    No rounding and no saturation happen here: both were decided when the table was built.

    Raises ``TypeError`` for non-integer codes or tables, ``ValueError`` for a wrong table length/shape,
    ``bits`` outside ``[1, 16]`` and codes outside the declared range.

    >>> import numpy as np
    >>> lut_lookup(np.array([-2, 0, 1], dtype=np.int8), np.array([10, 20, 30, 40]), bits=2, signed=True)
    array([10, 30, 40], dtype=uint8)
    """
    codes, table, qmin, rows = _prepare_lookup(codes, table, bits, signed, rows)
    if rows is not None:
        out = np.empty(codes.shape, dtype=table.dtype)
        if codes.size:
            view = _unsigned(table.dtype)  # a gather copies bits
            flat = np.ascontiguousarray(codes).reshape(-1, codes.shape[-1])
            _lut_rows_kernel(flat, table.view(view), rows, np.int64(qmin), out.view(view).reshape(flat.shape))
        return out
    out = np.empty(codes.size, dtype=table.dtype)
    if codes.size:
        raw, full = _raw_index_plan(np.ascontiguousarray(codes), table, qmin)
        view = _unsigned(table.dtype)  # a gather copies bits: an unsigned view of the same width is exact
        _lut_kernel(raw, full.view(view), out.view(view))
    return out.reshape(codes.shape)


# --------------------------------------------------------------------------------------------------
# i-GELU (I-BERT)


@dataclass(frozen=True)
class IGeluConstants:
    """The integer constants of I-BERT's i-GELU for one input scale ``s`` (from :func:`i_gelu_constants`).

    ``b_int``   ``floor(b / s')`` with ``s' = s / 1.4142`` and ``b = -1.769`` (negative; ``-b_int`` is the clip point).
    ``c_int``   ``floor((c / a) / s'**2)`` with ``a = -0.2888``, ``c = 1`` (negative).
    ``one``     ``floor(1 / s_e)`` with ``s_e = a * s'**2 * 2**shift`` (negative: ``a < 0``); the "1 +" of GELU.
    ``shift``   14 (I-BERT's ``n``).
    ``out_scale`` float metadata ``s * s_e / 2`` of the int64 result (negative, because ``s_e`` is: the codes
                carry the opposite sign of the real value, exactly as in I-BERT; a downstream requantizer
                absorbs the sign with a negative multiplier).

    The fields are validated on construction (also when a Program is loaded): ints, ``b_int``, ``c_int``,
    ``one`` at most -1, ``|one| >= 16``, ``shift`` in ``[0, 62]``, ``b_int**2 + |c_int| < 2**62`` (so the
    polynomial cannot overflow int64), ``out_scale`` finite and negative.
    """

    b_int: int
    c_int: int
    one: int
    shift: int
    out_scale: float

    def __post_init__(self):
        op = "IGeluConstants"
        for name in ("b_int", "c_int", "one", "shift"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{op}: {name} must be an integer, got {type(value).__name__} {value!r}")
            object.__setattr__(self, name, int(value))
        check_int(self.b_int, "b_int", op, hi=-1)
        check_int(self.c_int, "c_int", op, hi=-1)
        check_int(self.one, "one", op, hi=-IGELU_MIN_ONE)
        check_int(self.shift, "shift", op, lo=0, hi=MAX_SHIFT)
        if self.b_int**2 + abs(self.c_int) >= 2**62:
            raise OverflowError(
                f"{op}: b_int**2 + |c_int| = {self.b_int**2 + abs(self.c_int)} reaches 2**62; the erf polynomial "
                f"could overflow int64 (the input scale is too small)"
            )
        if isinstance(self.out_scale, (bool, np.bool_)) or not isinstance(self.out_scale, (int, float, np.floating)):
            raise TypeError(f"{op}: out_scale must be a float, got {type(self.out_scale).__name__}")
        object.__setattr__(self, "out_scale", float(self.out_scale))
        if not math.isfinite(self.out_scale) or self.out_scale >= 0.0:
            raise ValueError(f"{op}: out_scale = {self.out_scale!r} must be finite and negative (s * s_e / 2, a < 0)")


def i_gelu_constants(scale: float) -> IGeluConstants:
    """Plan time: I-BERT's i-GELU integer constants for accumulator codes at real scale ``scale``.

    ``s' = scale / 1.4142``; ``b_int = floor(-1.769 / s')``; ``c_int = floor((1 / -0.2888) / s'**2)``;
    ``s_e = -0.2888 * s'**2 * 2**14``; ``one = floor(1 / s_e)``; ``out_scale = scale * s_e / 2``.
    Computed in float64 (I-BERT computes them in float32 torch tensors, so its ``b_int``/``c_int`` may
    differ by one for some scales; intsim's float64 values are the specification).

    Raises ``TypeError``/``ValueError`` for a non-positive or non-finite scale; ``ValueError`` when the
    scale is so coarse that ``|one| < 16`` (erf resolved to fewer than 4 bits: use the LUT, or i-GELU on
    the int32 accumulator whose scale ``s_x * s_w`` is fine); ``OverflowError`` when the scale is so fine
    that ``b_int**2 + |c_int| >= 2**62``.

    >>> c = i_gelu_constants(0.001)
    >>> c.b_int, c.c_int, c.one, c.shift
    (-2502, -6925075, -423, 14)
    """
    op = "i_gelu_constants"
    scale = _check_scale(scale, "scale", op)
    s_prime = scale / IGELU_K
    s_e = IGELU_A * s_prime**2 * 2**IGELU_SHIFT
    b_int = math.floor(IGELU_B / s_prime)
    c_int = math.floor((IGELU_C / IGELU_A) / s_prime**2)
    one = math.floor(1.0 / s_e)
    if -one < IGELU_MIN_ONE:
        raise ValueError(
            f"{op}: scale = {scale!r} is too coarse for i-GELU: one = floor(1/s_e) = {one}, |one| must be >= "
            f"{IGELU_MIN_ONE} (scale <= about 5.1e-3); apply i-GELU to a finer accumulator or use the GELU LUT"
        )
    if b_int**2 + abs(c_int) >= 2**62:
        raise OverflowError(
            f"{op}: scale = {scale!r} is too fine for i-GELU: b_int**2 + |c_int| = {b_int**2 + abs(c_int)} "
            f"overflows int64 headroom 2**62 (scale must be above about 1e-9)"
        )
    return IGeluConstants(b_int=b_int, c_int=c_int, one=one, shift=IGELU_SHIFT, out_scale=scale * s_e / 2.0)


def check_i_gelu(x: Operand, constants, op="i_gelu") -> IGeluConstants:
    """Validate an i_gelu call (``constants`` an :class:`IGeluConstants`, else ``TypeError``) and prove that every
    intermediate fits int64 from the exact ``max|x|`` (``OverflowError``). Backend-neutral (``x`` an Operand)."""
    if not isinstance(constants, IGeluConstants):
        raise TypeError(f"{op}: constants must be an IGeluConstants (from i_gelu_constants), got {type(constants).__name__}")
    # |y_pre| = |(t + b_int)**2 + c_int| <= b_int**2 + |c_int| (t + b_int in [b_int, 0]); proven < 2**62 at construction.
    poly_bound = constants.b_int**2 + abs(constants.c_int)
    factor_bound = (poly_bound >> constants.shift) + 1 + abs(constants.one)  # |y + one| after the floor shift
    check_int_bounds_fit(abs_max(x) * factor_bound, "x * (y + one)", op)
    return constants


def _prepare_i_gelu(x, constants, op="i_gelu"):
    """Validate i_gelu's arguments once and prove that every intermediate fits int64 (:func:`check_i_gelu`)."""
    x = as_int_array(x, "x", op)
    check_i_gelu(ArrayOperand(x), constants, op)
    return x


def i_gelu_reference(x, constants):
    """Reference (the specification), I-BERT's i-GELU on int64: see :func:`i_gelu`."""
    x = _prepare_i_gelu(x, constants).astype(np.int64)
    sign = np.sign(x)
    t = np.minimum(np.abs(x), -constants.b_int)
    y = sign * ((t + constants.b_int) ** 2 + constants.c_int)
    y = y >> constants.shift  # floor(y / 2**14)
    return x * (y + constants.one)


@parallel_kernel
def _i_gelu_kernel(x, b_int, c_int, one, shift, out):
    n = x.shape[0]
    for block in prange((n + _BLOCK - 1) // _BLOCK):
        for i in range(block * _BLOCK, min(block * _BLOCK + _BLOCK, n)):
            v = np.int64(x[i])
            t = -v if v < 0 else v
            if t > -b_int:
                t = -b_int
            p = (t + b_int) * (t + b_int) + c_int
            if v < 0:
                p = -p
            elif v == 0:
                p = np.int64(0)
            out[i] = v * ((p >> shift) + one)


def i_gelu(x, constants):
    """I-BERT's LUT-free integer GELU on accumulator codes ``x`` at scale ``s`` (constants from ``i_gelu_constants(s)``).

    Integer algorithm (all int64; ``>>`` is an arithmetic shift, i.e. floor)::

        sgn = sign(x)                                  # -1, 0, +1
        t   = min(|x|, -b_int)                         # clip at |x*s'| = 1.769
        y   = sgn * ((t + b_int)**2 + c_int)           # erf(x*s/sqrt2) at scale a*s'**2 (second-order polynomial)
        y   = y >> 14                                  # erf at scale s_e = a*s'**2*2**14
        out = x * (y + one)                            # GELU at scale out_scale = s*s_e/2

    Integer contract
        ``x``       any integer array (typically the int32 or int64 fc1 accumulator), real value ``x * s``.
        bounds      ``|(t + b_int)**2 + c_int| <= b_int**2 + |c_int| < 2**62`` (checked when the constants are
                    built); ``|out| <= max|x| * (((b_int**2 + |c_int|) >> 14) + 1 + |one|)``, proven from the
                    actual ``max|x|`` before computing (``OverflowError`` otherwise; int32 accumulators fit
                    for every scale above about 6e-7).
        result      int64 codes at the negative scale ``constants.out_scale`` (same sign convention as I-BERT).
        rounding    two floors, both I-BERT's: ``b_int``/``c_int``/``one`` at plan time, ``>> 14`` at run time.
    Accuracy: I-BERT's polynomial is within 0.0182 of GELU in real arithmetic; the integer constants add
    at most about ``|x*s|/2 * (1.03*s' + 2*|s_e|)`` (floors of ``b_int``, ``c_int``, ``one`` and of the shift).

    >>> import numpy as np
    >>> c = i_gelu_constants(0.001)
    >>> out = i_gelu(np.array([-3000, -500, 0, 500, 3000]), c)
    >>> out.tolist()
    [3000, 122500, 0, -301000, -2538000]
    >>> [round(v * c.out_scale, 3) + 0.0 for v in out.tolist()]  # GELU(-3, -0.5, 0, 0.5, 3) = -0.004, -0.154, 0, 0.346, 2.996
    [-0.004, -0.145, 0.0, 0.356, 3.002]
    """
    x = _prepare_i_gelu(x, constants)
    narrow = x.dtype.itemsize <= 2 or x.dtype == np.int32  # int32 holds every such code: one compiled variant
    flat = np.ascontiguousarray(x, dtype=np.int32 if narrow else np.int64).reshape(-1)
    out = np.empty(flat.shape[0], dtype=np.int64)
    if flat.shape[0]:
        _i_gelu_kernel(
            flat, np.int64(constants.b_int), np.int64(constants.c_int), np.int64(constants.one),
            np.int64(constants.shift), out,
        )
    return out.reshape(x.shape)
