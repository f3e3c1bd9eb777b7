"""The real host checks against real hosts: network namespaces with their own sshd (tests/nshosts.py).

One suite run covers a healthy host, one host per injected fault and a host that is down; each
test below asserts on one host's verdicts: a fault fails exactly the check that owns it, with its message.
"""
from __future__ import annotations

import os

import nshosts
import pytest
from nshosts import NsHosts

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(os.geteuid() != 0, reason="namespace hosts need root (run as root)")]

ALL_CHECKS = {
    "test_br_netfilter_loaded",
    "test_bridge_nf_call_enabled[{h}-iptables]", "test_bridge_nf_call_enabled[{h}-ip6tables]",
    "test_ip_forward_enabled", "test_swap_off", "test_ip_forward_persisted",
    "test_bridge_nf_call_persisted[{h}-iptables]", "test_bridge_nf_call_persisted[{h}-ip6tables]",
    "test_br_netfilter_persisted", "test_no_swap_in_fstab", "test_required_binaries_present",
    "test_kubelet_port_listening",
    "test_node_name_resolves", "test_kubelet_enabled_at_boot", "test_no_cgroup_v1_under_new_kubelet",
    "test_cgroup_drivers_agree",
}
# The kubeadm-preflight checks on a plain host (no systemd, no kubelet, not a node): only the name is judged;
# the others skip saying why.
PLAIN_HOST_SKIPS = {"test_kubelet_enabled_at_boot", "test_no_cgroup_v1_under_new_kubelet", "test_cgroup_drivers_agree"}


def _healthy(h: str) -> dict[str, str]:
    return {_name(c, h): "skipped" if c in PLAIN_HOST_SKIPS else "passed" for c in ALL_CHECKS}

# fault -> (checks it must fail, text each failure message must contain; {h} is the host id)
FAULT_FAILS = {
    "ip_forward_off": ({"test_ip_forward_enabled"},
                       "net.ipv4.ip_forward on {h}: expected 1, observed 0; fix: sysctl -w"),
    "bridge_nf_off": ({"test_bridge_nf_call_enabled[{h}-iptables]"},
                      "net.bridge.bridge-nf-call-iptables on {h}: expected 1 (required: "),
    "no_br_netfilter": ({"test_br_netfilter_loaded"}, "kernel module br_netfilter on {h}: expected loaded"),
    "sysctl_file_missing": ({"test_ip_forward_persisted", "test_bridge_nf_call_persisted[{h}-iptables]",
                             "test_bridge_nf_call_persisted[{h}-ip6tables]"},
                            "persisted on {h}: expected 1 in /etc/sysctl.d/*.conf or /etc/sysctl.conf, "
                            "observed set in no sysctl.d file"),
    "swap_on": ({"test_swap_off"}, "swap on {h}: expected off (no area in /proc/swaps), observed 1 active"),
    "modules_missing": ({"test_br_netfilter_persisted"},
                        "br_netfilter persisted on {h}: expected listed in /etc/modules-load.d/*.conf"),
    "fstab_swap": ({"test_no_swap_in_fstab"},
                   "/etc/fstab on {h}: expected no active swap entry, observed 1 active swap entry: /swap.img"),
    "no_nsenter": ({"test_required_binaries_present"}, "kubeadm binaries on {h}: expected ip, iptables, mount, "
                                                       "nsenter on PATH, observed missing: nsenter"),
    "no_kubelet": ({"test_kubelet_port_listening"}, "TCP port 10250 on {h}: expected listening (kubelet), "
                                                    "observed not listening"),
}
MAIN_RUN = [None, *FAULT_FAILS, "no_cni", "down"]


def _name(check: str, h: str) -> str:
    return check.format(h=h) if "{h}" in check else f"{check}[{h}]"


def _names(checks: set[str], h: str) -> set[str]:
    return {_name(c, h) for c in checks}


@pytest.fixture(scope="module")
def hosts():
    """Namespace hosts: one healthy, one per fault, one down, one refusing the key; removed after."""
    with NsHosts([*MAIN_RUN, "wrong_key"]) as hs:
        yield hs
    assert nshosts.leftovers() == []


@pytest.fixture(scope="module")
def main_run(hosts, tmp_path_factory):
    """One run of suites/host against every host but the one refusing the key."""
    chosen = [h for h in hosts.hosts if h.fault != "wrong_key"]
    run = nshosts.run_suite("suites/host", *hosts.suite_args(chosen), report_dir=tmp_path_factory.mktemp("main"))
    return run


def test_run_collects_every_check_per_host(hosts, main_run):
    healthy = hosts.by_fault(None).id
    assert set(main_run.of_host(healthy)) == _names(ALL_CHECKS, healthy), main_run.stdout[-3000:]
    assert len(main_run.verdicts) == len(ALL_CHECKS) * len(MAIN_RUN)


def test_healthy_host_passes_every_check(hosts, main_run):
    healthy = hosts.by_fault(None).id
    assert main_run.outcomes(healthy) == _healthy(healthy), main_run.stdout[-3000:]
    for c in PLAIN_HOST_SKIPS:
        assert main_run.verdicts[_name(c, healthy)].message, c   # a skip says why


@pytest.mark.parametrize("fault", sorted(FAULT_FAILS))
def test_fault_fails_exactly_its_check(hosts, main_run, fault):
    h = hosts.by_fault(fault).id
    owners, text = FAULT_FAILS[fault]
    outcomes = main_run.outcomes(h)
    failed = {n for n, o in outcomes.items() if o != "passed" and o != "skipped"}
    assert failed == _names(owners, h), main_run.stdout[-3000:]
    for name in failed:
        assert outcomes[name] == "failed"
        assert text.format(h=h) in main_run.verdicts[name].message, main_run.verdicts[name].message
        assert "Traceback" not in main_run.verdicts[name].message


def test_missing_br_netfilter_skips_bridge_values_saying_why(hosts, main_run):
    h = hosts.by_fault("no_br_netfilter").id
    for key in ("iptables", "ip6tables"):
        v = main_run.verdicts[f"test_bridge_nf_call_enabled[{h}-{key}]"]
        assert v.outcome == "skipped"
        assert "br_netfilter is not loaded (HOST-001" in v.message


def test_bridge_checks_skip_without_a_bridge_cni(hosts, main_run):
    h = hosts.by_fault("no_cni").id
    outcomes = main_run.outcomes(h)
    skipped = {n for n, o in outcomes.items() if o == "skipped"} - _names(PLAIN_HOST_SKIPS, h)
    assert skipped == {n for n in outcomes if "bridge_nf_call" in n}
    assert all(o == "passed" for n, o in outcomes.items() if n not in skipped | _names(PLAIN_HOST_SKIPS, h))
    for n in skipped:
        assert "no CNI config in /etc/cni/net.d" in main_run.verdicts[n].message
        assert "bridge-based CNI (bridge, flannel)" in main_run.verdicts[n].message


def test_down_host_errors_only_its_own_checks(hosts, main_run):
    down = hosts.by_fault("down").id
    outcomes = main_run.outcomes(down)
    assert set(outcomes.values()) == {"error"}
    for name in outcomes:
        msg = main_run.verdicts[name].message
        assert f"host {down} unreachable over SSH" in msg and "Connection refused" in msg, msg
    errored_elsewhere = {n for n, v in main_run.verdicts.items() if v.outcome == "error" and f"[{down}" not in n}
    assert errored_elsewhere == set()
    assert f"clusterproof: unreachable: host {down} unreachable over SSH" in main_run.stdout
    assert main_run.rc == 1  # checks failed on other hosts: FAIL wins over "could not check"
    assert "Traceback" not in main_run.stdout + main_run.stderr


def test_unreachable_hosts_alone_exit_with_the_ssh_status(hosts, tmp_path):
    chosen = [hosts.by_fault(None), hosts.by_fault("down"), hosts.by_fault("wrong_key")]
    run = nshosts.run_suite("suites/host", *hosts.suite_args(chosen), report_dir=tmp_path)
    assert run.rc == 14, run.stdout[-3000:]
    refused = hosts.by_fault("wrong_key").id
    assert f"clusterproof: unreachable: host {refused} unreachable over SSH: root@{refused[6:]}: " \
           "Permission denied (publickey)" in run.stdout
    assert run.outcomes(chosen[0].id) == _healthy(chosen[0].id)
    assert set(run.outcomes(refused).values()) == {"error"}
    assert "Traceback" not in run.stdout + run.stderr

