"""The control plane's verdict on a signature bundle, before any pod: what it refuses outright."""

from __future__ import annotations

import datetime
import pathlib

import pytest
import test_trust_verify as helpers

from modelguard.api import trustpolicy
from modelguard.reconcile import verification


def _policy(
    public: pathlib.Path, *, sources: list[dict[str, str]] | None = None
) -> trustpolicy.TrustPolicy:
    return trustpolicy.parse(
        {
            "apiVersion": "modelguard.dev/v1alpha1",
            "kind": "TrustPolicy",
            "metadata": {"name": "p"},
            "spec": {
                "signers": [{"name": "team", "publicKey": public.read_text()}],
                "sources": sources or [{"uri": "s3://models/"}],
            },
        }
    )


@pytest.mark.parametrize("single_file", [True, False], ids=["single-file", "folder"])
def test_a_single_file_signature_is_refused_before_a_pod_is_made(
    tmp_path: pathlib.Path, single_file: bool
) -> None:
    # A source is a folder: a statement naming its one file "." (model_signing's single-file
    # form) can match no file there. Refused here, not by the agent as a missing file, which
    # would read as tampering and quarantine the model.
    private, public = helpers._key(tmp_path, "k")
    model = helpers._write(tmp_path / "model", {"model.safetensors": b"w" * 10})
    helpers._sign(
        model / "model.safetensors" if single_file else model, tmp_path / "m.sig", private
    )
    outcome = verification._verify(
        (tmp_path / "m.sig").read_bytes(),
        policy=_policy(public),
        source_uri="s3://models/m/",
        signature_uri="s3://models/m/model.sig",
        signature_digest="sha256:" + "00" * 32,
        namespace="ns",
        now=datetime.datetime.now(datetime.UTC),
    )
    if single_file:
        assert outcome.verified is None
        assert outcome.decision.reason == "MissingFile"
        assert "single-file model" in outcome.decision.message
    else:
        assert outcome.verified is not None
