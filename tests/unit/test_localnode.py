"""The real node's pure parts: address plans of concurrent clusters, placement, what may leave the
node, and the daemons' configurations."""

from __future__ import annotations

import ipaddress
import itertools
import json
from pathlib import Path

import pytest

import localcluster
import localnode


def test_every_slot_has_ranges_of_its_own() -> None:
    networks = [localnode.Network(slot) for slot in range(localnode.SLOTS)]
    ranges = [r for network in networks for r in network.ranges()]
    for first, second in itertools.combinations(ranges, 2):
        assert not first.overlaps(second), (first, second)
    for network in networks:
        assert all(r.subnet_of(ipaddress.IPv4Network("10.0.0.0/8")) for r in network.ranges())
        link = ipaddress.IPv4Network(network.link_cidr)
        assert {
            ipaddress.IPv4Address(network.host_ip),
            ipaddress.IPv4Address(network.node_ip),
        } <= set(link.hosts())
        assert ipaddress.IPv4Address(network.dns_ip) in ipaddress.IPv4Network(network.service_cidr)
        pods = ipaddress.IPv4Network(network.pod_cidr)
        node_pods = ipaddress.IPv4Network(network.node_pod_cidr)
        kwok_pods = ipaddress.IPv4Network(network.kwok_pod_cidr)
        assert node_pods.subnet_of(pods)
        assert kwok_pods.subnet_of(pods)
        assert not node_pods.overlaps(kwok_pods)
        assert len(network.host_link) <= 15  # Linux interface names


def test_placement_tolerates_exactly_the_node_taint() -> None:
    placement = localnode.placement()
    assert placement["nodeSelector"] == {localnode.NODE_LABEL: localnode.NODE_LABEL_VALUE}
    (toleration,) = placement["tolerations"]  # type: ignore[misc]
    assert {k: toleration[k] for k in ("key", "value", "effect")} == localnode.TAINT
    assert toleration["operator"] == "Equal"


def _node(tmp_path: Path) -> localnode.RealNode:
    return localnode.RealNode(
        tmp_path, network=localnode.Network(3), api_port=6443, cgroup_root="/x/modelguard-mgnode3"
    )


def test_only_the_api_server_and_replies_leave_the_node(tmp_path: Path) -> None:
    rules = _node(tmp_path)._egress().splitlines()
    chain = [r for r in rules if r.startswith(f"-A {localnode.EGRESS_CHAIN}")]
    # Everything out of the link goes through the chain, whose last word is DROP.
    assert f"-A POSTROUTING -o {localnode.NODE_LINK} -j {localnode.EGRESS_CHAIN}" in rules
    assert chain[-1].endswith("-j DROP")
    returns = chain[:-1]
    assert any("ESTABLISHED,RELATED" in r for r in returns)
    assert any("-d 10.227.0.1/32 -p tcp" in r and "--dport 6443" in r for r in returns)
    assert len(returns) == 2, returns


def test_the_pod_network_neither_masquerades_nor_leaves_the_node_range(tmp_path: Path) -> None:
    (bridge,) = _node(tmp_path)._cni_config()["plugins"]  # type: ignore[misc]
    assert bridge["ipMasq"] is False
    assert bridge["hairpinMode"] is True
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.163.0.0/24"}]]
    assert str(tmp_path) in bridge["ipam"]["dataDir"]


def test_kubelet_configuration(tmp_path: Path) -> None:
    path = _node(tmp_path)._kubelet_config(
        ca=tmp_path / "ca.crt", cert=tmp_path / "k.crt", key=tmp_path / "k.key"
    )
    config = json.loads(path.read_text())
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == "/x/modelguard-mgnode3"
    assert config["oomScoreAdj"] == 0
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authentication"]["webhook"]["enabled"] is True
    assert config["authorization"]["mode"] == "Webhook"
    assert config["readOnlyPort"] == 0
    assert config["clusterDNS"] == ["10.195.0.10"]
    assert config["resolvConf"] == ""
    assert config["registerWithTaints"] == [localnode.TAINT]
    assert config["address"] == "10.227.0.2"


def test_kube_proxy_leaves_the_machine_wide_conntrack_tunables_alone(tmp_path: Path) -> None:
    config = json.loads(_node(tmp_path)._kube_proxy_config(tmp_path / "kubeconfig").read_text())
    assert config["mode"] == "iptables"
    assert config["conntrack"] == {
        "maxPerCore": 0,
        "min": 0,
        "tcpEstablishedTimeout": "0s",
        "tcpCloseWaitTimeout": "0s",
    }
    assert config["iptables"]["localhostNodePorts"] is False


def test_a_cluster_node_kind_is_real_or_kwok(tmp_path: Path) -> None:
    assert localcluster.LocalCluster(tmp_path).with_real_node
    assert not localcluster.LocalCluster(tmp_path, node="kwok").with_real_node
    assert not localcluster.LocalCluster(tmp_path, api_server_only=True).with_real_node
    with pytest.raises(localcluster.ClusterError, match="real, kwok"):
        localcluster.LocalCluster(tmp_path, node="kind")
