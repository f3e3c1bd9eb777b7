"""The pure rules behind HOST-011..014 (clusterproof.preflight), kubeadm's output parser, and the fault matrix
counting a WARN-severity owner's warning as the owner breaking."""
from __future__ import annotations

import json

import pytest

from clusterproof import catalog, preflight
from clusterproof.verdict import Status

KUBEADM_OUT = """[preflight] Running pre-flight checks
\t[WARNING Hostname]: hostname "tb-node-1" could not be reached
\t[WARNING Hostname]: hostname "tb-node-1": lookup tb-node-1 on 10.0.0.53:53: i/o timeout
\t[WARNING Service-kubelet]: kubelet service is not enabled, please run 'systemctl enable kubelet.service'
[preflight] Some fatal errors occurred:
\t[ERROR SystemVerification]: cgroups v1 support is deprecated and will be removed in a future release.
\t[ERROR Port-10250]: Port 10250 is in use
error: error execution phase preflight: preflight checks failed
"""


def test_parse_kubeadm_lines_and_worst_level() -> None:
    found = preflight.parse_kubeadm(KUBEADM_OUT)
    assert [(f.level, f.check) for f in found] == [
        ("WARNING", "Hostname"), ("WARNING", "Hostname"), ("WARNING", "Service-kubelet"),
        ("ERROR", "SystemVerification"), ("ERROR", "Port-10250")]
    assert found[0].text == 'hostname "tb-node-1" could not be reached'
    assert preflight.kubeadm_flags(found) == {"Hostname": "WARNING", "Service-kubelet": "WARNING",
                                              "SystemVerification": "ERROR", "Port-10250": "ERROR"}
    assert preflight.parse_kubeadm("[preflight] Running pre-flight checks\n") == []


def test_hostname() -> None:
    ok = preflight.judge_hostname("ssh://n1", "n1", 0, "198.19.0.11     n1\n")
    assert ok.status == Status.PASS and ok.observed == "198.19.0.11"
    # getent ahosts prints each address once per socket type; each address is named once
    ahosts = "198.19.0.11     STREAM n1\n198.19.0.11     DGRAM  \n198.19.0.11     RAW    \nfd00::b STREAM n1\n"
    assert preflight.judge_hostname("ssh://n1", "n1", 0, ahosts).observed == "198.19.0.11, fd00::b"
    bad = preflight.judge_hostname("ssh://n1", "n1", 2, "")
    assert bad.status == Status.WARN
    assert "n1" in bad.message and "/etc/hosts" in bad.fix and "exit 2" in bad.observed
    # an answer without an address is no answer
    assert preflight.judge_hostname("ssh://n1", "n1", 0, "\n").status == Status.WARN


@pytest.mark.parametrize(("rc", "out", "status", "fix_part"), [
    (0, "enabled\n", Status.PASS, ""),
    (0, "static\n", Status.PASS, ""),
    (1, "disabled\n", Status.WARN, "systemctl enable kubelet"),
    (1, "masked\n", Status.WARN, "unmask"),
    (1, "Failed to get unit file state for kubelet.service: No such file or directory\n", Status.WARN, "install"),
    (4, "not-found\n", Status.WARN, "install"),
])
def test_kubelet_enabled(rc: int, out: str, status: Status, fix_part: str) -> None:
    v = preflight.judge_kubelet_enabled("ssh://n1", True, rc, out)
    assert v.status == status
    assert fix_part in v.fix


def test_kubelet_enabled_skips_without_systemd_and_says_why() -> None:
    v = preflight.judge_kubelet_enabled("ssh://n1", False, 0, "")
    assert v.status == Status.SKIP and "systemd does not run ssh://n1" in v.reason and v.blames is None


@pytest.mark.parametrize(("fs", "memory", "want"), [("cgroup2fs", False, 2), ("tmpfs", True, 1), ("tmpfs", False, 2),
                                                    ("ext4", False, None), ("", False, None)])
def test_cgroup_version(fs: str, memory: bool, want: int | None) -> None:
    assert preflight.cgroup_version(fs, memory) == want


def test_cgroup_v1_judged_by_kubelet_version() -> None:
    warn = preflight.judge_cgroup_v1("ssh://n1", "tmpfs\n", True, "v1.35.4")
    assert warn.status == Status.WARN and "v1.35.4" in warn.observed and "cgroup v2" in warn.fix
    assert preflight.judge_cgroup_v1("ssh://n1", "tmpfs", True, "v1.34.2").status == Status.PASS
    assert preflight.judge_cgroup_v1("ssh://n1", "cgroup2fs", False, "v1.35.0").status == Status.PASS
    skip = preflight.judge_cgroup_v1("ssh://n1", "tmpfs", True, None)
    assert skip.status == Status.SKIP and "kubelet version is unknown" in skip.reason
    err = preflight.judge_cgroup_v1("ssh://n1", "ext4", False, "v1.35.0")
    assert err.status == Status.ERROR and "ext4" in err.reason


def test_kubelet_args_and_driver() -> None:
    args = preflight.kubelet_args("/usr/bin/kubelet\n--config=/etc/k/c.yaml\n--v=1\n--node-ip\n10.0.0.1\n")
    assert args == {"config": "/etc/k/c.yaml", "v": "1", "node-ip": "10.0.0.1"}
    assert preflight.kubelet_args("kubelet\0--cgroup-driver=systemd\0") == {"cgroup-driver": "systemd"}
    d = preflight.kubelet_driver(args, "kind: KubeletConfiguration\ncgroupDriver: systemd\n", "/etc/k/c.yaml")
    assert d == preflight.Driver("systemd", "/etc/k/c.yaml cgroupDriver")
    unset = preflight.kubelet_driver(args, "kind: KubeletConfiguration\n", "/etc/k/c.yaml")
    assert unset.name == "cgroupfs" and "unset" in unset.source
    flag = preflight.kubelet_driver({"cgroup-driver": "systemd"}, "cgroupDriver: cgroupfs\n", "c.yaml")
    assert flag.name == "systemd" and "flag" in flag.source
    assert preflight.kubelet_driver(args, None, "/x.yaml").name is None
    with pytest.raises(ValueError, match="not YAML"):
        preflight.kubelet_driver(args, "a: [b\n", "/x.yaml")
    with pytest.raises(ValueError, match="mapping"):
        preflight.kubelet_driver(args, "- a\n", "/x.yaml")


def test_configz_driver() -> None:
    assert preflight.configz_driver(json.dumps({"kubeletconfig": {"cgroupDriver": "systemd"}})).name == "systemd"
    with pytest.raises(ValueError, match="not JSON"):
        preflight.configz_driver("<html>")
    with pytest.raises(ValueError, match="no kubeletconfig"):
        preflight.configz_driver("{}")


def _info(options: dict | None, default: str = "runc") -> str:
    return json.dumps({"config": {"containerd": {"defaultRuntimeName": default,
                                                 "runtimes": {default: {"options": options}}}}})


def test_runtime_driver() -> None:
    assert preflight.runtime_driver(None, _info(None)).name == "cgroupfs"
    assert preflight.runtime_driver(None, _info({"SystemdCgroup": True})).name == "systemd"
    assert preflight.runtime_driver(None, _info({"SystemdCgroup": True}, "nvidia")).name == "systemd"
    assert preflight.runtime_driver('{"linux": {"cgroup_driver": "SYSTEMD"}}', None) == preflight.Driver(
        "systemd", "the runtime's CRI RuntimeConfig answer")
    assert preflight.runtime_driver(None, json.dumps({"status": {}})).name is None
    assert preflight.runtime_driver(None, "not json").name is None
    assert preflight.runtime_driver(None, None).name is None


def test_cgroup_driver_verdicts() -> None:
    k = preflight.Driver("cgroupfs", "/var/lib/kubelet/config.yaml cgroupDriver")
    same = preflight.judge_cgroup_driver("ssh://n1", k, preflight.Driver("cgroupfs", "crictl info"))
    assert same.status == Status.PASS
    diff = preflight.judge_cgroup_driver("ssh://n1", k, preflight.Driver("systemd", "crictl info"))
    assert diff.status == Status.WARN
    assert "kubelet cgroupfs" in diff.observed and "runtime systemd" in diff.observed
    assert "SystemdCgroup = false" in diff.fix and "cgroupDriver: systemd" in diff.fix
    follows = preflight.judge_cgroup_driver("ssh://n1", k, preflight.Driver("systemd", "RuntimeConfig"), True)
    assert follows.status == Status.PASS
    assert preflight.judge_cgroup_driver("ssh://n1", k, preflight.Driver(None, "no answer")).status == Status.SKIP
    assert preflight.judge_cgroup_driver("ssh://n1", preflight.Driver(None, "x"), k).status == Status.SKIP


def test_catalog_declares_the_kubeadm_checks_warn_with_tests() -> None:
    for cid in ("HOST-011", "HOST-012", "HOST-013", "HOST-014"):
        c = catalog.get(cid)
        assert c.severity == catalog.Severity.WARN
        assert c.path == "suites/host/test_host_kubeadm.py"
    assert [f.name for f in catalog.get("HOST-011").faults] == ["hostname-unresolvable"]
    assert [f.name for f in catalog.get("HOST-014").faults] == ["cgroup-driver-mismatch"]


def test_matrix_counts_a_warn_owner_as_broken_and_other_warns_as_nothing() -> None:
    from clusterproof.results import Outcome, RunResult, TargetResult
    from clusterproof.verdict import Verdict
    from testbed import matrix

    tree = RunResult("r", "now")
    warned = Verdict.warned("node name tb-node-2", "resolves", "does not resolve", "add it to /etc/hosts")
    tree.add("HOST-011", "host", TargetResult("t1", "ssh://tb-node-2", Outcome.WARNED, verdicts=[warned]))
    tree.add("HOST-013", "host", TargetResult("t2", "ssh://tb-node-2", Outcome.WARNED,
                                              verdicts=[Verdict.warned("cgroup", "v2", "v1", "boot v2")]))
    tree.add("HOST-003", "host", TargetResult("t3", "ssh://tb-node-2", Outcome.PASSED))
    run = matrix.FaultRun(catalog.Fault("hostname-unresolvable", node="tb-node-2"), ["HOST-011"])
    matrix.read(run, tree.to_doc())
    assert set(run.failed) == {"HOST-011"} and run.unexpected == []
    assert "does not resolve" in run.failed["HOST-011"]
