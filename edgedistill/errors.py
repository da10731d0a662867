"""The failures a user sees without a traceback: two that end a command, one that a run reports."""


class EdgeDistillError(Exception):
    """Base class of the errors the CLI reports in one line."""

    exit_code = 1


class UserError(EdgeDistillError):
    """Bad input: the message names what is wrong and how to mend it (exit status 2)."""

    exit_code = 2



class Unmade(Exception):
    """A deployment file that cannot be made from this student (a converter refuses it): the run
    goes on without that file, and the report says why (the message, one line)."""
