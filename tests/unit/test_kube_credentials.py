"""The operator's credentials as kopf's client gets them (`kube.credentials`), read again at each
login: a token file rewritten by whoever renews it (the kubelet, `hack/localoperator.py`) is
followed, as ModelGuard's own client (lightkube) follows it on a 401."""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

import pytest
import yaml
from lightkube.config import client_adapter

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


def _token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes) -> Path:
    path = tmp_path / "token"
    path.write_bytes(content)
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path, {"tokenFile": "token"})))
    return path


@pytest.mark.parametrize(
    ("content", "says"),
    [
        # A header split in two: the second line would be sent as a header of its own.
        pytest.param(b"abc\r\nX-Injected: 1\n", "does not hold one bearer token", id="two-lines"),
        pytest.param(b"abc def", "does not hold one bearer token", id="inner-space"),
        pytest.param(b"\xff\xfe\x00t", "does not hold one bearer token", id="not-text"),
        pytest.param(b"   \n\t", "is empty", id="only-whitespace"),
        pytest.param(b"a" * (kube.MAX_TOKEN_BYTES + 1), "larger than", id="huge"),
    ],
)
def test_a_token_file_that_holds_no_single_token_is_refused_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, says: str
) -> None:
    path = _token_file(tmp_path, monkeypatch, content)
    with pytest.raises(kube.CredentialsError, match=says) as refused:
        kube.credentials()
    assert str(path) in str(refused.value)
    # What the file holds is never repeated (it may be another file's secret).
    assert "Injected" not in str(refused.value)


def test_a_token_with_a_trailing_newline_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _token_file(tmp_path, monkeypatch, b"eyJhbGciOi.eyJpc3Mi-_.c2ln+/==\r\n")
    assert kube.credentials().token == "eyJhbGciOi.eyJpc3Mi-_.c2ln+/=="  # noqa: S105


@pytest.mark.parametrize(
    "target",
    [pytest.param("/dev/zero", id="endless-device"), pytest.param("fifo", id="fifo")],
)
def test_a_token_file_that_is_no_regular_file_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    # /dev/zero would be read until memory runs out; a FIFO nobody writes would hang the login.
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
        target = str(tmp_path / "fifo")
    (tmp_path / "token").symlink_to(target)
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path, {"tokenFile": "token"})))
    with pytest.raises(kube.CredentialsError, match="not a regular file"):
        kube.credentials()


def test_a_projected_token_behind_symlinks_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kubelet's layout: token -> ..data/token, ..data -> a timestamped directory.
    (tmp_path / "..2026_01_01").mkdir()
    (tmp_path / "..2026_01_01" / "token").write_text("projected")
    (tmp_path / "..data").symlink_to("..2026_01_01")
    (tmp_path / "token").symlink_to("..data/token")
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path, {"tokenFile": "token"})))
    assert kube.credentials().token == "projected"  # noqa: S105 - a test token


@pytest.mark.parametrize(
    "user",
    [pytest.param({}, id="empty-user"), pytest.param({"username": "admin"}, id="no-password")],
)
def test_a_user_without_credentials_is_refused_rather_than_anonymous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user: dict[str, object]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path, user)))
    with pytest.raises(kube.CredentialsError, match="does not connect anonymously"):
        kube.credentials()


def test_both_clients_read_a_relative_token_file_beside_the_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kopf's login and ModelGuard's own client act as one identity: the same file, whatever the
    # working directory (lightkube alone would open ./token).
    beside = tmp_path / "config-dir"
    beside.mkdir()
    (beside / "token").write_text("beside")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "token").write_text("elsewhere")
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(beside, {"tokenFile": "token"})))
    assert kube.credentials().token == "beside"  # noqa: S105 - a test token
    client = kube.Kube.from_environment()
    # lightkube's own HTTP client module, whatever it is called.
    request = client_adapter.httpx.Request("GET", "https://127.0.0.1:6443/api")  # type: ignore[attr-defined]
    auth = client._client._client._client.auth
    assert auth is not None
    assert next(auth.auth_flow(request)).headers["Authorization"] == "Bearer beside"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        pytest.param(
            "users: [{name: u, user: {token: s3cr3t}}]\n  bad: : :",
            "not YAML at line 2",
            id="not-yaml",
        ),
        pytest.param("[]", "not a kubeconfig", id="a-list"),
        pytest.param("clusters: 5", "not a kubeconfig", id="a-number-for-a-list"),
        pytest.param(
            '{"clusters": [{"name": "c", "cluster": {"server": 5}}], "contexts": [{"name": "x",'
            ' "context": {"cluster": "c", "user": "u"}}], "current-context": "x"}',
            "not a kubeconfig: Expected `str`, got `int` - at `$.server`",
            id="a-number-for-the-server",
        ),
    ],
)
def test_a_malformed_kubeconfig_is_refused_without_quoting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, says: str
) -> None:
    # The login handler turns CredentialsError into a log line; anything else was a traceback
    # at every login, and YAML's own message quotes the line, which may hold a token.
    path = tmp_path / "config"
    path.write_text(content)
    monkeypatch.setenv("KUBECONFIG", str(path))
    with pytest.raises(kube.CredentialsError, match=re.escape(says)) as refused:
        kube.credentials()
    assert "s3cr3t" not in str(refused.value)
