"""The agent's own refusals, next to the trust layer's and the sources' typed errors.

Every failure the agent reports is one line `REASON: message`: the reason machine-readable (the
operator turns it into a condition), the message naming the file or flag, never a credential.
"""

from __future__ import annotations

import typing

INVALID_ARGUMENT: typing.Final = "InvalidArgument"
DESTINATION_ERROR: typing.Final = "DestinationError"


class AgentError(Exception):
    """A refusal of the agent that neither the trust layer nor a source raised."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
