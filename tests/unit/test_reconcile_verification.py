"""The control plane's verdict on a signature bundle, before any pod: what it refuses outright."""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import typing

import pytest
import test_trust_verify as helpers

from modelguard import kube
from modelguard.api import trustpolicy, v1alpha1
from modelguard.reconcile import observations, verification


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


_SERVING = observations.Serving(
    source_uri="s3://models/m/",
    signature_uri="s3://models/m/model.sig",
    signature_digest="sha256:" + "11" * 32,
    root_digest="sha256:" + "22" * 32,
)
_MINIO = "http://minio.storage.svc:9000"


@pytest.mark.parametrize(
    ("pinned", "bound"),
    [
        pytest.param("http://elsewhere.example:9000", _MINIO, id="pinned-endpoint-not-bound"),
        pytest.param(None, _MINIO, id="pinned-aws-but-bound-elsewhere"),
        pytest.param(_MINIO, None, id="pinned-endpoint-but-bound-to-aws"),
    ],
)
async def test_what_serves_is_read_only_where_the_policy_binds_it(
    tmp_path: pathlib.Path, pinned: str | None, bound: str | None
) -> None:
    # The serving Deployment pins where its agent reads the bundle; the operator judges it by
    # reading from there, and only if the current policy still binds that endpoint: no fetch
    # (none could be made here, the endpoints do not exist) from anywhere a policy does not name.
    _, public = helpers._key(tmp_path, "k")
    source = {"uri": "s3://models/"} | ({"endpoint": bound} if bound is not None else {})
    policy = _policy(public, sources=[source])
    model = v1alpha1.parse(
        {
            "apiVersion": "modelguard.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {
                "model": {"name": "m", "version": "1", "source": {"uri": "s3://models/m/"}},
                "serving": {"image": "registry.example/s@sha256:" + "4f" * 32},
            },
        }
    )
    outcome = await verification.verify_serving(
        typing.cast(kube.Kube, None),  # no credentials Secret: the API server is not asked
        model,
        serving=dataclasses.replace(_SERVING, signature_endpoint=pinned),
        policy=policy,
        cache=verification.Cache(),
        slots=verification.Slots(),
        now=datetime.datetime.now(datetime.UTC),
        credentials_role="r",
    )
    assert outcome.verified is None
    assert outcome.decision.reason == "SourceEndpointNotAllowed"
    assert not outcome.transient
