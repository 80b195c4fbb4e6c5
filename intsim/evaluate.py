"""Library functions behind the CLI: build and calibrate, quantize to a Program, evaluate, cross-check.

Models: a timm model name plus a weights file, or ``None`` for the embedded digits ViT (its own
calibration and held-out images ship with the package). Data: a folder with ``labels.csv`` and
``images/``, an ImageFolder tree, or ``None`` for the embedded held-out digits.

Top-1/top-5 are percentages; argmax ties go to the lowest class index (numpy/torch ``argmax``).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from intsim.program import Program

__all__ = ["Batch", "CheckResult", "calibrate", "calibration_batches", "check_program", "evaluate", "float_logits",
           "check_batch_labels", "labelled_batches", "load_float_model", "model_mismatch", "program_num_classes",
           "quantize", "ModelWeightsWarning", "PreprocessingNote"]

EMBEDDED = "intsim-digits"


@dataclass
class Batch:
    pixels: np.ndarray  # uint8 (B, 3, H, W)
    labels: np.ndarray | None  # int64 (B,)
    paths: tuple | None = None  # the image files (named in errors), or None for the embedded images


def program_num_classes(program: Program) -> int | None:
    """The number of classes of ``program``: its ``class_names`` metadata, else the logits width, else ``None``."""
    names = program.metadata.get("class_names")
    if names:
        return len(names)
    (output,) = program.output_names
    shape = program.tensors[output].shape
    return int(shape[-1]) if shape and isinstance(shape[-1], int) else None


def check_batch_labels(batches, num_classes: int, source: str = "the labels") -> None:
    """Raise ``ValueError`` (one line) if a label of ``batches`` is outside ``[0, num_classes)``, naming the image."""
    for batch in batches:
        if batch.labels is None:
            continue
        bad = np.flatnonzero((batch.labels < 0) | (batch.labels >= num_classes))
        if bad.size:
            i = int(bad[0])
            where = f"image {batch.paths[i]}" if batch.paths is not None else f"{source}, image {i} of a batch"
            raise ValueError(f"{where} has label {int(batch.labels[i])}, allowed 0..{num_classes - 1} "
                             f"(the model has {num_classes} classes); give labels of this model's classes")


def load_float_model(model_name: str | None, weights: str | None):
    """``(model, preprocess, class_names, name)`` for a timm name + weights file, or the embedded digits ViT."""
    from intsim.data import Preprocess

    if model_name in (None, EMBEDDED):
        from intsim.models.digits import DIGITS_CLASS_NAMES, DIGITS_CONFIG, create_digits_vit

        if weights:
            raise ValueError("--weights needs --model: the embedded digits model ships its own weights")
        return create_digits_vit(), Preprocess.from_config(DIGITS_CONFIG["data"]), list(DIGITS_CLASS_NAMES), EMBEDDED
    if not weights:
        raise ValueError(f"--model {model_name} needs --weights FILE (no downloads: weights come from a file)")
    from intsim.models import load_timm_model

    model = load_timm_model(model_name, weights)
    preprocess = Preprocess.from_timm_model(model)
    _report_preprocessing(model_name, weights, model, preprocess)
    return model, preprocess, _class_names(model.num_classes), model_name


class ModelWeightsWarning(UserWarning):
    """The weights file (its name or safetensors metadata) names another timm model or pretrained tag than ``--model``:
    same shapes, but the weights were probably trained with another preprocessing."""


class PreprocessingNote(UserWarning):
    """The one line, issued by every :func:`load_float_model` of a timm model, naming the preprocessing applied."""


def _describe(preprocess) -> str:
    numbers = lambda values: "(" + ", ".join(f"{v:g}" for v in values) + ")"  # noqa: E731
    height, width = preprocess.input_size
    return (f"mean {numbers(preprocess.mean)}, std {numbers(preprocess.std)}, interpolation {preprocess.interpolation}, "
            f"crop_pct {preprocess.crop_pct:g}, crop_mode {preprocess.crop_mode}, input size {height}x{width}")


def _named_model(text: str) -> tuple[str, str | None] | None:
    """``(architecture, tag or None)`` if ``text`` (a file stem or metadata value) names a timm model, else None."""
    import timm

    arch, _, tag = text.strip().partition(".")
    for candidate in (arch, arch.split("-")[0]):  # also timm's old "name-hash.pth" downloads
        if candidate and timm.is_model(candidate):
            return candidate, (tag or None) if candidate == arch else None
    return None


def _weights_claims(weights) -> list[tuple[str, str, str | None]]:
    """``(where, architecture, tag)`` for each model the weights file names: its file name, its safetensors metadata."""
    from pathlib import Path

    path = Path(weights)
    claims = []
    named = _named_model(path.name[: -len(path.suffix)] if path.suffix else path.name)
    if named:
        claims.append(("its file name", *named))
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except Exception:  # noqa: BLE001 - the file was just loaded; metadata is only a hint
            metadata = {}
        for key, value in sorted(metadata.items()):
            if isinstance(value, str) and any(word in key.lower() for word in ("arch", "model", "name")):
                named = _named_model(value)
                if named:
                    claims.append((f"its metadata {key}={value!r}", *named))
    return claims


def _report_preprocessing(model_name: str, weights, model, preprocess) -> None:
    """One line on stderr (a warning): :class:`ModelWeightsWarning` if the weights name another model or pretrained
    tag (with the preprocessing applied and, when timm knows it, the weights' own), else :class:`PreprocessingNote`."""
    import warnings

    arch, _, given_tag = model_name.partition(".")
    model_tag = given_tag or (getattr(model, "pretrained_cfg", None) or {}).get("tag")
    applied = _describe(preprocess)
    for where, claimed, tag in _weights_claims(weights):
        if claimed == arch and (tag is None or model_tag is None or tag == model_tag):
            continue
        theirs = ""
        try:
            from timm.models import get_pretrained_cfg

            from intsim.data import Preprocess

            cfg = get_pretrained_cfg(f"{claimed}.{tag}" if tag else claimed)
            if cfg is not None:
                own = _describe(Preprocess.from_config(cfg.to_dict()))
                theirs = f"; the weights' own ({claimed}{'.' + tag if tag else ''}): {own}" if own != applied else (
                    "; the weights' own preprocessing is the same")
        except Exception:  # noqa: BLE001 - an unknown tag: nothing to compare
            pass
        named = f"{claimed}.{tag}" if tag else claimed
        default_tag = f" (pretrained tag {model_tag})" if model_tag and not given_tag else ""
        message = (f"weights file {weights} names model {named!r} ({where}) but --model is {model_name!r}"
                   f"{default_tag}: applying the preprocessing of "
                   f"{model_name}: {applied}{theirs}; give the --model the weights were trained as")
        warnings.warn_explicit(message, ModelWeightsWarning, filename="intsim", lineno=0)
        return
    warnings.warn_explicit(f"model {model_name} with weights {weights}: preprocessing {applied}",
                           PreprocessingNote, filename="intsim", lineno=0)


def _class_names(count: int) -> list[str]:
    if count == 1000:
        try:
            from timm.data import ImageNetInfo

            info = ImageNetInfo()
            return [info.index_to_description(i) for i in range(count)]
        except Exception:  # noqa: BLE001 - names are cosmetic; fall back to indices
            pass
    return [str(i) for i in range(count)]


def _chunks(array: np.ndarray, size: int):
    for start in range(0, len(array), size):
        yield array[start : start + size]


def calibration_batches(calib: str | None, preprocess, *, batch_size: int, workers: int, limit: int | None = None):
    """uint8 batches of the calibration images (all images under ``calib``, recursively, in sorted order)."""
    if calib is None:
        from intsim.models.digits import digits_calibration

        images, _ = digits_calibration()
        return [np.array(chunk) for chunk in _chunks(images[:limit], batch_size)]
    from intsim.data import list_images, load_batches

    paths = list_images(calib)[:limit]
    return [np.asarray(b) for b in load_batches(paths, preprocess, batch_size=batch_size, workers=workers, progress=True)]


def labelled_batches(data: str | None, preprocess, *, limit: int | None, batch_size: int, workers: int,
                     num_classes: int | None = None):
    """:class:`Batch` list of a labelled folder (or the embedded held-out digits).

    ``num_classes`` (the model's class count, e.g. ``len(class_names)`` of :func:`load_float_model` or
    :func:`program_num_classes`): a label outside ``[0, num_classes)`` raises ``ValueError`` naming the file, the
    row and the allowed range, before any image is decoded. ``None`` (default): not checked here
    (:func:`evaluate` still checks against the Program's classes before it runs a model).
    """
    if data is None:
        from intsim.models.digits import digits_heldout

        images, labels = digits_heldout()
        images, labels = images[:limit], labels[:limit]
        batches = [Batch(np.array(i), np.array(l)) for i, l in zip(_chunks(images, batch_size), _chunks(labels, batch_size))]
        if num_classes is not None:
            check_batch_labels(batches, num_classes, "the embedded held-out digits")
        return batches
    from intsim.data import LabelledImages, load_batches

    folder = LabelledImages(data, limit=limit, num_classes=num_classes)
    pixels = load_batches(folder.paths, preprocess, batch_size=batch_size, workers=workers, progress=True)
    return [Batch(np.asarray(p), np.array(l), tuple(n)) for p, l, n in
            zip(pixels, _chunks(np.asarray(folder.labels), batch_size), _chunks(list(folder.paths), batch_size))]


def calibrate(model, preprocess, config, calib: str | None, *, batch_size=32, workers=2, limit=None,
              calib_batches=None, progress: bool = True):
    """A calibrated :class:`~intsim.quant.vit.QuantViT` (deterministic for the same images).

    ``calib_batches``: uint8 batches already decoded by :func:`calibration_batches` (then ``calib``,
    ``batch_size``, ``workers`` and ``limit`` are not used), so that several configurations share one decoding.
    ``progress=False`` hides the bar.
    """
    import torch
    from tqdm import tqdm

    from intsim.quant.vit import QuantViT

    torch.manual_seed(0)
    batches = calib_batches
    if batches is None:
        batches = calibration_batches(calib, preprocess, batch_size=batch_size, workers=workers, limit=limit)
    if not batches:
        raise ValueError(f"calibration folder {calib} holds no images")
    qvit = QuantViT(model, config, mean=preprocess.mean, std=preprocess.std)
    with tqdm(total=len(batches), desc="calibrating", unit="batch", disable=not progress) as bar:
        qvit.calibrate([torch.as_tensor(b) for b in batches], progress=_SayWhenFull(bar))
    return qvit


class _SayWhenFull:
    """A tqdm bar that prints one line when it reaches its total (the quantizers are fixed after the last batch,
    which can take a while with the bar at 100 %)."""

    def __init__(self, bar):
        self.bar = bar

    def update(self, count=1):
        self.bar.update(count)
        if not self.bar.disable and self.bar.n == self.bar.total:
            self.bar.refresh()
            self.bar.write("calibration pass done: fixing the quantizers and exporting the Program...", file=sys.stderr)


def quantize(model_name, weights, calib, config, *, batch_size=32, workers=2, limit=None):
    """``(qvit, program)``: calibrate the model and export its integer Program."""
    from intsim.quant.export import export_program

    model, preprocess, class_names, name = load_float_model(model_name, weights)
    qvit = calibrate(model, preprocess, config, calib, batch_size=batch_size, workers=workers, limit=limit)
    program = export_program(qvit, model_name=name, class_names=class_names, preprocess=preprocess.to_config())
    return qvit, program


def model_mismatch(qvit, program: Program) -> str | None:
    """Why ``program`` cannot have been exported from the float model of ``qvit`` (built with
    :meth:`~intsim.quant.vit.QuantViT.from_program`), or ``None``: input size, layers, weight shapes and
    the codes of the model's float weights within one step of the Program's (learned rounding moves a code by one
    step at most)."""
    (input_name,) = program.input_names
    pixels = list(program.tensors[input_name].shape or [])
    if pixels != [3, *qvit.input_size]:
        return f"the Program takes pixels {pixels}, the model {[3, *qvit.input_size]}"
    layers = {name[: -len(".weight")] for name in program.constants if name.endswith(".weight")}
    if layers != set(qvit.weights):
        extra, missing = sorted(layers - set(qvit.weights)), sorted(set(qvit.weights) - layers)
        return f"layers only in the Program: {extra[:3]}, only in the model: {missing[:3]}"
    for name, weights in qvit.weights.items():
        codes = program.constants[f"{name}.weight"]
        if tuple(codes.shape) != tuple(weights.codes.shape):
            return f"layer {name} has weights {tuple(codes.shape)} in the Program, {tuple(weights.codes.shape)} in the model"
        steps = np.abs(weights.float_codes().numpy() - codes.astype(np.int64))
        differ = int((steps > 1).sum())  # learned rounding moves a code by at most one step
        if differ:
            return (f"layer {name}: {differ} of {codes.size} weight codes differ by more than one step from those "
                    f"of the model's float weights")
    return None


def _topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    order = np.argsort(-logits.astype(np.float64), axis=1, kind="stable")[:, :k]
    return int((order == labels[:, None]).any(axis=1).sum())


def float_logits(qvit, batches) -> list[np.ndarray]:
    """The float model's logits of every :class:`Batch` (the float path of ``qvit``: it does not depend on the
    quantization configuration), for :func:`evaluate`'s ``float_logits`` when several configurations share images."""
    import torch

    return [qvit.run_float(torch.as_tensor(batch.pixels)).numpy() for batch in batches]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def kl_to_float_sum(logits: np.ndarray, float_logits: np.ndarray) -> float:
    """``sum over images of KL(float prediction || prediction)`` in nats (float64): the divergence of a quantized
    model's class distribution from the float model's, the finer companion of top-1 agreement."""
    reference = _log_softmax(np.asarray(float_logits, np.float64))
    return float((np.exp(reference) * (reference - _log_softmax(np.asarray(logits, np.float64)))).sum())


def evaluate(qvit, program: Program, batches, *, float_logits=None, progress=None, seconds: dict | None = None) -> dict:
    """Top-1/top-5 (%) of the float model, the fast fake-quant model and the integer Program on the same images,
    their top-1 agreement and ``kl_to_float`` (mean KL of the float model's class distribution to theirs, nats;
    the integer logits are dequantized at the logits' scale).

    Optional: ``float_logits``, one array per batch from :func:`float_logits` (the float model is then not run);
    ``progress``, a tqdm bar advanced by the images of each batch (default: an own bar per batch);
    ``seconds``, a dict that receives the wall time spent in each of ``float``, ``fakequant`` and ``integer``.
    A label outside the Program's classes (:func:`program_num_classes`) raises ``ValueError`` naming the image
    before any model runs.
    """
    import time

    import torch
    from tqdm import tqdm

    from intsim.interpreter import run_program

    def timed(name, run):
        start = time.perf_counter()
        output = run()
        if seconds is not None:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        return output

    num_classes = program_num_classes(program)
    if num_classes is not None:
        batches = list(batches)
        check_batch_labels(batches, num_classes)  # before any model runs: a wrong label is not a wrong answer
    hits = defaultdict(int)
    agree = defaultdict(int)
    divergence = defaultdict(float)
    logit_scale = np.asarray(program.tensors[program.output_names[0]].scale, np.float64)
    images = 0
    for index, batch in enumerate(batches if progress is not None else tqdm(batches, desc="evaluating", unit="batch")):
        pixels = torch.as_tensor(batch.pixels)
        outputs = {
            "float": float_logits[index] if float_logits is not None else timed("float", lambda: qvit.run_float(pixels).numpy()),
            "fakequant": timed("fakequant", lambda: qvit.run_fast(pixels)[0].numpy()),
            "integer": timed("integer", lambda: run_program(program, batch.pixels)),
        }
        if progress is not None:
            progress.update(len(batch.pixels))
        top1 = {name: logits.argmax(axis=1) for name, logits in outputs.items()}
        for name, logits in outputs.items():
            hits[f"{name}.top1"] += _topk_hits(logits, batch.labels, 1)
            hits[f"{name}.top5"] += _topk_hits(logits, batch.labels, 5)
        divergence["fakequant"] += kl_to_float_sum(outputs["fakequant"], outputs["float"])
        divergence["integer"] += kl_to_float_sum(outputs["integer"] * logit_scale, outputs["float"])
        agree["integer_vs_float"] += int((top1["integer"] == top1["float"]).sum())
        agree["integer_vs_fakequant"] += int((top1["integer"] == top1["fakequant"]).sum())
        images += len(batch.labels)
    if images == 0:
        raise ValueError("evaluate: no images")
    result = {"images": images, "config": program.metadata.get("config", {}).get("name")}
    for name in ("float", "fakequant", "integer"):
        result[name] = {k: 100.0 * hits[f"{name}.{k}"] / images for k in ("top1", "top5")}
    result["top1_agreement"] = {k: 100.0 * v / images for k, v in agree.items()}
    result["kl_to_float"] = {k: v / images for k, v in divergence.items()}
    return result


@dataclass
class PointStats:
    compared: int = 0
    exact_equal: int = 0
    fast_compared: int = 0
    fast_equal: int = 0
    fast_max_delta: int = 0


@dataclass
class CheckResult:
    points: dict = field(default_factory=dict)  # name -> PointStats, in program order
    images: int = 0
    top1: dict = field(default_factory=lambda: defaultdict(int))

    def as_json(self) -> dict:
        compared = sum(p.compared for p in self.points.values())
        equal = sum(p.exact_equal for p in self.points.values())
        return {
            "exact_match_rate": equal / compared if compared else 0.0,
            "points": len(self.points),
            "images": self.images,
            "top1_agreement": self.top1["integer_vs_float"] / self.images if self.images else 0.0,
            "top1_agreement_integer_vs_fakequant": self.top1["integer_vs_fakequant"] / self.images if self.images else 0.0,
            "per_point": {
                name: {
                    "exact_match_rate": p.exact_equal / p.compared if p.compared else None,
                    "fast_match_rate": p.fast_equal / p.fast_compared if p.fast_compared else None,
                    "fast_max_delta_lsb": p.fast_max_delta if p.fast_compared else None,
                }
                for name, p in self.points.items()
            },
        }


def check_program(qvit, program: Program, batches) -> CheckResult:
    """Compare, at every op output of ``program``, the numba interpreter with the torch ``exact`` twins (must be
    equal) and, at the quantization points, with the ``fast`` fake-quant model (reported)."""
    import torch
    from tqdm import tqdm

    from intsim.interpreter import run_program
    from intsim.quant.exact import run_exact

    result = CheckResult(points={name: PointStats() for op in program.ops for name in op.outputs})
    for batch in tqdm(batches, desc="checking", unit="batch"):
        integer, exact = {}, {}
        logits = run_program(program, batch.pixels,
                             trace=lambda op, i, o: integer.update({n: np.array(x) for n, x in zip(op.outputs, o)}))
        run_exact(program, batch.pixels, trace=lambda op, i, o: exact.update({n: x.numpy() for n, x in zip(op.outputs, o)}))
        fast_logits, fast_codes = qvit.run_fast(torch.as_tensor(batch.pixels))
        float_logits = qvit.run_float(torch.as_tensor(batch.pixels))
        for name, stats in result.points.items():
            codes = integer[name].astype(np.int64)
            stats.compared += codes.size
            stats.exact_equal += int((codes == exact[name]).sum())
            if name in fast_codes:
                fast = fast_codes[name].numpy()
                stats.fast_compared += codes.size
                stats.fast_equal += int((codes == fast).sum())
                stats.fast_max_delta = max(stats.fast_max_delta, int(np.abs(codes - fast).max(initial=0)))
        top1 = logits.argmax(axis=1)
        result.top1["integer_vs_float"] += int((top1 == float_logits.numpy().argmax(axis=1)).sum())
        result.top1["integer_vs_fakequant"] += int((top1 == fast_logits.numpy().argmax(axis=1)).sum())
        result.images += len(batch.pixels)
    return result
