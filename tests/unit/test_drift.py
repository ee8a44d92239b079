"""Drift detection from managedFields and a dry-run answer, as named table cases."""

from __future__ import annotations

import typing

import pytest

from modelguard.reconcile import drift


def _live(*entries: dict[str, typing.Any]) -> dict[str, typing.Any]:
    return {"metadata": {"name": "m", "managedFields": list(entries)}, "spec": {"replicas": 2}}


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        pytest.param([{"manager": "modelguard", "operation": "Apply"}], [], id="only-ours"),
        pytest.param(
            [
                {"manager": "modelguard", "operation": "Apply"},
                {"manager": "kube-controller-manager", "operation": "Update"},
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "subresource": "status",
                },
            ],
            [],
            id="controllers-and-status-are-normal-life",
        ),
        pytest.param(
            [
                {"manager": "modelguard", "operation": "Apply"},
                {"manager": "kubectl-edit", "operation": "Update"},
            ],
            ["kubectl-edit"],
            id="kubectl-edit-is-a-suspect",
        ),
        pytest.param(
            [
                {"manager": "kubectl-patch", "operation": "Update"},
                {"manager": "argocd-controller", "operation": "Apply"},
                {"manager": "kubectl-patch", "operation": "Update"},
            ],
            ["argocd-controller", "kubectl-patch"],
            id="each-suspect-once-sorted",
        ),
        pytest.param(
            [{"manager": "kubectl", "operation": "Update", "subresource": "scale"}],
            ["kubectl"],
            id="a-scale-is-a-suspect",
        ),
        pytest.param(
            [{"manager": "someone", "operation": "Update", "subresource": "status"}],
            [],
            id="status-is-not-guarded-here",
        ),
    ],
)
def test_foreign_managers(entries: list[dict[str, typing.Any]], expected: list[str]) -> None:
    assert drift.foreign_managers(_live(*entries), own="modelguard") == expected


@pytest.mark.parametrize(
    ("dry_run_spec", "dry_run_labels", "changed"),
    [
        pytest.param({"replicas": 2}, None, False, id="intent-would-change-nothing"),
        pytest.param({"replicas": 3}, None, True, id="intent-would-put-a-field-back"),
        pytest.param({"replicas": 2}, {"team": "a"}, True, id="intent-would-put-a-label-back"),
    ],
)
def test_differs(
    dry_run_spec: dict[str, int], dry_run_labels: dict[str, str] | None, changed: bool
) -> None:
    live = _live()
    dry_run = {"metadata": {"name": "m", "labels": dry_run_labels}, "spec": dry_run_spec}
    assert drift.differs(live, dry_run) is changed


_LIVE_SERVICE: dict[str, typing.Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "m",
        "resourceVersion": "42",
        "labels": {"note": "added-by-hand", "app": "old"},
        "annotations": {"example.com/x": "1"},
        "finalizers": ["example.com/keep"],
        "ownerReferences": [{"uid": "someone-else"}],
    },
    "spec": {
        "clusterIP": "10.0.0.7",
        "clusterIPs": ["10.0.0.7"],
        "externalIPs": ["203.0.113.9"],
        "ports": [{"port": 80}],
    },
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(("metadata", "resourceVersion"), "42", id="decided-from-this-version"),
        pytest.param(
            ("metadata", "labels"), {"note": "added-by-hand", "app": "m"}, id="our-labels-win"
        ),
        pytest.param(
            ("metadata", "annotations"),
            {"example.com/x": "1", "modelguard.dev/applied-intent": "h"},
            id="their-annotations-stay",
        ),
        pytest.param(("metadata", "finalizers"), ["example.com/keep"], id="finalizers-stay"),
        pytest.param(("metadata", "ownerReferences"), [{"uid": "md"}], id="only-our-owner"),
        pytest.param(("spec", "clusterIP"), "10.0.0.7", id="allocated-address-kept"),
        pytest.param(("spec", "externalIPs"), None, id="fields-others-added-go"),
        pytest.param(("spec", "ports"), [{"port": 8080}], id="our-spec-is-the-whole-truth"),
    ],
)
def test_replacement(path: tuple[str, str], expected: typing.Any) -> None:
    intended = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "m",
            "labels": {"app": "m"},
            "annotations": {"modelguard.dev/applied-intent": "h"},
            "ownerReferences": [{"uid": "md"}],
        },
        "spec": {"ports": [{"port": 8080}]},
    }
    replaced = drift.replacement(intended, _LIVE_SERVICE)
    assert replaced[path[0]].get(path[1]) == expected
