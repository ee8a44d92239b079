"""The local control plane's pure parts: version pins and where binaries are looked up."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

import localcluster


def test_versions_come_from_the_wrapper_modules() -> None:
    assert localcluster.pinned_version("kubernetes", "k8s.io/kubernetes").startswith("v1.")
    assert localcluster.pinned_version("etcd", "go.etcd.io/etcd/server/v3").startswith("v3.")


def test_a_module_the_wrapper_does_not_require_is_an_error() -> None:
    with pytest.raises(localcluster.ClusterError, match="does not require"):
        localcluster.pinned_version("kwok", "k8s.io/kubernetes")


def test_kubebuilder_assets_win_for_what_they_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "kube-apiserver").write_text("")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    monkeypatch.setenv("MODELGUARD_CACHE", str(tmp_path / "cache"))
    assert localcluster.binary("kube-apiserver") == assets / "kube-apiserver"
    # envtest ships no scheduler: it comes from our cache, and a missing one says how to build it.
    with pytest.raises(localcluster.ClusterError, match=r"hack/build-tools\.sh"):
        localcluster.binary("kube-scheduler")


def test_cache_is_keyed_by_component_and_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("MODELGUARD_CACHE", str(tmp_path))
    version = localcluster.pinned_version("etcd", "go.etcd.io/etcd/server/v3")
    assert localcluster.component_dir("etcd") == tmp_path / f"etcd-{version}"


def test_certificates_chain_to_the_cluster_ca() -> None:
    pki = localcluster.Pki()
    identity = pki.issue(common_name="someone", organizations=("team",))
    cert = x509.load_pem_x509_certificate(identity.cert_pem)
    cert.verify_directly_issued_by(pki.ca_cert)
    subject = cert.subject.rfc4514_string()
    assert "CN=someone" in subject
    assert "O=team" in subject
