"""Settings that must survive a reboot: sysctl.d files, modules-load.d, fstab."""
from __future__ import annotations

import pytest

from clusterproof import linux
from clusterproof.checks import require, skip

SYSCTL_FIX = "echo '{key} = 1' >> /etc/sysctl.d/k8s.conf && sysctl --system"


def _persisted(host, key: str) -> None:
    __tracebackhide__ = True
    files = linux.read_files(host, linux.sysctl_globs(), "sysctl configuration")
    setting = linux.persisted_sysctls(files).get(key)
    observed = ("set in no sysctl.d file nor /etc/sysctl.conf" if setting is None
                else f"{setting.value} (from {setting.path})")
    require(setting is not None and setting.value == "1", f"{key} persisted on {host.id}",
            "1 in /etc/sysctl.d/*.conf or /etc/sysctl.conf", observed, SYSCTL_FIX.format(key=key))


@pytest.mark.check("HOST-005")
def test_ip_forward_persisted(node_host):
    _persisted(node_host, "net.ipv4.ip_forward")


@pytest.mark.check("HOST-006")
@pytest.mark.parametrize("key", ["net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"],
                         ids=["iptables", "ip6tables"])
def test_bridge_nf_call_persisted(node_host, key):
    bridged, why = linux.bridge_cni(node_host)
    if not bridged:
        skip(f"{why} on {node_host.id}: only a {linux.BRIDGE_CNI_TEXT} needs it; "
             "add a bridge CNI config to check it")
    _persisted(node_host, key)


@pytest.mark.check("HOST-007")
def test_br_netfilter_persisted(node_host):
    files = linux.read_files(node_host, linux.modules_globs(), "modules loaded at boot")
    listed = linux.persisted_modules(files)
    if "br_netfilter" not in listed:
        r = node_host.run("grep -s '/br_netfilter.ko' /lib/modules/$(uname -r)/modules.builtin")
        if r.rc == 0:
            return  # built into the kernel: nothing to load
    require("br_netfilter" in listed, f"br_netfilter persisted on {node_host.id}",
            "listed in /etc/modules-load.d/*.conf",
            f"not listed (modules listed: {', '.join(sorted(listed)) or 'none'})",
            "echo br_netfilter >> /etc/modules-load.d/k8s.conf")


@pytest.mark.check("HOST-008")
def test_no_swap_in_fstab(node_host):
    files = linux.read_files(node_host, ["/etc/fstab"], "fstab")
    entries = linux.active_swap_entries(files.get("/etc/fstab", ""))
    require(not entries, f"/etc/fstab on {node_host.id}", "no active swap entry",
            f"{len(entries)} active swap entr{'y' if len(entries) == 1 else 'ies'}: {entries[0] if entries else ''}",
            "comment them out: sed -i '/\\sswap\\s/ s/^[^#]/#&/' /etc/fstab", rows=entries)
