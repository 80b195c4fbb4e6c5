"""Run an integer :class:`~intsim.program.Program` on a batch, op by op, with a trace hook.

Each op kind of the Program vocabulary (the table below, documented in ``docs/program.md``) has one executor
here. Executors call a **backend**: :func:`default_backend` (the default: ``intsim.ops`` kernels and numpy data
movement) or the torch twins of ``intsim.quant.torch_ops`` (the fake-quant model's ``exact`` precision).
Both backends expose the same op names and signatures, so one executor serves both, and the cross-check
compares two independent implementations of each op over the same Program.

Op kinds (inputs -> outputs; attributes)
    ``Patchify``        pixels (B,3,H,W) -> patches (B, H/p*W/p, 3*p*p), order (channel, row, column); ``patch``
    ``Linear``          x (...,K), weight (N,K), bias (N,) -> int64 acc; ``x_zero_point``
    ``Requantize``      acc, multiplier, shift -> codes; ``zero_point, qmin, qmax, rounding``
    ``Split``           x (...,sum sizes) -> one tensor per size along the last axis; ``sizes``
    ``PrependToken``    x (B,N,C), token (C,) -> (B,N+1,C)
    ``ResidualAdd``     a, b (b broadcast to a), a_multiplier, b_multiplier, shift -> codes;
                        ``a_zero_point, b_zero_point, out_zero_point, qmin, qmax, rounding``
    ``LayerNorm``       x, alpha, multiplier, bias, shift -> codes; ``zero_point, out_zero_point, qmin, qmax, bits,
                        signed, rounding``
    ``AttentionScores`` q (B,N,C), k (B,N,C) -> int64 acc (B,H,N,N) per head; ``heads, q_zero_point, k_zero_point``
    ``LogIntSoftmax``   logits (B,H,N,N) -> LIS codes; ``zero_point, bits, signed, x0, b_int, c_int, n``
    ``UniformSoftmax``  logits -> probability codes; same attributes plus ``out_bits``
    ``AttentionValues`` probs (B,H,N,N), v (B,N,C) -> int64 acc (B,N,C), heads merged; ``heads, v_zero_point,
                        probs`` (``"lis"``: sum of (v - zp) << (15 - A); ``"uniform"``: sum of p * (v - zp))
    ``Lut``             x, table -> codes; ``bits, signed``
    ``SelectToken``     x (B,N,C) -> (B,C); ``index``
"""

from __future__ import annotations

from typing import Callable

import numpy as np

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
    "Linear": lambda be, a, x, w, b: be.ops.integer_linear(x, w, x_zero_point=a["x_zero_point"], bias=b),
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
        out_bits=a["out_bits"]),
    "AttentionValues": _attention_values,
    "Lut": lambda be, a, x, table: be.ops.lut_lookup(x, table, bits=a["bits"], signed=a["signed"]),
    "SelectToken": lambda be, a, x: x[:, a["index"]],
}


_DEFAULT: Backend | None = None


def default_backend() -> Backend:
    """The default backend: the validated numba kernels of :mod:`intsim.ops` and numpy data movement."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = _numba_backend()
    return _DEFAULT


def _last_uses(program: Program) -> dict[str, int]:
    last = {}
    for index, op in enumerate(program.ops):
        for name in op.inputs:
            last[name] = index
    return last


def run_program(program: Program, pixels, *, backend: Backend | None = None, trace: TraceHook | None = None):
    """Run ``program`` on a batch of uint8 pixels ``(B, 3, H, W)``; return its int32 output (logits).

    ``trace(op, inputs, outputs)`` is called after every op with the op's input and output arrays (constants
    included), in program order; activations no longer needed are freed as the run goes, so a trace that
    keeps them must copy what it needs. Raises :class:`~intsim.program.ProgramError` for an unknown op kind or
    a pixel batch that does not match the Program's input, and ``OverflowError`` if the output does not fit
    its declared 32 bits.
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
    for index, op in enumerate(program.ops):
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
    (output_name,) = program.output_names
    logits = env[output_name]
    out_spec = program.tensors[output_name]
    low, high = int(logits.min()), int(logits.max())
    if low < out_spec.qmin or high > out_spec.qmax:
        raise OverflowError(f"output {output_name!r} reached [{low}, {high}], outside its declared {out_spec.bits}-bit range")
    return backend.to_int32(logits)
