"""Library functions behind the CLI: build and calibrate, quantize to a Program, evaluate, cross-check.

Models: a timm model name plus a weights file, or ``None`` for the embedded digits ViT (its own
calibration and held-out images ship with the package). Data: a folder with ``labels.csv`` and
``images/``, an ImageFolder tree, or ``None`` for the embedded held-out digits.

Top-1/top-5 are percentages; argmax ties go to the lowest class index (numpy/torch ``argmax``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from intsim.program import Program

__all__ = ["Batch", "CheckResult", "calibrate", "calibration_batches", "check_program", "evaluate", "float_logits",
           "labelled_batches", "load_float_model", "model_mismatch", "quantize"]

EMBEDDED = "intsim-digits"


@dataclass
class Batch:
    pixels: np.ndarray  # uint8 (B, 3, H, W)
    labels: np.ndarray | None  # int64 (B,)


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
    return model, Preprocess.from_timm_model(model), _class_names(model.num_classes), model_name


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


def labelled_batches(data: str | None, preprocess, *, limit: int | None, batch_size: int, workers: int):
    """:class:`Batch` list of a labelled folder (or the embedded held-out digits)."""
    if data is None:
        from intsim.models.digits import digits_heldout

        images, labels = digits_heldout()
        images, labels = images[:limit], labels[:limit]
        return [Batch(np.array(i), np.array(l)) for i, l in zip(_chunks(images, batch_size), _chunks(labels, batch_size))]
    from intsim.data import LabelledImages, load_batches

    folder = LabelledImages(data, limit=limit)
    pixels = load_batches(folder.paths, preprocess, batch_size=batch_size, workers=workers, progress=True)
    return [Batch(np.asarray(p), np.array(l)) for p, l in zip(pixels, _chunks(np.asarray(folder.labels), batch_size))]


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
        qvit.calibrate([torch.as_tensor(b) for b in batches], progress=bar)
    return qvit


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


def evaluate(qvit, program: Program, batches, *, float_logits=None, progress=None, seconds: dict | None = None) -> dict:
    """Top-1/top-5 (%) of the float model, the fast fake-quant model and the integer Program on the same images.

    Optional: ``float_logits``, one array per batch from :func:`float_logits` (the float model is then not run);
    ``progress``, a tqdm bar advanced by the images of each batch (default: an own bar per batch);
    ``seconds``, a dict that receives the wall time spent in each of ``float``, ``fakequant`` and ``integer``.
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

    hits = defaultdict(int)
    agree = defaultdict(int)
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
        agree["integer_vs_float"] += int((top1["integer"] == top1["float"]).sum())
        agree["integer_vs_fakequant"] += int((top1["integer"] == top1["fakequant"]).sum())
        images += len(batch.labels)
    if images == 0:
        raise ValueError("evaluate: no images")
    result = {"images": images, "config": program.metadata.get("config", {}).get("name")}
    for name in ("float", "fakequant", "integer"):
        result[name] = {k: 100.0 * hits[f"{name}.{k}"] / images for k in ("top1", "top5")}
    result["top1_agreement"] = {k: 100.0 * v / images for k, v in agree.items()}
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
