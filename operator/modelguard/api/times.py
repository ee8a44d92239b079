"""Times as the API and the audit log write them: RFC 3339 in UTC, and the parse of one.

No pydantic here: `modelguard audit verify` and the agent load it without the API models.
"""

from __future__ import annotations

import datetime
import typing

Precision = typing.Literal["seconds", "milliseconds"]


def rfc3339(moment: datetime.datetime, *, precision: Precision = "seconds") -> str:
    """`moment` in UTC with a `Z`: whole seconds as Kubernetes writes metav1.Time (conditions,
    status times, approval expiries), or milliseconds where records made within one second must
    still read in order (the audit log)."""
    return moment.astimezone(datetime.UTC).isoformat(timespec=precision).replace("+00:00", "Z")


def parse(value: str) -> datetime.datetime:
    """An RFC 3339 time with its offset (Z or +hh:mm); ValueError for anything else."""
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an RFC 3339 time such as 2025-07-01T00:00:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError("must be an RFC 3339 time with an offset (Z or +hh:mm)")
    return parsed
