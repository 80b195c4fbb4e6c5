"""Image folders, labels and preprocessing to raw uint8 pixels (numpy + Pillow; no torch).

The integer Program starts from raw uint8 RGB pixels after resize and crop (DESIGN.md section 2.1):
the mean/std normalisation is folded into the patch embedding at export, so it is *not* applied here.
:class:`Preprocess` reproduces exactly what timm's eval transform
(``timm.data.create_transform(**config, is_training=False)``) does before ``ToTensor``/``Normalize``,
so ``Preprocess.normalize(preprocess(img))`` equals timm's output tensor bit for bit and the float,
fake-quant and integer pipelines all see the same pixels.

Folders
    :func:`list_images` lists image files recursively (jpg, jpeg, png, bmp, webp; any case), sorted.
    :class:`LabelledImages` reads a labelled folder, either ``labels.csv`` (``file,label``) beside
    ``images/`` or an ImageFolder tree (one subfolder per class).
Decoding
    :func:`load_batches` decodes and preprocesses images in parallel worker processes, in order, so
    the batches are the same (byte for byte) for any number of workers; an undecodable file raises
    ``ValueError`` naming the file and Pillow's reason.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS",
    "LabelledImages",
    "Preprocess",
    "SUPPORTED_MODES",
    "list_images",
    "load_batches",
    "load_image",
    "to_rgb",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# Names as in timm's ``str_to_interp_mode``; torchvision maps them to these Pillow filters for PIL images.
_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
_CROP_MODES = ("center", "squash", "border")
_DEFAULT_CROP_PCT = 0.875  # timm.data.DEFAULT_CROP_PCT, used when a model's config has none


def _as_size(value: Any) -> tuple[int, int]:
    size = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(size) == 3:  # timm's (C, H, W)
        size = size[1:]
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in size):
        raise ValueError(f"Preprocess: input_size must be (H, W) or (C, H, W) of positive ints, got {value!r}")
    return int(size[0]), int(size[1])


@dataclass(frozen=True)
class Preprocess:
    """timm's eval-time resize + crop, producing uint8 ``(3, H, W)`` RGB pixels.

    ``input_size`` is ``(H, W)``; ``interpolation`` one of nearest, bilinear, bicubic, box, hamming,
    lanczos (the Pillow filter of the same name; Pillow always antialiases when downscaling);
    ``crop_pct`` in ``(0, 1]`` typically; ``crop_mode`` center (timm's default), squash or border.
    ``mean`` and ``std`` (per channel, on the 0..1 scale) are metadata: they are applied only by
    :meth:`normalize`, for the float model; the integer Program folds them into the patch embedding.

    Algorithm of :meth:`__call__` (timm 1.0 ``transforms_imagenet_eval`` with torchvision 0.2x on PIL):

    1. convert to 8-bit RGB with :func:`to_rgb` (as timm's dataset readers do for 8-bit modes);
    2. ``scale = (floor(H / crop_pct), floor(W / crop_pct))``;
    3. center: if ``scale`` is square, resize the shorter side to ``scale[0]`` and the longer one to
       ``int(scale[0] * long / short)`` (truncated); otherwise resize to ``round(side / r)`` with
       ``r = min(h / scale_h, w / scale_w)``. squash: resize to ``scale`` exactly. border: resize to
       ``round(side / r)`` with ``r = max(...)``. A resize to the current size is skipped;
    4. center crop to ``(H, W)`` with offsets ``int(round((h - H) / 2))`` (Python's round: ties to
       even), padding first where the image is smaller (with 0, or in border mode with
       ``round(255 * mean)`` per channel).
    """

    input_size: tuple[int, int]
    interpolation: str = "bicubic"
    crop_pct: float = _DEFAULT_CROP_PCT
    crop_mode: str = "center"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", _as_size(self.input_size))
        if self.interpolation not in _PIL_FILTERS:
            raise ValueError(
                f"Preprocess: interpolation must be one of {', '.join(_PIL_FILTERS)}, got {self.interpolation!r}"
            )
        crop_pct = float(self.crop_pct)
        if not math.isfinite(crop_pct) or crop_pct <= 0:
            raise ValueError(f"Preprocess: crop_pct must be a positive finite number, got {self.crop_pct!r}")
        object.__setattr__(self, "crop_pct", crop_pct)
        if self.crop_mode not in _CROP_MODES:
            raise ValueError(f"Preprocess: crop_mode must be one of {', '.join(_CROP_MODES)}, got {self.crop_mode!r}")
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3 or not all(math.isfinite(v) for v in value):
                raise ValueError(f"Preprocess: {name} must be 3 finite floats (R, G, B), got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if min(self.std) <= 0:
            raise ValueError(f"Preprocess: std must be positive, got {self.std!r}")

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Preprocess:
        """From a timm data config (input_size, interpolation, crop_pct, crop_mode, mean, std)."""
        interpolation = config.get("interpolation") or "bilinear"
        if interpolation == "random":
            raise ValueError("Preprocess: interpolation 'random' is a training-time option; give a fixed filter")
        return cls(
            input_size=config["input_size"],
            interpolation=interpolation,
            crop_pct=config.get("crop_pct") or _DEFAULT_CROP_PCT,
            crop_mode=config.get("crop_mode") or "center",
            mean=tuple(config.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(config.get("std", (0.229, 0.224, 0.225))),
        )

    @classmethod
    def from_timm_model(cls, model: Any) -> Preprocess:
        """The model's own eval preprocessing: ``timm.data.resolve_data_config({}, model=model)``."""
        from timm.data import resolve_data_config

        return cls.from_config(resolve_data_config({}, model=model))

    def to_config(self) -> dict[str, Any]:
        """The timm data config (``timm.data.create_transform(**p.to_config())`` builds timm's transform)."""
        return {
            "input_size": (3, *self.input_size),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
            "mean": self.mean,
            "std": self.std,
        }

    # ----------------------------------------------------------------- pixels
    @property
    def scale_size(self) -> tuple[int, int]:
        """``(floor(H / crop_pct), floor(W / crop_pct))``: the size resized to before the crop."""
        return tuple(math.floor(x / self.crop_pct) for x in self.input_size)  # type: ignore[return-value]

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(h, w)`` an image of ``(height, width)`` is resized to before the crop."""
        scale_h, scale_w = self.scale_size
        if self.crop_mode == "squash":
            return scale_h, scale_w
        if self.crop_mode == "center" and scale_h == scale_w:
            # torchvision Resize(int): shorter side to the size, longer side truncated.
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = scale_h, int(scale_h * long / short)
            return (new_long, new_short) if width <= height else (new_short, new_long)
        # timm ResizeKeepRatio: longest=0 (center, non-square target) or longest=1 (border).
        ratio_h, ratio_w = height / scale_h, width / scale_w
        ratio = max(ratio_h, ratio_w) if self.crop_mode == "border" else min(ratio_h, ratio_w)
        return round(height / ratio), round(width / ratio)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """Resize and crop a PIL image; return uint8 ``(3, H, W)`` RGB pixels (not normalised)."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"Preprocess: expected a PIL.Image.Image, got {type(image).__name__}")
        if image.mode != "RGB":
            image = to_rgb(image)
        height, width = image.height, image.width
        new_h, new_w = self.resized_size(height, width)
        if (new_h, new_w) != (height, width):
            image = image.resize((new_w, new_h), _PIL_FILTERS[self.interpolation])
        crop_h, crop_w = self.input_size
        if crop_w > image.width or crop_h > image.height:
            fill = tuple(round(255 * v) for v in self.mean) if self.crop_mode == "border" else (0, 0, 0)
            left = (crop_w - image.width) // 2 if crop_w > image.width else 0
            top = (crop_h - image.height) // 2 if crop_h > image.height else 0
            canvas = Image.new("RGB", (max(crop_w, image.width), max(crop_h, image.height)), fill)
            canvas.paste(image, (left, top))
            image = canvas
        if (image.height, image.width) != (crop_h, crop_w):
            top = int(round((image.height - crop_h) / 2.0))
            left = int(round((image.width - crop_w) / 2.0))
            image = image.crop((left, top, left + crop_w, top + crop_h))
        pixels = np.asarray(image, dtype=np.uint8)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 ``(3, H, W)`` or ``(B, 3, H, W)`` -> float32 ``(x / 255 - mean) / std``, for the float model.

        The same float32 operations as torchvision's ``ToTensor`` + ``Normalize``, so the result equals
        timm's transform output bit for bit.
        """
        array = np.asarray(pixels)
        if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-3] != 3:
            raise ValueError(
                f"Preprocess.normalize: pixels must be uint8 (3, H, W) or (B, 3, H, W), "
                f"got {array.dtype} {array.shape}"
            )
        mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1)
        return (array.astype(np.float32) / np.float32(255.0) - mean) / std


# --------------------------------------------------------------------- folders
def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _walk_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive, hidden files and folders skipped), sorted by relative path parts.

    Symlinked files are listed; symlinked folders below ``root`` are not entered (no cycles).
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath, f) for f in filenames if _is_image(Path(f)))
    return sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(root).parts)


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted by relative path; raises ``ValueError`` if none.

    Extensions: jpg, jpeg, png, bmp, webp in any case; hidden files and folders (``.name``) are
    skipped. The error names the folder (missing, not a folder, or holding no images).
    """
    root = Path(folder)
    if not root.exists():
        raise ValueError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"image folder {root} is not a folder")
    images = _walk_images(root)
    if not images:
        exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        raise ValueError(f"image folder {root} holds no images (looked recursively for {exts}, any case)")
    return images


_LAYOUTS_HELP = (
    "expected either labels.csv with a header 'file,label' (file relative to images/ or to the folder, "
    "label a class index) or an ImageFolder tree (one subfolder per class, classes indexed in sorted name order)"
)


class LabelledImages:
    """A labelled image folder: ``paths`` (sorted), int64 ``labels``, optional ``class_names``.

    Layouts:

    ``labels.csv``
        ``folder/labels.csv`` with header ``file,label`` (extra columns are ignored); ``file`` is
        relative to ``folder/images/`` or, if not found there, to ``folder``; ``label`` is a
        non-negative integer class index. ``class_names`` is ``None``.
    ImageFolder
        one subfolder per class (hidden ones skipped), images anywhere below it; the class index is
        the position of the subfolder in plain sorted name order (torchvision's ``ImageFolder``;
        timm's reader sorts naturally, which differs only for names such as ``2`` vs ``10``).
        Empty class folders keep their index. ``class_names`` are the subfolder names.

    Entries are sorted by path (relative to ``images/`` or the folder); ``limit`` keeps the first
    ``limit`` of them. ``num_classes`` (the model's class count; ``None``: not checked) refuses, before any
    image is decoded, a label outside ``[0, num_classes)`` in any row of ``labels.csv`` or a class folder
    beyond the model's classes (see :meth:`check_labels`). Every error is a ``ValueError`` naming the
    folder or file.
    """

    def __init__(self, folder: str | Path, limit: int | None = None, *, num_classes: int | None = None) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise ValueError(f"labelled image folder {root} does not exist or is not a folder")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
            raise ValueError(f"LabelledImages: limit must be a positive int or None, got {limit!r}")
        self.root = root
        if (root / "labels.csv").is_file():
            self.layout = "labels.csv"
            paths, labels, self._lines = self._read_csv(root)
            self.class_names: tuple[str, ...] | None = None
        else:
            self.layout = "imagefolder"
            paths, labels, self.class_names = self._read_imagefolder(root)
            self._lines = None
        if num_classes is not None:
            self._check(paths, labels, num_classes)  # every row, also those beyond ``limit``: the file is wrong
        if limit is not None:
            paths, labels = paths[: int(limit)], labels[: int(limit)]
        self.paths: tuple[Path, ...] = tuple(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.labels.setflags(write=False)

    def check_labels(self, num_classes: int) -> None:
        """Raise ``ValueError`` naming the file (``labels.csv`` and row, or the class folder), the label and the
        allowed range if a label of this folder is outside ``[0, num_classes)``."""
        self._check(self.paths, self.labels, num_classes)

    def _check(self, paths: Sequence[Path], labels: Sequence[int], num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"LabelledImages: num_classes must be a positive int, got {num_classes!r}")
        bad = [i for i, label in enumerate(labels) if not 0 <= int(label) < num_classes]
        if not bad:
            return
        i = bad[0]
        more = f" ({len(bad)} rows in all)" if len(bad) > 1 else ""
        allowed = f"allowed 0..{num_classes - 1} (the model has {num_classes} classes)"
        if self._lines is not None:
            name = str(paths[i].relative_to(self.root))
            raise ValueError(
                f"{self.root / 'labels.csv'}, line {self._lines[i]}: file {name!r} has label {int(labels[i])}, "
                f"{allowed}{more}; give labels of this model's classes or the matching --model"
            )
        folder = paths[i].relative_to(self.root).parts[0]
        raise ValueError(
            f"{self.root}: class folder {folder!r} (e.g. file {paths[i].name!r}) gets label {int(labels[i])} "
            f"(class folders are indexed in sorted order), {allowed}{more}; "
            f"keep one folder per class of this model"
        )

    @staticmethod
    def _read_csv(root: Path) -> tuple[list[Path], list[int], list[int]]:
        csv_path = root / "labels.csv"
        try:
            with open(csv_path, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ValueError(f"cannot read {csv_path}: {exc}") from exc
        header = [c.strip().lower() for c in rows[0]] if rows else []
        if "file" not in header or "label" not in header:
            raise ValueError(f"{csv_path}: first line must be the header 'file,label', got {','.join(header)!r}")
        i_file, i_label = header.index("file"), header.index("label")
        entries: dict[str, tuple[Path, int, int]] = {}
        missing: list[str] = []
        for line, row in enumerate(rows[1:], start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= max(i_file, i_label):
                raise ValueError(f"{csv_path}, line {line}: expected columns file,label, got {','.join(row)!r}")
            name, raw = row[i_file].strip(), row[i_label].strip()
            try:
                label = int(raw)
            except ValueError:
                label = -1
            if label < 0:
                raise ValueError(f"{csv_path}, line {line}: label {raw!r} is not a non-negative integer")
            if not name:
                raise ValueError(f"{csv_path}, line {line}: empty file name")
            if name in entries:
                raise ValueError(f"{csv_path}, line {line}: file {name!r} is listed twice")
            for candidate in (root / "images" / name, root / name):
                if candidate.is_file():
                    entries[name] = (candidate, label, line)
                    break
            else:
                missing.append(name)
        if missing:
            shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
            raise ValueError(f"{csv_path}: listed files not found under {root / 'images'} or {root}: {shown}")
        if not entries:
            raise ValueError(f"{csv_path} lists no images")
        order = sorted(entries, key=lambda n: Path(n).parts)
        return [entries[n][0] for n in order], [entries[n][1] for n in order], [entries[n][2] for n in order]

    @staticmethod
    def _read_imagefolder(root: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        paths: list[Path] = []
        labels: list[int] = []
        for index, name in enumerate(classes):
            found = _walk_images(root / name)
            paths.extend(found)
            labels.extend([index] * len(found))
        if not paths:
            raise ValueError(f"{root} is not a labelled image folder: {_LAYOUTS_HELP}")
        return paths, labels, tuple(classes)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"LabelledImages({str(self.root)!r}, layout={self.layout!r}, n={len(self)})"

    def batches(
        self,
        preprocess: Preprocess,
        batch_size: int = 32,
        workers: int = 0,
        progress: bool | str = False,
        *,
        start_method: str | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(uint8 (B, 3, H, W), int64 (B,))`` batches in order; see :func:`load_batches`."""
        start = 0
        for images in load_batches(self.paths, preprocess, batch_size, workers, progress, start_method=start_method):
            yield images, self.labels[start : start + len(images)]
            start += len(images)


# --------------------------------------------------------------------- decoding
# Modes whose colour channels Pillow's ``convert("RGB")`` maps correctly to 8-bit RGB (alpha dropped).
_CONVERT_MODES = ("1", "L", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
_UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
SUPPORTED_MODES: tuple[str, ...] = _CONVERT_MODES + _UINT16_MODES + ("I",)


def _integer_range(image: Image.Image) -> tuple[int, int]:
    """The full sample range ``(lo, hi)`` of an integer-mode image (see :func:`to_rgb`)."""
    if image.mode in _UINT16_MODES:
        return 0, 65535
    # mode "I" (int32 in memory) also holds 16-bit samples: PGM/PPM (Pillow rescales maxval to 65535),
    # 16-bit PNG in older Pillow, 16-bit signed TIFF.
    if image.format in ("PPM", "PNG"):
        return 0, 65535
    if image.format == "TIFF":
        bits = image.tag_v2.get(258) if hasattr(image, "tag_v2") else None
        bits = bits[0] if isinstance(bits, tuple) else bits
        if bits == 16:
            return -32768, 32767
    return -(2**31), 2**31 - 1


def to_rgb(image: Image.Image, source: str | Path = "image") -> Image.Image:
    """An 8-bit ``RGB`` copy of ``image`` (``source`` names it in errors); the one colour conversion of intsim.

    - ``1, L, P, RGB, RGBX, CMYK, YCbCr, LAB, HSV``: Pillow's ``convert("RGB")`` (as timm's readers do).
    - Alpha (``RGBA, LA, PA``, ``P`` with a transparent colour): the alpha channel is **dropped**, the stored
      colour kept (what timm/torchvision's ``convert("RGB")`` does, so the float model sees timm's pixels);
      no compositing on a background.
    - 16-bit integer (``I;16, I;16L, I;16B, I;16N``): scaled by the full range, ``v -> round(v * 255 / 65535)``.
    - ``I`` (32-bit signed in memory): scaled by the full range of the file's samples,
      ``v -> round((v - lo) * 255 / (hi - lo))``: 0..65535 for PGM/PPM and PNG (16-bit samples), -32768..32767
      for a 16-bit TIFF, else the int32 range; the gray value is replicated to R, G, B.
    - ``F`` (32-bit float) is refused: it has no defined range (0..1, 0..255 and HDR are all common), so any
      mapping would guess. Other modes are refused too.

    16-bit-per-channel RGB(A) PNGs are decoded by Pillow itself to 8-bit ``RGB(A)`` (high byte), before this.
    Raises ``ValueError`` naming ``source``, the mode and the supported modes.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _CONVERT_MODES:
        return image.convert("RGB")
    if mode in _UINT16_MODES or mode == "I":
        lo, hi = _integer_range(image)
        values = np.asarray(image).astype(np.int64)
        values = np.clip(values, lo, hi) - lo
        span = hi - lo
        gray = ((values * 510 + span) // (2 * span)).astype(np.uint8)  # round(v * 255 / span), no ties occur
        return Image.fromarray(gray, mode="L").convert("RGB")
    raise _unsupported_mode(mode, source)


def _unsupported_mode(mode: str, source: str | Path) -> ValueError:
    what = "Pillow mode F (32-bit float) has no defined range (0..1? 0..255? HDR?)" if mode == "F" else (
        f"Pillow mode {mode!r} cannot be converted to RGB correctly")
    return ValueError(f"image {source}: {what}; supported modes: {', '.join(SUPPORTED_MODES)}; "
                      f"save it as 8-bit RGB or grayscale, or 16-bit grayscale PNG")


def load_image(path: str | Path, preprocess: Preprocess) -> np.ndarray:
    """Decode one image file, convert it to 8-bit RGB with :func:`to_rgb` and preprocess it: uint8 ``(3, H, W)``.

    Raises ``ValueError`` naming the file and Pillow's reason when it is missing or cannot be decoded
    (unknown format, truncated or corrupt data, decompression bomb), or naming the file and its mode when the
    mode cannot be converted correctly (``F`` and modes outside :data:`SUPPORTED_MODES`; see :func:`to_rgb`).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            rgb = to_rgb(image, path) if mode in SUPPORTED_MODES else None
    except FileNotFoundError as exc:
        raise ValueError(f"image file {path} does not exist") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from exc
    if rgb is None:
        raise _unsupported_mode(mode, path)
    return preprocess(rgb)


def _load_chunk(paths: Sequence[Path], preprocess: Preprocess) -> np.ndarray:
    return np.stack([load_image(p, preprocess) for p in paths])


def _context(start_method: str | None) -> multiprocessing.context.BaseContext:
    """``fork`` where the platform has it (Linux; as torch's DataLoader), else ``spawn``.

    Not ``forkserver`` / ``spawn`` by default: their workers re-import the main module, which in a
    real run imports torch and timm (about 5 s per worker here, against 0.3 s for a forked pool).
    Forking a process whose torch/numba thread pools exist is safe here because the workers run only
    Pillow and numpy code (no OpenMP, no BLAS), as in torch's DataLoader.
    """
    methods = multiprocessing.get_all_start_methods()
    if start_method is None:
        start_method = "fork" if "fork" in methods else "spawn"
    if start_method not in methods:
        raise ValueError(f"load_batches: start_method must be one of {', '.join(methods)}, got {start_method!r}")
    return multiprocessing.get_context(start_method)


def load_batches(
    paths: Iterable[str | Path],
    preprocess: Preprocess,
    batch_size: int = 32,
    workers: int = 0,
    progress: bool | str = False,
    *,
    start_method: str | None = None,
) -> Iterator[np.ndarray]:
    """Decode and preprocess ``paths`` into uint8 ``(B, 3, H, W)`` batches, in the order given.

    ``workers = 0`` decodes in this process; ``workers = n > 0`` in ``n`` worker processes
    (``start_method``: default ``fork`` where available, else ``spawn``), each batch split into ``n``
    chunks, up to two batches in flight. Results are put back in order, so the batches are identical
    for any ``workers``.
    The last batch may be shorter; no paths, no batches. ``progress`` shows a tqdm bar (a string is
    its description). Raises ``ValueError`` naming the file for a missing or undecodable image.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"load_batches: batch_size must be a positive int, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"load_batches: workers must be an int >= 0, got {workers!r}")
    if not isinstance(preprocess, Preprocess):
        raise TypeError(f"load_batches: preprocess must be a Preprocess, got {type(preprocess).__name__}")
    context = _context(start_method) if workers else None
    paths = [Path(p) for p in paths]
    groups = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    if not groups:
        return

    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(paths),
        unit="img",
        desc=progress if isinstance(progress, str) else "images",
        disable=not progress,
    )
    try:
        if workers == 0:
            for group in groups:
                batch = _load_chunk(group, preprocess)
                bar.update(len(group))
                yield batch
            return
        with ProcessPoolExecutor(max_workers=int(workers), mp_context=context) as pool:
            pending: deque = deque()
            todo = iter(groups)

            def submit() -> None:
                group = next(todo, None)
                if group is not None:
                    n_chunks = min(int(workers), len(group))
                    bounds = np.linspace(0, len(group), n_chunks + 1).astype(int)
                    chunks = [group[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
                    pending.append((len(group), [pool.submit(_load_chunk, c, preprocess) for c in chunks]))

            try:
                submit()
                submit()
                while pending:
                    count, futures = pending.popleft()
                    batch = np.concatenate([f.result() for f in futures])
                    submit()
                    bar.update(count)
                    yield batch
            finally:
                for _, futures in pending:
                    for future in futures:
                        future.cancel()
    finally:
        bar.close()
