"""The runtime and host checks against the local testbed: healthy passes, each runtime fault fails its owner,
and SSH and the probe DaemonSet give the same verdicts."""
from __future__ import annotations

import re

import nshosts
import pytest

pytestmark = pytest.mark.testbed
NODE = "tb-node-1"


def suite(testbed: dict, tmp_path, *args: str) -> nshosts.SuiteRun:
    return nshosts.run_suite("--kubeconfig", testbed["kubeconfig"], "--ssh-key", testbed["ssh_key"], *args,
                             report_dir=tmp_path, timeout=400)


def by_check(run: nshosts.SuiteRun) -> dict[str, str]:
    """test_name[node] -> outcome, with the transport prefix (ssh://, pod://) dropped."""
    return {re.sub(r"\[(ssh|pod)://", "[", k): v.outcome for k, v in run.verdicts.items()}


def test_runtime_checks_pass_on_the_healthy_testbed(testbed, tmp_path):
    run = suite(testbed, tmp_path, "suites/runtime")
    assert run.verdicts and {v.outcome for v in run.verdicts.values()} == {"passed"}, run.stdout[-3000:]
    assert len(run.verdicts) == 4 * len(testbed["nodes"])


def test_ssh_and_pod_transports_give_the_same_verdicts(testbed, tmp_path):
    ssh = suite(testbed, tmp_path / "ssh", "suites/host", "suites/runtime")
    pod = suite(testbed, tmp_path / "pod", "suites/host", "suites/runtime", "--host-transport=pod")
    assert any(k.endswith(f"[ssh://{NODE}]") for k in ssh.verdicts), ssh.stdout[-2000:]
    assert any(k.endswith(f"[pod://{NODE}]") for k in pod.verdicts), pod.stdout[-2000:]
    # HOST-014 reads the kubelet's own process: on the testbed a probe pod's host is the machine, not the node's
    # mount namespace, so over the pod transport it may only skip, saying why; every other verdict must agree.
    drivers = {k for k in by_check(pod) if k.startswith("test_cgroup_drivers_agree[")}
    for k in drivers:
        v = pod.verdicts[k.replace("[", "[pod://", 1)]
        assert v.outcome == by_check(ssh)[k] or (v.outcome == "skipped" and "cgroup driver" in v.message), v
    assert {k: o for k, o in by_check(ssh).items() if k not in drivers} == \
        {k: o for k, o in by_check(pod).items() if k not in drivers}
    assert "error" not in set(by_check(ssh).values())


@pytest.mark.parametrize(("name", "owner", "text"), [
    ("cri-socket-remove", "test_cri_socket_is_a_socket",
     "CRI socket on ssh://tb-node-1: expected a socket at one of /run/containerd/containerd.sock"),
    ("runtime-stop", "test_cri_socket_is_a_socket|test_cri_answers_version_and_status",
     "on ssh://tb-node-1"),
])
def test_runtime_fault_fails_its_check(testbed, testbed_api, tmp_path, name, owner, text):
    with testbed_api.fault(name, node=NODE):
        run = suite(testbed, tmp_path, "suites/runtime")
    failed = {k for k, v in run.verdicts.items() if v.outcome in ("failed", "error")}
    assert failed, run.stdout[-3000:]
    assert all(k.endswith(f"[ssh://{NODE}]") for k in failed), failed  # the other node is untouched
    assert {k.split("[")[0] for k in failed} <= set(owner.split("|")), failed
    for k in failed:
        assert text in run.verdicts[k].message, run.verdicts[k].message
    other = {k: v.outcome for k, v in run.verdicts.items() if not k.endswith(f"[ssh://{NODE}]")}
    assert set(other.values()) == {"passed"}


@pytest.mark.parametrize(("name", "value", "owner", "text"), [
    ("sysctl", "net.ipv4.ip_forward=0", "test_ip_forward_enabled",
     "net.ipv4.ip_forward on ssh://tb-node-1: expected 1, observed 0"),
    ("sysctl-persist-remove", None, "test_ip_forward_persisted",
     "net.ipv4.ip_forward persisted on ssh://tb-node-1: expected 1"),
    ("fstab-swap", None, "test_no_swap_in_fstab", "/etc/fstab on ssh://tb-node-1: expected no active swap entry"),
])
def test_host_fault_on_a_testbed_node_fails_its_check(testbed, testbed_api, tmp_path, name, value, owner, text):
    with testbed_api.fault(name, node=NODE, value=value):
        run = suite(testbed, tmp_path, "suites/host")
    failed = {k.split("[")[0] for k, v in run.verdicts.items() if v.outcome == "failed"}
    assert owner in failed, run.stdout[-3000:]
    assert all(k.endswith(f"[ssh://{NODE}]") or k.split("[")[0] != owner
               for k, v in run.verdicts.items() if v.outcome == "failed")
    msgs = [v.message for k, v in run.verdicts.items() if k.startswith(owner + "[") and v.outcome == "failed"]
    assert any(text in m for m in msgs), msgs
