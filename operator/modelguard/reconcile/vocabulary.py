"""Every reason a ModelDeployment's conditions can carry, as one set: the operator's own (api/), the
trust layer's, the sources', the agent's. The metrics label reasons from it, and count anything
else as "Other", so that no text read from outside (a pod's termination message) mints series."""

from __future__ import annotations

from modelguard.agent import failures
from modelguard.api import v1alpha1
from modelguard.sources import errors
from modelguard.trust import reasons as trust_reasons


def reasons() -> frozenset[str]:
    """The reasons of conditions, quarantines and agents' refusals."""
    found = {value for name, value in vars(v1alpha1).items() if name.startswith("REASON_")}
    found |= {str(reason) for reason in trust_reasons.Reason}
    found |= {failures.INVALID_ARGUMENT, failures.DESTINATION_ERROR}
    pending: list[type[errors.SourceError]] = [errors.SourceError]
    while pending:
        error = pending.pop()
        pending.extend(error.__subclasses__())
        found.add(error.reason)
    return frozenset(str(reason) for reason in found)
