"""Hypothesis strategies for GELU (per-code LUT, I-BERT i-GELU) and residual add, corner values mixed in.

Every strategy returns a ``dict`` of keyword arguments that the op (and its reference) accepts, so a user's
hardware model can be driven with the same cases as intsim's property tests::

    from intsim.testing import gelu_strategies as gst

    @given(gst.residual_add_cases())
    def test_my_adder(case):
        assert (my_adder(**case) == intsim.ops.residual.residual_add(**case)).all()

All bounds are keyword-only; shapes are small so that the ``ci`` profile runs quickly.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from intsim.ops._checks import int_range
from intsim.ops.residual import MAX_SHIFT, MULTIPLIER_BITS
from intsim.testing.strategies import int_arrays, int_codes, rounding_modes

__all__ = [
    "scales",
    "gelu_lut_specs",
    "lut_lookup_cases",
    "lut_lookup_rows_cases",
    "i_gelu_scales",
    "i_gelu_cases",
    "residual_add_cases",
]

_SMALL_SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, max_side=8)


def scales(*, lo: float = 1e-4, hi: float = 1.0) -> st.SearchStrategy[float]:
    """Positive float scales in ``[lo, hi]``, log-uniform-ish (``2**u`` with a random exponent), round values mixed in."""
    exponents = st.floats(min_value=float(np.log2(lo)), max_value=float(np.log2(hi)), allow_nan=False)
    round_values = [v for v in (2.0**-8, 2.0**-4, 1 / 16, 0.1, 0.05, 0.02, 1 / 255) if lo <= v <= hi]
    drawn = exponents.map(lambda e: float(min(max(2.0**e, lo), hi)))
    return (st.sampled_from(round_values) | drawn) if round_values else drawn


@st.composite
def gelu_lut_specs(draw, *, max_in_bits: int = 8, max_out_bits: int = 16):
    """Keyword arguments for :func:`intsim.ops.gelu.build_gelu_lut`: bits, signedness, scales, zero points.

    Input reals cover about ``[-8, 8]`` (the range of a ViT fc1 output); the output scale is chosen so
    that the largest GELU value is within 0.25x..2x of the output range, so both saturation and unused
    codes occur.
    """
    in_bits = draw(st.integers(2, max_in_bits))
    in_signed = draw(st.booleans())
    in_qmin, in_qmax = int_range(in_bits, in_signed)
    in_zero_point = draw(int_codes(lo=in_qmin, hi=in_qmax))
    span = in_qmax - in_qmin
    in_scale = draw(scales(lo=2.0 / span, hi=16.0 / span))
    out_bits = draw(st.integers(2, max_out_bits))
    out_signed = draw(st.booleans())
    out_qmin, out_qmax = int_range(out_bits, out_signed)
    out_zero_point = draw(int_codes(lo=out_qmin, hi=out_qmax))
    largest = max(abs(in_qmin - in_zero_point), abs(in_qmax - in_zero_point)) * in_scale
    out_scale = largest / (out_qmax - out_qmin) * draw(st.floats(min_value=0.25, max_value=2.0))
    return dict(
        in_scale=in_scale, in_zero_point=in_zero_point, in_bits=in_bits, in_signed=in_signed,
        out_scale=max(out_scale, 1e-6), out_zero_point=out_zero_point, out_bits=out_bits, out_signed=out_signed,
    )


@st.composite
def lut_lookup_cases(draw, *, max_bits: int = 10, shape=_SMALL_SHAPES):
    """Keyword arguments for :func:`intsim.ops.gelu.lut_lookup`: ``codes``, ``table``, ``bits``, ``signed``.

    The table holds arbitrary values (8 to 32-bit, signed or not, in a possibly wider dtype) so that
    the output dtype narrowing is exercised; codes span the whole declared range, ends included.
    """
    bits = draw(st.integers(1, max_bits))
    signed = draw(st.booleans())
    codes = draw(int_arrays(bits=bits, signed=signed, shape=shape))
    entry_bits = draw(st.sampled_from([8, 16, 32]))
    entry_signed = draw(st.booleans())
    entry_lo, entry_hi = int_range(entry_bits, entry_signed)
    table_dtype = draw(st.sampled_from([None, np.int64]))
    table = draw(int_arrays(lo=entry_lo, hi=entry_hi, shape=(2**bits,), dtype=table_dtype))
    return dict(codes=codes, table=table, bits=bits, signed=signed)


@st.composite
def lut_lookup_rows_cases(draw, *, max_bits: int = 8, max_rows: int = 5):
    """:func:`lut_lookup_cases` with per-channel tables: ``table (R, 2**bits)`` and ``rows (C,)`` in ``[0, R)``,
    ``C`` the codes' last axis (at least 1-D codes)."""
    case = draw(lut_lookup_cases(max_bits=max_bits, shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6)))
    count = draw(st.integers(1, max_rows))
    extra = draw(int_arrays(lo=int(case["table"].min()), hi=int(case["table"].max()), shape=(count - 1, case["table"].shape[0]),
                            dtype=case["table"].dtype))
    table = np.concatenate([case["table"][None, :], extra.astype(case["table"].dtype)])
    rows = draw(int_arrays(lo=0, hi=count - 1, shape=(case["codes"].shape[-1],), dtype=draw(st.sampled_from([np.uint8, np.int64]))))
    return dict(case, table=table, rows=rows)


def i_gelu_scales(*, lo: float = 1e-5, hi: float = 2e-3) -> st.SearchStrategy[float]:
    """Accumulator scales for i-GELU: ``s_x * s_w`` of an fc1 output is about 1e-5..2e-3 in a ViT."""
    return scales(lo=lo, hi=hi)


@st.composite
def i_gelu_cases(draw, *, max_real: float = 10.0, shape=_SMALL_SHAPES, acc_dtype=None):
    """``dict(x=..., scale=...)``: accumulator codes ``x`` whose reals ``x * scale`` lie in ``[-max_real, max_real]``.

    Corner codes around the clip point ``-b_int`` and around 0 are mixed in. ``acc_dtype`` defaults to
    a random choice of int32/int64.
    """
    scale = draw(i_gelu_scales())
    bound = min(int(max_real / scale), 2**31 - 1)
    dtype = acc_dtype if acc_dtype is not None else draw(st.sampled_from([np.int32, np.int64]))
    clip = int(1.769 * 1.4142 / scale)
    corners = [c for c in (clip - 1, clip, clip + 1, clip + 2, -clip - 1, -clip, -clip + 1) if -bound <= c <= bound]
    elements = int_codes(lo=-bound, hi=bound) | st.sampled_from(corners or [0])
    x = draw(hnp.arrays(dtype=dtype, shape=shape, elements=elements))
    return dict(x=x, scale=scale)


@st.composite
def residual_add_cases(draw, *, per_channel: bool | None = None, code_bits=(8, 16), wide: bool = False,
                       shape=_SMALL_SHAPES):
    """Keyword arguments for :func:`intsim.ops.residual.residual_add` (and its reference).

    ``a`` and ``b`` share one shape, each with its own bit width from ``code_bits`` and signedness,
    zero points in their code ranges; multipliers ``|M| < 2**31`` (negative too) and shifts in
    ``[0, 62]``, scalar or per channel (``per_channel=None`` draws both kinds); the output is a 4..16-bit
    signed or unsigned range with its zero point. With ``wide=True`` the operands are int64 with up to
    48-bit values, so that some cases overflow int64 (for the ``OverflowError`` tests).
    """
    drawn_shape = draw(shape)
    operands = {}
    for name in ("a", "b"):
        if wide:
            array = draw(int_arrays(bits=48, signed=True, shape=drawn_shape, dtype=np.int64))
            zero_point = draw(int_codes(lo=-(2**31), hi=2**31 - 1))
        else:
            bits, signed = draw(st.sampled_from(list(code_bits))), draw(st.booleans())
            lo, hi = int_range(bits, signed)
            array = draw(int_arrays(bits=bits, signed=signed, shape=drawn_shape))
            zero_point = draw(int_codes(lo=lo, hi=hi))
        operands[name], operands[f"{name}_zero_point"] = array, zero_point
    channels = drawn_shape[-1]
    per_channel = draw(st.booleans()) if per_channel is None else per_channel
    m_hi = 2**MULTIPLIER_BITS - 1
    if per_channel:
        lists = st.lists(int_codes(lo=-m_hi, hi=m_hi), min_size=channels, max_size=channels)
        a_multiplier = np.array(draw(lists), dtype=np.int64)
        b_multiplier = np.array(draw(lists), dtype=np.int64)
        shift = np.array(draw(st.lists(int_codes(lo=0, hi=MAX_SHIFT), min_size=channels, max_size=channels)),
                         dtype=np.int64)
    else:
        a_multiplier, b_multiplier = draw(int_codes(lo=-m_hi, hi=m_hi)), draw(int_codes(lo=-m_hi, hi=m_hi))
        shift = draw(int_codes(lo=0, hi=MAX_SHIFT))
    out_bits, out_signed = draw(st.integers(4, 16)), draw(st.booleans())
    qmin, qmax = int_range(out_bits, out_signed)
    return dict(
        **operands, a_multiplier=a_multiplier, b_multiplier=b_multiplier, shift=shift,
        out_zero_point=draw(int_codes(lo=qmin, hi=qmax)), qmin=qmin, qmax=qmax, rounding=draw(rounding_modes()),
    )
