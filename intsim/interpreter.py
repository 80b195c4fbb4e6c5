"""Run an integer :class:`~intsim.program.Program` on a batch, op by op, with a trace hook.

Each op kind of the Program vocabulary (the table below, documented in ``docs/program.md``) has one executor
here. Executors call a **backend**: :func:`default_backend` (the default: ``intsim.ops`` kernels and numpy data
movement) or the torch twins of ``intsim.quant.torch_ops`` (the fake-quant model's ``exact`` precision).
Both backends expose the same op names and signatures, so one executor serves both, and the cross-check
compares two independent implementations of each op over the same Program.

Op kinds (inputs -> outputs; attributes)
    ``Patchify``        pixels (B,3,H,W) -> patches (B, H/p*W/p, 3*p*p), order (channel, row, column); ``patch``
    ``Linear``          x (...,K), weight (N,K), bias (N,)[, x_shift (K,)] -> int64 acc; ``x_zero_point``
                        (with ``x_shift``: the input ``(x - zp) << x_shift`` per channel, PTF codes)
    ``Requantize``      acc, multiplier, shift -> codes; ``zero_point, qmin, qmax, rounding``
    ``Split``           x (...,sum sizes) -> one tensor per size along the last axis; ``sizes``
    ``PrependToken``    x (B,N,C), token (C,) -> (B,N+1,C)
    ``ResidualAdd``     a, b (b broadcast to a), a_multiplier, b_multiplier, shift -> codes;
                        ``a_zero_point, b_zero_point, out_zero_point, qmin, qmax, rounding``
    ``LayerNorm``       x, alpha, multiplier, bias, shift -> codes; ``zero_point, out_zero_point, qmin, qmax, bits,
                        signed, rounding``
    ``AttentionScores`` q (B,N,C), k (B,N,C) -> int64 acc (B,H,N,N) per head; ``heads, q_zero_point, k_zero_point``
    ``LogIntSoftmax``   logits (B,H,N,N) -> LIS codes; ``zero_point, bits, signed, x0, b_int, c_int, n``
    ``UniformSoftmax``  logits -> probability codes; same attributes plus ``out_bits``, ``full_scale``
    ``AttentionValues`` probs (B,H,N,N), v (B,N,C) -> int64 acc (B,N,C), heads merged; ``heads, v_zero_point,
                        probs`` (``"lis"``: sum of (v - zp) << (15 - A); ``"uniform"``: sum of p * (v - zp))
    ``Lut``             x, table[, rows (C,)] -> codes; ``bits, signed`` (with ``rows``: a 2-D table, row
                        ``rows[c]`` for channel ``c``)
    ``SelectToken``     x (B,N,C) -> (B,C); ``index``

Fusion (speed only, same results). Without a trace hook, the default backend runs some op sequences as one
fused kernel of :mod:`intsim.ops.fused` when their intermediate tensors are read by no other op: ``Linear ->
Requantize [-> Lut]``, ``Linear -> Split -> Requantize`` (one per part), ``Linear -> ResidualAdd`` (the linear as
the second operand) and ``AttentionScores [-> Requantize] -> softmax -> AttentionValues -> Requantize``. A fused
kernel computes exactly the composition of the ops (tested), and where its proof obligations fail it declines
and the ops run one by one. With a trace hook every op runs on its own, so the hook sees every op's inputs and
outputs.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from intsim.ops._threads import single_threaded_blas
from intsim.program import Op, Program, ProgramError

__all__ = ["EXECUTORS", "Backend", "TraceHook", "default_backend", "run_program"]

TraceHook = Callable[[Op, list, list], None]


class Backend:
    """Op functions (``ops``: the names of ``intsim.ops``) plus the data movement of one array library."""

    name = "numba"

    def __init__(self, ops_module):
        self.ops = ops_module

    def asarray(self, constant: np.ndarray):
        return constant

    def patchify(self, pixels, patch: int):
        batch, channels, height, width = pixels.shape
        grid = pixels.reshape(batch, channels, height // patch, patch, width // patch, patch)
        return np.ascontiguousarray(grid.transpose(0, 2, 4, 1, 3, 5)).reshape(batch, -1, channels * patch * patch)

    def split(self, x, sizes):
        return np.split(x, np.cumsum(sizes)[:-1], axis=-1)

    def prepend(self, x, token):
        token = np.broadcast_to(token.astype(x.dtype), (x.shape[0], 1, x.shape[2]))
        return np.concatenate([token, x], axis=1)

    def broadcast_to(self, x, shape):
        return np.broadcast_to(x, shape)

    def to_int32(self, x):
        return x.astype(np.int32)


def _numba_backend() -> Backend:
    import intsim.ops

    return Backend(intsim.ops)


def _heads(x, heads: int):
    """(B, N, C) -> (B, H, N, C/H): the head split of timm's attention (channels grouped head-major)."""
    batch, tokens, channels = x.shape
    return x.reshape(batch, tokens, heads, channels // heads).swapaxes(1, 2)


def _merge_heads(x):
    """(B, H, N, d) -> (B, N, H*d)."""
    batch, heads, tokens, width = x.shape
    return x.swapaxes(1, 2).reshape(batch, tokens, heads * width)


def _attention_scores(be, a, q, k):
    return be.ops.integer_matmul(_heads(q, a["heads"]), _heads(k, a["heads"]).swapaxes(-1, -2),
                                 a_zero_point=a["q_zero_point"], b_zero_point=a["k_zero_point"])


def _attention_values(be, a, probs, v):
    values = _heads(v, a["heads"])
    if a["probs"] == "lis":
        acc = be.ops.lis_attention_values(probs, values, v_zero_point=a["v_zero_point"])
    else:
        acc = be.ops.integer_matmul(probs, values, b_zero_point=a["v_zero_point"])
    return _merge_heads(acc)


def _exp_constants(a):
    from intsim.ops.softmax import IExpConstants

    return IExpConstants(x0=a["x0"], b_int=a["b_int"], c_int=a["c_int"], n=a["n"])


EXECUTORS: dict[str, Callable] = {
    "Patchify": lambda be, a, x: be.patchify(x, a["patch"]),
    "Linear": lambda be, a, x, w, b, x_shift=None: be.ops.integer_linear(x, w, x_zero_point=a["x_zero_point"], bias=b,
                                                                         x_shift=x_shift),
    "Requantize": lambda be, a, acc, m, s: be.ops.requantize(
        acc, m, s, zero_point=a["zero_point"], qmin=a["qmin"], qmax=a["qmax"], rounding=a["rounding"]),
    "Split": lambda be, a, x: tuple(be.split(x, a["sizes"])),
    "PrependToken": lambda be, a, x, token: be.prepend(x, token),
    "ResidualAdd": lambda be, a, x, y, ma, mb, s: be.ops.residual_add(
        x, be.broadcast_to(y, x.shape), a_zero_point=a["a_zero_point"], b_zero_point=a["b_zero_point"],
        a_multiplier=ma, b_multiplier=mb, shift=s, out_zero_point=a["out_zero_point"], qmin=a["qmin"],
        qmax=a["qmax"], rounding=a["rounding"]),
    "LayerNorm": lambda be, a, x, alpha, m, b, s: be.ops.ptf_layernorm(
        x, zero_point=a["zero_point"], alpha=alpha, multiplier=m, bias=b, shift=s, out_zero_point=a["out_zero_point"],
        qmin=a["qmin"], qmax=a["qmax"], bits=a["bits"], signed=a["signed"], rounding=a["rounding"]),
    "AttentionScores": _attention_scores,
    "LogIntSoftmax": lambda be, a, x: be.ops.log_int_softmax(
        x, zero_point=a["zero_point"], constants=_exp_constants(a), bits=a["bits"], signed=a["signed"]),
    "UniformSoftmax": lambda be, a, x: be.ops.uniform_int_softmax(
        x, zero_point=a["zero_point"], constants=_exp_constants(a), bits=a["bits"], signed=a["signed"],
        out_bits=a["out_bits"], full_scale=a["full_scale"]),
    "AttentionValues": _attention_values,
    "Lut": lambda be, a, x, table, rows=None: be.ops.lut_lookup(x, table, bits=a["bits"], signed=a["signed"], rows=rows),
    "SelectToken": lambda be, a, x: x[:, a["index"]],
}


_DEFAULT: Backend | None = None


def default_backend() -> Backend:
    """The default backend: the validated numba kernels of :mod:`intsim.ops` and numpy data movement."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = _numba_backend()
    return _DEFAULT


def _requantize_kwargs(op: Op, fetch) -> dict:
    multiplier, shift = (fetch(name) for name in op.inputs[1:])
    return dict(multiplier=multiplier, shift=shift, **{key: op.attrs[key] for key in ("zero_point", "qmin", "qmax", "rounding")})


def _fused_linear(ops: list[Op], fetch):
    """``Linear -> Requantize [-> Lut]`` or ``Linear -> Split -> Requantize`` per part: the parts' codes (the
    looked-up codes), or None."""
    from intsim.ops.fused import linear_requantize

    linear, requants = ops[0], [op for op in ops[1:] if op.kind == "Requantize"]
    lut = None
    if ops[-1].kind == "Lut":
        lookup = ops[-1]
        lut = dict(table=fetch(lookup.inputs[1]), bits=lookup.attrs["bits"], signed=lookup.attrs["signed"])
        if len(lookup.inputs) > 2:
            lut["rows"] = fetch(lookup.inputs[2])
    x, x_zero_point, weight, bias = _linear_operands(linear, fetch)
    return linear_requantize(x, weight, x_zero_point=x_zero_point, bias=bias,
                             parts=[_requantize_kwargs(op, fetch) for op in requants], lut=lut)


def _linear_operands(linear: Op, fetch):
    """A Linear op's ``(x, x_zero_point, weight, bias)``, its optional input shifts moved onto the weight (the
    fused kernels take plain operands: :func:`intsim.ops.matmul.shifted_linear_weight`, the same sums)."""
    from intsim.ops._derived import derived
    from intsim.ops.matmul import shifted_linear_weight

    x, weight, bias = (fetch(name) for name in linear.inputs[:3])
    if len(linear.inputs) > 3:  # the shifted weight is derived once per Program constant, not once per batch
        weight = derived("shifted_linear_weight", (weight, fetch(linear.inputs[3])), shifted_linear_weight)
    return x, linear.attrs["x_zero_point"], weight, bias


def _fused_linear_residual(ops: list[Op], fetch):
    """``Linear -> ResidualAdd`` reading the linear's output as its second operand: the sum's codes, or None."""
    from intsim.ops.fused import linear_residual_add

    linear, add = ops
    x, x_zero_point, weight, bias = _linear_operands(linear, fetch)
    residual, _, a_multiplier, b_multiplier, shift = (fetch(name) if index != 1 else None
                                                      for index, name in enumerate(add.inputs))
    keys = ("a_zero_point", "b_zero_point", "out_zero_point", "qmin", "qmax", "rounding")
    result = linear_residual_add(x, weight, x_zero_point=x_zero_point, bias=bias, residual=residual,
                                 a_multiplier=a_multiplier, b_multiplier=b_multiplier, shift=shift,
                                 **{key: add.attrs[key] for key in keys})
    return None if result is None else [result]


def _fused_attention(ops: list[Op], fetch):
    """``AttentionScores [-> Requantize] -> softmax -> AttentionValues -> Requantize``: the context codes, or None.

    Without the logits Requantize (the softmax reads the scores accumulator), the fused kernel gets the identity
    requantization (multiplier 1, shift 0) saturating to the softmax's declared input range: the same values,
    since the exporter declares that range from the scores' proved bound (and the kernel refuses otherwise).
    """
    from intsim.ops.fused import attention
    from intsim.ops._checks import int_range

    if len(ops) == 5:
        scores, logits, softmax, values, context = ops
        logit_args = _requantize_kwargs(logits, fetch)
    else:
        scores, softmax, values, context = ops
        if softmax.attrs["zero_point"] != 0:
            return None
        qmin, qmax = int_range(softmax.attrs["bits"], softmax.attrs["signed"])
        logit_args = dict(multiplier=1, shift=0, zero_point=0, qmin=qmin, qmax=qmax, rounding="half_up")
    a = softmax.attrs
    softmax_args = dict(kind="lis" if softmax.kind == "LogIntSoftmax" else "uniform", zero_point=a["zero_point"],
                        constants=_exp_constants(a), bits=a["bits"], signed=a["signed"])
    if softmax.kind == "UniformSoftmax":
        softmax_args.update(out_bits=a["out_bits"], full_scale=a["full_scale"])
    if values.attrs["heads"] != scores.attrs["heads"] or values.attrs["probs"] != softmax_args["kind"]:
        return None
    q, k = (fetch(name) for name in scores.inputs)
    result = attention(q, k, fetch(values.inputs[1]), heads=scores.attrs["heads"],
                       q_zero_point=scores.attrs["q_zero_point"], k_zero_point=scores.attrs["k_zero_point"],
                       logits=logit_args, softmax=softmax_args,
                       values=dict(v_zero_point=values.attrs["v_zero_point"]), context=_requantize_kwargs(context, fetch))
    return None if result is None else [result]


def _chain(program: Program, start: int, kinds: list[tuple[str, ...]], readers: dict[str, int]) -> bool:
    """Do ops ``start, start+1, ...`` have these kinds, each reading the previous one's first output as its first
    input, with every intermediate read by that op alone (and not a Program output)?"""
    ops = program.ops
    if start + len(kinds) > len(ops):
        return False
    for offset, allowed in enumerate(kinds):
        op = ops[start + offset]
        if op.kind not in allowed:
            return False
        if offset:
            produced = ops[start + offset - 1].outputs
            if len(produced) != 1 or op.inputs[0] != produced[0] or readers.get(produced[0]) != 1:
                return False
            if program.tensors[produced[0]].kind == "output":
                return False
    return True


def _fusions(program: Program) -> dict[int, tuple[int, Callable]]:
    """Fusable op sequences: start index -> (number of ops, runner(ops, fetch) -> outputs of the last op(s) or None)."""
    readers: dict[str, int] = {}
    for op in program.ops:
        for name in op.inputs:
            readers[name] = readers.get(name, 0) + 1
    found = {}
    ops = program.ops
    for index, op in enumerate(ops):
        if op.kind == "Linear" and _chain(program, index, [("Linear",), ("Requantize",), ("Lut",)], readers):
            found[index] = (3, _fused_linear)
        elif op.kind == "Linear" and _chain(program, index, [("Linear",), ("Requantize",)], readers):
            found[index] = (2, _fused_linear)
        elif op.kind == "Linear" and _chain(program, index, [("Linear",), ("Split",)], readers):
            parts = ops[index + 1].outputs
            requants = ops[index + 2 : index + 2 + len(parts)]
            if len(requants) == len(parts) and all(
                r.kind == "Requantize" and r.inputs[0] == part and readers.get(part) == 1
                and program.tensors[part].kind != "output" for r, part in zip(requants, parts)
            ):
                found[index] = (2 + len(parts), _fused_linear)
        elif (op.kind == "Linear" and index + 1 < len(ops) and ops[index + 1].kind == "ResidualAdd"
              and ops[index + 1].inputs[1] == op.outputs[0] and ops[index + 1].inputs[0] != op.outputs[0]
              and readers.get(op.outputs[0]) == 1 and program.tensors[op.outputs[0]].kind != "output"):
            found[index] = (2, _fused_linear_residual)
        elif op.kind == "AttentionScores" and _chain(
            program, index,
            [("AttentionScores",), ("Requantize",), ("LogIntSoftmax", "UniformSoftmax"), ("AttentionValues",),
             ("Requantize",)], readers,
        ):
            found[index] = (5, _fused_attention)
        elif op.kind == "AttentionScores" and _chain(
            program, index,
            [("AttentionScores",), ("LogIntSoftmax", "UniformSoftmax"), ("AttentionValues",), ("Requantize",)], readers,
        ):
            found[index] = (4, _fused_attention)
    return found


def _last_uses(program: Program) -> dict[str, int]:
    last = {}
    for index, op in enumerate(program.ops):
        for name in op.inputs:
            last[name] = index
    return last


def _run_ops(program, backend, trace, fusions, env, input_name, last_use, fetch) -> dict:
    """The op loop of :func:`run_program`: runs fused groups or single ops, frees activations after their last use."""
    skip_until = 0
    for index, op in enumerate(program.ops):
        if index < skip_until:
            continue
        if index in fusions:
            count, runner = fusions[index]
            group = program.ops[index : index + count]
            outputs = runner(group, fetch)
            if outputs is not None:
                env.update(zip([last.outputs[0] for last in group[-len(outputs):]], outputs))  # one output per op
                for position in range(index, index + count):
                    for name in program.ops[position].inputs:
                        if last_use.get(name) == position and name in env and name != input_name:
                            del env[name]
                skip_until = index + count
                continue
        executor = EXECUTORS.get(op.kind)
        if executor is None:
            raise ProgramError(f"op {op.name!r} has unknown kind {op.kind!r}; known: {', '.join(sorted(EXECUTORS))}")
        inputs = [env[name] if name in env else backend.asarray(program.constants[name]) for name in op.inputs]
        outputs = executor(backend, op.attrs, *inputs)
        outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]
        if trace is not None:
            trace(op, inputs, outputs)
        env.update(zip(op.outputs, outputs))
        for name in op.inputs:
            if last_use.get(name) == index and name in env and name != input_name:
                del env[name]
    return env


def run_program(program: Program, pixels, *, backend: Backend | None = None, trace: TraceHook | None = None,
                fuse: bool = True):
    """Run ``program`` on a batch of uint8 pixels ``(B, 3, H, W)``; return its int32 output (logits).

    ``trace(op, inputs, outputs)`` is called after every op with the op's input and output arrays (constants
    included), in program order; activations no longer needed are freed as the run goes, so a trace that
    keeps them must copy what it needs. ``fuse=False`` runs every op on its own even without a trace (the
    result is the same; fusion applies to the default backend only). Raises
    :class:`~intsim.program.ProgramError` for an unknown op kind or a pixel batch that does not match the
    Program's input, and ``OverflowError`` if the output does not fit its declared 32 bits.
    """
    backend = backend or default_backend()
    (input_name,) = program.input_names
    spec = program.tensors[input_name]
    if tuple(pixels.shape[1:]) != tuple(spec.shape) or str(pixels.dtype) not in ("uint8", "torch.uint8"):
        raise ProgramError(
            f"input {input_name!r} must be uint8 pixels of shape (batch, {', '.join(map(str, spec.shape))}), "
            f"got {pixels.dtype} {tuple(pixels.shape)}"
        )
    env = {input_name: pixels}
    last_use = _last_uses(program)
    fusions = _fusions(program) if fuse and trace is None and backend.name == "numba" else {}

    def fetch(name):
        return env[name] if name in env else backend.asarray(program.constants[name])

    with single_threaded_blas():  # every kernel parallelises itself (see intsim.ops._threads)
        env = _run_ops(program, backend, trace, fusions, env, input_name, last_use, fetch)
    (output_name,) = program.output_names
    logits = env[output_name]
    out_spec = program.tensors[output_name]
    low, high = int(logits.min()), int(logits.max())
    if low < out_spec.qmin or high > out_spec.qmax:
        raise OverflowError(f"output {output_name!r} reached [{low}, {high}], outside its declared {out_spec.bits}-bit range")
    return backend.to_int32(logits)
