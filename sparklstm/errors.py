"""The one exception type users see.

Anything the user can fix (a missing column, an unreadable path, a tampered model) is raised as
``SparklstmError`` with a one-line message; the CLI prints it as ``error: ...`` on stderr and exits
non-zero. Everything else is a bug and keeps its traceback behind ``SPARKLSTM_DEBUG=1``.
"""


class SparklstmError(Exception):
    """A problem with the user's input, config or model directory (message is one line)."""
