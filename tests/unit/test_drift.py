"""Drift detection by content (never by managedFields names) and a dry-run answer, as named
table cases."""

from __future__ import annotations

import copy
import typing

import pytest

from modelguard.reconcile import drift


def _live(*entries: dict[str, typing.Any]) -> dict[str, typing.Any]:
    return {"metadata": {"name": "m", "managedFields": list(entries)}, "spec": {"replicas": 2}}


_DEPLOYMENT: dict[str, typing.Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "m",
        "resourceVersion": "7",
        "generation": 3,
        "labels": {"app": "m"},
        "annotations": {"modelguard.dev/applied-intent": "h"},
        "ownerReferences": [{"uid": "md"}],
        "managedFields": [{"manager": "modelguard", "operation": "Update"}],
    },
    "spec": {"replicas": 2},
    "status": {"replicas": 2},
}


def _changed(path: tuple[str, ...], value: typing.Any) -> dict[str, typing.Any]:
    changed = copy.deepcopy(_DEPLOYMENT)
    where = changed
    for key in path[:-1]:
        where = where.setdefault(key, {})
    where[path[-1]] = value
    return changed


@pytest.mark.parametrize(
    ("path", "value", "drift_found"),
    [
        pytest.param(("spec", "replicas"), 1, True, id="a-scale-whoever-wrote-it"),
        pytest.param(("spec", "paused"), True, True, id="a-field-others-add"),
        pytest.param(
            ("metadata", "annotations", "eks.amazonaws.com/role-arn"),
            "arn:aws:iam::1:role/x",
            True,
            id="an-annotation-others-add",
        ),
        pytest.param(
            ("metadata", "labels", "service.kubernetes.io/service-proxy-name"),
            "nobody",
            True,
            id="a-label-others-add",
        ),
        pytest.param(("metadata", "ownerReferences"), [], True, id="our-owner-removed"),
        pytest.param(
            ("metadata", "annotations", "modelguard.dev/applied-intent"),
            "forged",
            True,
            id="the-recorded-intent-rewritten",
        ),
        pytest.param(("automountServiceAccountToken",), True, True, id="an-accounts-token"),
        pytest.param(
            ("metadata", "managedFields"),
            [{"manager": "kube-controller-manager", "operation": "Update"}],
            False,
            id="a-manager-name-alone",
        ),
        pytest.param(("status", "replicas"), 1, False, id="what-it-reports"),
        pytest.param(("metadata", "resourceVersion"), "8", False, id="a-new-resource-version"),
        pytest.param(
            ("metadata", "annotations", "deployment.kubernetes.io/revision"),
            "2",
            False,
            id="the-deployment-controllers-revision",
        ),
    ],
)
def test_drift_is_found_by_content(
    path: tuple[str, ...], value: typing.Any, drift_found: bool
) -> None:
    changed = drift.content(_changed(path, value)) != drift.content(_DEPLOYMENT)
    assert changed is drift_found


def test_a_revert_names_what_managed_fields_say_but_never_decides_by_it() -> None:
    live = _changed(
        ("metadata", "managedFields"),
        [
            {"manager": "modelguard", "operation": "Update"},
            {"manager": "kubectl-patch", "operation": "Update"},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "scale"},
            {"manager": "kubelet", "operation": "Update", "subresource": "status"},
        ],
    )
    assert drift.writers(live, own="modelguard") == ["kube-controller-manager", "kubectl-patch"]
    assert drift.writers(_DEPLOYMENT, own="modelguard") == [
        "a writer under the operator's own field manager name (modelguard)"
    ]


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
        pytest.param(("metadata", "labels"), {"app": "m"}, id="only-our-labels"),
        pytest.param(
            ("metadata", "annotations"),
            {"modelguard.dev/applied-intent": "h"},
            id="only-our-annotations",
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
