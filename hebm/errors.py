"""The mistake of whoever called hebm — a flag, a file, a directory, a setting — as opposed to a
fault of hebm.  The command lines print it as one line and exit 2 (:func:`hebm.cli.run`); the
library raises it wherever such a mistake is found, so programs see the same words."""


class UserError(RuntimeError):
    """A mistake in how hebm was called (a flag, a file, a directory, a setting): one line, exit 2
    at the command line."""


__all__ = ["UserError"]
