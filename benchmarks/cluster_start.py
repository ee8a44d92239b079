"""Warm start time of the local control plane, next to a reference measured in the same run.

The reference is what envtest starts (etcd and kube-apiserver only, ready on /readyz); ModelGuard's
cluster adds the controller-manager, the scheduler, kwok and two Ready nodes on top (`NODE=kwok`),
and by default the real node (Ready, kube-proxy and kube-router healthy, CoreDNS Ready). Run with
`make bench`; figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import localcluster


def _start(cluster: localcluster.LocalCluster) -> float:
    started = time.monotonic()
    cluster.start()
    elapsed = time.monotonic() - started
    cluster.stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    full: list[float] = []
    kwok: list[float] = []
    reference: list[float] = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            # The same launcher stopping after the API server: envtest's set of components.
            reference.append(_start(localcluster.LocalCluster(Path(tmp), api_server_only=True)))
        with tempfile.TemporaryDirectory() as tmp:
            kwok.append(_start(localcluster.LocalCluster(Path(tmp), node="kwok")))
        with tempfile.TemporaryDirectory() as tmp:
            full.append(_start(localcluster.LocalCluster(Path(tmp))))
    print(f"{'what':<58} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, figures in (
        ("reference: etcd + kube-apiserver ready (envtest's set)", reference),
        ("local cluster, NODE=kwok: + KCM, scheduler, kwok, 2 nodes", kwok),
        ("local cluster (default): + the real node and CoreDNS", full),
    ):
        median = statistics.median(figures)
        print(f"{name:<58} {median:>9.2f} {min(figures):>7.2f} {max(figures):>7.2f}")


if __name__ == "__main__":
    main()
