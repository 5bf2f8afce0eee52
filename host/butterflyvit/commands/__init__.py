"""The subcommands of `butterflyvit` (see cli.py), and what they share: argparse types that
refuse impossible numbers while parsing (usage error, exit status 2)."""

import argparse


def _number(kind, ok, what):
    """An argparse type: `kind(text)` that `ok` accepts, else a usage error saying `what`."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if v != v or not ok(v):  # v != v: NaN
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return v
    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "a positive integer (1 or more)")
nonnegative_int = _number(int, lambda v: v >= 0, "a non-negative integer (0 or more)")
positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive number")
nonnegative_float = _number(float, lambda v: 0 <= v < float("inf"), "a non-negative number")


def check_output(path, option, makes_folder=False):
    """Refuse an output file that cannot be written before any work is done (not after an
    hour of training): a directory, or a file in a folder that does not exist (unless its
    writer makes folders)."""
    import os

    from ..errors import UserError

    if os.path.isdir(path):
        raise UserError(f"{option} {path}: is a directory (give a file name)")
    folder = os.path.dirname(os.path.abspath(path))
    if not makes_folder and not os.path.isdir(folder):
        raise UserError(f"{option} {path}: no such folder {folder}")


def read_checkpoint(path):
    """checkpoint.load_checkpoint, any refusal as one line naming the file (UserError); a
    missing file or a directory stays an OSError with its filename (cli.main names it)."""
    from ..checkpoint import load_checkpoint
    from ..errors import UserError

    try:
        return load_checkpoint(path)
    except OSError as exc:
        if exc.filename is None:
            raise UserError(f"{path}: cannot read the checkpoint ({exc})") from None
        raise
    except Exception as exc:  # torch.load's many ways of refusing a file
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(msg if msg.startswith(str(path)) else
                        f"{path}: cannot read the checkpoint ({msg})") from None
