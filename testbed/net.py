"""Network plumbing: the machine bridge, one network namespace per node, routes."""
from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass

BRIDGE = "cpbr0"
BRIDGE_IP = "198.19.0.1"
PREFIX = 24
CLUSTER_CIDR = "198.18.0.0/16"
SERVICE_CIDR = "198.19.240.0/20"
KUBERNETES_SVC_IP = "198.19.240.1"
DNS_IP = "198.19.240.10"
API_PORT = 6443
FORWARD_COMMENT = "clusterproof-testbed"


@dataclass(frozen=True)
class Node:
    name: str
    index: int

    @property
    def ip(self) -> str:
        return f"198.19.0.{10 + self.index}"

    @property
    def netns(self) -> str:
        return self.name

    @property
    def veth(self) -> str:
        return f"tbveth{self.index}"


def nodes(count: int) -> list[Node]:
    return [Node(f"tb-node-{i}", i) for i in range(1, count + 1)]


def sh(*args: str, check: bool = True, timeout: float = 30, input: str | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def in_ns(node: Node, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return sh("nsenter", f"--net=/run/netns/{node.netns}", "--", *args, check=check, timeout=timeout)


def link_exists(name: str) -> bool:
    return sh("ip", "link", "show", name, check=False).returncode == 0


def netns_exists(name: str) -> bool:
    return sh("ip", "netns", "list", check=False).stdout.split().count(name) > 0


def setup_bridge() -> None:
    if not link_exists(BRIDGE):
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{BRIDGE_IP}/{PREFIX}", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    # Bridged frames between nodes cross the machine's FORWARD chain when br_netfilter is on.
    rule = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-m", "comment", "--comment", FORWARD_COMMENT, "-j", "ACCEPT"]
    if sh("iptables", "-C", *rule, check=False).returncode != 0:
        sh("iptables", "-I", *rule)


def setup_node(node: Node, cni_bridge: str = "cni0") -> None:
    if not netns_exists(node.netns):
        sh("ip", "netns", "add", node.netns)
    if not link_exists(node.veth):
        sh("ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
        sh("ip", "link", "set", node.veth, "master", BRIDGE, "up")
    in_ns(node, "ip", "link", "set", "lo", "up")
    addrs = in_ns(node, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    if node.ip not in addrs:
        in_ns(node, "ip", "addr", "add", f"{node.ip}/{PREFIX}", "dev", "eth0")
    in_ns(node, "ip", "link", "set", "eth0", "up")
    in_ns(node, "ip", "route", "replace", "default", "via", BRIDGE_IP)
    # A reused pod IP must not wait on a stale neighbour entry (5 s + 3 unicast probes by default).
    for key in ("net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1",
                "net.bridge.bridge-nf-call-ip6tables=1"):
        in_ns(node, "sysctl", "-qw", key, check=False)
    # The bridge CNI plugin adopts an existing bridge (cni0; kube-router's kube-bridge); made here so its neighbour
    # settings can be set (this kernel has no per-namespace neigh/default to inherit from).
    if in_ns(node, "ip", "link", "show", cni_bridge, check=False).returncode != 0:
        in_ns(node, "ip", "link", "add", cni_bridge, "type", "bridge")
    in_ns(node, "sysctl", "-qw", f"net.ipv4.neigh.{cni_bridge}.delay_first_probe_time=1", check=False)


def set_pod_routes(all_nodes: list[Node], cidrs: dict[str, str], between_nodes: bool = True) -> None:
    """Route every node's pod range via that node, on the machine and (BETWEEN_NODES) on the other nodes."""
    for n in all_nodes:
        cidr = cidrs.get(n.name)
        if not cidr:
            continue
        sh("ip", "route", "replace", cidr, "via", n.ip)
        for other in all_nodes if between_nodes else ():
            if other != n:
                in_ns(other, "ip", "route", "replace", cidr, "via", n.ip, check=False)


def teardown(all_nodes: list[Node]) -> None:
    for line in sh("ip", "-4", "route", "show", check=False).stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "via" and parts[2] in {n.ip for n in all_nodes}:
            sh("ip", "route", "del", parts[0], check=False)
    for n in all_nodes:
        if netns_exists(n.netns):
            sh("ip", "netns", "del", n.netns, check=False)
        if link_exists(n.veth):
            sh("ip", "link", "del", n.veth, check=False)
    if link_exists(BRIDGE):
        sh("ip", "link", "del", BRIDGE, check=False)
    rule = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-m", "comment", "--comment", FORWARD_COMMENT, "-j", "ACCEPT"]
    while sh("iptables", "-C", *rule, check=False).returncode == 0:
        sh("iptables", "-D", *rule, check=False)


def in_cidr(ip: str, cidr: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)
