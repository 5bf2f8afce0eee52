"""The `butterflyvit` command line.

Each subcommand lives in `butterflyvit.commands.<name>` and provides
`HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Command modules keep heavy imports (torch) inside `run` so `--help` is fast.

Errors: a user's mistake ends in one line on stderr, `butterflyvit COMMAND: error: MESSAGE`,
and exit status 2, as argparse's usage errors do. Commands raise (or let through) a
`UserError` (errors.py) or an OSError about a named file (missing, a directory, not
writable); `user_error` below is the one place that tells those from bugs, which keep their
traceback, and `error` the one place that prints the line (`classify`, which carries on
past a bad image, calls both itself). Numeric options are checked by argparse types
(commands/__init__.py).
"""

import argparse
import importlib
import importlib.util
import os
import sys

from . import __version__
from .errors import UserError

# Order shown in --help: the pipeline from training to the board.
COMMANDS = ["train", "memory", "pack", "frame", "classify", "eval", "boards", "mpy", "harness", "demo"]


def available_commands():
    for name in COMMANDS:
        module_name = f"butterflyvit.commands.{name}"
        if importlib.util.find_spec(module_name) is not None:
            yield name, importlib.import_module(module_name)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """A usage error as one line, like every other error (the usage is in --help)."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_parser():
    parser = _Parser(
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error (2), --help or --version (0): return it too
        return exc.code
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        rc = args._run(args) or 0
        sys.stdout.flush()   # here, so a closed pipe is caught below, not at exit
        return rc
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`butterflyvit boards | head`): stop quietly, as Unix tools
        # do; stdout goes to /dev/null so the interpreter's last flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141   # 128 + SIGPIPE, what a shell reports for a tool the pipe stopped
    except Exception as exc:
        msg = user_error(exc)
        if msg is None:
            raise  # a bug: keep the traceback
        return error(args.command, msg)


def user_error(exc):
    """The message for an exception that is the user's input at fault (a UserError, or an
    OSError about a named file: missing, a directory, not writable), else None."""
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {(exc.strerror or str(exc)).lower()}"
    return None


def error(command, msg) -> int:
    """Print `butterflyvit COMMAND: error: MESSAGE` as one line on stderr; returns 2."""
    msg = " ".join(str(msg).split())  # one line, whatever the message held
    print(f"butterflyvit {command}: error: {msg}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
