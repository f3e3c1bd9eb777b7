"""Binaries kubeadm requires, and the kubelet's port."""
from __future__ import annotations

import pytest

from clusterproof import linux
from clusterproof.checks import evidence, require

# kubeadm preflight's FileExisting-* errors, with the Debian / RHEL package that ships each one.
REQUIRED_BINARIES = {"ip": "iproute2 (iproute)", "iptables": "iptables", "mount": "mount (util-linux)",
                     "nsenter": "util-linux"}
KUBELET_PORT = 10250


@pytest.mark.check("HOST-009")
def test_required_binaries_present(node_host):
    script = "; ".join(f"printf '%s ' {b}; p=$(command -v {b}) && [ -x \"$p\" ] && echo \"$p\" || echo MISSING"
                       for b in REQUIRED_BINARIES)
    r = node_host.run(script)
    evidence(f"{node_host.id}: command -v {' '.join(REQUIRED_BINARIES)}", r.evidence())
    found = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
    missing = [b for b in REQUIRED_BINARIES if found.get(b, "MISSING").strip() == "MISSING"]
    require(not missing, f"kubeadm binaries on {node_host.id}", ", ".join(REQUIRED_BINARIES) + " on PATH",
            "missing: " + ", ".join(missing),
            "apt-get install -y " + " ".join(sorted({REQUIRED_BINARIES[b].split()[0] for b in missing}))
            + " (dnf: iproute iptables util-linux)")


@pytest.mark.check("HOST-010")
def test_kubelet_port_listening(node_host):
    r = node_host.run("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true")
    evidence(f"{node_host.id}: cat /proc/net/tcp /proc/net/tcp6", r.evidence())
    ports = linux.listening_ports(r.stdout)
    require(KUBELET_PORT in ports, f"TCP port {KUBELET_PORT} on {node_host.id}", "listening (kubelet)",
            "not listening" + (f" (listening: {', '.join(map(str, sorted(ports)[:12]))})" if ports else ""),
            "systemctl enable --now kubelet; check journalctl -u kubelet and its port: 10250 setting")
