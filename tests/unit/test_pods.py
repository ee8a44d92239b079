"""Reading the verifying agent's refusal from pod status (named table cases)."""

from __future__ import annotations

import typing

import pytest

from modelguard.builders import deployment
from modelguard.reconcile import pods

DIGEST = "sha256:" + "ab" * 32


def _pod(
    *,
    digest: str = DIGEST,
    state: dict[str, typing.Any] | None = None,
    last_state: dict[str, typing.Any] | None = None,
    container: str = deployment.AGENT_CONTAINER,
) -> dict[str, typing.Any]:
    return {
        "metadata": {"name": "m-1", "annotations": {deployment.ROOT_DIGEST_ANNOTATION: digest}},
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
    refusal = pods.agent_refusal([pod], root_digest=DIGEST)
    if expected is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert (refusal.reason, refusal.message, refusal.tampering) == expected
        assert refusal.pod == "m-1"


def test_a_terminating_pod_is_already_acted_upon() -> None:
    pod = _pod(state=_terminated(1, "DigestMismatch: x"))
    pod["metadata"]["deletionTimestamp"] = "2026-11-22T12:00:00Z"
    assert pods.agent_refusal([pod], root_digest=DIGEST) is None
