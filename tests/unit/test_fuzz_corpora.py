"""The fuzz targets' checked-in corpora replayed (fuzz/, `make fuzz`): every input the fuzzer kept
and every one that once crashed gets a clear refusal or an answer, never an exception. The seeds
are real inputs that reach the deepest checks: each is held to what it is (a signature that
verifies, an intact log, a denial by the webhook meant), or the fuzzer would start from shallow
ones without anyone noticing. No atheris needed."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import sys

import pytest

FUZZ = pathlib.Path(__file__).resolve().parents[2] / "fuzz"
sys.path.insert(0, str(FUZZ))

import targets  # noqa: E402 - fuzz/, put on the path above
from modelguard.admission import serving  # noqa: E402
from modelguard.api import modelapproval  # noqa: E402
from modelguard.commands import auditlog  # noqa: E402
from modelguard.trust import approval, verify  # noqa: E402


def _corpus(target: str, prefix: str = "") -> list[pathlib.Path]:
    found = sorted(path for path in (FUZZ / "corpus" / target).iterdir() if path.is_file())
    return [path for path in found if path.name.startswith(prefix)]


@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_every_corpus_input_is_refused_or_answered(target: str) -> None:
    inputs = _corpus(target)
    assert any(path.name.startswith("seed-") for path in inputs)
    failures = []
    for path in inputs:
        try:
            targets.TARGETS[target](path.read_bytes())
        except Exception as error:
            failures.append(f"{path.name}: {type(error).__name__}: {error}")
    assert not failures, f"fuzz/corpus/{target}:\n" + "\n".join(failures)


@pytest.mark.parametrize("path", _corpus("bundle", "seed-"), ids=lambda path: path.name)
def test_the_bundle_seeds_verify(path: pathlib.Path) -> None:
    signed = verify.verify_signatures(
        path.read_bytes(),
        targets._rules(),
        source_uri=targets.SOURCE_URI,
        namespace=targets.NAMESPACE,
        at=targets.AT,
    )
    expected = {"ml-release"} if "key" in path.name else set()
    expected |= {"ca-release"} if "certificate" in path.name else set()
    assert {item.signer for item in signed.signers} == expected


# Each webhook seed, and how the webhook meant for it answers: None is allowed, else a part of
# the denial.
_ADMISSION = {
    "seed-deployment-delete": "deleting it directly is not allowed",
    "seed-deployment-scale": "scaling it directly is not allowed",
    "seed-deployment-update": "changing it directly is not allowed",
    "seed-modelapproval-create": None,
    "seed-modeldeployment-create": None,
    "seed-modeldeployment-update-rejected": None,  # an approval of 2.0.0 is in the cache
    "seed-modeldeployment-update-unapproved": "is not approved",
    "seed-networkpolicy-create": "is not inside the ranges the model's TrustPolicy allows",
    "seed-pod-ephemeralcontainers": "adding ephemeralcontainers to it directly is not allowed",
    "seed-pod-exec": "nobody may exec into a model's pods",
    "seed-serviceaccount-create-by-controller": None,
    "seed-trustpolicy-create": None,
}


def test_each_admission_seed_is_judged_by_its_webhook() -> None:
    assert sorted(_ADMISSION) == [path.name for path in _corpus("admission", "seed-")]
    for name, denial in _ADMISSION.items():
        answer = targets.admission_answer((FUZZ / "corpus" / "admission" / name).read_bytes())
        assert answer is not None, name
        if denial is None:
            assert answer["allowed"], (name, answer)
            assert not answer.get("warnings"), (name, answer)
        else:
            assert not answer["allowed"], name
            assert answer["status"]["code"] == 403
            assert denial in answer["status"]["message"], (name, answer["status"])


@pytest.mark.parametrize("path", _corpus("admission", "regression-"), ids=lambda path: path.name)
def test_a_body_that_is_no_admission_review_is_answered_400_with_what_is_wrong(
    path: pathlib.Path,
) -> None:
    """Each of these made kopf fail with a traceback (an HTTP 500, or a 500 answer of a handler
    failing on a field of the wrong type), before reviews were checked."""
    assert targets.admission_answer(path.read_bytes()) is None


@pytest.mark.parametrize(
    ("review", "problem"),
    [
        pytest.param([], "the body is a JSON array, not an object", id="array"),
        pytest.param({}, "request is missing or not an object", id="no-request"),
        pytest.param({"request": {"uid": 7}}, "request.uid is not a string", id="uid-not-a-string"),
        pytest.param(
            {"request": {"resource": {"group": "", "version": "v1"}}},
            "request.resource is missing or not {group, version, resource} strings",
            id="resource-incomplete",
        ),
        pytest.param(
            {"request": {"resource": {"group": "", "version": "v1", "resource": "pods"}}},
            "request.userInfo is missing or not an object",
            id="no-user",
        ),
        pytest.param(
            {
                "request": {
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "userInfo": {},
                    "object": {"metadata": {"uid": ["x"]}},
                }
            },
            "request.object.metadata.uid is not a string",
            id="uid-a-list",
        ),
        pytest.param(
            {
                "request": {
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "userInfo": {},
                }
            },
            "request.object and request.oldObject are both missing",
            id="no-object",
        ),
    ],
)
def test_review_problems_name_the_field(review: object, problem: str) -> None:
    assert serving.review_problem(review) == problem


def test_a_review_as_the_api_server_sends_it_has_no_problem() -> None:
    for path in _corpus("admission", "seed-"):
        assert serving.review_problem(json.loads(path.read_bytes())) is None, path.name


@pytest.mark.parametrize("path", _corpus("approval", "seed-"), ids=lambda path: path.name)
def test_the_approval_seeds_verify_and_count(path: pathlib.Path) -> None:
    parsed = modelapproval.parse(json.loads(path.read_bytes()))
    decided = approval.evaluate_approvals(
        [parsed],
        policy=targets._policy(),
        namespace=targets.NAMESPACE,
        model=parsed.spec.model,
        version=parsed.spec.version,
        root_digest=parsed.spec.root_digest,
        now=targets.AT,
    )
    assert decided.approved, decided.violation
    assert decided.approvers == ("security",)


@pytest.mark.parametrize("path", _corpus("audit", "seed-"), ids=lambda path: path.name)
def test_the_audit_seeds_verify_intact(path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    log, separator, notes = path.read_bytes().partition(targets.AUDIT_SEPARATOR)
    (tmp_path / "log").write_bytes(log)
    (tmp_path / "notes").write_bytes(notes)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = auditlog.verify(
            file=str(tmp_path / "log"),
            public_keys=[targets._fixtures()["auditVerifier"]],
            sources=[str(tmp_path / "notes")] if separator else [],
            no_checkpoints=not separator,
            since=None,
        )
    assert code == 0
    assert "chain intact" in out.getvalue()
    assert (
        ("checkpoints proven" in out.getvalue())
        or ("checkpoint proven" in out.getvalue())
        or (not separator)
    )
