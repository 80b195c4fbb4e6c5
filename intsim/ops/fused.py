"""Fused fast paths of the interpreter: several registered ops in one pass, bit-identical to their composition.

These are not new ops (they are not in :data:`intsim.ops.OPS` and not in the Program vocabulary): each function
computes exactly what the listed sequence of public ops computes, with the same validation and the same errors,
but without materialising the intermediate tensors. The interpreter uses them when no trace hook is installed.

:func:`linear_requantize`
    ``requantize(integer_linear(x, weight, bias), ...)``, per output-channel parameters: the requantization is the
    epilogue of the row-blocked product (:func:`intsim.ops.matmul.row_blocked_product` in float32, or
    :func:`intsim.ops.int8_gemm.row_blocked` in int32), so no int64
    ``(rows, N)`` accumulator is written to memory. Several consecutive channel groups may carry their own zero
    point and code range (``Linear -> Split -> Requantize`` per part, e.g. q, k, v).
:func:`attention`
    ``AttentionScores -> Requantize -> LogIntSoftmax | UniformSoftmax [-> LogEncode] -> attn @ V -> Requantize`` per
    (batch, head) in one numba kernel: the ``(N, N)`` scores, logits and probabilities of one head live in a
    thread's scratch memory, never in a ``(B, H, N, N)`` tensor.

Both return ``None`` when their proof obligations (below) do not hold for the given operands, and the caller
must then run the ops one by one (which computes the same result or raises the op's own error).

Exactness
    Linear: uint8 codes against an int8 weight take the exact int32 product of :mod:`intsim.ops.int8_gemm` where it
    is available (onnxruntime, probed); else the plan of :func:`intsim.ops.matmul.plan_weight_product` (exact
    float32 K-chunks, or float64 for wide operands) when it needs neither a digit split nor int64 loops; the epilogue's requantization takes the
    accumulator unchecked only when its static bound ``K * max|x - zp| * max|w| + max|bias|``
    (:func:`intsim.ops.matmul`) passes requantize's own proof (:func:`requantize_fits`: ``<= 2**31 - 1``, or
    ``bound * |M| + 2**(k-1)`` inside int64), so requantize cannot raise on it.
    Attention: the scores are float32 products proved ``<= 2**24`` (``d * max|q - zp_q| * max|k - zp_k|``, from the
    code dtypes); the softmax runs the very row kernels of :mod:`intsim.ops.softmax`, and the logits' requantized
    range must lie inside the softmax's declared code range (the check that op would make). The weights of
    ``attn @ V`` are ``2**(15 - code)`` (LIS), the probability codes (uniform) or ``W[log_encode(p)]`` (AdaLog: the
    encoder and decoder tables of :mod:`intsim.ops.logquant` composed into one table over the ``<= 2**16``
    probability codes); the context accumulator ``N * max(weight) * max|v - zp_v|`` must pass requantize's proof
    (:func:`requantize_fits`). ``attn @ V`` runs in float32, each row exact while its weight sum times
    ``max|v - zp_v|`` is ``<= 2**24`` and summed again in int64 otherwise, or in float64 (every row exact there)
    when one largest weight times the largest value already passes ``2**24`` (wide AdaLog tables).
    Integer sums are associative, so loop order does not matter.
    Results do not depend on the thread count: each (batch, head) and each row block is computed by one thread.
"""

from __future__ import annotations

import numpy as np

from intsim._jit import kernel
from intsim.limits import FLOAT32_EXACT, FLOAT64_EXACT, INT32_MAX, INT64_MAX, INT64_MIN, LIS_VALUE_SHIFT
from intsim.limits import LIS_ZERO_CODE as ZERO_CODE
from intsim.ops._checks import ArrayOperand, as_int_array, check_int, max_abs, smallest_code_dtype
from intsim.ops._derived import derived
from intsim.ops import int8_gemm
from intsim.ops._threads import run_row_ranges, single_threaded_blas
from intsim.ops.gelu import lookup_table, table_rows
from intsim.ops.logquant import log_encode, log_weight_table
from intsim.ops.matmul import (
    LINEAR_NAMES,
    column_abs_sum_max,
    linear_operands,
    plan_weight_product,
    prepare_operands,
    row_blocked_product,
    to_float,
    workspace,
)
from intsim.ops.requant import check_requantize_parameters
from intsim.ops.residual import check_residual_add_parameters
from intsim.ops.rounding import round_shift_scalar
from intsim.ops.softmax import (
    check_softmax_parameters,
    exp_table,
    log_int_softmax_row,
    prove_log_int_softmax_bounds,
    prove_uniform_int_softmax_bounds,
    row_scratch,
    uniform_int_softmax_row,
    uniform_levels,
)

__all__ = ["attention", "linear_requantize", "linear_residual_add", "requantize_fits"]

_HEADS_PER_BLOCK = 4  # (batch, head) items per thread task of the attention core


# --------------------------------------------------------------------------------------------- linear


def _linear_plan(x, weight, x_zero_point, bias):
    """Validate a linear like :func:`~intsim.ops.integer_linear` (same errors); return ``(operands, output shape,
    product)``: ``product(finish)`` runs the exact row-blocked product with the caller's epilogue
    (``finish(acc, start, stop)``, the contract of :func:`intsim.ops.matmul.row_blocked_product`), or is ``None``
    when no fused product applies (no element, or operands so wide that the float plan needs a digit split or int64
    loops). The product is the int8 path of :mod:`intsim.ops.int8_gemm` (uint8 codes, int8 weight, where
    onnxruntime is installed and exact), else the float plan's (float32, or float64 for wide operands such as
    AdaLog's post-GELU weights) with the ``(K, N)`` copy of ``weight.T`` in its carrier."""
    op = "integer_linear"
    x2, weight, out_shape = linear_operands(x, weight, op)
    p = prepare_operands(x2, weight.T, x_zero_point, 0, bias, op, LINEAR_NAMES)
    # the weight's forms, derived once per weight array (Program constants are the same arrays on every run)
    columns = derived("column_abs_sum_max", (weight,), lambda w: column_abs_sum_max(w.T, 0))
    # |acc + bias| <= max|x - zp| * max_n sum_k |w[n, k]| + max|bias|: tighter than K * max|x| * max|w| when a few
    # weight columns are large (fc2's weights shifted by PTF input factors)
    p = p._replace(bound=min(p.bound, p.a_abs * columns + int(np.abs(p.bias).max(initial=0))))
    if x2.size == 0:
        return p, out_shape, None
    wide_unsigned = x2.dtype.kind == "u" and x2.dtype.itemsize > 1 and p.a_zp == 0  # e.g. AdaLog's W[x]
    if weight.dtype == np.int8 and (x2.dtype == np.uint8 or wide_unsigned):
        int8 = derived(f"int8_weight_product/{p.a_zp}", (weight,),
                       lambda w: int8_gemm.weight_product(np.ascontiguousarray(w.T), p.a_zp))
        if int8 is not None and x2.dtype == np.uint8:
            return p, out_shape, lambda finish: int8_gemm.row_blocked(p.a, int8, finish)
        if int8 is not None:  # base-256 digits of the codes, one int8 product each
            digits = int8_gemm.digits_of(p.a_abs)
            return p, out_shape, lambda finish: int8_gemm.row_blocked_digits(p.a, digits, int8, finish)
    # the plan depends on the weight and on max|x - zp| alone (plan_weight_product): one per weight and input bound
    plan = derived(f"weight_plan/{p.a_abs}", (weight,), lambda w: plan_weight_product(p, columns))
    if plan.dtype is None or plan.split:
        return p, out_shape, None
    carrier = plan.dtype  # weight.T - 0 in the plan's carrier (K, N), the product's b
    weight_float = derived(f"{np.dtype(carrier).name}_transposed", (weight,), lambda w: to_float(w.T, 0, carrier)[0])
    return p, out_shape, lambda finish: row_blocked_product(p.a, p.a_zp, weight_float, plan.chunk, finish)


@kernel
def _requantized(acc, r, n, bias, multipliers, shifts, zero_points, qmins, qmaxs, mode):
    """``clip(round_shift((acc[r, n] + bias[n]) * M[n], k[n]) + zp[n], qmin[n], qmax[n])``."""
    product = (np.int64(acc[r, n]) + bias[n]) * multipliers[n]
    value = round_shift_scalar(product, shifts[n], mode) + zero_points[n]
    return min(max(value, qmins[n]), qmaxs[n])


@kernel
def _finish_requantize(acc, start, bias, multipliers, shifts, zero_points, qmins, qmaxs, mode, out):
    """``out[start + r, n]`` = the requantized ``acc[r, n] + bias[n]`` (:func:`_requantized`)."""
    for r in range(acc.shape[0]):
        for n in range(acc.shape[1]):
            out[start + r, n] = _requantized(acc, r, n, bias, multipliers, shifts, zero_points, qmins, qmaxs, mode)


@kernel
def _finish_requantize_lookup(acc, start, bias, multipliers, shifts, zero_points, qmins, qmaxs, mode, table,
                              table_offsets, out):
    """``out[start + r, n] = table[table_offsets[n] + code]`` of the requantized code: the flattened table, with
    ``table_offsets[n] = rows[n] * 2**bits - table_qmin`` (codes inside the table's range)."""
    index = np.empty(acc.shape[1], dtype=np.int64)
    for r in range(acc.shape[0]):
        for n in range(acc.shape[1]):  # vectorises
            index[n] = _requantized(acc, r, n, bias, multipliers, shifts, zero_points, qmins, qmaxs, mode) + table_offsets[n]
        for n in range(acc.shape[1]):  # a gather
            out[start + r, n] = table[index[n]]


def linear_requantize(x, weight, *, x_zero_point=0, bias=None, parts, lut=None):
    """``requantize(integer_linear(x, weight, x_zero_point=..., bias=...), **part)`` for consecutive channel groups.

    ``parts``: a list of dicts with the keyword arguments of :func:`~intsim.ops.requantize` (``multiplier, shift,
    zero_point, qmin, qmax, rounding``), one per consecutive group of output channels (their sizes are the
    multipliers' lengths, or the whole width for a single part). Returns one code array per part (views into one
    buffer, shape ``(..., size)``), equal to requantizing the matching slice of the linear's int64 output; or
    ``None`` when the fast path does not apply (see the module docstring), or when the parts differ in rounding
    mode or output dtype. Raises the errors :func:`~intsim.ops.integer_linear` and
    :func:`~intsim.ops.requantize` raise for bad arguments.

    ``lut``: ``None``, or (with a single part) the keyword arguments of :func:`~intsim.ops.lut_lookup` but the
    codes (``table, bits, signed`` and optionally ``rows``): the result is then ``[lut_lookup(codes, **lut)]``, the table looked up in the
    epilogue. ``None`` is returned when the requantized range ``[qmin, qmax]`` is not inside the table's declared
    code range (lut_lookup would have to check the codes); bad ``lut`` arguments raise lut_lookup's errors.
    """
    p, out_shape, product = _linear_plan(x, weight, x_zero_point, bias)
    width = out_shape[-1]
    sizes = [width] if len(parts) == 1 else [np.size(part["multiplier"]) for part in parts]
    if sum(sizes) != width:
        return None
    params = [check_requantize_parameters(out_shape[:-1] + (size,), op="requantize", **part) for size, part in zip(sizes, parts)]
    dtypes = {smallest_code_dtype(r.qmin, r.qmax) for r in params}
    if not all(requantize_fits(p.bound, r) for r in params) or len(dtypes) > 1 or len({r.mode for r in params}) > 1:
        return None
    if lut is not None:
        rows = lut.get("rows")
        table, table_qmin, table_qmax = lookup_table(lut["table"], lut["bits"], lut["signed"], rows=rows)
        entries = table_qmax - table_qmin + 1
        rows = np.zeros(width, np.int64) if rows is None else table_rows(rows, out_shape, table.shape[0])
        table_offsets = rows * entries - table_qmin
        if len(params) != 1 or params[0].qmin < table_qmin or params[0].qmax > table_qmax:
            return None
    if product is None:
        return None

    def per_channel(values):
        return np.ascontiguousarray(np.concatenate(values), dtype=np.int64)

    multipliers = per_channel([r.multipliers for r in params])
    shifts = per_channel([r.shifts for r in params])
    zero_points, qmins, qmaxs = (per_channel([np.full(size, getattr(r, name)) for size, r in zip(sizes, params)])
                                 for name in ("zero_point", "qmin", "qmax"))
    (dtype,) = dtypes if lut is None else {table.dtype}
    out = np.empty((p.a.shape[0], width), dtype=dtype)
    store = out.view(np.dtype(f"u{dtype.itemsize}"))  # numba's integer store truncates: the two's complement bits
    requant_args = (p.bias, multipliers, shifts, zero_points, qmins, qmaxs, params[0].mode)
    if lut is None:
        def finish(acc, start, stop):
            _finish_requantize(acc, start, *requant_args, store)
    else:
        table_bits = table.reshape(-1).view(np.dtype(f"u{table.dtype.itemsize}"))  # a gather copies bits
        def finish(acc, start, stop):
            _finish_requantize_lookup(acc, start, *requant_args, table_bits, table_offsets, store)
    product(finish)
    out = out.reshape(out_shape)
    bounds = np.cumsum(sizes)[:-1]
    return np.split(out, bounds, axis=-1)


@kernel
def _finish_residual(acc, start, bias, a, a_zp, b_zp, ma, mb, shifts, out_zp, qmin, qmax, mode, out):
    """``residual_add``'s kernel with ``b = acc + bias`` (the linear's output) for rows ``start + r``."""
    for r in range(acc.shape[0]):
        for n in range(acc.shape[1]):
            b = np.int64(acc[r, n]) + bias[n] - b_zp
            total = (np.int64(a[start + r, n]) - a_zp) * ma[n] + b * mb[n]
            value = round_shift_scalar(total, shifts[n], mode) + out_zp
            out[start + r, n] = min(max(value, qmin), qmax)


def linear_residual_add(x, weight, *, x_zero_point=0, bias=None, residual, a_zero_point, b_zero_point, a_multiplier,
                        b_multiplier, shift, out_zero_point=0, qmin=0, qmax=255, rounding="half_up"):
    """``residual_add(residual, integer_linear(x, weight, ...), ...)``: the linear's output is operand ``b``.

    Returns the codes (shape of ``residual``), or ``None`` when the fast path does not apply: the row-blocked
    float32 plan (see :func:`linear_requantize`), ``residual`` of the linear's output shape, and residual_add's
    int64 bounds proved from ``residual``'s dtype range and the linear's proved bound (global maxima over
    channels; where only the per-channel proof would pass, the ops run one by one). Raises the errors of
    :func:`~intsim.ops.integer_linear` and :func:`~intsim.ops.residual_add` for bad parameters.
    """
    p, out_shape, product = _linear_plan(x, weight, x_zero_point, bias)
    op = "residual_add"
    a = as_int_array(residual, "a", op)
    if product is None or a.shape != out_shape:
        return None
    a_zp, b_zp, ma, mb, shifts, out_zp, qmin, qmax, mode = check_residual_add_parameters(
        a.shape, a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift, out_zero_point, qmin, qmax, rounding, op)
    channels = out_shape[-1]
    a_bound = _centred_dtype_bound(a, a_zp)
    b_bound = p.bound + abs(b_zp)  # |acc + bias| <= the linear's proved bound
    total = a_bound * int(np.abs(ma).max()) + b_bound * int(np.abs(mb).max())
    if max(total + (1 << int(shifts.max()) >> 1), (total >> int(shifts.min())) + 1 + abs(out_zp)) > INT64_MAX:
        return None
    a2 = a.reshape(-1, channels)
    dtype = smallest_code_dtype(qmin, qmax)
    out = np.empty(a2.shape, dtype=dtype)
    store = out.view(np.dtype(f"u{dtype.itemsize}"))
    i64 = np.int64
    product(lambda acc, start, stop: _finish_residual(acc, start, p.bias, a2, i64(a_zp), i64(b_zp), ma, mb, shifts,
                                                      i64(out_zp), i64(qmin), i64(qmax), mode, store))
    return out.reshape(out_shape)


# --------------------------------------------------------------------------------------------- attention


@kernel
def _requantize_value(acc, multiplier, shift, zero_point, qmin, qmax, mode):
    value = round_shift_scalar(np.int64(acc) * multiplier, shift, mode) + zero_point
    return min(max(value, qmin), qmax)


@kernel
def _gather_heads(q, k, v, first_item, heads, q_zp, k_zp, v_zp, q_float, k_float, v_float):
    """Items ``first_item + g`` (item = batch * heads + head): each head's centred codes as float32 ``(G, N, d)``."""
    d = q_float.shape[2]
    for g in range(q_float.shape[0]):
        b, column = divmod(first_item + g, heads)
        column *= d
        for i in range(q_float.shape[1]):
            for c in range(d):
                q_float[g, i, c] = np.int64(q[b, i, column + c]) - q_zp
                k_float[g, i, c] = np.int64(k[b, i, column + c]) - k_zp
                v_float[g, i, c] = np.int64(v[b, i, column + c]) - v_zp


@kernel
def _attention_weights(scores, logit_m, logit_s, logit_zp, logit_qmin, logit_qmax, logit_mode, lis, table, x0,
                       b_int, c_int, n, levels, fulls, first_item, heads, log_weights, logits, probs, mask, weights,
                       row_sums):
    """Exact float32 scores ``(G, N, N)`` -> logit codes -> softmax codes (the row kernels of
    :mod:`intsim.ops.softmax`) -> the integer weights of ``attn @ V`` as floats (``2**(15 - code)``, the
    probability code, or with a log encoder (``log_weights`` not empty) ``log_weights[p]``, the log weight of the
    code that :func:`~intsim.ops.log_encode` gives ``p``; all exact), and each row's sum of weights (int64, for the
    product's exactness proof). Item ``g`` is head ``(first_item + g) % heads``, whose uniform ``F`` is
    ``fulls[head]``."""
    tokens = scores.shape[1]
    scratch = row_scratch(tokens, table)
    encode = log_weights.size > 0
    for g in range(scores.shape[0]):
        full = fulls[(first_item + g) % heads]
        for i in range(tokens):
            for j in range(tokens):
                logits[i, j] = _requantize_value(np.int64(scores[g, i, j]), logit_m[j], logit_s[j], logit_zp,
                                                 logit_qmin, logit_qmax, logit_mode)
        for i in range(tokens):
            total = np.int64(0)
            if lis:
                log_int_softmax_row(logits, i, False, mask, table, x0, b_int, c_int, n, scratch, probs)
                for j in range(tokens):
                    code = probs[i, j]
                    weight = (1 << (LIS_VALUE_SHIFT - code)) if code < ZERO_CODE else 0
                    weights[g, i, j] = weight
                    total += weight
            else:
                uniform_int_softmax_row(logits, i, False, mask, table, x0, b_int, c_int, n, levels, full, scratch, probs)
                for j in range(tokens):
                    weight = probs[i, j]
                    if encode:
                        weight = log_weights[weight]
                    weights[g, i, j] = weight
                    total += weight
            row_sums[g, i] = total


@kernel
def _context_codes(products, weights, row_sums, v_float, v_bound, exact_limit, first_item, heads, ctx_m, ctx_s, ctx_zp,
                   ctx_qmin, ctx_qmax, ctx_mode, out):
    """``products = weights @ v`` (float32 or float64, ``(G, N, d)``) -> context codes into ``out[b, i, head * d + c]``.

    A row's float sums are exact when ``row_sum * v_bound <= exact_limit`` (``2**24`` or ``2**53``: the matmul
    module's row-sum bound); any other row is summed again here in int64 from the same integer weights and centred
    values (exact floats)."""
    tokens, d = products.shape[1], products.shape[2]
    for g in range(products.shape[0]):
        b, column = divmod(first_item + g, heads)
        column *= d
        for i in range(tokens):
            exact = row_sums[g, i] * v_bound <= exact_limit
            for c in range(d):
                if exact:
                    total = np.int64(products[g, i, c])
                else:
                    total = np.int64(0)
                    for j in range(tokens):
                        total += np.int64(weights[g, i, j]) * np.int64(v_float[g, j, c])
                out[b, i, column + c] = _requantize_value(total, ctx_m[column + c], ctx_s[column + c], ctx_zp,
                                                          ctx_qmin, ctx_qmax, ctx_mode)


def _encoded_log_weights(thresholds, shift, mantissa, max_shift: int, levels: int) -> np.ndarray | None:
    """``W[log_encode(p)]`` for every uniform softmax code ``p`` in ``0..levels`` (int64 ``(levels + 1,)``): the
    encoder and the decoder of ``UniformSoftmax -> LogEncode -> LogAttentionValues`` as one table (at most 2**16
    entries), computed by those ops' own functions; ``None`` when the tables' code width differs from the
    thresholds' (``LogAttentionValues`` would refuse the codes)."""
    table = log_weight_table(shift, mantissa, max_shift)
    codes = log_encode(np.arange(levels + 1, dtype=np.int64), thresholds)
    return table[codes] if table.shape[0] == np.asarray(thresholds).shape[0] + 1 else None


def requantize_fits(bound: int, ctx) -> bool:
    """May a Requantize take an accumulator of ``|acc| <= bound`` unchecked? Its proof
    (:func:`~intsim.ops.requant.prove_requantize_bounds`) from the static bound: ``bound <= 2**31 - 1``, or
    ``bound * |M| + 2**(k-1)`` and ``(bound * |M| >> k) + 1 + |zero_point|`` inside int64 for every channel."""
    if bound <= INT32_MAX:
        return True
    magnitude = int(np.abs(ctx.multipliers).max(initial=0)) * bound
    return (magnitude + (1 << int(ctx.shifts.max(initial=0)) >> 1) <= INT64_MAX
            and (magnitude >> int(ctx.shifts.min(initial=0))) + 1 + abs(ctx.zero_point) <= INT64_MAX)


def _centred_dtype_bound(array: np.ndarray, zero_point: int) -> int:
    """``max |code - zero_point|`` over every value the array's dtype can hold (no pass over the data)."""
    info = np.iinfo(array.dtype)
    return max(abs(int(info.min) - zero_point), abs(int(info.max) - zero_point))


def attention(q, k, v, *, heads, q_zero_point, k_zero_point, logits, softmax, values, context):
    """The attention core of a ViT block, fused: context codes ``(B, N, C)``, or ``None`` (see the module docstring).

    Equal to the interpreter's op sequence ``AttentionScores`` (``heads``, ``q_zero_point``, ``k_zero_point``) ->
    ``Requantize`` (``logits``: the keyword arguments of :func:`~intsim.ops.requantize`) -> ``LogIntSoftmax`` or
    ``UniformSoftmax`` (``softmax``: ``kind`` ``"lis"`` or ``"uniform"`` plus the keyword arguments of
    :func:`~intsim.ops.log_int_softmax` / :func:`~intsim.ops.uniform_int_softmax`) -> ``AttentionValues``
    (``values``: ``v_zero_point``) -> ``Requantize`` (``context``). With ``values["log_encode"]`` (after a uniform
    softmax: a dict of ``thresholds`` and the decode tables ``shift, mantissa, max_shift``) the middle is
    ``UniformSoftmax -> LogEncode -> LogAttentionValues`` instead. ``q, k, v`` are ``(B, N, C)`` integer codes
    with channels grouped head-major (views are fine). Raises the errors those ops raise for bad parameters.
    """
    q, k, v = (as_int_array(t, name, "integer_matmul") for t, name in ((q, "a"), (k, "b"), (v, "v")))
    if q.ndim != 3 or q.shape != k.shape or q.shape != v.shape or heads < 1 or q.shape[-1] % heads:
        return None
    batch, tokens, channels = q.shape
    d = channels // heads
    q_zp = check_int(q_zero_point, "a_zero_point", "integer_matmul", lo=INT64_MIN, hi=INT64_MAX)
    k_zp = check_int(k_zero_point, "b_zero_point", "integer_matmul", lo=INT64_MIN, hi=INT64_MAX)
    if d * _centred_dtype_bound(q, q_zp) * _centred_dtype_bound(k, k_zp) > FLOAT32_EXACT:
        return None  # the float32 scores would not be exact
    logit = check_requantize_parameters((batch, heads, tokens, tokens), op="requantize", **logits)
    kind = softmax["kind"]
    softmax_args = {key: value for key, value in softmax.items() if key != "kind"}
    op = "log_int_softmax" if kind == "lis" else "uniform_int_softmax"
    bits, signed = softmax_args["bits"], softmax_args["signed"]
    probe = ArrayOperand(np.empty((0, tokens), dtype=smallest_code_dtype(logit.qmin, logit.qmax)))
    softmax_qmin, softmax_qmax, _, constants = check_softmax_parameters(probe, softmax_args["zero_point"],
                                                                        softmax_args["constants"], bits, signed, op)
    if logit.qmin < softmax_qmin or logit.qmax > softmax_qmax:
        return None  # the softmax would have to scan the logits for codes outside its declared range
    if kind == "lis":
        prove_log_int_softmax_bounds(constants, tokens, op)
        levels = full = 1
        weight_bound = 1 << LIS_VALUE_SHIFT
    else:
        levels, full = uniform_levels(softmax_args.get("out_bits", 8), softmax_args.get("full_scale"), op,
                                      (batch, heads, tokens, tokens))
        prove_uniform_int_softmax_bounds(constants, tokens, int(np.max(full)), op)
        weight_bound = levels
    log_weights = np.zeros(0, np.int64)
    if values.get("log_encode") is not None:
        if kind == "lis":
            return None
        encode = values["log_encode"]
        log_weights = derived(f"encoded_log_weights/{levels}/{encode['max_shift']}",
                              (np.asarray(encode["thresholds"]), np.asarray(encode["shift"]),
                               np.asarray(encode["mantissa"])),
                              lambda t, sh, m: _encoded_log_weights(t, sh, m, encode["max_shift"], levels))
        if log_weights is None:
            return None  # tables of another code width than the thresholds: the ops name the mismatch
        weight_bound = int(log_weights.max())
    v_zp = check_int(values["v_zero_point"], "v_zero_point", "lis_attention_values", lo=INT64_MIN, hi=INT64_MAX)
    ctx = check_requantize_parameters((batch, tokens, channels), op="requantize", **context)
    v_bound = _centred_dtype_bound(v, v_zp)
    if not requantize_fits(tokens * weight_bound * v_bound, ctx) or v_bound > FLOAT32_EXACT:
        v_bound = max_abs(v, v_zp)  # a pass over the values: only when the dtype proves too little
        if not requantize_fits(tokens * weight_bound * v_bound, ctx) or v_bound > FLOAT32_EXACT:
            return None  # a context accumulator that requantize would have to check, or values beyond float32
    # the carrier of attn @ V: float32, whose rows are exact while row_sum * v_bound <= 2**24 (others are summed
    # again in int64), or float64 when even one largest weight against the largest value passes 2**24 (wide
    # AdaLog decode tables); float64 rows are all exact: row_sum * v_bound <= the int64 proof above <= 2**53 there
    carrier = np.float32 if weight_bound * max(v_bound, 1) <= FLOAT32_EXACT else np.float64
    if weight_bound > FLOAT64_EXACT:
        return None  # weights that no float carrier holds exactly
    exact_limit = FLOAT32_EXACT if carrier is np.float32 else FLOAT64_EXACT
    out = np.empty((batch, tokens, channels), dtype=smallest_code_dtype(ctx.qmin, ctx.qmax))
    if out.size == 0:
        return out
    c = constants
    table = exp_table(c, softmax_qmax - softmax_qmin)
    per_key = [np.ascontiguousarray(np.broadcast_to(x, (tokens,))) for x in (logit.multipliers, logit.shifts)]
    per_channel = [np.ascontiguousarray(np.broadcast_to(x, (channels,))) for x in (ctx.multipliers, ctx.shifts)]
    i64 = np.int64
    logit_args = (*per_key, i64(logit.zero_point), i64(logit.qmin), i64(logit.qmax), logit.mode)
    fulls = np.ascontiguousarray(np.broadcast_to(np.asarray(full, dtype=np.int64), (heads,)))
    softmax_kernel_args = (kind == "lis", table, i64(c.x0), i64(c.b_int), i64(c.c_int), i64(c.n), i64(levels), fulls)
    context_args = (i64(heads), *per_channel, i64(ctx.zero_point), i64(ctx.qmin), i64(ctx.qmax), ctx.mode)
    store = out.view(np.dtype(f"u{out.dtype.itemsize}"))
    mask = np.ones((1, 1), dtype=np.bool_)

    def work(first, stop):  # items first..stop-1 on one thread: every buffer is this thread's own
        shape = (stop - first, tokens, d)
        q_float, k_float, v_narrow = (workspace(f"attention_{name}", shape, np.float32) for name in ("q", "k", "v"))
        _gather_heads(q, k, v, i64(first), i64(heads), i64(q_zp), i64(k_zp), i64(v_zp), q_float, k_float, v_narrow)
        v_float = v_narrow
        if carrier is not np.float32:
            v_float = workspace("attention_v_wide", shape, carrier)
            v_float[...] = v_narrow
        products = workspace("attention_products", shape, carrier)
        scores = workspace("attention_scores", (stop - first, tokens, tokens), np.float32)
        np.matmul(q_float, k_float.swapaxes(1, 2), out=scores)
        logit_codes = workspace("attention_logits", (tokens, tokens), np.int64)
        prob_codes = workspace("attention_probs", (tokens, tokens), np.int64)
        weights = workspace("attention_weights", (stop - first, tokens, tokens), carrier)
        row_sums = workspace("attention_row_sums", (stop - first, tokens), np.int64)
        _attention_weights(scores, *logit_args, *softmax_kernel_args, i64(first), i64(heads), log_weights, logit_codes,
                           prob_codes, mask, weights, row_sums)
        np.matmul(weights, v_float, out=products)
        _context_codes(products, weights, row_sums, v_float, i64(v_bound), i64(exact_limit), i64(first),
                       *context_args, store)

    with single_threaded_blas():
        run_row_ranges(batch * heads, _HEADS_PER_BLOCK, work)
    return out
