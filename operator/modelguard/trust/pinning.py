"""Whether a validly signed statement stands for the model version a spec asks for (pure).

A signature proves who signed some files, not which model version they are: OMS signs the files'
digests and a subject name (informational), never a version. So whoever may write to a version's
URI can put another model signed by the same trusted key there, or an older release. Three rules
tie what verified to the spec:

- `spec.model.rootDigest`, when given, is the only root digest accepted.
- The root digest first verified for a (model name, version) is recorded; a different one later
  is an explicit event: refused (the default), or accepted as a re-publication when the
  TrustPolicy says `onRepublish: Reapprove` or the spec pins the new digest. Approvals name
  the root digest, so accepted new files still need approvals of their own.
- With the TrustPolicy's `requireSubjectName`, the signed subject name must be spec.model.name.
"""

from __future__ import annotations

import dataclasses
import typing

from modelguard.api import trustpolicy, v1alpha1
from modelguard.trust import reasons


@dataclasses.dataclass(frozen=True)
class Record:
    """The root digest verified first for one model version (status.verifiedDigests[])."""

    model: str
    version: str
    root_digest: str
    since: str

    def to_status(self) -> v1alpha1.VerifiedDigest:
        return v1alpha1.VerifiedDigest(
            model=self.model, version=self.version, root_digest=self.root_digest, since=self.since
        )


@dataclasses.dataclass(frozen=True)
class Decision:
    """May the verified root digest stand for the spec's model version, and what to remember."""

    violation: reasons.Violation | None
    """Why not; None when it may."""
    records: tuple[Record, ...]
    """status.verifiedDigests to write: unchanged on a refusal."""
    replaced: str | None = None
    """An accepted re-publication: the root digest recorded before for this version."""
    accepted_by: str | None = None
    """What accepted the re-publication: the spec's pin or the policy's onRepublish."""


def from_status(status: v1alpha1.ModelDeploymentStatus, *, model: str) -> tuple[Record, ...]:
    """The records in a status read back (an entry missing a field is dropped).

    A status written before records were kept has only status.verification, the last verified
    version of `model`: it stands as that version's record, so a substitution made before the
    upgrade is not recorded as the first verification.
    """
    entries = status.verified_digests
    last = status.verification
    if entries is None and last is not None:
        entries = [
            v1alpha1.VerifiedDigest(
                model=model,
                version=last.version,
                root_digest=last.root_digest,
                since=last.verified_at,
            )
        ]
    found: list[Record] = []
    seen: set[tuple[str | None, str | None]] = set()
    for entry in entries or []:
        key = (entry.model, entry.version)
        if entry.model and entry.version and entry.root_digest and key not in seen:
            seen.add(key)
            found.append(Record(entry.model, entry.version, entry.root_digest, entry.since or ""))
    return tuple(found)


def decide_digest(
    *,
    model: str,
    version: str,
    root_digest: str,
    subject_name: str,
    pinned: str | None,
    records: typing.Sequence[Record],
    policy: trustpolicy.TrustPolicySpec,
    signature_uri: str,
    now: str,
) -> Decision:
    """Whether `root_digest`, verified from `signature_uri`, may serve `model` at `version`."""
    kept = tuple(records)
    if policy.require_subject_name and subject_name != model:
        return Decision(
            reasons.Violation(
                reasons.Reason.SUBJECT_NAME_MISMATCH,
                f"{signature_uri} signs a model named {subject_name!r}, not spec.model.name "
                f"{model!r} (the TrustPolicy's requireSubjectName: true; model_signing names "
                "the subject after the folder it signed)",
            ),
            kept,
        )
    if pinned is not None and pinned != root_digest:
        return Decision(
            reasons.Violation(
                reasons.Reason.ROOT_DIGEST_PIN_MISMATCH,
                f"spec.model.rootDigest pins {pinned} but {signature_uri} signs {root_digest}: "
                "the files under the version's URI are not the pinned ones",
            ),
            kept,
        )
    earlier = next((r for r in kept if (r.model, r.version) == (model, version)), None)
    others = tuple(r for r in kept if r is not earlier)
    if earlier is None or earlier.root_digest == root_digest:
        # The version in use goes first, so that trimming forgets the longest unused ones.
        current = earlier or Record(model, version, root_digest, now)
        return Decision(None, _trim((current, *others)))
    accepted_by = (
        "spec.model.rootDigest"
        if pinned == root_digest
        else "the TrustPolicy's onRepublish: Reapprove"
        if policy.on_republish is trustpolicy.OnRepublish.REAPPROVE
        else None
    )
    if accepted_by is None:
        return Decision(
            reasons.Violation(
                reasons.Reason.DIGEST_CHANGED,
                f"{model} {version} was first verified with root {earlier.root_digest} (at "
                f"{earlier.since}) but {signature_uri} now signs {root_digest}: other files were "
                "put under this version's URI. Publish new files as a new version, or accept "
                f"them with spec.model.rootDigest: {root_digest} (the TrustPolicy's "
                "onRepublish is Refuse)",
            ),
            kept,
        )
    return Decision(
        None,
        _trim((Record(model, version, root_digest, now), *others)),
        replaced=earlier.root_digest,
        accepted_by=accepted_by,
    )


def _trim(records: tuple[Record, ...]) -> tuple[Record, ...]:
    return records[: v1alpha1.MAX_VERIFIED_DIGESTS]
