"""The operator's credentials as kopf's client gets them (`kube.credentials`), read again at each
login: a token file rewritten by whoever renews it (the kubelet, `hack/localoperator.py`) is
followed, as ModelGuard's own client (lightkube) follows it on a 401."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import yaml

import localoperator
from modelguard import kube

CA_DATA = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="


def _kubeconfig(tmp_path: Path, user: dict[str, object], **cluster: object) -> Path:
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://127.0.0.1:6443", **cluster}}
                ],
                "users": [{"name": "u", "user": user}],
                "contexts": [
                    {"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "n"}}
                ],
                "current-context": "x",
            }
        )
    )
    return path


@pytest.fixture(autouse=True)
def _outside_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    # This machine is no pod; make sure the kubeconfig is what is read.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def test_a_token_file_is_read_again_at_each_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    monkeypatch.setenv(
        "KUBECONFIG",
        str(
            _kubeconfig(
                tmp_path, {"tokenFile": str(token)}, **{"certificate-authority-data": CA_DATA}
            )
        ),
    )
    first = kube.credentials()
    assert (first.server, first.token, first.ca_data, first.namespace) == (
        "https://127.0.0.1:6443",
        "first",
        CA_DATA,
        "n",
    )
    token.write_text("renewed")
    assert kube.credentials().token == "renewed"  # noqa: S105 - a test token


def test_a_relative_token_file_is_found_beside_the_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("beside")
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path, {"tokenFile": "token"})))
    assert kube.credentials().token == "beside"  # noqa: S105 - a test token


def test_an_inline_token_and_client_certificates_are_passed_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "KUBECONFIG",
        str(
            _kubeconfig(
                tmp_path,
                {"token": "inline", "client-certificate": "c.pem", "client-key": "k.pem"},
                **{"certificate-authority": "ca.pem"},
            )
        ),
    )
    found = kube.credentials()
    assert found.token == "inline"  # noqa: S105 - a test token
    assert found.certificate_path == str(tmp_path / "c.pem")
    assert found.private_key_path == str(tmp_path / "k.pem")
    assert found.ca_path == str(tmp_path / "ca.pem")


@pytest.mark.parametrize(
    ("user", "says"),
    [
        pytest.param(
            {"tokenFile": "/nonexistent/token"}, "token file /nonexistent/token", id="gone"
        ),
        pytest.param(
            {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "x"}},
            "exec plugin",
            id="exec",
        ),
    ],
)
def test_credentials_that_cannot_be_used_say_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user: dict[str, object], says: str
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path, user)))
    with pytest.raises(kube.CredentialsError, match=says):
        kube.credentials()


def test_an_empty_token_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("")
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path, {"tokenFile": "token"})))
    with pytest.raises(kube.CredentialsError, match="is empty"):
        kube.credentials()


def test_a_token_is_renewed_at_80_percent_of_its_lifetime() -> None:
    issued = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    due = localoperator.renewal_due(issued, issued + datetime.timedelta(hours=1))
    assert due == issued + datetime.timedelta(minutes=48)
