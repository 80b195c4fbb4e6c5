"""Calibrate the real ViT-Ti with one configuration (optionally overriding its fields), export the integer Program
and report float / fast / integer top-1 on a labelled folder plus the exact-match rate on its first 16 images.

    python tools/eval_config.py adalog-w4a4 --calib-images 8 --set search_rounds=1 --set search_steps=2 \
        --data ../shared/data --json adalog-w4a4.json
    python tools/eval_config.py pfcr-w4a4 --calib-images 256 --checkpoint pfcr-checkpoints   # PFCR on AdaLog

Prints one JSON line and writes it to ``--json``; the search and evaluation show tqdm bars.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path


def _field_value(parser, key: str, text: str):
    """``text`` as the type of the configuration field ``key`` (an int or a str); a parser error otherwise."""
    from dataclasses import fields

    from intsim.quant.configs import QuantConfig

    kinds = {field.name: field.type for field in fields(QuantConfig)}
    kind = kinds.get(key)
    if kind in ("int", int):
        try:
            return int(text)
        except ValueError:
            parser.error(f"--set {key}={text}: {key} takes an integer")
    if kind in ("str", str):
        return text
    parser.error(f"--set {key}: not an integer or text field of a configuration")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override an integer or text field of the configuration (e.g. search_rounds=1, "
                             "method=pfcr)")
    parser.add_argument("--data", default="../shared/data", help="folder with the weights, imagenet-calib-256 and "
                                                                "imagenet-val-500")
    parser.add_argument("--limit", type=int, default=None, help="validation images (default all)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--save-program", default=None, help="also write the exported Program here")
    parser.add_argument("--checkpoint", default=None, metavar="FOLDER",
                        help="pfcr configurations: save every reconstructed unit here and resume from it")
    args = parser.parse_args()

    from intsim.evaluate import (calibrate, calibration_batches, check_program, evaluate, labelled_batches,
                                 load_float_model)
    from intsim.quant.configs import CONFIGS, validate_config
    from intsim.quant.export import export_program
    from intsim.quant.reconstruct import run_options

    data = Path(args.data)
    overrides = {key: _field_value(parser, key, value) for key, value in (item.split("=", 1) for item in args.set)}
    model, preprocess, class_names, name = load_float_model(
        "vit_tiny_patch16_224", str(data / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"))
    config = validate_config(replace(CONFIGS[args.config], **overrides))
    calib = calibration_batches(str(data / "imagenet-calib-256"), preprocess, batch_size=min(args.calib_images, 32),
                                workers=2, limit=args.calib_images)
    start = time.time()
    with run_options(checkpoint=args.checkpoint):
        qvit = calibrate(model, preprocess, config, None, calib_batches=calib)
    seconds = time.time() - start
    program = export_program(qvit, model_name=name, class_names=class_names, preprocess=preprocess.to_config())
    if args.save_program:
        from intsim.program import save_program

        save_program(program, args.save_program)
    batches = labelled_batches(str(data / "imagenet-val-500"), preprocess, limit=args.limit, batch_size=50, workers=2)
    first = batches[0]
    sixteen = replace(first, pixels=first.pixels[:16], labels=first.labels[:16],
                      paths=None if first.paths is None else first.paths[:16])
    check = check_program(qvit, program, [sixteen]).as_json()
    result = dict(configuration=args.config, overrides=overrides, calibration_images=args.calib_images,
                  calibration_seconds=round(seconds, 1),
                  reconstruction=[vars(loss) for loss in getattr(qvit, "reconstruction_losses", [])],
                  exact_match_rate=check["exact_match_rate"],
                  exact_match_images=check["images"], tensors=check["points"], accuracy=evaluate(qvit, program, batches))
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
