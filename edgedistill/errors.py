"""The two kinds of failure a user sees without a traceback."""


class EdgeDistillError(Exception):
    """Base class of the errors the CLI reports in one line."""

    exit_code = 1


class UserError(EdgeDistillError):
    """Bad input: the message names what is wrong and how to mend it (exit status 2)."""

    exit_code = 2

