"""Which of the operator's replicas reconciles: the holder of one coordination.k8s.io Lease, taken
and kept with client-go's leader-election rules, as pure logic over a monotonic clock.

Every replica watches and serves the admission webhooks; only the holder writes. The rules that
keep two from writing at once:
- A candidate never compares the Lease's `renewTime` with its own clock (clocks differ): it takes
  the Lease over only once the Lease has not changed for `leaseDurationSeconds` *as it observed
  it*, on its own monotonic clock, or once the holder released it.
- The holder counts from the moment it *sent* its last successful renewal, and stops leading
  `renew_deadline` after it, whether or not it has heard back since: the deadline is shorter than
  the duration, so it stops before anyone could have seen the Lease unchanged for that long.
- Every write carries the resourceVersion it was decided from: of two candidates taking over at
  once, the API server accepts one.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing

API_VERSION: typing.Final = "coordination.k8s.io/v1"
KIND: typing.Final = "Lease"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timing:
    """Seconds; client-go's defaults, the holder renewing every 5 s rather than every 2 s."""

    lease_duration: float = 15.0
    """What the Lease declares: how long others wait, from when they last saw it change."""
    renew_deadline: float = 10.0
    """A holder that has not renewed (from the sending of its last successful renewal) for this
    long stops leading."""
    renew_interval: float = 5.0
    """How often the holder renews."""
    retry_interval: float = 2.0
    """How often a candidate looks again, and a holder retries a failed renewal."""

    def __post_init__(self) -> None:
        # The order the safety argument above rests on.
        if not 0 < self.retry_interval < self.renew_deadline:
            raise ValueError("retry_interval must be positive and below renew_deadline")
        if not 0 < self.renew_interval < self.renew_deadline < self.lease_duration:
            raise ValueError("expected 0 < renew_interval < renew_deadline < lease_duration")
        if self.lease_duration != int(self.lease_duration):
            raise ValueError("lease_duration is a whole number of seconds (leaseDurationSeconds)")


DEFAULT_TIMING: typing.Final = Timing()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    """A Lease's spec as the API server holds it, and the resourceVersion it was read at."""

    holder: str = ""
    """holderIdentity; empty: nobody (never held, or released)."""
    duration: int = 0
    """leaseDurationSeconds."""
    acquired: str | None = None
    renewed: str | None = None
    transitions: int = 0
    version: str = ""
    """resourceVersion; empty in a Record to create."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Write:
    """What to write: create the Lease, or replace it (with `record.version`) with `record`."""

    create: bool
    record: Record


def micro_time(wall: datetime.datetime) -> str:
    """A MicroTime as the API server writes it (RFC 3339, microseconds, UTC)."""
    return wall.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_of(manifest: typing.Mapping[str, typing.Any]) -> Record:
    """The Record of a Lease read from the API server."""
    spec = manifest.get("spec") or {}
    return Record(
        holder=str(spec.get("holderIdentity") or ""),
        duration=int(spec.get("leaseDurationSeconds") or 0),
        acquired=spec.get("acquireTime"),
        renewed=spec.get("renewTime"),
        transitions=int(spec.get("leaseTransitions") or 0),
        version=str((manifest.get("metadata") or {}).get("resourceVersion") or ""),
    )


def manifest_of(record: Record, *, namespace: str, name: str) -> dict[str, typing.Any]:
    """The Lease to send for `record` (with its resourceVersion, when it has one)."""
    metadata: dict[str, typing.Any] = {"name": name, "namespace": namespace}
    if record.version:
        metadata["resourceVersion"] = record.version
    spec: dict[str, typing.Any] = {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.duration,
        "leaseTransitions": record.transitions,
    }
    if record.acquired is not None:
        spec["acquireTime"] = record.acquired
    if record.renewed is not None:
        spec["renewTime"] = record.renewed
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


class Elector:
    """One replica's view of the Lease. The caller reads the Lease, asks `next` what to write,
    writes it and reports `written` or `failed`, then sleeps `wait`; `leading` answers at any
    moment, from the clock alone."""

    def __init__(self, identity: str, timing: Timing = DEFAULT_TIMING) -> None:
        if not identity:
            raise ValueError("a replica needs a non-empty identity (its pod's name)")
        self.identity = identity
        self.timing = timing
        self._observed: Record | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None
        """When the last successful write that made or kept us the holder was sent."""
        self._failing = False

    def leading(self, now: float) -> bool:
        """Whether this replica may write now: it holds the Lease, renewed (sent) less than
        `renew_deadline` ago."""
        return self._renewed_at is not None and now - self._renewed_at < self.timing.renew_deadline

    @property
    def observed(self) -> Record | None:
        """The Lease as last read or written."""
        return self._observed

    def next(self, found: Record | None, *, now: float, wall: datetime.datetime) -> Write | None:
        """What to write, given the Lease as just read (None: it does not exist); None: nothing
        now. `now` is the monotonic clock, `wall` the time written into the Lease for people."""
        if not self.leading(now):
            self._renewed_at = None
        stamp = micro_time(wall)
        duration = int(self.timing.lease_duration)
        if found is None:
            return Write(
                create=True,
                record=Record(
                    holder=self.identity, duration=duration, acquired=stamp, renewed=stamp
                ),
            )
        if found != self._observed:
            self._observed, self._observed_at = found, now
        if found.holder == self.identity:
            # Ours: renewed when due. Also when we stopped leading (a missed deadline) and nobody
            # took it since: the write, made from this version, fails if anyone did.
            if self._renewed_at is not None and now - self._renewed_at < self.timing.renew_interval:
                return None
            return Write(
                create=False,
                record=dataclasses.replace(found, duration=duration, renewed=stamp),
            )
        # Someone else's (or nobody's): a holder we thought we were is gone.
        self._renewed_at = None
        if found.holder and now - self._observed_at < found.duration:
            return None
        return Write(
            create=False,
            record=dataclasses.replace(
                found,
                holder=self.identity,
                duration=duration,
                acquired=stamp,
                renewed=stamp,
                transitions=found.transitions + 1,
            ),
        )

    def written(self, record: Record, *, sent_at: float) -> None:
        """The write of `record` (as the API server answered it, with its new version) succeeded;
        `sent_at` is when it was sent."""
        self._failing = False
        self._observed, self._observed_at = record, sent_at
        self._renewed_at = sent_at if record.holder == self.identity else None

    def failed(self) -> None:
        """A read or write failed (unreachable, refused, or another replica's write came first):
        tried again after `retry_interval`; leading ends by the clock if this goes on."""
        self._failing = True

    def release(self, *, wall: datetime.datetime) -> Write | None:
        """Stops leading at once (before anything is sent) and returns the write that hands the
        Lease back (client-go's ReleaseOnCancel), so that another replica need not wait for it to
        expire; None when this replica does not hold it."""
        held = self._renewed_at is not None
        self._renewed_at = None
        observed = self._observed
        if not held or observed is None or observed.holder != self.identity:
            return None
        return Write(
            create=False,
            record=dataclasses.replace(
                observed, holder="", duration=1, acquired=None, renewed=micro_time(wall)
            ),
        )

    def wait(self, now: float) -> float:
        """Seconds until the next read (and write): the renewal when due, a retry sooner; never
        past the moment leading would end, so that the end is noticed as it happens."""
        if not self.leading(now) or self._failing:
            delay = self.timing.retry_interval
        else:
            assert self._renewed_at is not None
            delay = self._renewed_at + self.timing.renew_interval - now
        if self._renewed_at is not None:
            delay = min(delay, self._renewed_at + self.timing.renew_deadline - now)
        return max(0.0, delay)
