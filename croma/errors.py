"""Errors the CLI turns into one line ``error: ...`` and exit code 2."""


class CromaError(Exception):
    """A user-facing error: bad configuration, bad checkpoint, bad flag value.

    The message must say what is wrong and what to do about it.
    """


class NonFiniteLossError(CromaError):
    """Training produced a NaN or infinite loss."""
