"""The one error the report raises for input it cannot use."""

from __future__ import annotations


class ReportError(Exception):
    """The report cannot be made: bad or missing input, or an output that cannot be written.

    The message is one line meant for the user (``emotrack`` prints it and exits with 2).
    """
