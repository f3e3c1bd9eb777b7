"""The runtime and host checks against the local testbed: healthy passes, and SSH and the probe DaemonSet give the
same verdicts. Each runtime and host fault on a testbed node is a row of the fault matrix (tests/test_fault_matrix.py),
which asserts its owner's message too."""
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
