"""`make run`'s model store: the example model, signed with a key made for this demo, in an S3
store (the data plane's in-cluster MinIO with the real node, `--store cluster`; a MinIO process on
loopback with NODE=kwok, `--store local`), and what the cluster needs to trust and read it: the
`default` TrustPolicy with that key and a demo approver, the approver's signed ModelApproval of
the example's version, the storage Secret in the example's namespace, and the RoleBinding that
lets the operator (alone) read that Secret.

Usage:
    python hack/demo.py --kubeconfig .cluster/kubeconfig [--dir .run/demo] [--store local|cluster]
"""

from __future__ import annotations

import argparse
import collections.abc
import datetime
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

import localcluster
import s3server
import signedmodel

EXAMPLE = localcluster.REPO_ROOT / "manifests" / "examples" / "sentiment.yaml"


def _kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> None:
    subprocess.run(
        [str(localcluster.binary("kubectl")), f"--kubeconfig={kubeconfig}", *args],
        input=input,
        text=True,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def publish_example(
    kubeconfig: Path,
    server: s3server.S3Server,
    *,
    source: collections.abc.Mapping[str, object],
    state: Path,
    upload: s3server.S3Server | None = None,
) -> str:
    """Signs the example model (keys kept in `state`), publishes it to `server` (through
    `upload`, the same server as this machine reaches it, when given), and applies the
    TrustPolicy (its one source `source`), the approval, the Secret naming `server.endpoint` and
    the RoleBinding; returns the model's URI."""
    uploader = upload or server
    (example,) = [
        d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] == "ModelDeployment"
    ]
    model = example["spec"]["model"]
    namespace = example["metadata"]["namespace"]
    bucket, prefix = model["source"]["uri"].removeprefix("s3://").split("/", 1)
    secret = model["source"]["credentialsSecret"]

    key_path = state / "ml-release.key"
    if key_path.exists():
        public = (state / "ml-release.pub").read_text()
    else:
        key_path, public = signedmodel.generate_key(state, name="ml-release")
        (state / "ml-release.pub").write_text(public)
    files = signedmodel.demo_files(model["version"])
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = signedmodel.write_model(Path(tmp) / "model", files)
        signature = signedmodel.sign(
            model_dir, private_key=key_path, signature=Path(tmp) / "model.sig"
        )
    try:
        uploader.create_bucket(bucket)
    except s3server.S3ServerError as error:
        if "BucketAlreadyOwnedByYou" not in str(error):
            raise
    uri = signedmodel.publish(
        uploader, bucket=bucket, prefix=prefix, files=files, signature=signature
    )

    approver_path = state / "security.key"
    if approver_path.exists():
        approver_public = (state / "security.pub").read_text()
    else:
        approver_path, approver_public = signedmodel.generate_key(state, name="security")
        (state / "security.pub").write_text(approver_public)
    policy = signedmodel.trust_policy(
        name="default", public_key=public, sources=[source], approver_key=approver_public
    )
    # The release review's outcome: what `modelguard approve` prints for a GitOps commit.
    approval = signedmodel.approval(
        private_key=approver_path,
        namespace=namespace,
        model=model["name"],
        version=model["version"],
        digest=signedmodel.root_digest(signature),
        expires=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30),
        name=f"{model['name']}-{model['version'].replace('.', '-')}",
    )
    credentials = signedmodel.credentials_secret(server, name=secret)
    credentials["metadata"]["namespace"] = namespace  # type: ignore[index]
    namespace_doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    _kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "-f",
        "-",
        input=yaml.safe_dump_all([namespace_doc, policy, credentials, approval]),
    )
    # The per-namespace grant the chart documents: only here may the operator read the Secret.
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "modelguard-source-credentials", "namespace": namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "modelguard-source-credentials",
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": "modelguard", "namespace": "modelguard-system"}
        ],
    }
    _kubectl(kubeconfig, "apply", "--server-side", "-f", "-", input=yaml.safe_dump(binding))
    return uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--dir", type=Path, default=localcluster.REPO_ROOT / ".run" / "demo")
    parser.add_argument(
        "--store",
        choices=["local", "cluster"],
        default="local",
        help="local: a MinIO process on loopback (NODE=kwok); cluster: the data plane's "
        "in-cluster MinIO (hack/dataplane.py up)",
    )
    args = parser.parse_args(argv)
    state = args.dir.resolve()
    state.mkdir(parents=True, exist_ok=True)

    if args.store == "cluster":
        import dataplane  # noqa: PLC0415 - NODE=kwok runs do not need the data plane

        store = dataplane.attach_store(dataplane.Cluster(args.kubeconfig.resolve().parent))
        uri = publish_example(
            args.kubeconfig,
            store.in_cluster,
            source=store.source(_bucket()),
            state=state,
            upload=store.client,
        )
        where = f"the in-cluster store {store.in_cluster.endpoint}"
    else:
        server = s3server.S3Server(state / "s3")
        if not server.is_running():
            server.start()
        server = s3server.S3Server.attach(state / "s3")
        uri = publish_example(
            args.kubeconfig,
            server,
            source=signedmodel.s3_source(server, _bucket()),
            state=state,
        )
        where = server.endpoint
    print(
        f"demo: signed example model published to {uri} ({where}); TrustPolicy "
        f"default trusts {state / 'ml-release.pub'}"
    )
    return 0


def _bucket() -> str:
    (example,) = [
        d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] == "ModelDeployment"
    ]
    bucket: str = example["spec"]["model"]["source"]["uri"].removeprefix("s3://").split("/")[0]
    return bucket


if __name__ == "__main__":
    sys.exit(main())
