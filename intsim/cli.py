"""The ``intsim`` command: thin argument parsing over library functions (:mod:`intsim.evaluate`).

    intsim quantize [--model NAME --weights FILE] [--calib DIR] [--config CFG] --output PROGRAM
    intsim run PROGRAM IMAGE...
    intsim check PROGRAM [--model NAME --weights FILE] [--data DIR] [--limit N] [--json FILE]
    intsim eval [--model NAME --weights FILE] [--calib DIR] [--data DIR] [--config CFG] [--limit N] [--json FILE]
    intsim sweep [--model NAME --weights FILE] [--calib DIR] [--data DIR] [--configs CFG,...] [--limit N] --output DIR
    intsim ops

Without ``--model`` the embedded digits ViT is used, with its own calibration and held-out images, so every
command runs on a fresh machine with no data. Every failure (missing or corrupt file, bad folder, unknown
name) prints one message naming the file or option and exits with status 2; no partial output is left. Every
command that reads a Program reads it through :func:`intsim.cli_common.load_program_argument` (shared with
:mod:`intsim.golden.cli`), so a corrupt or hand-edited Program (checked on load: docs/program.md) is refused the
same way by ``run``, ``check``, ``golden`` and ``report``.

A command stopped by SIGINT (Ctrl-C), SIGTERM or SIGHUP prints one line and exits with 130, 143 or 129 (outputs
are written to hidden ``.partial`` files and renamed when complete, so nothing half-written is left); one whose
stdout pipe is closed by its reader (``intsim ops | head -1``) exits quietly with 141.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import intsim  # first: sets OMP_WAIT_POLICY before torch or numba start their thread pools
from intsim.cli_common import (check_output, close_progress_bars, interruptible, interrupted_message,
                               load_program_argument, quiet_broken_pipe, write_json)

__all__ = ["build_parser", "load_program_argument", "main"]


# The shared helpers, under the names this module has always had (intsim.golden.cli imports intsim.cli_common).
_write_json = write_json
_check_output = check_output


def _config(args):
    from intsim.quant.configs import make_config

    return make_config(args.config, wbits=args.wbits, abits=args.abits, attn_bits=args.attn_bits, softmax=args.softmax,
                       observer=args.observer, rounding=args.rounding)


def _quantize(args) -> int:
    from intsim.evaluate import quantize
    from intsim.program import save_program

    from intsim.quant.reconstruct import run_options

    _check_output(args.output, "--output")
    with run_options(checkpoint=args.checkpoint):
        _, program = quantize(args.model, args.weights, args.calib, _config(args), batch_size=args.batch_size,
                              workers=args.workers, limit=args.calib_limit)
    path = save_program(program, args.output)
    print(f"wrote {path}: {len(program.ops)} ops, {len(program.constants)} constant tensors, "
          f"config {program.metadata['config']['name']}, sha256 {program.sha256()[:16]}")
    return 0


def _run(args) -> int:

    from intsim.data import Preprocess, load_image
    from intsim.interpreter import run_program

    program = load_program_argument(args)
    preprocess = Preprocess.from_config(program.metadata["preprocess"])
    names = program.metadata.get("class_names") or []
    import numpy as np

    pixels = np.stack([load_image(path, preprocess) for path in args.images])
    logits = run_program(program, pixels)
    for path, row in zip(args.images, logits):
        print(path)
        order = np.argsort(-row.astype(np.int64), kind="stable")[:5]
        for rank, index in enumerate(order, 1):
            name = names[index] if index < len(names) else str(index)
            print(f"  {rank}. class {index:<5d} logit {int(row[index]):>12d}  {name}")
    return 0


def _check(args) -> int:
    from intsim.evaluate import check_program, labelled_batches, load_float_model, model_mismatch, program_num_classes
    from intsim.quant.vit import QuantViT

    _check_output(args.json, "--json")
    program = load_program_argument(args)
    model, preprocess, _, name = load_float_model(args.model, args.weights)
    try:
        qvit = QuantViT.from_program(model, program)
        mismatch = model_mismatch(qvit, program)
    except ValueError as error:  # the Program's structure is not this model's
        mismatch = str(error)
    if mismatch:
        raise ValueError(f"{args.program} was not exported from model {name} (its metadata says "
                         f"{program.metadata.get('model')!r}): {mismatch}; give the Program's --model and --weights")
    batches = labelled_batches(args.data, preprocess, limit=args.limit, batch_size=args.batch_size, workers=args.workers,
                               num_classes=program_num_classes(program))
    print(f"intsim check: note: {JIT_NOTE}", file=sys.stderr)
    result = check_program(qvit, program, batches).as_json()
    print(f"{'tensor':<36} {'exact match':>12} {'fast match':>11} {'fast max |d| LSB':>17}")
    for name, row in result["per_point"].items():
        fast = "" if row["fast_match_rate"] is None else f"{row['fast_match_rate']:.4f}"
        delta = "" if row["fast_max_delta_lsb"] is None else str(row["fast_max_delta_lsb"])
        print(f"{name:<36} {row['exact_match_rate']:>12.6f} {fast:>11} {delta:>17}")
    print(f"\nexact_match_rate {result['exact_match_rate']:.6f} over {result['points']} tensors and {result['images']} images")
    print(f"top-1 agreement: integer vs float {100 * result['top1_agreement']:.2f} %, "
          f"integer vs fast fake-quant {100 * result['top1_agreement_integer_vs_fakequant']:.2f} %")
    _write_json(args.json, result)
    return 0 if result["exact_match_rate"] == 1.0 else 1


def _eval(args) -> int:
    from intsim.evaluate import evaluate, labelled_batches, program_num_classes, quantize

    _check_output(args.json, "--json")
    if args.data is not None:  # a folder that is not a labelled image folder is refused before calibration
        from intsim.data import LabelledImages

        LabelledImages(args.data, limit=args.limit)
    qvit, program = quantize(args.model, args.weights, args.calib, _config(args), batch_size=args.batch_size,
                             workers=args.workers, limit=args.calib_limit)
    from intsim.data import Preprocess

    preprocess = Preprocess.from_config(program.metadata["preprocess"])
    batches = labelled_batches(args.data, preprocess, limit=args.limit, batch_size=args.batch_size, workers=args.workers,
                               num_classes=program_num_classes(program))
    print(f"intsim eval: note: {JIT_NOTE}", file=sys.stderr)
    result = evaluate(qvit, program, batches)
    model = "the embedded digits ViT" if args.model in (None, "intsim-digits") else args.model
    images = "the embedded held-out digits" if args.data is None else args.data
    print(f"model {model}, images {images}")
    print(f"{'pipeline':<12} {'top-1 %':>8} {'top-5 %':>8}   ({result['images']} images, config {result['config']})")
    for name in ("float", "fakequant", "integer"):
        print(f"{name:<12} {result[name]['top1']:>8.2f} {result[name]['top5']:>8.2f}")
    print(FAKEQUANT_NOTE)
    _write_json(args.json, result)
    return 0


JIT_NOTE = "the integer kernels (numba) compile on first use, which can take ~15 s; they are cached afterwards"
FAKEQUANT_NOTE = "fakequant = float32 fake-quant model (fast); integer = the Program on the integer interpreter"


def _list_ops(_args) -> int:
    from intsim.ops import OPS

    width = max(len(spec.name) for spec in OPS)
    for spec in OPS:
        print(f"{spec.name:<{width}}  reference {spec.reference.__module__}.{spec.reference.__name__}")
    return 0


def _add_model(parser, *, calib: bool) -> None:
    parser.add_argument("-m", "--model", help="timm model name (default: the embedded digits ViT)")
    parser.add_argument("-w", "--weights", help="timm state_dict file (.safetensors or torch .pth/.pt/.bin)")
    if calib:
        parser.add_argument("--calib", help="folder of calibration images, searched recursively (default: embedded)")
        parser.add_argument("--calib-limit", type=int, help="use only the first N calibration images (N at least 1)")
        parser.add_argument("-c", "--config", default="fqvit-w8a8a4", help="named configuration (fqvit-w8a8a4, fqvit-w8a8a8)")
        parser.add_argument("--wbits", type=int, help="weight bits (2..8), overriding the configuration")
        parser.add_argument("--abits", type=int, help="activation bits (2..8; the residual stream and the GELU index "
                                                      "follow where they had the activation bits)")
        parser.add_argument("--softmax", help="attention-probability quantizer: lis (Log-Int-Softmax, 4 bits), "
                                              "uniform_softmax (2..8 bits), adalog (2..6) or log2 (2..4)")
        parser.add_argument("--attn-bits", type=int, help="attention-probability bits (lis: 4 only; uniform_softmax: 2..8)")
        parser.add_argument("--observer", help="activation observer: minmax, ema, percentile, omse")
        parser.add_argument("--rounding", help="rounding of every requantization: half_up, half_even, half_away")
    parser.add_argument("-b", "--batch-size", type=int, default=32, help="images per batch (at least 1; default 32)")
    parser.add_argument("-j", "--workers", type=int, default=2,
                        help="image-decoding worker processes (0: decode in this process; default 2)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intsim", description="Bit-exact integer reference simulator for quantized ViTs")
    parser.add_argument("--version", action="version", version=f"intsim {intsim.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    quantize = commands.add_parser("quantize", help="calibrate a model and export its integer Program")
    _add_model(quantize, calib=True)
    quantize.add_argument("-o", "--output", required=True, help="Program file to write")
    quantize.add_argument("--checkpoint", metavar="FOLDER",
                          help="pfcr configurations: save every reconstructed unit here and resume from it")
    quantize.set_defaults(handler=_quantize)

    run = commands.add_parser("run", help="run a Program on images: top-5 classes with integer logits")
    run.add_argument("program")
    run.add_argument("images", nargs="+")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="cross-check a Program: integer vs exact (must be 100 %%) vs fast fake-quant")
    check.add_argument("program")
    _add_model(check, calib=False)
    check.add_argument("-d", "--data", help="labelled image folder (default: embedded held-out digits)")
    check.add_argument("--limit", type=int, help="use only the first N images (N at least 1)")
    check.add_argument("--json", help="write the results as JSON")
    check.set_defaults(handler=_check)

    evaluate = commands.add_parser("eval", help="top-1/top-5 of float, fast fake-quant and integer on the same images")
    _add_model(evaluate, calib=True)
    evaluate.add_argument("-d", "--data", help="labelled image folder (default: embedded held-out digits)")
    evaluate.add_argument("--limit", type=int, help="use only the first N images (N at least 1)")
    evaluate.add_argument("--json", help="write the results as JSON")
    evaluate.set_defaults(handler=_eval)

    from intsim.sweep import add_sweep_arguments, run_sweep_command

    sweep = commands.add_parser("sweep", help="top-1/top-5 of several configurations on the same images: "
                                "results.json, results.md, accuracy.png")
    _add_model(sweep, calib=False)
    add_sweep_arguments(sweep)
    sweep.set_defaults(handler=run_sweep_command)

    ops = commands.add_parser("ops", help="list the integer operators and their numpy references")
    ops.set_defaults(handler=_list_ops)

    from intsim.golden.cli import add_commands as add_golden_commands

    add_golden_commands(commands)  # golden, diff, report, vectors
    return parser


def _check_counts(args) -> None:
    """Counts given on the command line: at least 1 (``--workers``: at least 0)."""
    for option, minimum in (("limit", 1), ("calib_limit", 1), ("batch_size", 1), ("workers", 0)):
        value = getattr(args, option, None)
        if value is not None and value < minimum:
            raise ValueError(f"--{option.replace('_', '-')} must be at least {minimum}, got {value}")


def main(argv=None) -> int:
    """Run one command; its exit status: 0, 1 (``check``: not bit-exact; ``sweep``: a configuration failed), 2 (bad
    input, one message), 130 / 143 / 129 (interrupted by SIGINT / SIGTERM / SIGHUP, one message), 141 (stdout
    closed by its reader). The signal handlers are those of the caller again when it returns."""
    command = None
    with interruptible():
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            command = args.command
            if not getattr(args, "handler", None):
                parser.print_help()
                sys.stdout.flush()
                return 2
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warning(command)
                status = _dispatch(args)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's final flush
            return status
        except BrokenPipeError:
            return quiet_broken_pipe()
        except KeyboardInterrupt as error:  # Ctrl-C, or cli_common.Interrupted for SIGTERM / SIGHUP
            line, status = interrupted_message(command, error)
            close_progress_bars()
            try:
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):
                quiet_broken_pipe()
            print(line, file=sys.stderr)
            return status


def _one_line_warning(command: str):
    """``warnings.showwarning`` for a command: each warning as one line ``intsim CMD: warning: ...`` on stderr (a
    note, such as the preprocessing applied, as ``intsim CMD: note: ...``), as it happens."""
    def show(message, category, filename, lineno, file=None, line=None):
        kind = "note" if category.__name__.endswith("Note") else "warning"
        print(f"intsim {command}: {kind}: {' '.join(str(message).split())}", file=sys.stderr)

    return show


def _dispatch(args) -> int:
    from intsim.program import ProgramError

    try:
        _check_counts(args)
        return args.handler(args)
    except BrokenPipeError:
        raise
    except (ProgramError, ValueError, TypeError, OverflowError, OSError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        text = " ".join(str(message).split())  # one line, even for multi-line library messages (torch.load)
        close_progress_bars()
        print(f"intsim {args.command}: error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
