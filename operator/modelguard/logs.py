"""The operator's log lines are one line each, whatever they quote.

A log line quotes outside text: an S3 error message from a tenant's own endpoint, an object's
name, an agent's termination message, an exception's text. Raw, a newline in it would start a
line of its own in `kubectl logs`, one that can pose as another component's line or as an audit
record. Every formatted line is therefore escaped as a whole, after formatting, so no handler,
argument or traceback can bypass it: control characters, line and paragraph separators, bidi
overrides and lone surrogates become visible `\\xNN` / `\\uNNNN` escapes. A traceback becomes
one long line.
"""

from __future__ import annotations

import logging
import sys
import threading
import types

from modelguard.api import text as text_rules


def escape(text: str) -> str:
    """`text` on one line, every unsafe character as a visible escape (api/text.py)."""
    return text_rules.escape(text)


class EscapingFormatter(logging.Formatter):
    """Formats with `inner`, then escapes the whole line."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return escape(self._inner.format(record))


def escape_handlers(logger: logging.Logger) -> None:
    """Every handler of `logger` escapes its lines from now on; uncaught exceptions and warnings
    are logged through them too, instead of being printed raw."""
    for handler in logger.handlers:
        if not isinstance(handler.formatter, EscapingFormatter):
            handler.setFormatter(EscapingFormatter(handler.formatter or logging.Formatter()))
    logging.captureWarnings(True)

    def uncaught(
        kind: type[BaseException], error: BaseException, trace: types.TracebackType | None
    ) -> None:
        logger.critical("uncaught exception", exc_info=(kind, error, trace))

    def uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        uncaught(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)

    sys.excepthook = uncaught
    threading.excepthook = uncaught_in_thread
