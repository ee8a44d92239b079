"""Reading the verifying agent's refusal from pod status (named table cases)."""

from __future__ import annotations

import typing

import pytest

from modelguard.agent import fetchverify
from modelguard.builders import deployment
from modelguard.reconcile import pods

DIGEST = "sha256:" + "ab" * 32


RS_UID = "5e7a1b0c-0000-4000-8000-000000000001"
DEPLOYMENT_UID = "5e7a1b0c-0000-4000-8000-0000000000d0"


def _owner(kind: str, uid: str, *, controller: bool = True) -> dict[str, typing.Any]:
    return {"kind": kind, "name": "m-7f9c", "uid": uid, "controller": controller}


def _pod(
    *,
    digest: str = DIGEST,
    state: dict[str, typing.Any] | None = None,
    last_state: dict[str, typing.Any] | None = None,
    container: str = deployment.AGENT_CONTAINER,
) -> dict[str, typing.Any]:
    return {
        "metadata": {
            "name": "m-1",
            "annotations": {deployment.ROOT_DIGEST_ANNOTATION: digest},
            "ownerReferences": [_owner("ReplicaSet", RS_UID)],
        },
        "status": {
            "initContainerStatuses": [
                {"name": container, "state": state or {}, "lastState": last_state or {}}
            ]
        },
    }


def _terminated(code: int, message: str) -> dict[str, typing.Any]:
    return {"terminated": {"exitCode": code, "message": message}}


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(_pod(state={"running": {}}), None, id="agent-still-running"),
        pytest.param(_pod(state=_terminated(0, "")), None, id="agent-succeeded"),
        pytest.param(
            _pod(state=_terminated(1, "DigestMismatch: model.safetensors differs")),
            ("DigestMismatch", "model.safetensors differs", True),
            id="tampered-file",
        ),
        pytest.param(
            _pod(last_state=_terminated(1, "UnexpectedFile: extra.bin is not signed")),
            ("UnexpectedFile", "extra.bin is not signed", True),
            id="earlier-attempt-counts",
        ),
        pytest.param(
            _pod(state=_terminated(1, "SourceUnreachable: connection refused")),
            ("SourceUnreachable", "connection refused", False),
            id="unreachable-source-is-not-tampering",
        ),
        pytest.param(
            _pod(state=_terminated(137, "")),
            ("AgentFailed", "exit code 137", False),
            id="killed-without-a-message",
        ),
        pytest.param(
            _pod(state=_terminated(1, "Traceback (most recent call last): boom")),
            ("AgentFailed", "Traceback (most recent call last): boom", False),
            id="a-crash-is-no-reason-the-schema-accepts",
        ),
        pytest.param(
            _pod(state=_terminated(1, "A" * 65 + ": too long for a reason")),
            ("AgentFailed", "A" * 65 + ": too long for a reason", False),
            id="an-overlong-reason-is-no-reason",
        ),
        pytest.param(
            _pod(digest="sha256:" + "cd" * 32, state=_terminated(1, "DigestMismatch: x")),
            None,
            id="pod-of-another-version-says-nothing",
        ),
        pytest.param(
            _pod(container="other", state=_terminated(1, "DigestMismatch: x")),
            None,
            id="only-the-agent-is-read",
        ),
    ],
)
def test_agent_refusal(pod: dict[str, typing.Any], expected: tuple[str, str, bool] | None) -> None:
    refusals = pods.agent_refusals([pod], root_digest=DIGEST)
    if expected is None:
        assert refusals == []
    else:
        (refusal,) = refusals
        assert (refusal.reason, refusal.message, refusal.tampering) == expected
        assert (refusal.pod, refusal.controller) == ("m-1", RS_UID)


def test_a_terminating_pod_is_already_acted_upon() -> None:
    pod = _pod(state=_terminated(1, "DigestMismatch: x"))
    pod["metadata"]["deletionTimestamp"] = "2026-11-22T12:00:00Z"
    assert pods.agent_refusals([pod], root_digest=DIGEST) == []


@pytest.mark.parametrize(
    ("owners", "controller"),
    [
        pytest.param([_owner("ReplicaSet", RS_UID)], RS_UID, id="replica-set-controls-it"),
        pytest.param([], None, id="made-by-hand"),
        pytest.param(
            [_owner("ReplicaSet", RS_UID, controller=False)], None, id="owner-but-not-controller"
        ),
        pytest.param([_owner("StatefulSet", RS_UID)], None, id="another-kind-controls-it"),
    ],
)
def test_a_refusal_names_the_replica_set_controlling_its_pod(
    owners: list[dict[str, typing.Any]], controller: str | None
) -> None:
    pod = _pod(state=_terminated(1, "DigestMismatch: x"))
    pod["metadata"]["ownerReferences"] = owners
    (refusal,) = pods.agent_refusals([pod], root_digest=DIGEST)
    assert refusal.controller == controller


def test_only_replica_sets_the_deployment_controls_count() -> None:
    def replica_set(uid: str, owners: list[dict[str, typing.Any]]) -> dict[str, typing.Any]:
        return {"metadata": {"uid": uid, "ownerReferences": owners}}

    found = pods.controlled_by(
        [
            replica_set("ours", [_owner("Deployment", DEPLOYMENT_UID)]),
            replica_set("adopted-elsewhere", [_owner("Deployment", "another")]),
            replica_set("not-controlled", [_owner("Deployment", DEPLOYMENT_UID, controller=False)]),
            replica_set("orphan", []),
        ],
        deployment_uid=DEPLOYMENT_UID,
    )
    assert found == {"ours"}


def test_a_refused_attempt_counts_even_when_a_retry_succeeded() -> None:
    pod = _pod(state=_terminated(0, ""), last_state=_terminated(1, "DigestMismatch: x"))
    assert [r.reason for r in pods.agent_refusals([pod], root_digest=DIGEST)] == ["DigestMismatch"]


@pytest.mark.parametrize(
    ("pod", "lines"),
    [
        pytest.param(
            _pod(
                state=_terminated(
                    0,
                    "audit UnsafeFormat: file 'a.pt' is a PyTorch pickle\n"
                    "audit UnsafeFormat: file 'b.pkl' is pickle",
                )
            ),
            (
                "UnsafeFormat: file 'a.pt' is a PyTorch pickle",
                "UnsafeFormat: file 'b.pkl' is pickle",
            ),
            id="each-admitted-violation",
        ),
        pytest.param(_pod(state=_terminated(0, "")), None, id="nothing-admitted"),
        pytest.param(_pod(state={"running": {}}), None, id="agent-still-running"),
        pytest.param(
            _pod(state=_terminated(1, "audit UnsafeFormat: x")), None, id="a-refusal-admits-nothing"
        ),
        pytest.param(
            _pod(digest="sha256:" + "cd" * 32, state=_terminated(0, "audit UnsafeFormat: x")),
            None,
            id="pod-of-another-version-says-nothing",
        ),
    ],
)
def test_agent_admissions(pod: dict[str, typing.Any], lines: tuple[str, ...] | None) -> None:
    admitted = pods.agent_admissions([pod], root_digest=DIGEST)
    if lines is None:
        assert admitted == []
    else:
        assert admitted == [pods.Admitted(pod="m-1", lines=lines, controller=RS_UID)]


SUMMARY = fetchverify.Summary(root_digest=b"\x01" * 32, files=3, bytes=1234, seconds=2.5).line()


def _exited(code: int, message: str = "") -> dict[str, typing.Any]:
    return {
        "metadata": {"name": "p", "annotations": {"modelguard.dev/root-digest": "sha256:1"}},
        "status": {
            "initContainerStatuses": [
                {
                    "name": "fetch-verify",
                    "state": {"terminated": {"exitCode": code, "message": message}},
                }
            ]
        },
    }


@pytest.mark.parametrize(
    ("pods_now", "reported"),
    [
        pytest.param([], False, id="no-pods"),
        pytest.param([_exited(0)], False, id="a-clean-exit-says-nothing"),
        pytest.param([_exited(0, SUMMARY)], False, id="nor-does-its-summary-line"),
        pytest.param([_exited(1, "DigestMismatch: x")], True, id="a-refusal"),
        pytest.param([_exited(0, "audit UnsafeFormat: y")], True, id="admitted-under-audit"),
    ],
)
def test_any_agent_report(pods_now: list[dict[str, typing.Any]], reported: bool) -> None:
    assert pods.any_agent_report(pods_now) is reported


def _ran(code: int, message: str, *, container_id: str = "containerd://1") -> dict[str, typing.Any]:
    return {
        "terminated": {
            "exitCode": code,
            "message": message,
            "containerID": container_id,
            "startedAt": "2030-01-01T00:00:00Z",
            "finishedAt": "2030-01-01T00:00:07Z",
        }
    }


RUNS = {
    "verified-with-its-summary": (_ran(0, SUMMARY), (True, "", 1234, 2.5)),
    "verified-under-audit": (
        _ran(0, f"{SUMMARY}\naudit UnsafeFormat: file 'a.pkl'"),
        (True, "", 1234, 2.5),
    ),
    "verified-without-a-summary-takes-the-kubelets-times": (_ran(0, ""), (True, "", 0, 7.0)),
    "refused": (_ran(1, "DigestMismatch: model.bin differs"), (False, "DigestMismatch", 0, 7.0)),
    "a-crash-is-agent-failed": (
        _ran(1, "Traceback (most recent call last): boom"),
        (False, "AgentFailed", 0, 7.0),
    ),
    "a-reason-too-long-is-agent-failed": (
        _ran(1, "A" * 65 + ": x"),
        (False, "AgentFailed", 0, 7.0),
    ),
}


@pytest.mark.parametrize(("state", "expected"), RUNS.values(), ids=RUNS.keys())
def test_agent_runs(state: dict[str, typing.Any], expected: tuple[bool, str, int, float]) -> None:
    pod = _pod(state=state)
    pod["metadata"]["uid"] = "pod-uid"
    (run,) = pods.agent_runs([pod])
    assert (run.verified, run.reason, run.bytes, run.seconds) == expected
    assert run.key == ("pod-uid", "containerd://1", "2030-01-01T00:00:07Z")


def test_agent_runs_reads_both_runs_of_a_restarted_agent_with_their_own_keys() -> None:
    pod = _pod(
        state=_ran(0, SUMMARY, container_id="containerd://2"),
        last_state=_ran(1, "SourceUnreachable: timeout"),
    )
    runs = pods.agent_runs([pod, _pod(state={"running": {}})])
    assert [(run.verified, run.reason) for run in runs] == [
        (True, ""),
        (False, "SourceUnreachable"),
    ]
    assert len({run.key for run in runs}) == 2
