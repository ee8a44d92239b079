"""Independent judges: checkov and trivy's Kubernetes misconfiguration scan (`trivy config`) look
at what we ship (the rendered chart) and what the operator creates for the example model, read back
from the API server. Zero findings. checkov's exceptions are inline annotations carrying their
reason, on the object they excuse; trivy reads no annotations, so its exceptions are the entries of
.trivyignore.yaml, one per rule ID, each naming the objects it excuses and why. PodSecurity
"restricted", the third judge, is enforced on every namespace the tests create."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import tempfile
import typing
from pathlib import Path

import harness
import pytest
import yaml

import localcluster

CHECKOV = harness.REPO_ROOT / ".venv-judges" / "bin" / "checkov"
EXAMPLE = harness.REPO_ROOT / "manifests" / "examples" / "sentiment.yaml"
SELECTOR = "modelguard.dev/model-deployment"
# Fields the API server adds; a scanner should see what was intended, as a user's repo would hold.
SERVER_FIELDS = (
    "status",
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
)


# trivy's exceptions: one entry per rule ID, the object files (as `lay_out` names them) it excuses,
# and the reason as its statement.
TRIVY_IGNORE = harness.REPO_ROOT / ".trivyignore.yaml"
# KSV-0125 trusts only the registries a site names (its default list is three clouds' registries).
# These are the registry the tests install from (harness.IMAGE_REPOSITORY) and the example's model
# server; an image from anywhere else is a finding.
TRUSTED_REGISTRIES = ("registry.example",)
# trivy runs in a network namespace of its own, with nothing but its own loopback.
NO_NETWORK = ("unshare", "--user", "--map-root-user", "--net")


def checkov(directory: Path) -> dict[str, typing.Any]:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: `make judges` installs it (make test does)")
    result = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            str(directory),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    # One framework gives one report object; several give a list.
    return report[0] if isinstance(report, list) else typing.cast(dict[str, typing.Any], report)


def assert_clean(report: dict[str, typing.Any]) -> None:
    """Something was checked, nothing failed, and every skip carries its reason."""
    assert report["summary"]["passed"] > 0
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in report["results"]["failed_checks"]
    ]
    assert failed == []
    for skipped in report["results"]["skipped_checks"]:
        assert skipped["check_result"].get("suppress_comment"), (
            f"{skipped['check_id']} skipped without a reason"
        )


def lay_out(directory: Path, docs: typing.Iterable[dict[str, typing.Any]]) -> list[str]:
    """Writes each object to <directory>/<kind>/<name>.yaml, the paths .trivyignore.yaml scopes its
    exceptions by; returns those paths, relative to the scan root (directory's parent)."""
    written = []
    for doc in docs:
        path = directory / doc["kind"].lower() / f"{doc['metadata']['name']}.yaml"
        assert not path.exists(), f"two objects would be judged as {path}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc))
        written.append(str(path.relative_to(directory.parent)))
    return written


def trivy(root: Path, *, ignorefile: Path | None) -> list[dict[str, typing.Any]]:
    """`trivy config` on `root`: its results, one per file. Nothing leaves the machine: the checks
    are those embedded in the binary (--skip-check-update with an empty cache falls back to them),
    no version check or telemetry, and it runs in a network namespace of its own, which has no
    network to reach anything with. It reads no configuration but this call's: no trivy.yaml or
    .trivyignore from a working directory, no TRIVY_* variables, no WebAssembly modules."""
    work = Path(tempfile.mkdtemp(prefix="trivy-", dir=root.parent))
    # The checks' data: a directory (trivy refuses a file), read whole.
    (work / "data").mkdir()
    (work / "data" / "trusted-registries.yaml").write_text(
        yaml.safe_dump({"ksv0125": {"trusted_registries": list(TRUSTED_REGISTRIES)}})
    )
    no_exceptions = work / "no-exceptions.yaml"
    no_exceptions.write_text("misconfigurations: []\n")
    report = work / "report.json"
    command = [
        *NO_NETWORK,
        str(localcluster.binary("trivy")),
        "config",
        *("--cache-dir", str(work / "cache")),
        *("--module-dir", str(work / "modules")),
        "--skip-check-update",
        "--skip-version-check",
        "--disable-telemetry",
        *("--config-data", str(work / "data")),
        # Always an ignore file of ours: trivy would read ./.trivyignore otherwise.
        *("--ignorefile", str(ignorefile or no_exceptions)),
        *("--format", "json", "--output", str(report)),
        str(root),
    ]
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRIVY_")}
    result = subprocess.run(
        command, cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr
    results: list[dict[str, typing.Any]] = json.loads(report.read_text()).get("Results", [])
    return results


def findings(results: list[dict[str, typing.Any]]) -> list[tuple[str, str, str]]:
    """(rule ID, file, message) of each failed check."""
    return [
        (misconf["ID"], result["Target"], misconf["Message"])
        for result in results
        for misconf in result.get("Misconfigurations", [])
    ]


def trivy_exceptions() -> list[dict[str, typing.Any]]:
    ignores = yaml.safe_load(TRIVY_IGNORE.read_text())
    assert set(ignores) == {"misconfigurations"}, "trivy judges misconfigurations only here"
    entries: list[dict[str, typing.Any]] = ignores["misconfigurations"]
    return entries


def assert_trivy_clean(root: Path, files: list[str]) -> None:
    """Every object was judged (it passed some checks) and nothing failed but what
    .trivyignore.yaml excuses; every exception for these files is still needed, has its reason
    and names the objects it excuses, so none can hide a finding on another object."""
    judged = trivy(root, ignorefile=TRIVY_IGNORE)
    summaries = {result["Target"]: result.get("MisconfSummary", {}) for result in judged}
    assert sorted(summaries) == sorted(files), "every object is judged as Kubernetes"
    assert all(summary.get("Successes", 0) > 0 for summary in summaries.values()), summaries
    assert findings(judged) == []

    raw = findings(trivy(root, ignorefile=None))
    for entry in trivy_exceptions():
        assert entry.get("statement", "").strip(), f"{entry['id']} excepted without a reason"
        assert entry.get("paths"), f"{entry['id']} excepted everywhere; name the objects"
        for pattern in entry["paths"]:
            if fnmatch.filter(files, pattern):
                excused = [
                    f for rule, f, _ in raw if rule == entry["id"] and fnmatch.fnmatch(f, pattern)
                ]
                assert excused, f"{entry['id']} on {pattern}: trivy finds nothing to excuse there"


def rendered_chart(helm: harness.Helm) -> list[dict[str, typing.Any]]:
    """What the chart installs by default, as both judges see it."""
    rendered = helm.run(
        "template",
        "modelguard",
        str(harness.CHART),
        "--namespace",
        "modelguard-system",
        *harness.PINNED_IMAGE,
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def test_trivy_is_the_pinned_release(tmp_path: Path) -> None:
    # The version is stamped as trivy's release build does; unstamped, it calls itself "dev".
    pinned = localcluster.pinned_version("trivy", "github.com/aquasecurity/trivy")
    result = subprocess.run(
        [*NO_NETWORK, str(localcluster.binary("trivy")), "--cache-dir", str(tmp_path), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.splitlines()[0] == f"Version: {pinned.removeprefix('v')}"


def test_rendered_chart_passes_checkov(helm: harness.Helm, tmp_path: Path) -> None:
    (tmp_path / "chart.yaml").write_text(yaml.safe_dump_all(rendered_chart(helm)))
    assert_clean(checkov(tmp_path))


def test_rendered_chart_passes_trivy(helm: harness.Helm, tmp_path: Path) -> None:
    files = lay_out(tmp_path / "scan" / "chart", rendered_chart(helm))
    assert_trivy_clean(tmp_path / "scan", files)


def test_trivy_finds_a_planted_misconfiguration(helm: harness.Helm, tmp_path: Path) -> None:
    # A broken judge (no checks loaded, the wrong scanner, an exception or the registry list
    # swallowing a rule) would pass the tests above; here it must see a privileged operator
    # container on the host network, from a registry nobody trusts, in the one object whose other
    # findings are excused.
    docs = rendered_chart(helm)
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    pod["hostNetwork"] = True
    (operator,) = pod["containers"]
    operator["securityContext"]["privileged"] = True
    operator["image"] = operator["image"].replace(harness.IMAGE_REPOSITORY, "untrusted.example/mg")
    lay_out(tmp_path / "scan" / "chart", docs)
    found = findings(trivy(tmp_path / "scan", ignorefile=TRIVY_IGNORE))
    assert sorted((rule, path) for rule, path, _ in found) == [
        ("KSV-0009", "chart/deployment/modelguard.yaml"),  # host network
        ("KSV-0017", "chart/deployment/modelguard.yaml"),  # privileged
        ("KSV-0125", "chart/deployment/modelguard.yaml"),  # untrusted registry
    ], found


@pytest.mark.usefixtures("operator")
def test_children_of_the_example_model_pass_checkov_and_trivy(
    kubectl: harness.Kubectl,
    namespace: str,
    tmp_path: Path,
    publish_model: typing.Callable[..., str],
    source_credentials: str,
    trust_policy: str,
) -> None:
    (example,) = [
        d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] == "ModelDeployment"
    ]
    example["metadata"].pop("namespace")
    # The example's model, signed and published where this test's S3 server serves it.
    example["spec"]["model"]["source"] = {
        "uri": publish_model(example["spec"]["model"]["version"]),
        "credentialsSecret": source_credentials,
    }
    del trust_policy
    name = example["metadata"]["name"]
    kubectl.apply(example, namespace=namespace)
    kubectl.run(
        "wait", "--for=condition=Ready", f"modeldeployment/{name}", "-n", namespace, "--timeout=90s"
    )
    items = kubectl.json(
        "get",
        "serviceaccounts,deployments,services,networkpolicies",
        "-n",
        namespace,
        "-l",
        f"{SELECTOR}={name}",
    )["items"]
    # Every child, the source's own NetworkPolicy included, goes in front of the judge.
    assert sorted(item["kind"] for item in items) == [
        "Deployment",
        *["NetworkPolicy"] * 4,
        "Service",
        "ServiceAccount",
    ]
    for item in items:
        item.pop("status", None)
        for field in SERVER_FIELDS:
            item["metadata"].pop(field, None)
    # Scanned together: graph checks (a NetworkPolicy selecting each pod) look across files.
    (tmp_path / "checkov").mkdir()
    (tmp_path / "checkov" / "children.yaml").write_text(yaml.safe_dump_all(items))
    assert_clean(checkov(tmp_path / "checkov"))
    files = lay_out(tmp_path / "trivy" / "model", items)
    assert_trivy_clean(tmp_path / "trivy", files)
