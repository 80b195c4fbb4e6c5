"""Regenerate the committed golden-vector set ``golden/`` from scratch, deterministically (one command).

    python tools/make_golden.py               # rebuild golden/e2e, golden/ops, golden/ties; print what changed
    python tools/make_golden.py --check       # rebuild in a temporary folder, compare, exit 1 if golden/ differs
    python tools/make_golden.py --requantize  # first rewrite golden/programs/digits-fqvit-w8a8a4.intsim, then rebuild

What it builds (``golden/README.md`` is hand-written and kept; ``golden/programs/`` only changes with
``--requantize``):

    golden/e2e/                ``intsim golden`` of the committed Program :data:`E2E_PROGRAM` (the embedded digits
                               model, configuration ``fqvit-w8a8a4``) on held-out image 0
    golden/ops/<op>/           ``intsim vectors <op> --count 4 --seed 0`` for every op of ``intsim.ops.OPS`` ...
    golden/ops/<op>/<mode>/    ... one suite per rounding mode for an op that rounds (requantize, ptf_layernorm,
                               residual_add)
    golden/ties/<mode>/        ``intsim golden`` of :func:`intsim.golden.ties.tie_program` (mode) on its one input:
                               every LayerNorm, Requantize and ResidualAdd output element an exact tie

The build is integer-only: it reads the committed Program file (float calibration happens only with
``--requantize``: ``intsim.evaluate.quantize`` of the embedded model as ``intsim quantize`` with no
model does), so the same Program file and code give the same bytes everywhere. Run it after any change of semantics
(an op, the golden writer): ``git diff --stat golden/`` then shows which vectors changed, for review.
``tests/golden/test_golden_committed.py`` runs the same build and requires byte equality with the committed files;
``tests/test_reproducible_program.py`` checks that quantizing the embedded model still gives :data:`E2E_PROGRAM`.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
E2E_CONFIG = "fqvit-w8a8a4"
E2E_PROGRAM = GOLDEN / "programs" / f"digits-{E2E_CONFIG}.intsim"  # the committed Program golden/e2e comes from
GENERATED = ("e2e", "ops", "ties")  # the parts of golden/ this tool rebuilds
E2E_IMAGES = 1
VECTOR_COUNT = 4
VECTOR_SEED = 0


def requantize(program_file: Path = E2E_PROGRAM) -> str:
    """Quantize the embedded digits model (:data:`E2E_CONFIG`, its own calibration images) into ``program_file``;
    return the Program's SHA-256."""
    from intsim.evaluate import quantize
    from intsim.program import save_program
    from intsim.quant.configs import make_config

    _, program = quantize(None, None, None, make_config(E2E_CONFIG), workers=0)
    save_program(program, program_file)
    return program.sha256()


def build(destination: Path, program_file: Path = E2E_PROGRAM) -> None:
    """Write ``destination/{e2e,ops,ties}`` (``destination`` must not hold them yet) from ``program_file`` and the
    code; ``FileNotFoundError`` if the Program file is missing."""
    from intsim.golden.cases import takes_rounding
    from intsim.golden.cli import load_images
    from intsim.golden.ties import TIE_SOURCE, tie_pixels, tie_program
    from intsim.golden.vectors import write_vectors
    from intsim.golden.writer import write_golden
    from intsim.ops import OPS, ROUNDING_MODES
    from intsim.program import load_program

    if not Path(program_file).is_file():
        raise FileNotFoundError(f"{program_file} is missing: golden/e2e is generated from it; write it with "
                                f"python tools/make_golden.py --requantize")
    program = load_program(program_file)
    write_golden(program, load_images(program, None, E2E_IMAGES), destination / "e2e", progress=False)
    for spec in OPS:
        modes = ROUNDING_MODES if takes_rounding(spec.name) else (None,)
        for mode in modes:
            folder = destination / "ops" / spec.name / (mode or "")
            write_vectors(spec.name, folder, count=VECTOR_COUNT, seed=VECTOR_SEED, rounding=mode, progress=False)
    for mode in ROUNDING_MODES:
        write_golden(tie_program(mode), [(TIE_SOURCE, tie_pixels())], destination / "ties" / mode, progress=False)


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
    from intsim.program import ProgramError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare with golden/; exit 1 if it differs")
    parser.add_argument("--requantize", action="store_true",
                        help=f"first rewrite the committed Program {E2E_PROGRAM.relative_to(GOLDEN.parent)} by "
                             f"quantizing the embedded model (float calibration), then rebuild")
    parser.add_argument("--golden", type=Path, default=GOLDEN, help="the golden folder (default: the repo's)")
    args = parser.parse_args(argv)
    if args.check and args.requantize:
        parser.error("--check only reads the committed Program; it cannot be combined with --requantize")
    program_file = args.golden / E2E_PROGRAM.relative_to(GOLDEN)
    if args.requantize:
        print(f"wrote {program_file}: Program sha256 {requantize(program_file)}")
    args.golden.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.golden, prefix=".regenerate.") as scratch:
        fresh = Path(scratch)
        try:
            build(fresh, program_file)
        except (FileNotFoundError, ProgramError) as error:
            print(f"make_golden: error: {error}", file=sys.stderr)
            return 2
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
