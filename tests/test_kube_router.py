"""The testbed's kube-router CNI (testbed/kube_router.py): its manifest, CNI template and image, checked without a
cluster; the testbed tests and the fault matrix run it for real (CNI-001 owns the kube-router-stop fault)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clusterproof import cni
from testbed import kube_router, state
from testbed.errors import TestbedError


def _docs(text: str) -> dict[str, dict]:
    return {d["kind"]: d for d in (json.loads(part) for part in text.split("\n---\n"))}


def test_manifest_installs_the_template_kube_router_fills() -> None:
    docs = _docs(kube_router.manifest())
    assert set(docs) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"}
    spec = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["serviceAccountName"] == kube_router.NAME
    init, = spec["initContainers"]
    main, = spec["containers"]
    assert init["image"] == main["image"] == kube_router.IMAGE
    assert {init["imagePullPolicy"], main["imagePullPolicy"]} == {"Never"}  # no registry: imported images only
    conf_file = {e["name"]: e.get("value") for e in main["env"]}["KUBE_ROUTER_CNI_CONF_FILE"]
    assert conf_file == f"/etc/cni/net.d/{kube_router.CONF_NAME}" and kube_router.CONF_NAME in init["command"][-1]
    assert "--run-firewall=true" in main["args"] and "--run-service-proxy=false" in main["args"]
    assert main["readinessProbe"]["httpGet"]["port"] == kube_router.HEALTH_PORT
    # its policy controller watches what CNI-006 creates
    rules = docs["ClusterRole"]["rules"]
    assert any("networkpolicies" in r["resources"] and "watch" in r["verbs"] for r in rules)
    assert json.loads(docs["ConfigMap"]["data"]["cni-conf.json"]) == json.loads(kube_router.cni_template())


def test_no_policy_args_change_the_manifest() -> None:
    args = tuple(a for a in kube_router.ARGS if not a.startswith("--run-firewall=")) + ("--run-firewall=false",)
    main, = _docs(kube_router.manifest(args))["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    assert "--run-firewall=false" in main["args"] and "--run-firewall=true" not in main["args"]
    assert kube_router.manifest(args) != kube_router.manifest()


def test_filled_template_is_the_config_the_suite_reads() -> None:
    """What kube-router writes (the template with the node's podCIDR in the bridge plugin's ranges) is a valid
    config to CNI-002 and has the node's range, as CNI-003 reads it."""
    doc = json.loads(kube_router.cni_template())
    bridge = next(p for p in doc["plugins"] if p["type"] == "bridge")
    assert "ranges" not in bridge["ipam"] and "subnet" not in bridge["ipam"]   # kube-router inserts the range
    bridge["ipam"]["ranges"] = [[{"subnet": "198.18.1.0/24"}]]
    path = f"/etc/cni/net.d/{kube_router.CONF_NAME}"
    cfg = cni.parse_config_dir({path: json.dumps(doc)})
    assert cfg.loaded == path and cfg.problems == []
    assert cfg.plugins == ["bridge", "portmap"]


def test_image_carries_the_tools_kube_router_runs(tmp_path: Path) -> None:
    fake = tmp_path / "kube-router"
    fake.write_bytes(b"\x7fELF not really")
    fake.chmod(0o755)
    spec = kube_router.image_spec(tmp_path)
    assert spec.name == kube_router.IMAGE and spec.entrypoint == ["/usr/local/bin/kube-router"]
    layer = spec.layers[-1]
    paths = set(layer.entries)
    for tool in ("usr/local/bin/kube-router", "usr/sbin/ipset", "usr/sbin/ip", "usr/sbin/iptables",
                 "usr/sbin/iptables-restore", "usr/sbin/iptables-save"):
        assert tool in paths, tool
    xt = layer.entries["usr/sbin/iptables"]
    assert xt.kind == "link" and f"usr/sbin/{xt.target}" in paths   # the machine's backend, as kube-proxy uses
    assert any(p.startswith("usr/lib/x86_64-linux-gnu/xtables/") for p in paths)   # dlopen()ed match modules
    libs = {Path(p).name for p in paths}
    assert {"libipset.so.13", "libmnl.so.0"} <= libs
    # the first layer is the probe image's (busybox: the init container's sh, cp, mv)
    assert "bin/busybox" in spec.layers[0].entries
    # kube-router's iptables-restore is the wrapper that has kube-proxy resync after each filter-table rewrite
    restore = layer.entries["usr/sbin/iptables-restore"]
    assert restore.kind == "file" and restore.mode == 0o755 and restore.data is not None
    text = restore.data.decode()
    assert text == kube_router.restore_wrapper() and f"/usr/sbin/{xt.target} iptables-restore" in text
    assert "-t $t -X KUBE-PROXY-CANARY" in text and "for t in filter nat mangle" in text  # mangle last


def test_image_revision_follows_the_wrapper(monkeypatch) -> None:
    """The stamp and the pod template carry it: a changed wrapper rebuilds the image and replaces the pods."""
    before = kube_router.image_revision()
    tmpl = _docs(kube_router.manifest())["DaemonSet"]["spec"]["template"]["metadata"]
    assert tmpl["annotations"]["clusterproof.io/image-revision"] == before
    monkeypatch.setattr(kube_router, "RESTORE_WRAPPER", kube_router.RESTORE_WRAPPER + "# changed\n")
    assert kube_router.image_revision() != before
    assert before not in kube_router.manifest()


@pytest.mark.testbed
def test_kube_proxy_rules_come_back_after_kube_router_rewrites_the_filter_table(testbed) -> None:
    """kube-router 2.1 writes back the filter table it read (kube-router issue 1372), undoing what kube-proxy
    changed in between. Done here as kube-router does it (save, change, restore from inside its pod): a rule
    kube-proxy did not write, put into kube-proxy's KUBE-EXTERNAL-SERVICES, must be gone within kube-proxy's
    syncPeriod, because the wrapper has kube-proxy resync."""
    import subprocess
    import time

    from testbed.kube import kubectl

    node, netns = testbed["nodes"][-1]["name"], testbed["nodes"][-1]["netns"]
    pods = kubectl("-n", kube_router.NAMESPACE, "get", "pods", "-l", "k8s-app=kube-router",
                   "--field-selector", f"spec.nodeName={node}", "-o", "name").stdout.split()
    assert pods, f"no kube-router pod on {node}"
    marker = "clusterproof-clobber-test"
    stale = (f"iptables-save -t filter | sed '/^COMMIT/i -A KUBE-EXTERNAL-SERVICES -p tcp --dport 31999 "
             f"-m comment --comment {marker} -j REJECT' > /tmp/cp-clobber && iptables-restore --wait -T filter "
             f"< /tmp/cp-clobber && rm /tmp/cp-clobber")
    kubectl("-n", kube_router.NAMESPACE, "exec", pods[0], "-c", kube_router.NAME, "--", "sh", "-c", stale)

    def present() -> bool:
        out = subprocess.run(["ip", "netns", "exec", netns, "iptables", "-t", "filter", "-S",
                              "KUBE-EXTERNAL-SERVICES"], capture_output=True, text=True, check=True).stdout
        return marker in out

    deadline = time.monotonic() + 30   # syncPeriod 5 s, the canary poll, one sync; seen: 3 s
    while present() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not present(), f"kube-proxy on {node} did not rewrite KUBE-EXTERNAL-SERVICES after kube-router's restore"


def test_cni_choice_is_checked(monkeypatch, tmp_path: Path) -> None:
    assert state.check_cni("bridge") == "bridge"
    with pytest.raises(TestbedError, match="--cni takes one of kube-router, bridge, not 'calico'") as exc:
        state.check_cni("calico")
    assert exc.value.code == 2
    monkeypatch.setenv("CLUSTERPROOF_TESTBED_CNI", "weave")
    with pytest.raises(TestbedError, match="CLUSTERPROOF_TESTBED_CNI takes one of"):
        state.default_cni()

