"""One vocabulary: the condition types and reasons in api/, the Event reasons and audit decisions
of reconcile/reports.py's table, and what the CRD and docs/status.md tell users, agree."""

from __future__ import annotations

import pathlib
import re

import yaml

from modelguard.agent import failures
from modelguard.api import backupstore, inputaudit, v1alpha1
from modelguard.audit import records
from modelguard.backup import streams
from modelguard.reconcile import reports
from modelguard.sources import credentials, errors
from modelguard.trust import reasons

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCS = (REPO / "docs" / "status.md").read_text()


def _named_in_docs() -> set[str]:
    return set(re.findall(r"`([A-Za-z]+)`", DOCS))


def _source_reasons() -> set[str]:
    found = {credentials.InvalidCredentials.reason}
    pending: list[type[errors.SourceError]] = [errors.SourceError]
    while pending:
        error = pending.pop()
        pending.extend(error.__subclasses__())
        if error is not errors.SourceError:
            found.add(error.reason)
    return found


def test_docs_name_every_condition_type_reason_event_and_decision() -> None:
    named = _named_in_docs()
    constants = {
        value
        for module in (v1alpha1, backupstore, inputaudit)
        for name, value in vars(module).items()
        if name.startswith("REASON_")
    } | set(v1alpha1.CONDITION_TYPES)
    # A ModelApproval that does not parse is refused at admission and by the CLI, never a reason
    # of a ModelDeployment's condition.
    trust = {str(reason) for reason in reasons.Reason} - {str(reasons.Reason.INVALID_APPROVAL)}
    agent = {failures.INVALID_ARGUMENT, failures.DESTINATION_ERROR}
    # What a backup, a restore or a drill reports of its own.
    agent |= {streams.READ_BACK_MISMATCH, streams.UNSUPPORTED, streams.FAILED}
    agent |= {streams.RESTORE_REFUSED}
    told = {str(decision) for decision in records.Decision}
    told |= {str(happening) for happening in reports.Happening}
    rows = [
        *reports.CONDITIONS.values(),
        *reports.HAPPENINGS.values(),
        *reports.STORE_CONDITIONS.values(),
        *reports.CHECKPOINT_CONDITIONS.values(),
    ]
    told |= {row.action for row in rows if row.event is not None}
    missing = (constants | trust | _source_reasons() | agent | told) - named
    assert missing == set(), f"docs/status.md does not name {sorted(missing)}"


def test_the_crd_lists_every_reason_the_operator_decides() -> None:
    crd = yaml.safe_load((REPO / "crds" / "modelguard.dev_modeldeployments.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    condition = schema["properties"]["status"]["properties"]["conditions"]["items"]
    explained = condition["properties"]["reason"]["description"]
    decided = {
        *v1alpha1.READY_REASONS,
        *v1alpha1.VERIFIED_REASONS,
        *v1alpha1.APPROVED_REASONS,
        *v1alpha1.ISOLATED_REASONS,
        *v1alpha1.BACKED_UP_REASONS,
    }
    missing = {reason for reason in decided if not re.search(rf"\b{reason}\b", explained)}
    assert missing == set(), f"the CRD's condition reason does not list {sorted(missing)}"
    for type in v1alpha1.CONDITION_TYPES:
        assert type in condition["properties"]["type"]["description"]


def test_every_condition_type_has_its_rows_in_the_table() -> None:
    told = {(type, status) for type, status, _ in reports.CONDITIONS}
    decided = set(v1alpha1.CONDITION_TYPES)
    assert told == {(type, status) for type in decided for status in ("True", "False")}


def test_the_backupstore_crd_lists_every_reason_of_its_conditions() -> None:
    crd = yaml.safe_load((REPO / "crds" / "modelguard.dev_backupstores.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    explained = schema["properties"]["status"]["properties"]["conditions"]["description"]
    reasons = {*backupstore.READY_REASONS, *backupstore.AUDIT_CHECKPOINTS_REASONS}
    missing = {r for r in reasons if not re.search(rf"\b{r}\b", explained)}
    assert missing == set(), f"the BackupStore CRD's conditions do not list {sorted(missing)}"
    assert backupstore.CONDITION_AUDIT_CHECKPOINTS in explained
