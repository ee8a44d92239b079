"""The election of the replica that reconciles, as pure logic over a clock: replicas stepping on
the schedule each one's Elector gives, against a Lease held the way the API server holds it
(every write from the resourceVersion it was decided from). Whatever happens (a holder killed,
cut off, slow, a race), no two replicas that can still write lead at the same moment."""

from __future__ import annotations

import dataclasses
import datetime
import re

import kopf
import pytest

from modelguard import kube
from modelguard.reconcile import election, leadership

TIMING = leadership.Timing()  # 15 s lease, 10 s deadline, renew every 5 s, retry every 2 s
WALL = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
TICK = 0.1


class Server:
    """The Lease as the API server keeps it: created once, replaced only from its current
    resourceVersion (409 otherwise)."""

    def __init__(self) -> None:
        self.lease: leadership.Record | None = None
        self._version = 0
        self.writes: list[tuple[float, str]] = []

    def write(self, write: leadership.Write, *, now: float) -> leadership.Record | None:
        if write.create and self.lease is not None:
            return None  # AlreadyExists
        if not write.create and (self.lease is None or write.record.version != self.lease.version):
            return None  # Conflict
        self._version += 1
        self.lease = dataclasses.replace(write.record, version=str(self._version))
        self.writes.append((now, write.record.holder))
        return self.lease


@dataclasses.dataclass
class Replica:
    elector: leadership.Elector
    alive: bool = True
    cut_off: bool = False
    """Reads and writes fail (a network partition): the process runs on, its clock too."""
    latency: float = 0.0
    """Seconds between sending a write and it taking effect (and being answered)."""
    due: float = 0.0
    in_flight: tuple[float, float, leadership.Write] | None = None
    """(sent at, lands at, write)."""


class World:
    def __init__(self, *names: str, timing: leadership.Timing = TIMING) -> None:
        self.server = Server()
        self.replicas = {name: Replica(leadership.Elector(name, timing)) for name in names}
        self.now = 0.0
        self.leading_at: list[tuple[float, tuple[str, ...]]] = []

    def leaders(self) -> tuple[str, ...]:
        """Replicas that may write now: alive and leading by their own clock."""
        return tuple(
            name
            for name, replica in self.replicas.items()
            if replica.alive and replica.elector.leading(self.now)
        )

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            for replica in self.replicas.values():
                if replica.alive:
                    self._step(replica)
            leaders = self.leaders()
            assert len(leaders) <= 1, f"two replicas lead at {self.now:.1f}s: {leaders}"
            self.leading_at.append((self.now, leaders))
            self.now = round(self.now + TICK, 6)

    def _step(self, replica: Replica) -> None:
        elector = replica.elector
        if replica.in_flight is not None:
            sent_at, lands_at, write = replica.in_flight
            if self.now < lands_at:
                return
            replica.in_flight = None
            answer = self.server.write(write, now=self.now)
            if answer is None:
                elector.failed()
            else:
                elector.written(answer, sent_at=sent_at)
            replica.due = self.now + elector.wait(self.now)
            return
        if self.now < replica.due:
            return
        if replica.cut_off:
            elector.failed()
        else:
            write = elector.next(self.server.lease, now=self.now, wall=WALL)
            if write is not None:
                replica.in_flight = (self.now, self.now + replica.latency, write)
                if replica.latency == 0:
                    self._step(replica)
                    return
        replica.due = self.now + elector.wait(self.now)

    def first_leading(self, name: str, *, after: float = 0.0) -> float | None:
        for when, leaders in self.leading_at:
            if when >= after and name in leaders:
                return when
        return None


def test_the_first_replica_creates_the_lease_and_leads() -> None:
    world = World("a")
    world.run(1)
    assert world.leaders() == ("a",)
    lease = world.server.lease
    assert lease is not None
    assert (lease.holder, lease.duration, lease.transitions) == ("a", 15, 0)
    assert lease.acquired == lease.renewed == "2026-01-01T00:00:00.000000Z"


def test_a_second_replica_stays_standby_while_the_holder_renews() -> None:
    world = World("a", "b")
    world.run(120)
    assert {leaders for _, leaders in world.leading_at[5:]} == {("a",)}
    # The holder renews every 5 s: about 24 writes in 2 minutes, not one per retry.
    renewals = [holder for _, holder in world.server.writes]
    assert set(renewals) == {"a"}
    assert 20 <= len(renewals) <= 26


@pytest.mark.parametrize(
    ("case", "fail", "earliest", "latest"),
    [
        # Killed: the standby waits the lease's duration from when it last saw it change (at
        # most 2 s after the last renewal), then takes over at its next look.
        pytest.param("killed", "kill", 15.0, 15 + 5 + 2 + 2 * TICK, id="holder-killed"),
        # Cut off from the API server but running: it must stop writing by its deadline, 10 s
        # after sending its last renewal, and the standby cannot lead before 15 s have passed.
        pytest.param("cut off", "cut", 15.0, 15 + 5 + 2 + 2 * TICK, id="holder-cut-off"),
    ],
)
def test_a_holder_gone_is_taken_over_after_the_lease_duration_never_sooner(
    case: str, fail: str, earliest: float, latest: float
) -> None:
    del case
    world = World("a", "b")
    world.run(30)
    assert world.leaders() == ("a",)
    last_renewal = max(when for when, holder in world.server.writes if holder == "a")
    if fail == "kill":
        world.replicas["a"].alive = False
    else:
        world.replicas["a"].cut_off = True
    failed_at = world.now
    world.run(40)
    took_over = world.first_leading("b", after=failed_at)
    assert took_over is not None
    assert earliest <= took_over - last_renewal <= latest
    if fail == "cut":
        # The cut-off holder stopped leading on its own, before the standby started.
        stopped = min(w for w, leaders in world.leading_at if w > failed_at and "a" not in leaders)
        assert stopped <= last_renewal + TIMING.renew_deadline + TICK
        assert stopped < took_over
    assert world.server.lease is not None
    assert (world.server.lease.holder, world.server.lease.transitions) == ("b", 1)


def test_a_holder_back_after_losing_the_lease_stays_standby() -> None:
    world = World("a", "b")
    world.run(30)
    world.replicas["a"].cut_off = True
    world.run(30)
    assert world.leaders() == ("b",)
    world.replicas["a"].cut_off = False
    world.run(30)
    # a reads b's renewals: it waits, and never writes again.
    assert {leaders for _, leaders in world.leading_at[-250:]} == {("b",)}
    assert world.server.lease is not None
    assert world.server.lease.holder == "b"


def test_a_renewal_that_answers_late_counts_from_when_it_was_sent() -> None:
    elector = leadership.Elector("a")
    write = elector.next(None, now=0.0, wall=WALL)
    assert write is not None
    assert write.create
    # Sent at 0, answered at 8: the deadline is 10 s after the sending, 2 s after the answer.
    elector.written(dataclasses.replace(write.record, version="1"), sent_at=0.0)
    assert elector.leading(8.0)
    assert elector.leading(9.9)
    assert not elector.leading(10.0)


def test_a_slow_api_server_never_lets_two_lead() -> None:
    world = World("a", "b", "c")
    world.run(20)
    # Every write of the holder now takes 9 s to land: it keeps missing its deadline.
    world.replicas["a"].latency = 9.0
    world.run(120)  # World.run asserts at most one leader at every tick


def test_a_released_lease_is_taken_at_once() -> None:
    world = World("a", "b")
    world.run(20)
    release = world.replicas["a"].elector.release(wall=WALL)
    assert release is not None
    # Leading stopped before the release was even sent.
    assert world.leaders() == ()
    assert world.server.write(release, now=world.now) is not None
    world.replicas["a"].alive = False
    released_at = world.now
    world.run(5)
    took_over = world.first_leading("b", after=released_at)
    assert took_over is not None
    assert took_over - released_at <= TIMING.retry_interval + TICK
    assert world.server.lease is not None
    assert world.server.lease.holder == "b"


def test_a_standby_has_nothing_to_release() -> None:
    world = World("a", "b")
    world.run(10)
    assert world.replicas["b"].elector.release(wall=WALL) is None


def test_two_candidates_racing_for_a_free_lease_one_wins() -> None:
    server = Server()
    server.write(
        leadership.Write(create=True, record=leadership.Record(holder="", duration=1)), now=0
    )
    a, b = leadership.Elector("a"), leadership.Elector("b")
    found = server.lease
    write_a = a.next(found, now=0.0, wall=WALL)
    write_b = b.next(found, now=0.0, wall=WALL)
    assert write_a is not None
    assert write_b is not None
    answer_a = server.write(write_a, now=0)
    answer_b = server.write(write_b, now=0)
    assert answer_a is not None
    assert answer_b is None
    a.written(answer_a, sent_at=0.0)
    b.failed()
    assert a.leading(0.1)
    assert not b.leading(0.1)
    assert b.next(server.lease, now=2.0, wall=WALL) is None  # a's now; not expired


def test_a_holder_that_sees_another_holder_stops_leading() -> None:
    elector = leadership.Elector("a")
    write = elector.next(None, now=0.0, wall=WALL)
    assert write is not None
    elector.written(dataclasses.replace(write.record, version="1"), sent_at=0.0)
    assert elector.leading(1.0)
    # Someone (an administrator, a replica with a skewed view) wrote another holder.
    taken = leadership.Record(holder="b", duration=15, version="2")
    assert elector.next(taken, now=1.0, wall=WALL) is None
    assert not elector.leading(1.0)


@pytest.mark.parametrize(
    ("state", "now", "expected"),
    [
        pytest.param("standby", 0.0, TIMING.retry_interval, id="standby-looks-every-retry"),
        pytest.param("leading", 1.0, 4.0, id="holder-renews-when-due"),
        pytest.param("failing", 1.0, TIMING.retry_interval, id="failed-renewal-retried-soon"),
        pytest.param("failing", 9.0, 1.0, id="woken-at-the-deadline"),
    ],
)
def test_the_next_look_is_never_later_than_the_deadline(
    state: str, now: float, expected: float
) -> None:
    elector = leadership.Elector("a")
    if state != "standby":
        write = elector.next(None, now=0.0, wall=WALL)
        assert write is not None
        elector.written(dataclasses.replace(write.record, version="1"), sent_at=0.0)
    if state == "failing":
        elector.failed()
    assert elector.wait(now) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        pytest.param({"renew_deadline": 15.0}, "renew_deadline", id="deadline-not-below-duration"),
        pytest.param({"renew_interval": 10.0}, "renew_interval", id="renewal-not-below-deadline"),
        pytest.param({"retry_interval": 0.0}, "retry_interval", id="no-retry-interval"),
        pytest.param({"lease_duration": 15.5}, "whole number", id="duration-not-whole-seconds"),
    ],
)
def test_timings_that_would_let_two_lead_are_refused(
    timing: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        leadership.Timing(**timing)


def test_a_replica_needs_an_identity() -> None:
    with pytest.raises(ValueError, match="identity"):
        leadership.Elector("")


def test_the_lease_round_trips_through_its_manifest() -> None:
    record = leadership.Record(
        holder="modelguard-7d9f-x_0a1b2c3d",
        duration=15,
        acquired="2026-01-01T00:00:00.000000Z",
        renewed="2026-01-01T00:00:05.000000Z",
        transitions=3,
        version="812",
    )
    manifest = leadership.manifest_of(record, namespace="modelguard-system", name="modelguard")
    assert manifest["metadata"] == {
        "name": "modelguard",
        "namespace": "modelguard-system",
        "resourceVersion": "812",
    }
    assert leadership.record_of(manifest) == record


async def test_a_fenced_client_refuses_writes_once_leading_stops() -> None:
    leading = True
    # No connection at all: a refused write never reaches it.
    client = kube.Kube(client=None).fenced(lambda: leading)  # type: ignore[arg-type]
    leading = False
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    with pytest.raises(kube.NotLeading):
        await client.create(manifest)
    with pytest.raises(kube.NotLeading):
        await client.replace(manifest)
    with pytest.raises(kube.NotLeading):
        await client.apply_model_deployment_status(namespace="n", name="m", status={})
    with pytest.raises(kube.NotLeading):
        await client.apply_backup_store_status(name="s", status={})
    with pytest.raises(kube.NotLeading):
        await client.post_event(
            regarding={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}},
            type="Normal",
            reason="R",
            action="A",
            note="n",
            reporting_instance="i",
        )


@pytest.mark.parametrize(
    ("lease", "namespace", "message"),
    [
        pytest.param("Modelguard", "mg", "--leader-election-lease 'Modelguard'", id="uppercase"),
        pytest.param("-modelguard", "mg", "expected a Lease name", id="leading-dash"),
        pytest.param("modelguard", None, "--leader-election-namespace", id="no-namespace"),
    ],
)
def test_a_lease_that_cannot_be_used_stops_the_start_naming_the_option(
    lease: str, namespace: str | None, message: str
) -> None:
    from modelguard.commands import run  # noqa: PLC0415 - kopf and the handlers are heavy

    with pytest.raises(SystemExit, match=re.escape(message)):
        run._leader_election(run.LeaderElectionOptions(lease=lease, namespace=namespace))


def test_without_a_lease_the_process_reconciles_alone() -> None:
    from modelguard.commands import run  # noqa: PLC0415

    assert run._leader_election(run.LeaderElectionOptions()) is None
    elected = run._leader_election(run.LeaderElectionOptions(lease="mg.lease", namespace="mg"))
    assert elected is not None
    assert (elected.lease, elected.namespace) == ("mg.lease", "mg")


def test_a_renewal_overdue_for_a_moment_stops_writes_but_not_reconciles() -> None:
    """An event loop too busy to renew on time (a burst of reconciles) makes the holder's renewal
    overdue: it may not write until it renews, but the handlers that reconcile still run (their
    writes refused and retried), since a lapse that ends in a renewal starts no new term and
    nothing would reconcile again what they skipped: models created then stayed without status."""
    from modelguard import handlers  # noqa: PLC0415 - kopf and the handlers are heavy

    now = 0.0
    elected = election.Election(
        kube.Kube(client=None),  # type: ignore[arg-type]
        namespace="mg",
        name="lease",
        identity="a",
        clock=lambda: now,
    )
    write = elected._elector.next(None, now=now, wall=WALL)
    assert write is not None
    elected._elector.written(dataclasses.replace(write.record, version="1"), sent_at=now)
    elected._notice()
    memo = kopf.Memo(leadership=elected)
    assert elected.leading
    assert handlers._leading(memo)
    now = TIMING.renew_deadline + 1  # no renewal since: overdue
    assert not elected.leading
    assert elected.elected
    assert handlers._leading(memo)
    elected._notice()  # the election looks again and finds the Lease lost
    assert not handlers._leading(memo)
