"""The ``intsim`` command: thin argument parsing over library functions.

Sub-commands so far:
    intsim ops        list the integer operators, their reference (the spec) and their kernel
    intsim --version
Quantization, running, checking and golden-vector commands arrive with the Program and interpreter.
"""

from __future__ import annotations

import argparse
import sys

import intsim


def _list_ops(_args) -> int:
    from intsim.ops import OPS

    width = max(len(spec.name) for spec in OPS)
    for spec in OPS:
        print(f"{spec.name:<{width}}  reference {spec.reference.__module__}.{spec.reference.__name__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intsim", description="Bit-exact integer reference simulator for quantized ViTs")
    parser.add_argument("--version", action="version", version=f"intsim {intsim.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    ops = commands.add_parser("ops", help="list the integer operators and their numpy references")
    ops.set_defaults(handler=_list_ops)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
