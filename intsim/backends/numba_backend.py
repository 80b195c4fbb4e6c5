"""The default backend: the numba kernels of :mod:`intsim.ops`, numpy data movement, and the fused kernels of
:mod:`intsim.ops.fused` as its fusion table.

Fusion (speed only, same results): without a trace hook, these op sequences run as one fused kernel when their
intermediate tensors are read by no other op (and are no Program output): ``Linear -> Requantize [-> Lut]``,
``Linear -> Split -> Requantize`` (one per part), ``Linear -> ResidualAdd`` (the linear as the second operand) and
``AttentionScores [-> Requantize] -> softmax [-> LogEncode] -> attn @ V -> Requantize`` (the attn @ V kind the
softmax's codes call for, :data:`ATTENTION_SOFTMAXES`, or with AdaLog's encoder :data:`LOG_ENCODED_VALUES`). Each
linear kind of :data:`LINEAR_FORMS` (``Linear``, ``AsymmetricLinear``, ``LogLinear``) takes the place of ``Linear``:
it hands the fused kernels its operands as a plain integer linear with the very same sum. A fused kernel computes
exactly the composition of the ops (tested), and where its proof obligations fail it declines and the ops run one
by one.
"""

from __future__ import annotations

import numpy as np

from intsim.backends.base import ArrayBackend, Fusion
from intsim.limits import INT32_MAX, INT32_MIN
from intsim.ops._derived import derived

__all__ = ["ATTENTION_SOFTMAXES", "FUSIONS", "NumbaBackend"]


class NumbaBackend(ArrayBackend):
    """Op functions of :mod:`intsim.ops` on numpy arrays; constants are used as stored (no conversion)."""

    name = "numba"

    def __init__(self, ops_module=None):
        if ops_module is None:
            import intsim.ops as ops_module
        super().__init__(ops_module)
        self.fusions = FUSIONS

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


# ------------------------------------------------------------------------------------------------ matching
def _only_reader(program, readers, name: str) -> bool:
    """``name`` is read by one op input alone and is no Program output (a fused kernel may keep it internal)."""
    return readers.get(name) == 1 and program.tensors[name].kind != "output"


def _chain(program, start: int, kinds: list[tuple[str, ...]], readers) -> bool:
    """Do ops ``start, start+1, ...`` have these kinds, each reading the previous one's only output as its first
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
            if len(produced) != 1 or op.inputs[0] != produced[0] or not _only_reader(program, readers, produced[0]):
                return False
    return True


def _match_chain(*kinds: tuple[str, ...]):
    def match(program, index, readers) -> int:
        return len(kinds) if _chain(program, index, list(kinds), readers) else 0
    return match


def _match_linear_split(program, index, readers) -> int:
    """``Linear -> Split -> Requantize`` per part (the parts' Requantizes right after the Split, in order)."""
    ops = program.ops
    if not _chain(program, index, [_LINEAR_KINDS, ("Split",)], readers):
        return 0
    parts = ops[index + 1].outputs
    requants = ops[index + 2 : index + 2 + len(parts)]
    if len(requants) == len(parts) and all(r.kind == "Requantize" and r.inputs[0] == part
                                           and _only_reader(program, readers, part)
                                           for r, part in zip(requants, parts)):
        return 2 + len(parts)
    return 0


def _match_linear_residual(program, index, readers) -> int:
    """``Linear -> ResidualAdd`` reading the linear's output as its second operand (and not as its first)."""
    ops = program.ops
    op = ops[index]
    if op.kind not in LINEAR_FORMS or index + 1 >= len(ops):
        return 0
    add = ops[index + 1]
    if (add.kind == "ResidualAdd" and add.inputs[1] == op.outputs[0] and add.inputs[0] != op.outputs[0]
            and _only_reader(program, readers, op.outputs[0])):
        return 2
    return 0


# ------------------------------------------------------------------------------------------------ running
def _requantize_kwargs(op, fetch) -> dict:
    multiplier, shift = (fetch(name) for name in op.inputs[1:])
    return dict(multiplier=multiplier, shift=shift, **{key: op.attrs[key] for key in ("zero_point", "qmin", "qmax",
                                                                                        "rounding")})


def _plain_linear(linear, fetch):
    """A ``Linear``'s ``(x, x_zero_point, weight, bias)``, its optional input shifts moved onto the weight (the
    fused kernels take plain operands: :func:`intsim.ops.matmul.shifted_linear_weight`, the same sums)."""
    from intsim.ops.matmul import shifted_linear_weight

    x, weight, bias = (fetch(name) for name in linear.inputs[:3])
    if len(linear.inputs) > 3:  # the shifted weight is derived once per Program constant, not once per batch
        weight = derived("shifted_linear_weight", (weight, fetch(linear.inputs[3])), shifted_linear_weight)
    return x, linear.attrs["x_zero_point"], weight, bias


def _asymmetric_linear(linear, fetch):
    """An ``AsymmetricLinear`` as a plain linear: ``sum_k ((x_k - x_zp) << s_k) (w_nk - wzp_n)`` is the plain linear
    of the centred weight ``w - wzp`` (:func:`intsim.ops.logquant.centred_weight`), shifted by the optional input
    shifts as for ``Linear``; both derived once per Program constant."""
    from intsim.ops.logquant import centred_weight
    from intsim.ops.matmul import shifted_linear_weight

    x, weight, weight_zero_point, bias = (fetch(name) for name in linear.inputs[:4])
    if len(linear.inputs) > 4:
        centred = derived("shifted_centred_weight", (weight, weight_zero_point, fetch(linear.inputs[4])),
                          lambda w, z, k: shifted_linear_weight(centred_weight(w, z), k))
    else:
        centred = derived("centred_weight", (weight, weight_zero_point), centred_weight)
    return x, linear.attrs["x_zero_point"], centred, bias


def _log_linear(linear, fetch):
    """A ``LogLinear`` as a plain linear: ``sum_k W[x_k] (w_nk - wzp_n)`` is the plain linear (zero point 0) of the
    gathered log weights ``W[x]`` (:func:`intsim.ops.logquant.log_weights_of`) and the centred weight; ``None``
    when the codes leave ``0..2**b`` (the op itself then runs and names them) or the bias leaves int32."""
    from intsim.ops.logquant import centred_weight, log_weight_table, log_weights_of

    x, weight, weight_zero_point, bias, shift, mantissa = (fetch(name) for name in linear.inputs)
    if bias.size and (int(bias.min()) < INT32_MIN or int(bias.max()) > INT32_MAX):
        return None  # LogLinear's bias is int64; the plain linear's is int32
    max_shift = linear.attrs["max_shift"]
    table = derived(f"log_weight_table/{max_shift}", (shift, mantissa),
                    lambda sh, m: log_weight_table(sh, m, max_shift))
    weights = log_weights_of(x, table)
    if weights is None:
        return None
    return weights, 0, derived("centred_weight", (weight, weight_zero_point), centred_weight), bias


LINEAR_FORMS = {
    # linear kind -> its operands (x, x_zero_point, weight, bias) as a plain integer linear (or None: run the op)
    "Linear": _plain_linear,
    "AsymmetricLinear": _asymmetric_linear,
    "LogLinear": _log_linear,
}
_LINEAR_KINDS = tuple(LINEAR_FORMS)


def _run_linear(ops, fetch):
    """``Linear -> Requantize [-> Lut]`` or ``Linear -> Split -> Requantize`` per part: the parts' codes (the
    looked-up codes), or None."""
    from intsim.ops import fused

    linear, requants = ops[0], [op for op in ops[1:] if op.kind == "Requantize"]
    lut = None
    if ops[-1].kind == "Lut":
        lookup = ops[-1]
        lut = dict(table=fetch(lookup.inputs[1]), bits=lookup.attrs["bits"], signed=lookup.attrs["signed"])
        if len(lookup.inputs) > 2:
            lut["rows"] = fetch(lookup.inputs[2])
    operands = LINEAR_FORMS[linear.kind](linear, fetch)
    if operands is None:
        return None
    x, x_zero_point, weight, bias = operands
    return fused.linear_requantize(x, weight, x_zero_point=x_zero_point, bias=bias,
                                   parts=[_requantize_kwargs(op, fetch) for op in requants], lut=lut)


def _run_linear_residual(ops, fetch):
    """``Linear -> ResidualAdd`` reading the linear's output as its second operand: the sum's codes, or None."""
    from intsim.ops import fused

    linear, add = ops
    operands = LINEAR_FORMS[linear.kind](linear, fetch)
    if operands is None:
        return None
    x, x_zero_point, weight, bias = operands
    residual, _, a_multiplier, b_multiplier, shift = (fetch(name) if index != 1 else None
                                                      for index, name in enumerate(add.inputs))
    keys = ("a_zero_point", "b_zero_point", "out_zero_point", "qmin", "qmax", "rounding")
    result = fused.linear_residual_add(x, weight, x_zero_point=x_zero_point, bias=bias, residual=residual,
                                       a_multiplier=a_multiplier, b_multiplier=b_multiplier, shift=shift,
                                       **{key: add.attrs[key] for key in keys})
    return None if result is None else [result]


def _exp_options(attrs: dict) -> dict:
    from intsim.kinds.attention import exp_constants

    return dict(zero_point=attrs["zero_point"], constants=exp_constants(attrs), bits=attrs["bits"],
                signed=attrs["signed"])


ATTENTION_SOFTMAXES = {
    # softmax kind -> (the attn @ V kind its codes call for, the `softmax` options of intsim.ops.fused.attention)
    "LogIntSoftmax": ("LisAttentionValues", lambda a: dict(kind="lis", **_exp_options(a))),
    "UniformSoftmax": ("AttentionValues", lambda a: dict(kind="uniform", out_bits=a["out_bits"],
                                                         full_scale=a["full_scale"], **_exp_options(a))),
}
_VALUES_KINDS = tuple(sorted({values for values, _ in ATTENTION_SOFTMAXES.values()}))


LOG_ENCODED_VALUES = {
    # attn @ V kind reading log codes -> the softmax kind whose codes a LogEncode turns into them
    "LogAttentionValues": "UniformSoftmax",
}


def _run_attention(ops, fetch):
    """``AttentionScores [-> Requantize] -> softmax [-> LogEncode] -> attn @ V -> Requantize``: the context codes,
    or None.

    Without the logits Requantize (the softmax reads the scores accumulator), the fused kernel gets the identity
    requantization (multiplier 1, shift 0) saturating to the softmax's declared input range: the same values,
    since the exporter declares that range from the scores' proved bound (and the kernel refuses otherwise).
    With a ``LogEncode`` (the AdaLog post-softmax quantizer), the kernel encodes each probability code by the
    thresholds and weighs ``v`` by the decode table (:func:`intsim.ops.fused.attention`'s ``log_encode``).
    """
    from intsim.ops import fused
    from intsim.ops._checks import int_range

    scores, *rest = ops
    logits = rest.pop(0) if rest[0].kind == "Requantize" else None
    softmax, *encoders, values, context = rest
    if logits is not None:
        logit_args = _requantize_kwargs(logits, fetch)
    else:
        if softmax.attrs["zero_point"] != 0:
            return None
        qmin, qmax = int_range(softmax.attrs["bits"], softmax.attrs["signed"])
        logit_args = dict(multiplier=1, shift=0, zero_point=0, qmin=qmin, qmax=qmax, rounding="half_up")
    values_options = dict(v_zero_point=values.attrs["v_zero_point"])
    if encoders:
        (encoder,) = encoders
        if LOG_ENCODED_VALUES.get(values.kind) != softmax.kind:
            return None
        values_options["log_encode"] = dict(thresholds=fetch(encoder.inputs[1]), shift=fetch(values.inputs[2]),
                                            mantissa=fetch(values.inputs[3]), max_shift=values.attrs["max_shift"])
    elif ATTENTION_SOFTMAXES[softmax.kind][0] != values.kind:
        return None
    if values.attrs["heads"] != scores.attrs["heads"]:
        return None
    q, k = (fetch(name) for name in scores.inputs)
    result = fused.attention(q, k, fetch(values.inputs[1]), heads=scores.attrs["heads"],
                             q_zero_point=scores.attrs["q_zero_point"], k_zero_point=scores.attrs["k_zero_point"],
                             logits=logit_args, softmax=ATTENTION_SOFTMAXES[softmax.kind][1](softmax.attrs),
                             values=values_options, context=_requantize_kwargs(context, fetch))
    return None if result is None else [result]


_SOFTMAX_KINDS = tuple(ATTENTION_SOFTMAXES)
_LOG_VALUES_KINDS = tuple(LOG_ENCODED_VALUES)
_LOG_SOFTMAX_KINDS = tuple(sorted(set(LOG_ENCODED_VALUES.values())))

FUSIONS = (
    Fusion("linear_requantize_lut", _match_chain(_LINEAR_KINDS, ("Requantize",), ("Lut",)), _run_linear),
    Fusion("linear_requantize", _match_chain(_LINEAR_KINDS, ("Requantize",)), _run_linear),
    Fusion("linear_split_requantize", _match_linear_split, _run_linear),
    Fusion("linear_residual_add", _match_linear_residual, _run_linear_residual),
    Fusion("attention", _match_chain(("AttentionScores",), ("Requantize",), _SOFTMAX_KINDS, _VALUES_KINDS,
                                     ("Requantize",)), _run_attention),
    Fusion("attention_unscaled_logits", _match_chain(("AttentionScores",), _SOFTMAX_KINDS, _VALUES_KINDS,
                                                     ("Requantize",)), _run_attention),
    Fusion("log_attention", _match_chain(("AttentionScores",), ("Requantize",), _LOG_SOFTMAX_KINDS, ("LogEncode",),
                                         _LOG_VALUES_KINDS, ("Requantize",)), _run_attention),
    Fusion("log_attention_unscaled_logits", _match_chain(("AttentionScores",), _LOG_SOFTMAX_KINDS, ("LogEncode",),
                                                         _LOG_VALUES_KINDS, ("Requantize",)), _run_attention),
)
"""The numba backend's fusion table, tried in order at each op."""
