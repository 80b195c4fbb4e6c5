"""Float models: loading timm models from local weight files, and the embedded digits ViT.

This is the torch side of intsim: torch and timm are imported inside the functions, so importing
``intsim.models`` (or the numpy-only data accessors of :mod:`intsim.models.digits`) stays light.

:func:`load_timm_model` builds a timm architecture by name with ``pretrained=False`` (no download)
and loads a local ``state_dict`` into it with ``strict=True``. Failures name the file: a missing
file (``FileNotFoundError``), a corrupt or unreadable file, or a ``state_dict`` that does not fit the
architecture (``ValueError`` listing a few missing / unexpected / shape-mismatched keys); an unknown
model name raises ``ValueError`` with close matches from ``timm.list_models``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["load_state_dict", "load_timm_model"]

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
# Checkpoints saved by training scripts often wrap the weights: {"state_dict": {...}, "epoch": ...}.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema")
_SHOW = 5  # keys listed per category in a mismatch message


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a ``state_dict`` (name -> tensor) from a ``.safetensors`` or torch (``.pth/.pt/.bin``) file.

    Torch files are read with ``torch.load(..., weights_only=True)`` (no pickled code runs); a
    checkpoint that wraps the weights under ``state_dict`` / ``model`` / ``model_state_dict`` /
    ``state_dict_ema`` / ``model_ema`` is unwrapped. Tensors are loaded on the CPU.

    Raises ``FileNotFoundError`` (missing file) or ``ValueError`` (unknown suffix, unreadable or
    corrupt file, content that is not a mapping of names to tensors), each naming the file.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"weights file {path} is not a regular file")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises SafetensorError / OSError / ValueError
            raise ValueError(f"cannot read weights file {path} as safetensors: {exc}") from exc
    elif suffix in TORCH_SUFFIXES:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError, RuntimeError (bad zip), EOFError, ...
            raise ValueError(
                f"cannot read weights file {path} with torch.load(weights_only=True): {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(state, Mapping):
            for key in _WRAPPER_KEYS:
                inner = state.get(key)
                if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                    state = inner
                    break
    else:
        allowed = ", ".join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)
        raise ValueError(f"weights file {path} has an unknown suffix {path.suffix!r}; expected one of {allowed}")

    if not isinstance(state, Mapping):
        raise ValueError(f"weights file {path} holds a {type(state).__name__}, not a state_dict (name -> tensor)")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"weights file {path} is not a state_dict of tensors: entries {', '.join(bad[:_SHOW])} are not tensors"
        )
    if not state:
        raise ValueError(f"weights file {path} holds an empty state_dict")
    return dict(state)


def _infer_num_classes(state_dict: Mapping[str, Any]) -> int | None:
    """Number of classes from the classifier weight (``head.weight``, or ``head.fc.weight`` in Swin)."""
    for key in ("head.weight", "head.fc.weight", "fc.weight", "classifier.weight"):
        weight = state_dict.get(key)
        if weight is not None and getattr(weight, "ndim", 0) == 2:
            return int(weight.shape[0])
    return None


def _load_into(model, state_dict: Mapping[str, Any], path: Path, name: str) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with a readable error naming the file."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                more = f", ... ({len(keys)} in all)" if len(keys) > _SHOW else ""
                parts.append(f"{label}: {', '.join(keys[:_SHOW])}{more}")
        raise ValueError(f"weights file {path} does not fit model {name!r}: " + "; ".join(parts))
    try:
        model.load_state_dict(state_dict, strict=True)
    except Exception as exc:  # dtype problems and the like that the checks above do not catch
        raise ValueError(f"weights file {path} does not fit model {name!r}: {exc}") from exc


def load_timm_model(name: str, weights_path: str | Path, **kwargs: Any):
    """Build ``timm.create_model(name, pretrained=False, ...)`` and load ``weights_path`` into it, strictly.

    ``num_classes`` is taken from the classifier weight of the file (``head.weight``) unless given in
    ``kwargs``; other ``kwargs`` go to ``timm.create_model``. Returns the model in eval mode on the CPU.
    No network access: the weights come only from ``weights_path``.

    Raises ``ValueError`` for an unknown model name (with close matches), and the errors of
    :func:`load_state_dict`; a ``state_dict`` that does not fit the architecture raises ``ValueError``
    naming the file and listing up to five missing, unexpected and shape-mismatched keys.
    """
    import timm

    if not isinstance(name, str) or not timm.is_model(name):
        close = difflib.get_close_matches(str(name), timm.list_models(), n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown timm model name {name!r}{hint}")
    path = Path(weights_path)
    state_dict = load_state_dict(path)
    if "num_classes" not in kwargs:
        num_classes = _infer_num_classes(state_dict)
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except Exception as exc:
        raise ValueError(f"timm could not build model {name!r} with {kwargs}: {exc}") from exc
    _load_into(model, state_dict, path, name)
    return model.eval()
