"""Data-movement kinds (no arithmetic, no ``intsim.ops`` function): ``Patchify``, ``Split``, ``PrependToken``,
``SelectToken``."""

from __future__ import annotations

from intsim import op_schema as s
from intsim.kinds.base import OpKind
from intsim.op_schema import Attribute, Operand, OpSchema, OpView

__all__ = ["KINDS"]


def _patchify(view: OpView) -> list[tuple]:
    (x,) = view.inputs
    batch, channels, height, width = s.axes(x, "(batch, channels, height, width)")
    patch = view.attrs["patch"]
    if height % patch or width % patch:
        raise s.attribute_error("patch", f"an int dividing the height {height} and width {width} of {x.name!r}", patch)
    return [(batch, (height // patch) * (width // patch), channels * patch * patch)]


def _split(view: OpView) -> list[tuple]:
    (x,) = view.inputs
    sizes = view.attrs["sizes"]
    if sum(sizes) != s.channels(x):
        raise s.attribute_error("sizes", f"sizes summing to {x.shape[-1]} (the last axis of {x.name!r})", sizes)
    return [x.shape[:-1] + (size,) for size in sizes]


def _prepend_token(view: OpView) -> list[tuple]:
    x, token = view.inputs
    batch, tokens, channels = s.axes(x, "(batch, tokens, channels)")
    s.shape_is(token, (channels,), f"C, the channels of {x.name!r}")
    return [(batch, tokens + 1, channels)]


def _select_token(view: OpView) -> list[tuple]:
    (x,) = view.inputs
    batch, tokens, channels = s.axes(x, "(batch, tokens, channels)")
    if view.attrs["index"] >= tokens:
        raise s.attribute_error("index", f"an int in [0, {tokens - 1}] (the tokens of {x.name!r})", view.attrs["index"])
    return [(batch, channels)]


KINDS = (
    OpKind("Patchify", OpSchema("Patchify", (Operand("pixels"),), (s.int_attribute("patch", (1, None)),), _patchify,
                                checks="pixels (B, C, H, W); patch divides H and W"),
           execute=lambda be, a, x: be.patchify(x, a["patch"]), function=None,
           summary="pixels (B,3,H,W) -> patches (B, H/p*W/p, 3*p*p), order (channel, row, column)"),
    OpKind("Split", OpSchema("Split", (Operand("x"),), (Attribute("sizes", "ints", 1),), _split, outputs="sizes",
                             checks="sizes sum to x's last axis; one output per size"),
           execute=lambda be, a, x: tuple(be.split(x, a["sizes"])), function=None,
           summary="x (...,sum sizes) -> one tensor per size along the last axis"),
    OpKind("PrependToken", OpSchema("PrependToken", (Operand("x"), Operand("token", constant=True)), (),
                                    _prepend_token, checks="x (B, N, C), token (C,)"),
           execute=lambda be, a, x, token: be.prepend(x, token), function=None,
           summary="x (B,N,C), token (C,) -> (B,N+1,C)"),
    OpKind("SelectToken", OpSchema("SelectToken", (Operand("x"),), (s.int_attribute("index", (0, None)),),
                                   _select_token, checks="x (B, N, C); index < N"),
           execute=lambda be, a, x: x[:, a["index"]], function=None, summary="x (B,N,C) -> (B,C)"),
)
