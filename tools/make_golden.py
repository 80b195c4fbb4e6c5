"""Regenerate the committed golden-vector set ``golden/`` from scratch, deterministically (one command).

    python tools/make_golden.py            # rebuild golden/e2e and golden/ops, print what changed
    python tools/make_golden.py --check    # rebuild in a temporary folder, compare, exit 1 if golden/ differs

What it builds (``golden/README.md`` is hand-written and kept):

    golden/e2e/         ``intsim golden`` of the embedded digits model (quantized with its default configuration
                        and its own calibration images, as ``intsim quantize`` with no model does) on held-out
                        image 0
    golden/ops/<op>/    ``intsim vectors <op> --count 4 --seed 0`` for every op of ``intsim.ops.OPS``

Run it after any change of semantics (an op, the exporter, the calibration): ``git diff --stat golden/`` then shows
which vectors changed, for review. ``tests/golden/test_committed_set.py`` runs the same build and requires byte
equality with the committed files.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
GENERATED = ("e2e", "ops")  # the parts of golden/ this tool owns
E2E_CONFIG = "fqvit-w8a8a4"
E2E_IMAGES = 1
VECTOR_COUNT = 4
VECTOR_SEED = 0


def build(destination: Path) -> None:
    """Write ``destination/e2e`` and ``destination/ops/<op>`` (``destination`` must not hold them yet)."""
    from intsim.evaluate import quantize
    from intsim.golden.cli import load_images
    from intsim.golden.vectors import write_vectors
    from intsim.golden.writer import write_golden
    from intsim.ops import OPS
    from intsim.quant.configs import make_config

    _, program = quantize(None, None, None, make_config(E2E_CONFIG), workers=0)
    write_golden(program, load_images(program, None, E2E_IMAGES), destination / "e2e", progress=False)
    for spec in OPS:
        write_vectors(spec.name, destination / "ops" / spec.name, count=VECTOR_COUNT, seed=VECTOR_SEED,
                      progress=False)


def tree_differences(expected: Path, actual: Path) -> list[str]:
    """``"changed PATH"`` / ``"added PATH"`` / ``"removed PATH"`` lines, byte for byte, over the generated parts."""
    def files(root: Path) -> set[str]:
        return {str(path.relative_to(root)) for part in GENERATED if (root / part).is_dir()
                for path in (root / part).rglob("*") if path.is_file()}

    old, new = files(expected), files(actual)
    lines = [f"removed {path}" for path in sorted(old - new)]
    lines += [f"added {path}" for path in sorted(new - old)]
    lines += [f"changed {path}" for path in sorted(old & new)
              if not filecmp.cmp(expected / path, actual / path, shallow=False)]
    return sorted(lines, key=lambda line: line.split(" ", 1)[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare with golden/; exit 1 if it differs")
    parser.add_argument("--golden", type=Path, default=GOLDEN, help="the golden folder (default: the repo's)")
    args = parser.parse_args(argv)
    args.golden.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.golden, prefix=".regenerate.") as scratch:
        fresh = Path(scratch)
        build(fresh)
        differences = tree_differences(args.golden, fresh)
        for line in differences[:40]:
            print(line)
        if len(differences) > 40:
            print(f"... and {len(differences) - 40} more")
        print(f"{len(differences)} files differ from {args.golden}" if differences else f"{args.golden} is up to date")
        if args.check or not differences:
            return 1 if differences else 0
        for part in GENERATED:
            shutil.rmtree(args.golden / part, ignore_errors=True)
            (fresh / part).rename(args.golden / part)
        print(f"rewrote {', '.join(str(args.golden / part) for part in GENERATED)}: review with git diff --stat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
