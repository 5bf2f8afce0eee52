"""User errors: bad input (a file, an option's value), as opposed to a bug.

`butterflyvit` (cli.main) prints such an error as one line, `butterflyvit COMMAND: error:
MESSAGE`, and exits with status 2, as argparse does for its own usage errors. The message
names the file or the option at fault. Library code raises a subclass (DataError,
ImageError); a command raises UserError itself for what only it knows (an option's meaning).
"""


class UserError(ValueError):
    """Bad input from the user; the message names the file or option. A ValueError, so
    code that catches bad values catches these too."""
