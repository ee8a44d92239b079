"""What a reconcile needs from the operator process that runs it (`Context`), and the one failure
it hands back to it (`RetryLater`)."""

from __future__ import annotations

import dataclasses
import datetime
import typing

from modelguard import kube, metrics
from modelguard.api import placement as placement_api
from modelguard.audit import sink
from modelguard.reconcile import backupjobs, storeready, verification

_T = typing.TypeVar("_T")


class RetryLater(Exception):
    """A failure worth retrying with backoff: the API server refused or was unreachable."""


@dataclasses.dataclass(frozen=True)
class Context:
    """What every reconcile needs from the process that runs it."""

    kube: kube.Kube
    instance: str
    """This operator replica's name, reported on the Events it posts."""
    agent_image: str
    """The image of the verifying init container: the operator's own, pinned by digest."""
    credentials_role: str
    """The ClusterRole a namespace binds to let the operator read its storage credentials."""
    audit: sink.Sink
    """Where every decision is recorded, hash-chained."""
    placement: placement_api.Placement = dataclasses.field(default_factory=placement_api.Placement)
    """Where every model pod runs: the platform's nodeSelector and tolerations (the chart's
    modelPods)."""
    verification_cache: verification.Cache = dataclasses.field(default_factory=verification.Cache)
    verification_slots: verification.Slots = dataclasses.field(default_factory=verification.Slots)
    """How many signature files may be fetched and verified at once (--verify-concurrency)."""
    recheck: typing.Callable[[str, str, datetime.datetime], None] = lambda *_: None
    """Asks for this model to be reconciled again at a time (when an approval expires)."""
    metrics: metrics.Metrics = dataclasses.field(default_factory=metrics.Metrics)
    """What passes count and time (the operator's /metrics)."""
    created: dict[tuple[str, str], dict[tuple[str, str], str]] = dataclasses.field(
        default_factory=dict
    )
    """Children this process created whose uid the model's status may not hold yet (its write
    failed): per (namespace, model), (kind, name) -> uid. Dropped once the status holds them."""
    backups: backupjobs.Jobs | None = None
    """Backups and restore drills of this process (None: it takes none)."""
    checkpoint_outcome: typing.Callable[[str], storeready.CheckpointOutcome | None] = lambda _: None
    """What became of the last audit checkpoint this process put into a BackupStore, by name."""


async def call(awaitable: typing.Awaitable[_T]) -> _T:
    """The API server's answer; RetryLater when it refuses or cannot be reached."""
    try:
        return await awaitable
    except kube.ApiError as error:
        raise RetryLater(f"API server refused: {error.reason}: {error.message}") from error
