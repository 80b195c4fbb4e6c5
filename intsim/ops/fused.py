"""Fused fast paths of the interpreter: several registered ops in one pass, bit-identical to their composition.

These are not new ops (they are not in :data:`intsim.ops.OPS` and not in the Program vocabulary): each function
computes exactly what the listed sequence of public ops computes, with the same validation and the same errors,
but without materialising the intermediate tensors. The interpreter uses them when no trace hook is installed.

:func:`linear_requantize`
    ``requantize(integer_linear(x, weight, bias), ...)``, per output-channel parameters: the requantization is the
    epilogue of the row-blocked float32 product (:func:`intsim.ops.matmul.row_blocked_product`), so no int64
    ``(rows, N)`` accumulator is written to memory. Several consecutive channel groups may carry their own zero
    point and code range (``Linear -> Split -> Requantize`` per part, e.g. q, k, v).
:func:`attention`
    ``AttentionScores -> Requantize -> LogIntSoftmax | UniformSoftmax -> AttentionValues -> Requantize`` per
    (batch, head) in one numba kernel: the ``(N, N)`` scores, logits and probabilities of one head live in a
    thread's scratch memory, never in a ``(B, H, N, N)`` tensor.

Both return ``None`` when their proof obligations (below) do not hold for the given operands, and the caller
must then run the ops one by one (which computes the same result or raises the op's own error).

Exactness
    Linear: the plan of :func:`intsim.ops.matmul.plan_weight_product` (exact float32 K-chunks) when it needs
    neither a digit split nor float64; the accumulator bound ``K * max|x - zp| * max|w| + max|bias|``
    (:func:`intsim.ops.matmul`) must be ``<= 2**31``, which is also what makes ``acc * M`` fit int64 in
    requantize's own proof (so requantize cannot raise on it).
    Attention: every product is formed in int32 loops, so every bound is proved ``<= 2**31 - 1`` first:
    ``d * max|q - zp_q| * max|k - zp_k|`` (scores, from the code dtypes), ``N * max|v - zp_v| * 2**15``
    (LIS values) or ``N * (2**out_bits - 1) * max|v - zp_v|`` (uniform values); the softmax runs the very row
    kernels of :mod:`intsim.ops.softmax`, and the logits' requantized range must lie inside the softmax's declared
    code range (the check that op would make). Integer sums are associative, so loop order does not matter.
    Results do not depend on the thread count: each (batch, head) and each row block is computed by one thread.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from intsim._jit import kernel, parallel_kernel
from intsim.ops._checks import INT64_MAX, INT64_MIN, as_int_array, check_int, int_range, smallest_code_dtype
from intsim.ops.matmul import (
    _LINEAR_NAMES,
    _linear_operands,
    _prepare as _prepare_matmul,
    _to_float,
    plan_weight_product,
    row_blocked_product,
)
from intsim.ops.requant import prepare_parameters
from intsim.ops.rounding import round_shift_scalar
from intsim.ops.softmax import (
    LIS_VALUE_SHIFT,
    ZERO_CODE,
    _check_lis_bound,
    _check_out_bits,
    _check_uniform_bound,
    _exp_table,
    _log_int_softmax_row,
    _prepare_rows,
    _uniform_int_softmax_row,
)

__all__ = ["attention", "linear_requantize", "linear_residual_add"]

_INT32_LIMIT = 2**31 - 1
_REQUANT_SAFE = 2**31  # |acc| <= 2**31 and |M| < 2**31: requantize proves acc * M + 2**(k-1) fits int64


# --------------------------------------------------------------------------------------------- linear


def _linear_plan(x, weight, x_zero_point, bias):
    """Validate a linear like :func:`~intsim.ops.integer_linear` (same errors); return ``(operands, output shape,
    plan)``, the plan ``None`` when the row-blocked float32 product does not apply (no element, or operands so
    wide that the plan needs a digit split, float64 or int64 loops)."""
    op = "integer_linear"
    x2, weight, out_shape = _linear_operands(x, weight, op)
    p = _prepare_matmul(x2, weight.T, x_zero_point, 0, bias, op, _LINEAR_NAMES)
    plan = plan_weight_product(p)
    if x2.size == 0 or plan.dtype is not np.float32 or plan.split:
        plan = None
    return p, out_shape, plan


@kernel
def _finish_requantize(acc, start, bias, multipliers, shifts, zero_points, qmins, qmaxs, mode, out):
    """``out[start + r, n] = clip(round_shift((acc[r, n] + bias[n]) * M[n], k[n]) + zp[n], qmin[n], qmax[n])``."""
    for r in range(acc.shape[0]):
        for n in range(acc.shape[1]):
            product = (np.int64(acc[r, n]) + bias[n]) * multipliers[n]
            value = round_shift_scalar(product, shifts[n], mode) + zero_points[n]
            out[start + r, n] = min(max(value, qmins[n]), qmaxs[n])


def linear_requantize(x, weight, *, x_zero_point=0, bias=None, parts):
    """``requantize(integer_linear(x, weight, x_zero_point=..., bias=...), **part)`` for consecutive channel groups.

    ``parts``: a list of dicts with the keyword arguments of :func:`~intsim.ops.requantize` (``multiplier, shift,
    zero_point, qmin, qmax, rounding``), one per consecutive group of output channels (their sizes are the
    multipliers' lengths, or the whole width for a single part). Returns one code array per part (views into one
    buffer, shape ``(..., size)``), equal to requantizing the matching slice of the linear's int64 output; or
    ``None`` when the fast path does not apply (see the module docstring), or when the parts differ in rounding
    mode or output dtype. Raises the errors :func:`~intsim.ops.integer_linear` and
    :func:`~intsim.ops.requantize` raise for bad arguments.
    """
    p, out_shape, plan = _linear_plan(x, weight, x_zero_point, bias)
    width = out_shape[-1]
    sizes = [width] if len(parts) == 1 else [np.size(part["multiplier"]) for part in parts]
    if sum(sizes) != width:
        return None
    params = [prepare_parameters(out_shape[:-1] + (size,), op="requantize", **part) for size, part in zip(sizes, parts)]
    dtypes = {smallest_code_dtype(r.qmin, r.qmax) for r in params}
    if p.bound > _REQUANT_SAFE or len(dtypes) > 1 or len({r.mode for r in params}) > 1:
        return None
    if plan is None:
        return None

    def per_channel(values):
        return np.ascontiguousarray(np.concatenate(values), dtype=np.int64)

    multipliers = per_channel([r.multipliers for r in params])
    shifts = per_channel([r.shifts for r in params])
    zero_points, qmins, qmaxs = (per_channel([np.full(size, getattr(r, name)) for size, r in zip(sizes, params)])
                                 for name in ("zero_point", "qmin", "qmax"))
    (dtype,) = dtypes
    out = np.empty((p.a.shape[0], width), dtype=dtype)
    store = out.view(np.dtype(f"u{dtype.itemsize}"))  # numba's integer store truncates: the two's complement bits
    mode = params[0].mode
    row_blocked_product(
        p.a, p.a_zp, _to_float(p.b, 0, np.float32)[0], plan.chunk,
        lambda acc, start, stop: _finish_requantize(acc, start, p.bias, multipliers, shifts, zero_points, qmins,
                                                    qmaxs, mode, store),
    )
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
    from intsim.ops.residual import residual_parameters

    p, out_shape, plan = _linear_plan(x, weight, x_zero_point, bias)
    op = "residual_add"
    a = as_int_array(residual, "a", op)
    if plan is None or a.shape != out_shape:
        return None
    a_zp, b_zp, ma, mb, shifts, out_zp, qmin, qmax, mode = residual_parameters(
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
    row_blocked_product(
        p.a, p.a_zp, _to_float(p.b, 0, np.float32)[0], plan.chunk,
        lambda acc, start, stop: _finish_residual(acc, start, p.bias, a2, i64(a_zp), i64(b_zp), ma, mb, shifts,
                                                  i64(out_zp), i64(qmin), i64(qmax), mode, store),
    )
    return out.reshape(out_shape)


# --------------------------------------------------------------------------------------------- attention


@kernel
def _requantize_value(acc, multiplier, shift, zero_point, qmin, qmax, mode):
    value = round_shift_scalar(np.int64(acc) * multiplier, shift, mode) + zero_point
    return min(max(value, qmin), qmax)


@kernel
def _head_attention(q, k, v, b, h, d, q_zp, k_zp, v_zp, logit_m, logit_s, logit_zp, logit_qmin, logit_qmax,
                    logit_mode, lis, table, x0, b_int, c_int, n, levels, ctx_m, ctx_s, ctx_zp, ctx_qmin,
                    ctx_qmax, ctx_mode, q_head, k_head, v_head_t, logits, probs, weights, mask, out):
    """One (batch ``b``, head ``h``): scores -> logits -> probabilities -> values -> context codes into ``out``.

    Products are dot products over contiguous rows (``q_head`` and ``k_head`` ``(N, d)``, ``v_head_t`` ``(d, N)``),
    integer reductions that the compiler vectorises; every partial sum is bounded as the caller proved.
    """
    tokens = q.shape[1]
    first = h * d
    for i in range(tokens):
        for c in range(d):
            q_head[i, c] = np.int64(q[b, i, first + c]) - q_zp
            k_head[i, c] = np.int64(k[b, i, first + c]) - k_zp
            v_head_t[c, i] = np.int64(v[b, i, first + c]) - v_zp
    for i in range(tokens):  # scores, requantized to logit codes
        query = q_head[i]
        row = logits[i]
        for j in range(tokens):
            key = k_head[j]
            score = 0
            for c in range(d):
                score += query[c] * key[c]
            row[j] = score
        for j in range(tokens):
            row[j] = _requantize_value(row[j], logit_m[j], logit_s[j], logit_zp, logit_qmin, logit_qmax, logit_mode)
    for i in range(tokens):  # probabilities (the row kernels of intsim.ops.softmax), values, context codes
        if lis:
            _log_int_softmax_row(logits, i, False, mask, table, x0, b_int, c_int, n, probs)
            for j in range(tokens):
                code = probs[i, j]
                weights[j] = (1 << (LIS_VALUE_SHIFT - code)) if code < ZERO_CODE else 0
        else:
            _uniform_int_softmax_row(logits, i, False, mask, table, x0, b_int, c_int, n, levels, probs)
            for j in range(tokens):
                weights[j] = probs[i, j]
        for c in range(d):
            values = v_head_t[c]
            total = 0
            for j in range(tokens):
                total += weights[j] * values[j]
            out[b, i, first + c] = _requantize_value(total, ctx_m[first + c], ctx_s[first + c], ctx_zp, ctx_qmin,
                                                     ctx_qmax, ctx_mode)


@parallel_kernel
def _attention_kernel(q, k, v, heads, q_zp, k_zp, v_zp, logit_m, logit_s, logit_zp, logit_qmin, logit_qmax,
                      logit_mode, lis, table, x0, b_int, c_int, n, levels, ctx_m, ctx_s, ctx_zp, ctx_qmin, ctx_qmax,
                      ctx_mode, workers, out):
    batch, tokens, channels = q.shape
    d = channels // heads
    mask = np.ones((1, 1), dtype=np.bool_)
    for worker in prange(workers):  # worker w takes items w, w + workers, ...: one thread per (batch, head)
        q_head = np.empty((tokens, d), dtype=np.int32)
        k_head = np.empty((tokens, d), dtype=np.int32)
        v_head_t = np.empty((d, tokens), dtype=np.int32)
        logits = np.empty((tokens, tokens), dtype=np.int32)
        probs = np.empty((tokens, tokens), dtype=np.int32)
        weights = np.empty(tokens, dtype=np.int32)
        for item in range(worker, batch * heads, workers):
            _head_attention(q, k, v, item // heads, item % heads, d, q_zp, k_zp, v_zp, logit_m, logit_s, logit_zp,
                            logit_qmin, logit_qmax, logit_mode, lis, table, x0, b_int, c_int, n, levels, ctx_m,
                            ctx_s, ctx_zp, ctx_qmin, ctx_qmax, ctx_mode, q_head, k_head, v_head_t, logits, probs,
                            weights, mask, out)


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
    (``values``: ``v_zero_point``) -> ``Requantize`` (``context``). ``q, k, v`` are ``(B, N, C)`` integer codes
    with channels grouped head-major (views are fine). Raises the errors those ops raise for bad parameters.
    """
    q, k, v = (as_int_array(t, name, "integer_matmul") for t, name in ((q, "a"), (k, "b"), (v, "v")))
    if q.ndim != 3 or q.shape != k.shape or q.shape != v.shape or heads < 1 or q.shape[-1] % heads:
        return None
    batch, tokens, channels = q.shape
    d = channels // heads
    q_zp = check_int(q_zero_point, "a_zero_point", "integer_matmul", lo=INT64_MIN, hi=INT64_MAX)
    k_zp = check_int(k_zero_point, "b_zero_point", "integer_matmul", lo=INT64_MIN, hi=INT64_MAX)
    if d * _centred_dtype_bound(q, q_zp) * _centred_dtype_bound(k, k_zp) > _INT32_LIMIT:
        return None
    logit = prepare_parameters((batch, heads, tokens, tokens), op="requantize", **logits)
    kind = softmax["kind"]
    softmax_args = {key: value for key, value in softmax.items() if key != "kind"}
    op = "log_int_softmax" if kind == "lis" else "uniform_int_softmax"
    bits, signed = softmax_args["bits"], softmax_args["signed"]
    probe = np.empty((0, tokens), dtype=smallest_code_dtype(logit.qmin, logit.qmax))
    _, _, constants, _ = _prepare_rows(probe, softmax_args["zero_point"], softmax_args["constants"], bits,
                                                signed, None, op)
    softmax_qmin, softmax_qmax = int_range(bits, signed)
    if logit.qmin < softmax_qmin or logit.qmax > softmax_qmax:
        return None  # the softmax would have to scan the logits for codes outside its declared range
    if kind == "lis":
        _check_lis_bound(constants, tokens, op)
        levels = 1
        weight_bound = 1 << LIS_VALUE_SHIFT
    else:
        levels = 2 ** _check_out_bits(softmax_args.get("out_bits", 8), op) - 1
        _check_uniform_bound(constants, tokens, levels, op)
        weight_bound = levels
    v_zp = check_int(values["v_zero_point"], "v_zero_point", "lis_attention_values", lo=INT64_MIN, hi=INT64_MAX)
    if tokens * weight_bound * _centred_dtype_bound(v, v_zp) > _INT32_LIMIT:
        return None
    ctx = prepare_parameters((batch, tokens, channels), op="requantize", **context)
    out = np.empty((batch, tokens, channels), dtype=smallest_code_dtype(ctx.qmin, ctx.qmax))
    if out.size == 0:
        return out
    c = constants
    table = _exp_table(c, softmax_qmax - softmax_qmin)
    workers = min(numba.get_num_threads(), batch * heads)
    per_key = [np.ascontiguousarray(np.broadcast_to(x, (tokens,))) for x in (logit.multipliers, logit.shifts)]
    per_channel = [np.ascontiguousarray(np.broadcast_to(x, (channels,))) for x in (ctx.multipliers, ctx.shifts)]
    i64 = np.int64
    _attention_kernel(
        q, k, v, i64(heads), i64(q_zp), i64(k_zp), i64(v_zp), *per_key, i64(logit.zero_point), i64(logit.qmin),
        i64(logit.qmax), logit.mode, kind == "lis", table, i64(c.x0), i64(c.b_int), i64(c.c_int), i64(c.n),
        i64(levels), *per_channel, i64(ctx.zero_point), i64(ctx.qmin), i64(ctx.qmax), ctx.mode, workers,
        out.view(np.dtype(f"u{out.dtype.itemsize}")),
    )
    return out
