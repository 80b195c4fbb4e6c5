"""Per-op output digests of a Program on real images: the check that a refactoring changed no integer anywhere.

    python tools/op_digests.py PROGRAM IMAGE_FOLDER OUT.json [--limit 64]
    python tools/op_digests.py --compare A.json B.json

Runs the Program op by op (traced: no fusion) on the first ``--limit`` images of the folder, in batches of 16, and
writes the SHA-256 of every op output (as int64, C order, batches concatenated), of the fused run's logits and of
every constant. ``--compare`` prints which digests differ and exits 1 if any does. Used for issue 12: the Programs
exported by the tree before and after the layer/registry refactoring gave the same 248 digests on 64 images of
``imagenet-val-500``, for ``fqvit-w8a8a4`` and ``fqvit-w8a8a8``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import numpy as np


def digests(program_file: str, folder: str, limit: int) -> dict:
    from intsim.data import Preprocess, list_images, load_image
    from intsim.interpreter import run_program
    from intsim.program import load_program

    program = load_program(program_file)
    preprocess = Preprocess.from_config(program.metadata["preprocess"])
    pixels = np.stack([load_image(path, preprocess) for path in list_images(folder)[:limit]])
    outputs: dict = {}

    def trace(op, inputs, results):
        for name, value in zip(op.outputs, results):
            outputs.setdefault(name, hashlib.sha256()).update(np.ascontiguousarray(np.asarray(value).astype(np.int64)).tobytes())

    for start in range(0, len(pixels), 16):
        run_program(program, pixels[start:start + 16], trace=trace)
    fused = np.asarray(run_program(program, pixels)).astype(np.int64)
    return {"ops": {name: digest.hexdigest() for name, digest in outputs.items()},
            "fused_logits": hashlib.sha256(fused.tobytes()).hexdigest(),
            "constants": {name: hashlib.sha256(np.ascontiguousarray(array.astype(np.int64)).tobytes()).hexdigest()
                          for name, array in program.constants.items()},
            "images": int(len(pixels))}


def compare(first: dict, second: dict) -> list[str]:
    differences = []
    for section in ("ops", "constants"):
        for name in sorted(set(first[section]) | set(second[section])):
            if first[section].get(name) != second[section].get(name):
                differences.append(f"{section}: {name}")
    if first["fused_logits"] != second["fused_logits"]:
        differences.append("fused logits")
    return differences


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="PROGRAM FOLDER OUT.json, or with --compare: A.json B.json")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--compare", action="store_true")
    args = parser.parse_args(argv)
    if args.compare:
        first, second = (json.load(open(path)) for path in args.paths)
        differences = compare(first, second)
        print("\n".join(differences) or f"equal: {len(first['ops'])} op outputs, {len(first['constants'])} constants, "
                                         f"fused logits, {first['images']} images")
        return 1 if differences else 0
    program_file, folder, output = args.paths
    result = digests(program_file, folder, args.limit)
    with open(output, "w") as stream:
        json.dump(result, stream, indent=0, sort_keys=True)
    print(f"wrote {output}: {len(result['ops'])} op outputs on {result['images']} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
