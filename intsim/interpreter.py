"""Run an integer :class:`~intsim.program.Program` on a batch, op by op, with a trace hook.

The interpreter is generic: each op runs the executor of its kind in the registry :mod:`intsim.kinds` (the kinds
are listed in ``docs/program.md``), on a **backend** (:mod:`intsim.backends`): :func:`default_backend` (the
``intsim.ops`` kernels and numpy data movement) or the torch twins of :mod:`intsim.quant.torch_ops` (the fake-quant
model's ``exact`` precision, :func:`intsim.quant.exact.run_exact`). Both backends expose the same op names and
signatures, so one executor serves both, and the cross-check compares two independent implementations of each op
over the same Program.

A backend prepares a Program once (its constants converted to the backend's arrays, its fusion plan) and keeps it
per Program. Without a trace hook, the op sequences of the backend's fusion table run as one fused kernel (speed
only, same results; the numba backend's table: :mod:`intsim.backends.numba_backend`); with a trace hook every op
runs on its own, so the hook sees every op's inputs and outputs.
"""

from __future__ import annotations

from typing import Callable

from intsim.backends import Backend, default_backend, get_backend
from intsim.kinds.registry import OP_KINDS
from intsim.ops._threads import single_threaded_blas
from intsim.program import Op, Program, ProgramError

__all__ = ["Backend", "TraceHook", "default_backend", "run_program"]

TraceHook = Callable[[Op, list, list], None]


def _executors(program: Program) -> list[Callable]:
    """Each op's executor (its kind's, from the registry); ProgramError naming an op of an unknown kind."""
    executors = []
    for op in program.ops:
        kind = OP_KINDS.get(op.kind)
        if kind is None:
            raise ProgramError(f"op {op.name!r} has unknown kind {op.kind!r}; known: {', '.join(sorted(OP_KINDS))}")
        executors.append(kind.execute)
    return executors


def _last_uses(program: Program) -> dict[str, int]:
    last = {}
    for index, op in enumerate(program.ops):
        for name in op.inputs:
            last[name] = index
    return last


def _free(env: dict, ops, index: int, last_use: dict, keep: str) -> None:
    """Drop the activations whose last reader is op ``index`` (never ``keep``, the Program input)."""
    for name in ops[index].inputs:
        if last_use.get(name) == index and name in env and name != keep:
            del env[name]


def _run_ops(program, backend, trace, fusions, env, constants, input_name) -> dict:
    """The op loop of :func:`run_program`: runs fused groups or single ops, frees activations after their last use."""
    ops, executors, last_use = program.ops, _executors(program), _last_uses(program)

    def fetch(name):
        return env[name] if name in env else constants[name]

    skip_until = 0
    for index, op in enumerate(ops):
        if index < skip_until:
            continue
        if index in fusions:
            count, runner = fusions[index]
            group = ops[index : index + count]
            outputs = runner(group, fetch)
            if outputs is not None:
                env.update(zip([last.outputs[0] for last in group[-len(outputs):]], outputs))  # one output per op
                for position in range(index, index + count):
                    _free(env, ops, position, last_use, input_name)
                skip_until = index + count
                continue
        inputs = [fetch(name) for name in op.inputs]
        outputs = executors[index](backend, op.attrs, *inputs)
        outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]
        if trace is not None:
            trace(op, inputs, outputs)
        env.update(zip(op.outputs, outputs))
        _free(env, ops, index, last_use, input_name)
    return env


def run_program(program: Program, pixels, *, backend: Backend | str | None = None, trace: TraceHook | None = None,
                fuse: bool = True):
    """Run ``program`` on a batch of uint8 pixels ``(B, 3, H, W)``; return its int32 output (logits).

    ``backend``: a backend (:mod:`intsim.backends`) or the name of one (default: :func:`default_backend`).
    ``trace(op, inputs, outputs)`` is called after every op with the op's input and output arrays (constants
    included), in program order; activations no longer needed are freed as the run goes, so a trace that keeps
    them must copy what it needs. ``fuse=False`` runs every op on its own even without a trace (the result is the
    same; fusion uses the backend's fusion table). Raises :class:`~intsim.program.ProgramError` for an unknown op
    kind or a pixel batch that does not match the Program's input, and ``OverflowError`` if the output does not
    fit its declared 32 bits.
    """
    backend = get_backend(backend) if isinstance(backend, str) else backend or default_backend()
    (input_name,) = program.input_names
    spec = program.tensors[input_name]
    if tuple(pixels.shape[1:]) != tuple(spec.shape) or str(pixels.dtype) not in ("uint8", "torch.uint8"):
        raise ProgramError(
            f"input {input_name!r} must be uint8 pixels of shape (batch, {', '.join(map(str, spec.shape))}), "
            f"got {pixels.dtype} {tuple(pixels.shape)}"
        )
    prepared = backend.prepare(program)
    fusions = prepared.fusions if fuse and trace is None else {}
    with single_threaded_blas():  # every kernel parallelises itself (see intsim.ops._threads)
        env = _run_ops(program, backend, trace, fusions, {input_name: pixels}, prepared.constants, input_name)
    (output_name,) = program.output_names
    logits = env[output_name]
    out_spec = program.tensors[output_name]
    low, high = int(logits.min()), int(logits.max())
    if low < out_spec.qmin or high > out_spec.qmax:
        raise OverflowError(f"output {output_name!r} reached [{low}, {high}], outside its declared {out_spec.bits}-bit range")
    return backend.to_int32(logits)


def _fusions(program: Program) -> dict[int, tuple[int, Callable]]:
    """The default backend's fusion plan of ``program`` (start index -> (number of ops, runner)); for tests."""
    return dict(default_backend().prepare(program).fusions)
