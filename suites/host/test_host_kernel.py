"""Kernel prerequisites kubeadm names: br_netfilter, bridged traffic through iptables, IP forwarding."""
from __future__ import annotations

import pytest

from clusterproof import linux
from clusterproof.checks import evidence, require, skip

PERSIST_HINT = "and persist it: echo '{key} = 1' >> /etc/sysctl.d/k8s.conf && sysctl --system"


@pytest.mark.check("HOST-001")
def test_br_netfilter_loaded(node_host):
    """Read /proc/modules, then /sys/module for a built-in module."""
    r = node_host.run("grep -w '^br_netfilter' /proc/modules 2>/dev/null; "
                      "[ -d /sys/module/br_netfilter ] && echo /sys/module/br_netfilter; "
                      "[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && echo bridge-nf-call sysctls present; "
                      "true")
    evidence(f"{node_host.id}: /proc/modules, /sys/module, /proc/sys/net/bridge", r.evidence())
    require(bool(r.stdout.strip()), f"kernel module br_netfilter on {node_host.id}", "loaded",
            "not loaded (not in /proc/modules, no /proc/sys/net/bridge/bridge-nf-call-* sysctls)",
            "modprobe br_netfilter && echo br_netfilter >> /etc/modules-load.d/k8s.conf")


def _bridge_required(host) -> str:
    bridged, why = linux.bridge_cni(host)
    if not bridged:
        skip(f"{why} on {host.id}: bridged traffic needs iptables only with a {linux.BRIDGE_CNI_TEXT}; "
             "add a bridge CNI config to check it")
    return why


@pytest.mark.check("HOST-002")
@pytest.mark.parametrize("key", ["net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"],
                         ids=["iptables", "ip6tables"])
def test_bridge_nf_call_enabled(node_host, key):
    why = _bridge_required(node_host)
    value = linux.read_sysctl(node_host, key)
    if value is None:
        skip(f"{key} does not exist on {node_host.id}: br_netfilter is not loaded (HOST-001 fails with the fix)",
             blames="HOST-001")
    require(value == "1", f"{key} on {node_host.id}", "1 (required: " + why + ")", value,
            f"modprobe br_netfilter && sysctl -w {key}=1 " + PERSIST_HINT.format(key=key))


@pytest.mark.check("HOST-003")
def test_ip_forward_enabled(node_host):
    key = "net.ipv4.ip_forward"
    value = linux.read_sysctl(node_host, key)
    require(value == "1", f"{key} on {node_host.id}", "1", value if value is not None else "missing",
            f"sysctl -w {key}=1 " + PERSIST_HINT.format(key=key))
