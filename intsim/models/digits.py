"""The embedded default model: a tiny timm ViT trained on scikit-learn's 8x8 digits.

It lets the main job (calibrate, export, run the integer Program, compare accuracies) run on a fresh
machine with no data and no downloads. The files next to this module are produced by
``tools/train_digits.py`` (deterministic; re-run it to regenerate them) and committed:

``digits_vit.safetensors``
    the float32 ``state_dict`` of a timm :class:`~timm.models.vision_transformer.VisionTransformer`
    built with :data:`DIGITS_CONFIG` ``["model"]`` (same block structure as ViT-Ti: class token,
    pre-norm blocks with LayerNorm, qkv bias, GELU MLP, final LayerNorm, linear head on the class token).
``digits_data.npz``
    ``calib_images`` / ``calib_labels``: 256 images of the training split, for calibration;
    ``heldout_images`` / ``heldout_labels``: the held-out 20 % split (never trained on), for accuracy.
    Images are uint8 ``(N, 3, 8, 8)`` RGB, labels int64 ``(N,)``.
``digits_vit.json``
    model and data config, class names ``"0"`` .. ``"9"``, the split, the training recipe and the
    measured held-out accuracy of the float model.

Pixels: a digits gray value ``v`` in ``0..16`` becomes the byte ``round(v * 255 / 16)``, computed
exactly as ``(255 * v + 8) // 16`` (the only tie, ``v = 8`` -> 127.5, goes up to 128), replicated to
the 3 channels. The model's data config is ``input_size (3, 8, 8)``, ``crop_pct 1.0`` (no resize or
crop on 8x8 inputs), ``mean = std = 0.5`` like the real ViT-Ti, so the export folds the same
normalisation into the patch embedding.

Only the numpy part (:func:`digits_calibration`, :func:`digits_heldout`, :func:`digits_metadata`)
is needed by the integer side; :func:`create_digits_vit` imports torch and timm when called.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DIGITS_CLASS_NAMES",
    "DIGITS_CONFIG",
    "DIGITS_DATA_PATH",
    "DIGITS_JSON_PATH",
    "DIGITS_WEIGHTS_PATH",
    "build_digits_vit",
    "create_digits_vit",
    "digits_calibration",
    "digits_heldout",
    "digits_metadata",
    "digits_to_rgb",
]

_HERE = Path(__file__).resolve().parent
DIGITS_WEIGHTS_PATH = _HERE / "digits_vit.safetensors"
DIGITS_DATA_PATH = _HERE / "digits_data.npz"
DIGITS_JSON_PATH = _HERE / "digits_vit.json"

DIGITS_CLASS_NAMES: tuple[str, ...] = tuple(str(i) for i in range(10))

#: ``"model"``: keyword arguments of timm's ``VisionTransformer``; ``"data"``: the timm data config
#: (what ``timm.data.resolve_data_config({}, model=create_digits_vit())`` returns).
DIGITS_CONFIG: dict[str, dict[str, Any]] = {
    "model": {
        "img_size": 8,
        "patch_size": 2,
        "in_chans": 3,
        "num_classes": 10,
        "embed_dim": 64,
        "depth": 4,
        "num_heads": 4,
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "class_token": True,
        "global_pool": "token",
    },
    "data": {
        "input_size": (3, 8, 8),
        "interpolation": "bicubic",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "crop_pct": 1.0,
        "crop_mode": "center",
    },
}


def digits_to_rgb(values: np.ndarray) -> np.ndarray:
    """Render digits gray values (``(N, 8, 8)`` or ``(N, 64)``, integers 0..16) as uint8 RGB ``(N, 3, 8, 8)``.

    Byte = ``(255 * v + 8) // 16`` = ``round(v * 255 / 16)`` with the single tie (``v = 8``) rounded up.
    """
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 64:
        array = array.reshape(-1, 8, 8)
    if array.ndim != 3 or array.shape[1:] != (8, 8):
        raise ValueError(f"digits_to_rgb: values must have shape (N, 8, 8) or (N, 64), got {array.shape}")
    as_int = np.rint(array).astype(np.int64)
    if not np.array_equal(as_int, array) or as_int.min(initial=0) < 0 or as_int.max(initial=0) > 16:
        raise ValueError("digits_to_rgb: values must be integers in [0, 16]")
    gray = ((255 * as_int + 8) // 16).astype(np.uint8)
    return np.repeat(gray[:, None, :, :], 3, axis=1)


@lru_cache(maxsize=1)
def _data() -> dict[str, np.ndarray]:
    if not DIGITS_DATA_PATH.is_file():
        raise FileNotFoundError(
            f"embedded digits data {DIGITS_DATA_PATH} is missing; regenerate it with tools/train_digits.py"
        )
    with np.load(DIGITS_DATA_PATH) as npz:
        arrays = {name: npz[name] for name in npz.files}
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def digits_calibration() -> tuple[np.ndarray, np.ndarray]:
    """Calibration images (uint8 ``(256, 3, 8, 8)``, from the training split) and their int64 labels.

    The arrays are read-only and shared between calls; copy them before modifying.
    """
    data = _data()
    return data["calib_images"], data["calib_labels"]


def digits_heldout() -> tuple[np.ndarray, np.ndarray]:
    """Held-out images (uint8 ``(360, 3, 8, 8)``, never trained on) and their int64 labels (read-only)."""
    data = _data()
    return data["heldout_images"], data["heldout_labels"]


def digits_metadata() -> dict[str, Any]:
    """The JSON written by ``tools/train_digits.py``: configs, class names, split, recipe, accuracy."""
    if not DIGITS_JSON_PATH.is_file():
        raise FileNotFoundError(
            f"embedded digits metadata {DIGITS_JSON_PATH} is missing; regenerate it with tools/train_digits.py"
        )
    return json.loads(DIGITS_JSON_PATH.read_text())


def build_digits_vit():
    """A freshly initialised (untrained) digits ViT with the data config set; used by the training tool."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(**DIGITS_CONFIG["model"])
    # ``timm.data.resolve_data_config({}, model=model)`` reads ``pretrained_cfg``.
    model.pretrained_cfg = {
        **DIGITS_CONFIG["data"],
        "architecture": "intsim_digits_vit",
        "num_classes": DIGITS_CONFIG["model"]["num_classes"],
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "fixed_input_size": True,
    }
    model.default_cfg = model.pretrained_cfg
    return model


def create_digits_vit():
    """The embedded digits ViT with its shipped weights, in eval mode (a ``torch.nn.Module``).

    Input: float ``(B, 3, 8, 8)`` normalised as ``(x / 255 - 0.5) / 0.5``
    (``intsim.data.Preprocess.normalize``); output: ``(B, 10)`` logits.
    """
    from intsim.models import _load_into, load_state_dict

    model = build_digits_vit()
    _load_into(model, load_state_dict(DIGITS_WEIGHTS_PATH), DIGITS_WEIGHTS_PATH, "intsim_digits_vit")
    return model.eval()
