"""What a pass knows about a model's backups, as plain data (pure): the BackupStore it names, the
jobs of this operator process (running, and how the last backup and drill ended), and what a
decision asks to start.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing

from modelguard.api import modelapproval, v1alpha1
from modelguard.reconcile import conditions

if typing.TYPE_CHECKING:
    from modelguard.reconcile import observations

Kind = typing.Literal["backup", "drill"]


@dataclasses.dataclass(frozen=True)
class StoreView:
    """The BackupStore a model names, as read."""

    name: str
    ready: conditions.Decision | None
    """Its Ready condition (None: not checked yet)."""
    retention_days: int
    """What every backup object is locked for at least (a volume: nothing, 0)."""
    drill_schedule: str | None
    """When to drill (None: drills suspended)."""


@dataclasses.dataclass(frozen=True)
class BackupDone:
    """A backup written, read back and verified."""

    backup: str
    store: str
    location: str
    version: str
    root_digest: str
    files: int
    bytes: int
    written_bytes: int
    retain_until: datetime.datetime


@dataclasses.dataclass(frozen=True)
class Finished:
    """How the last job of a kind ended, in this operator process."""

    kind: Kind
    at: datetime.datetime
    ok: bool
    reason: str
    message: str
    failures: int = 0
    """Failures in a row, this one included (0 when it succeeded): the retry's backoff."""
    backup: BackupDone | None = None
    """A backup's result."""
    drilled: str | None = None
    """The backup a drill restored."""


@dataclasses.dataclass(frozen=True)
class Jobs:
    """This operator's backup jobs for one model."""

    key_id: str | None = None
    """The backup key's id; None: the operator has no backup key."""
    running: Kind | None = None
    backup: Finished | None = None
    drill: Finished | None = None


@dataclasses.dataclass(frozen=True)
class Observed:
    """What a pass read about a model's backups (spec.backup set)."""

    store: StoreView | None
    """None: the BackupStore does not exist."""
    jobs: Jobs


@dataclasses.dataclass(frozen=True)
class Start:
    """A backup or drill the pass asks for; the write step starts it in the background."""

    kind: Kind
    store: str
    backup: str
    """The backup's id: the one to write, or the one to drill."""
    retain_until: datetime.datetime
    model: v1alpha1.ModelDeployment
    serving: observations.Serving | None = None
    verified: observations.Verified | None = None
    approvals: tuple[modelapproval.ModelApproval, ...] = ()
    """The approvals that count for the backed-up version."""
    policy: dict[str, typing.Any] = dataclasses.field(default_factory=dict)
    """The TrustPolicy's name, uid and generation."""
