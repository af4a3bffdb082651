"""How the command reports failures."""

from __future__ import annotations


class CommandError(Exception):
    """A failure to report as ``certmq: error: <message>`` with exit status 1, without a traceback."""
