"""The backup decision of a pass as named table cases: when a backup or a drill starts, what
BackedUp says, how a finished job becomes status.lastBackup, status.lastDrill and notes, and the
retry's backoff; then through decide.decide, which carries the start to the write step."""

from __future__ import annotations

import dataclasses
import datetime
import typing

import pytest
from test_reconcile_decide import NOW, SERVING_ROOT, _body, _live_deployment, _verified

from modelguard.api import times, v1alpha1
from modelguard.reconcile import backups, backupviews, conditions, decide, observations, reports

Manifest = dict[str, typing.Any]
AGENT = "registry.example/modelguard@sha256:" + "0" * 64
BACKUP = {"store": "vault", "schedule": "0 3 * * *"}
READY = {
    "type": "Ready",
    "status": "True",
    "reason": "Available",
    "message": "",
    "lastTransitionTime": "2026-06-01T00:00:00Z",
}
VERIFIED = {**READY, "type": "Verified", "reason": "SignatureVerified"}
STORE = backupviews.StoreView(
    name="vault",
    ready=conditions.Decision("True", "StoreReady", "locked"),
    retention_days=30,
    drill_schedule="0 4 * * 0",
)
KEY = backupviews.Jobs(key_id="k" * 64)


def _last(root: str = SERVING_ROOT, *, at: str = "2026-06-01T03:00:00Z") -> Manifest:
    return {
        "id": "20260601T030000Z-aaaaaaaaaaaa",
        "store": "vault",
        "version": "1.5.0",
        "rootDigest": root,
        "completedAt": at,
        "retainUntil": "2026-07-01T03:00:00Z",
        "files": 5,
        "bytes": 100,
        "writtenBytes": 100,
    }


def _seen(
    *,
    spec: Manifest | None = None,
    status: Manifest | None = None,
    store: backupviews.StoreView | None = STORE,
    jobs: backupviews.Jobs = KEY,
    serving: bool = True,
    now: datetime.datetime = NOW,
    source: str = "s3://models/m/",
) -> observations.Observed:
    extra = {"backup": spec} if spec is not None else {}
    body = _body(
        {
            "activeVersion": "1.5.0",
            "conditions": [READY, VERIFIED],
            **(status or {}),
        },
        **extra,
    )
    body["spec"]["model"]["source"]["uri"] = source
    live = _live_deployment(SERVING_ROOT, available=2, current=True) if serving else None
    model = v1alpha1.parse(body)
    return observations.Observed(
        body=body,
        status=observations.parse_status(body["status"]),
        namespace_labels={},
        children={("Deployment", "m"): live} if live is not None else {},
        owned={("Deployment", "m"): live["metadata"]["uid"]} if live is not None else {},
        pods=[],
        replica_sets=[],
        now=now,
        model=model,
        verification=_verified(SERVING_ROOT),
        backup=backupviews.Observed(store=store, jobs=jobs) if spec is not None else None,
    )


def _decide(seen: observations.Observed) -> backups.Decision:
    return backups.decide(seen, status=seen.status)


def _failed(
    kind: str = "backup", *, failures: int = 1, minutes_ago: int = 0
) -> backupviews.Finished:
    return backupviews.Finished(
        kind=typing.cast(backupviews.Kind, kind),
        at=NOW - datetime.timedelta(minutes=minutes_ago),
        ok=False,
        reason="BackupFailed" if kind == "backup" else "DigestMismatch",
        message="SourceUnreachable: no answer" if kind == "backup" else "model/w.bin changed",
        failures=failures,
        drilled="20260601T030000Z-aaaaaaaaaaaa" if kind == "drill" else None,
    )


DONE = backupviews.BackupDone(
    backup="20260601T120000Z-aaaaaaaaaaaa",
    store="vault",
    location="backups/team-a/m/20260601T120000Z-aaaaaaaaaaaa.sig",
    version="1.5.0",
    root_digest=SERVING_ROOT,
    files=6,
    bytes=200,
    written_bytes=150,
    retain_until=NOW + datetime.timedelta(days=30),
)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    seen: observations.Observed
    condition: tuple[str, str] | None
    """BackedUp as (status, reason); None: left as it is."""
    start: str | None = None
    """The kind of job started, if any."""
    notes: tuple[str, ...] = ()
    recheck: datetime.datetime | None = None


CASES = [
    Case(
        "no BackupStore of that name",
        _seen(spec=BACKUP, store=None),
        ("False", "StoreNotFound"),
    ),
    Case(
        "the store is not Ready",
        _seen(
            spec=BACKUP,
            store=dataclasses.replace(
                STORE, ready=conditions.Decision("False", "ObjectLockDisabled", "no lock")
            ),
        ),
        ("False", "StoreNotReady"),
    ),
    Case(
        "the store was not checked yet",
        _seen(spec=BACKUP, store=dataclasses.replace(STORE, ready=None)),
        ("False", "StoreNotReady"),
    ),
    Case(
        "no backup key", _seen(spec=BACKUP, jobs=backupviews.Jobs()), ("False", "BackupKeyMissing")
    ),
    Case(
        "a claim in the model's namespace",
        _seen(spec=BACKUP, source="pvc://store/m"),
        ("False", "BackupUnsupported"),
    ),
    Case(
        "nothing serves yet",
        _seen(spec=BACKUP, serving=False),
        ("False", "NothingToBackUp"),
    ),
    Case("the first backup follows the rollout", _seen(spec=BACKUP), None, start="backup"),
    Case(
        "a new version rolled out",
        _seen(spec=BACKUP, status={"lastBackup": _last("sha256:" + "b" * 64)}),
        None,
        start="backup",
    ),
    Case(
        "backed up to another store",
        _seen(spec=BACKUP, status={"lastBackup": {**_last(), "store": "old-vault"}}),
        None,
        start="backup",
    ),
    Case(
        "backed up, the schedule not due",
        _seen(spec=BACKUP, status={"lastBackup": _last()}),
        None,
        recheck=datetime.datetime(2026, 6, 2, 3, 0, tzinfo=datetime.UTC),
    ),
    Case(
        "backed up, the schedule due",
        _seen(spec=BACKUP, status={"lastBackup": _last(at="2026-05-31T03:00:00Z")}),
        None,
        start="backup",
    ),
    Case(
        "a job runs: nothing starts, nothing changes",
        _seen(spec=BACKUP, jobs=dataclasses.replace(KEY, running="backup")),
        None,
    ),
    Case(
        "a failure waits out its backoff",
        _seen(spec=BACKUP, jobs=dataclasses.replace(KEY, backup=_failed(failures=2))),
        ("False", "BackupFailed"),
        recheck=NOW + datetime.timedelta(minutes=1),
    ),
    Case(
        "a failure retried once its backoff passed",
        _seen(spec=BACKUP, jobs=dataclasses.replace(KEY, backup=_failed(minutes_ago=1))),
        ("False", "BackupFailed"),
        start="backup",
    ),
    Case(
        "a backup that ended is recorded and told",
        _seen(
            spec=BACKUP,
            jobs=dataclasses.replace(
                KEY,
                backup=backupviews.Finished(
                    kind="backup", at=NOW, ok=True, reason="BackupVerified", message="", backup=DONE
                ),
            ),
        ),
        ("True", "BackupVerified"),
        notes=("BackedUp",),
        recheck=datetime.datetime(2026, 6, 2, 3, 0, tzinfo=datetime.UTC),
    ),
    Case(
        "a drill is due on the store's schedule",
        _seen(
            spec=BACKUP,
            status={"lastBackup": _last(at="2026-05-31T03:00:00Z")},
            now=datetime.datetime(2026, 5, 31, 5, 0, tzinfo=datetime.UTC),
        ),
        None,
        start="drill",
    ),
    Case(
        "a failed drill is DrillFailed and told every time",
        _seen(
            spec=BACKUP,
            status={"lastBackup": _last()},
            jobs=dataclasses.replace(KEY, drill=_failed("drill")),
        ),
        ("False", "DrillFailed"),
        notes=("RestoreDrillFailed",),
        recheck=datetime.datetime(2026, 6, 2, 3, 0, tzinfo=datetime.UTC),
    ),
    Case(
        "quarantined: nothing is backed up",
        _seen(spec=BACKUP, status={"quarantine": {"reason": "DigestMismatch", "generation": 2}}),
        ("False", "NothingToBackUp"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_backup_decisions(case: Case) -> None:
    decided = _decide(case.seen)
    found = (decided.condition.status, decided.condition.reason) if decided.condition else None
    assert found == case.condition
    assert (decided.start.kind if decided.start else None) == case.start
    assert tuple(str(note.happening) for note in decided.notes) == case.notes
    assert decided.recheck_at == case.recheck


def test_a_backup_start_carries_what_the_job_needs() -> None:
    start = _decide(_seen(spec={**BACKUP, "retain": "90d"})).start
    assert start is not None
    assert start.backup == "20260601T120000Z-" + "a" * 12
    # The longer of the model's retain and the store's days.
    assert start.retain_until == NOW + datetime.timedelta(days=90)
    assert start.serving is not None
    assert start.serving.root_digest == SERVING_ROOT
    assert start.policy == {"name": "default", "uid": "p", "generation": 1}


def test_a_recorded_backup_becomes_status_last_backup_once() -> None:
    finished = backupviews.Finished(
        kind="backup", at=NOW, ok=True, reason="BackupVerified", message="", backup=DONE
    )
    seen = _seen(spec=BACKUP, jobs=dataclasses.replace(KEY, backup=finished))
    decided = _decide(seen)
    assert decided.last_backup is not None
    assert decided.last_backup.id == DONE.backup
    assert decided.last_backup.completed_at == times.rfc3339(NOW)
    # The next pass reads it back from the status: no second note.
    again = _seen(
        spec=BACKUP,
        status={"lastBackup": decided.last_backup.model_dump(mode="json", exclude_none=True)},
        jobs=dataclasses.replace(KEY, backup=finished),
    )
    assert _decide(again).notes == ()


@pytest.mark.parametrize(
    ("failures", "wait"),
    [(1, 30), (2, 60), (3, 120), (6, 960), (7, 1800), (40, 1800)],
    ids=["first", "second", "third", "sixth", "capped", "far"],
)
def test_retries_back_off_to_half_an_hour(failures: int, wait: int) -> None:
    assert backups.retry_after(failures) == datetime.timedelta(seconds=wait)


def test_without_spec_backup_the_condition_goes() -> None:
    body_status = {"conditions": [READY, {**READY, "type": "BackedUp", "reason": "BackupVerified"}]}
    seen = _seen(status=body_status)
    outcome = decide.decide(seen, agent_image=AGENT)
    assert conditions.find(outcome.status.conditions, "BackedUp") is None


def test_decide_carries_the_start_through_conclude() -> None:
    seen = _seen(spec=BACKUP)
    outcome = decide.decide(seen, agent_image=AGENT)
    assert outcome.backup is not None
    concluded = decide.conclude(outcome, observations.Applied())
    assert concluded.backup is outcome.backup


def test_each_backup_is_an_event_and_a_record_failures_are_told_by_the_condition() -> None:
    finished = backupviews.Finished(
        kind="backup", at=NOW, ok=True, reason="BackupVerified", message="", backup=DONE
    )
    outcome = decide.decide(
        _seen(spec=BACKUP, jobs=dataclasses.replace(KEY, backup=finished)), agent_image=AGENT
    )
    # The backup's own Event, then BackedUp turning True (told like every condition change).
    assert [(e.type, e.reason) for e in outcome.events if e.action == "Backup"] == [
        ("Normal", "BackedUp"),
        ("Normal", "BackupVerified"),
    ]
    assert _backup_records(outcome) == ["BackedUp"]
    failed = decide.decide(
        _seen(spec=BACKUP, jobs=dataclasses.replace(KEY, backup=_failed())), agent_image=AGENT
    )
    assert [(e.type, e.reason) for e in failed.events if e.action == "Backup"] == [
        ("Warning", "BackupFailed")
    ]
    assert _backup_records(failed) == ["BackupFailed"]
    assert reports.HAPPENINGS[reports.Happening.RESTORE_DRILL_FAILED].event == "Warning"


def _backup_records(outcome: decide.Outcome) -> list[str]:
    told = {"BackedUp", "BackupFailed", "RestoreDrillPassed", "RestoreDrillFailed"}
    return [str(r.decision) for r in outcome.audit_records if str(r.decision) in told]
