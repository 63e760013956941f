"""Errors raised by the data layer (never imports croma)."""


class DataError(Exception):
    """Missing, malformed or insufficient data.

    Messages name the file or directory, the expected layout, and where the data set
    is published.
    """
