"""The suite and kubeadm agree: `kubeadm init phase preflight` (built from the testbed's Kubernetes release)
run inside a testbed node, against the suite's checks of what kubeadm warns about (HOST-011..014), healthy and
under each fault of those checks. Where both have an opinion on a finding, both report it or neither does.

kubeadm runs with --dry-run (nothing pulled, nothing written) and ignores only Port-10250: a running node's
kubelet holds that port, which kubeadm (made for a node before its kubelet starts) calls an error.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nshosts
import pytest

from clusterproof import preflight

pytestmark = pytest.mark.testbed
NODE = "tb-node-1"
IGNORED = "Port-10250"   # the running kubelet listens there
KUBEADM_CONFIG = """apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {{advertiseAddress: {ip}}}
nodeRegistration: {{name: {node}, criSocket: unix:///run/containerd/containerd.sock}}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {version}
"""
# check ID -> (kubeadm check name, the text that makes a finding of that check this check's; "" any)
COUNTERPARTS = {"HOST-011": ("Hostname", ""), "HOST-012": ("Service-kubelet", ""),
                "HOST-013": ("SystemVerification", "cgroups v1"), "HOST-014": ("", "")}


def kubeadm_preflight(testbed: dict, tmp_path: Path) -> tuple[dict[str, bool], str]:
    """kubeadm's opinion per check ID (True: it warns or errs on that check's finding), and its output."""
    from testbed.node import node_exec
    from testbed.paths import bin_dir
    from testbed.state import find_node

    exe = bin_dir(testbed["version"]) / "kubeadm"
    if not exe.is_file():
        pytest.fail(f"{exe} is missing: python -m testbed up builds it (testbed/build.py KUBE_CMDS)")
    node = find_node(NODE)
    cfg = tmp_path / "kubeadm.yaml"
    cfg.write_text(KUBEADM_CONFIG.format(ip=node.ip, node=NODE, version=testbed["version"]))
    p = subprocess.run([*node_exec(node), str(exe), "init", "phase", "preflight", "--dry-run", "--config", str(cfg),
                        f"--ignore-preflight-errors={IGNORED}"], capture_output=True, text=True, timeout=90,
                       check=False)
    out = p.stdout + p.stderr
    findings = preflight.parse_kubeadm(out)
    assert findings or p.returncode == 0, out[-3000:]   # a crash before the checks is no answer
    opinion = {}
    for cid, (name, text) in COUNTERPARTS.items():
        if name:
            opinion[cid] = any(f.check == name and text in f.text for f in findings)
    return opinion, out


def suite_preflight(testbed: dict, tmp_path: Path) -> tuple[dict[str, str], dict]:
    """The suite's HOST-011..014 on NODE: check ID -> outcome (passed, warned, skipped, ...), and the summary."""
    report = tmp_path / "suite"
    nshosts.run_suite(str(Path(__file__).resolve().parent.parent / "suites" / "host" / "test_host_kubeadm.py"),
                      "--kubeconfig", testbed["kubeconfig"], "--ssh-key", testbed["ssh_key"],
                      report_dir=report, timeout=120)
    doc = json.loads((report / "summary.json").read_text())
    mine = {c["id"]: c for c in doc["checks"] if c.get("target") == f"ssh://{NODE}"}
    assert set(mine) == set(COUNTERPARTS), json.dumps(doc["checks"], indent=1)[:3000]
    return {cid: c["outcome"] for cid, c in mine.items()}, doc


def agree(testbed: dict, tmp_path: Path) -> tuple[dict[str, str], dict[str, bool]]:
    """Run both; assert they agree wherever both have an opinion; return both answers."""
    ours, doc = suite_preflight(testbed, tmp_path)
    theirs, out = kubeadm_preflight(testbed, tmp_path)
    assert "error" not in ours.values() and "failed" not in ours.values(), json.dumps(doc["checks"])[:3000]
    both = {cid for cid in theirs if ours[cid] in ("passed", "warned")}
    differ = {cid: (ours[cid], theirs[cid]) for cid in both if (ours[cid] == "warned") != theirs[cid]}
    assert differ == {}, f"suite vs kubeadm (suite outcome, kubeadm flags it): {differ}\n{out[-3000:]}"
    print(f"suite {ours}; kubeadm {theirs}", file=sys.stderr)
    return ours, theirs


def test_healthy_node_suite_and_kubeadm_agree(testbed, tmp_path):
    ours, theirs = agree(testbed, tmp_path)
    assert ours["HOST-011"] == "passed" and theirs["HOST-011"] is False     # the node resolves its name
    assert ours["HOST-014"] == "passed"                                   # kubelet and containerd: cgroupfs
    cgroup_v1 = Path("/sys/fs/cgroup/memory").is_dir()
    assert ours["HOST-013"] == ("warned" if cgroup_v1 else "passed")
    assert theirs["HOST-013"] is cgroup_v1
    # the testbed runs no systemd: the suite has no opinion (kubeadm, seeing a systemctl binary, still warns)
    assert ours["HOST-012"] == ("skipped" if not Path("/run/systemd/system").is_dir() else ours["HOST-012"])


def test_hostname_unresolvable_both_warn(testbed, testbed_api, tmp_path):
    with testbed_api.fault("hostname-unresolvable", node=NODE):
        ours, theirs = agree(testbed, tmp_path)
    assert ours["HOST-011"] == "warned" and theirs["HOST-011"] is True
    assert ours["HOST-014"] == "passed"


def test_cgroup_driver_mismatch_suite_warns_where_kubeadm_is_silent(testbed, testbed_api, tmp_path):
    """kubeadm's preflight has no driver comparison (it only asks whether the runtime answers RuntimeConfig):
    the suite warns, and every finding kubeadm does have an opinion on still agrees."""
    with testbed_api.fault("cgroup-driver-mismatch", node=NODE):
        ours, theirs = agree(testbed, tmp_path)
    assert ours["HOST-014"] == "warned"
    assert ours["HOST-011"] == "passed" and theirs["HOST-011"] is False
