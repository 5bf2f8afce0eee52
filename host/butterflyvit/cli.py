"""The `butterflyvit` command line.

Each subcommand lives in `butterflyvit.commands.<name>` and provides
`HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Command modules keep heavy imports (torch) inside `run` so `--help` is fast.
"""

import argparse
import importlib
import importlib.util
import sys

from . import __version__

# Order shown in --help: the pipeline from training to the board.
COMMANDS = ["train", "memory", "pack", "classify", "eval", "boards", "harness", "demo"]


def available_commands():
    for name in COMMANDS:
        module_name = f"butterflyvit.commands.{name}"
        if importlib.util.find_spec(module_name) is not None:
            yield name, importlib.import_module(module_name)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="butterflyvit",
        description="Train, pack, run and verify ButterflyViT models for microcontrollers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in available_commands():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return args._run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
