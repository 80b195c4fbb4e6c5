"""The golden-vector subcommands of ``intsim`` (registered by :func:`add_commands`)::

    intsim golden PROGRAM [--data DIR|IMAGE ...] [--limit N] --output DIR [--formats npy,hex,bin] [--max-size SIZE]
    intsim diff GOLDEN DUT [--subset] [--verbose] [--json FILE]
    intsim report PROGRAM [--data DIR|IMAGE ...] [--limit N] [--json FILE]
    intsim vectors OP [--count N] [--seed S] [--rounding MODE] --output DIR [--formats npy,hex,bin]

Without ``--data``, a Program of the embedded digits model runs on the embedded held-out digits (``golden``: the
first one unless ``--limit`` says more). PROGRAM is read by :func:`intsim.cli_common.load_program_argument`. Errors are ``ValueError`` / ``ProgramError`` naming the file, line or
option; ``intsim.cli.main`` prints them as one line and exits with status 2. Outputs are checked (creatable,
writable, not an existing tree) before any long work. A closed stdout (``intsim diff A B | head -1``) stops the
printing quietly: the command still finishes (``--json`` is written) and exits with its verdict's status.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from intsim.cli_common import check_output, quiet_broken_pipe, write_json

__all__ = ["add_commands", "load_images"]


def _say(text: str = "") -> None:
    """Print and flush ``text``; a reader that closed the pipe ends the printing, not the command."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        quiet_broken_pipe()


def _write_json(path, payload) -> None:
    try:
        write_json(path, payload)  # writes the file, then prints "wrote PATH"
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_broken_pipe()


def _check_json_output(path: str | None) -> None:
    """``--json FILE`` refused before any work: a folder, or a file that cannot be created
    (:func:`intsim.cli_common.check_output`)."""
    check_output(path, "--json")


def _image_sources(program, data: list[str] | None, limit: int | None, default_limit: int | None):
    """``(source name, path or embedded pixels)`` of the images to run, nothing decoded yet."""
    import numpy as np

    (input_name,) = program.input_names
    shape = tuple(program.tensors[input_name].shape)
    if not data:
        from intsim.models.digits import digits_heldout

        images, _ = digits_heldout()
        if tuple(images.shape[1:]) != shape:
            raise ValueError(f"--data is required: the Program takes pixels {shape}, the embedded held-out digits "
                             f"are {tuple(images.shape[1:])}")
        count = limit or default_limit or len(images)
        return [(f"intsim-digits held-out image {index}", np.asarray(images[index])) for index in range(count)]
    from intsim.data import list_images

    named = []
    for argument in data:
        path = Path(argument)
        if path.is_dir():
            named += [(image.relative_to(path).as_posix(), image) for image in list_images(path)]
        elif path.is_file():
            named.append((argument, path))
        else:
            raise ValueError(f"--data {argument}: no such image file or folder")
    return named[:limit]


def _decode(program, sources):
    from intsim.data import Preprocess, load_image

    if not sources or not isinstance(sources[0][1], Path):
        return sources
    preprocess = Preprocess.from_config(program.metadata["preprocess"])
    return [(name, load_image(path, preprocess)) for name, path in sources]


def load_images(program, data: list[str] | None, limit: int | None, *, default_limit: int | None = None):
    """``(source name, uint8 pixels (3, H, W))`` of the images to run, preprocessed as the Program's metadata says.

    ``data``: image files and/or folders (searched recursively, sorted); a file's source name is the path as
    given, a folder image's its path relative to the folder. ``None``: the embedded held-out digits, for a Program
    of the embedded model only.
    """
    return _decode(program, _image_sources(program, data, limit, default_limit))


def _golden(args) -> int:
    from intsim.cli_common import load_program_argument
    from intsim.golden.formats import parse_formats
    from intsim.golden.tree import check_output_folder
    from intsim.golden.writer import check_golden_size, parse_size, write_golden

    formats = parse_formats(args.formats)
    max_bytes = parse_size(args.max_size, "--max-size")
    check_output_folder(args.output)  # at once, not after the work
    program = load_program_argument(args)
    sources = _image_sources(program, args.data, args.limit, 1)
    if sources:
        check_golden_size(program, len(sources), formats, max_bytes, output=args.output)
    images = _decode(program, sources)
    start = time.perf_counter()
    tree = write_golden(program, images, args.output, formats=formats)
    _say(f"wrote {args.output}: {len(images)} image(s), {len(program.ops)} ops, {tree.files} files, "
         f"{tree.bytes / 2**20:.1f} MiB in {time.perf_counter() - start:.1f} s; Program sha256 {program.sha256()[:16]}")
    return 0


def _diff(args) -> int:
    from intsim.golden.diff import diff_trees, format_table, verdict_status

    _check_json_output(args.json)
    result = diff_trees(args.golden, args.dut, subset=args.subset)
    _say(format_table(result, verbose=args.verbose))
    _write_json(args.json, result)
    return verdict_status(result)


def _report(args) -> int:
    import numpy as np

    from intsim.cli_common import load_program_argument
    from intsim.golden.report import AccumulatorReport, format_report

    _check_json_output(args.json)
    program = load_program_argument(args)
    images = load_images(program, args.data, args.limit)
    batches = [np.stack([pixels for _, pixels in images[i : i + args.batch_size]])
               for i in range(0, len(images), args.batch_size)]
    result = AccumulatorReport(program).run(batches)
    _say(format_report(result))
    _write_json(args.json, result)
    return 0


def _vectors(args) -> int:
    from intsim.golden.formats import parse_formats
    from intsim.golden.vectors import write_vectors

    tree = write_vectors(args.op, args.output, count=args.count, seed=args.seed, rounding=args.rounding,
                         formats=parse_formats(args.formats))
    _say(f"wrote {args.output}: {args.op} vectors, {tree.files} files, {tree.bytes / 2**10:.1f} KiB")
    return 0


def add_commands(commands) -> None:
    """Register ``golden``, ``diff``, ``report`` and ``vectors`` on the ``intsim`` subparsers ``commands``."""
    formats_help = "comma-separated formats among npy, hex ($readmemh), bin (packed little endian); default: all"
    data_help = "image files and/or folders (default: the embedded held-out digits, for the embedded model)"

    golden = commands.add_parser("golden", help="write golden vectors: every op's inputs, outputs and params, per image")
    golden.add_argument("program")
    golden.add_argument("-d", "--data", nargs="+", metavar="DIR|IMAGE", help=data_help)
    golden.add_argument("--limit", type=int, help="use only the first N images (default: all; embedded: 1)")
    golden.add_argument("-o", "--output", required=True, help="folder to create (must not exist, or be empty)")
    golden.add_argument("--formats", default="npy,hex,bin", help=formats_help)
    golden.add_argument("--max-size", default="2G", metavar="SIZE",
                        help="refuse, before writing, a tree estimated above SIZE (e.g. 500M, 20G; K/M/G/T = powers "
                             "of 1024; 'none': no limit; default 2G)")
    golden.set_defaults(handler=_golden)

    diff = commands.add_parser("diff", help="compare a DUT dump with a golden tree; name the first differing op "
                                            "(exit 0: all agree, 1: differ or incomplete, 2: bad input)")
    diff.add_argument("golden", help="golden tree (written by intsim golden or intsim vectors)")
    diff.add_argument("dut", help="DUT tree of the same layout: every golden tensor in npy, hex or bin (see --subset)")
    diff.add_argument("--subset", action="store_true",
                      help="compare only the files the DUT holds (default: a golden tensor missing from the DUT "
                           "makes exit 1); the skipped are counted")
    diff.add_argument("-v", "--verbose", action="store_true", help="one line per compared file, not per op")
    diff.add_argument("--json", help="write the comparison as JSON")
    diff.set_defaults(handler=_diff)

    report = commands.add_parser("report", help="accumulator-width report: max |value| of every accumulator and "
                                                "intermediate, bits needed vs declared, saturation counts")
    report.add_argument("program")
    report.add_argument("-d", "--data", nargs="+", metavar="DIR|IMAGE", help=data_help)
    report.add_argument("--limit", type=int, help="use only the first N images")
    report.add_argument("--json", help="write the report as JSON")
    report.add_argument("-b", "--batch-size", type=int, default=32)
    report.set_defaults(handler=_report)

    vectors = commands.add_parser("vectors", help="op-level vector suite: corner cases plus seeded random cases")
    vectors.add_argument("op", help="an op of intsim.ops (see intsim ops)")
    vectors.add_argument("--count", type=int, default=8, help="random cases on top of the corner cases (default 8)")
    vectors.add_argument("--seed", type=int, default=0, help="seed of the random cases (default 0)")
    vectors.add_argument("--rounding", help="rounding mode of an op that rounds: half_up (default), half_even, half_away; "
                                            "each mode's suite holds exact ties that catch a DUT rounding another way")
    vectors.add_argument("-o", "--output", required=True, help="folder to create (must not exist, or be empty)")
    vectors.add_argument("--formats", default="npy,hex,bin", help=formats_help)
    vectors.set_defaults(handler=_vectors)
