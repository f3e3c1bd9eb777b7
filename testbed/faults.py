"""Break and heal parts of the testbed, for the project's own tests.

Every fault is recorded in the state folder so `heal` (or the next `up`) restores it.
"""
from __future__ import annotations

import json
import sys
import time

from . import cluster, net, proc
from .errors import TestbedError
from .paths import STATE

FILE = STATE / "faults.json"
TAINT = "clusterproof.io/fault"


def active() -> list[dict]:
    try:
        return json.loads(FILE.read_text())
    except (OSError, ValueError):
        return []


def _save(entries: list[dict]) -> None:
    if STATE.exists():
        FILE.write_text(json.dumps(entries, indent=1))


def _node(name: str | None, default_last: bool = False) -> net.Node:
    nodes = net.nodes(cluster.NODE_COUNT)
    if name is None:
        return nodes[-1] if default_last else nodes[0]
    for n in nodes:
        if n.name == name:
            return n
    raise TestbedError(f"no node {name!r}; nodes are {', '.join(n.name for n in nodes)}", code=2)


def _nodes(name: str | None) -> list[net.Node]:
    return net.nodes(cluster.NODE_COUNT) if name in (None, "all") else [_node(name)]


# ------------------------------------------------------------ the faults

def _runtime_stop(node, value):
    proc.stop(f"{node.name}-containerd", timeout=10)
    return None


def _runtime_start(node, saved):
    cluster.start_containerd(node)


def _socket_remove(node, value):
    (cluster.bind_source(node, "/run/containerd") / "containerd.sock").unlink(missing_ok=True)


def _socket_restore(node, saved):
    proc.stop(f"{node.name}-containerd", timeout=10)
    cluster.start_containerd(node)


def _kube_proxy_stop(node, value):
    proc.stop(f"{node.name}-kube-proxy", timeout=10)
    # A stopped kube-proxy on a fresh node means no Service rules at all: remove what it left.
    exe = cluster.bin_dir(cluster.current_version()) / "kube-proxy"
    import subprocess

    subprocess.run([*cluster.node_exec(node), str(exe), "--cleanup"], capture_output=True, timeout=60, check=False)


def _kube_proxy_start(node, saved):
    cluster.start_kube_proxy(node, cluster.current_version())
    cluster._wait(f"kube-proxy on {node.name}", lambda: cluster._http_ok(f"http://{node.ip}:10256/healthz"), 30)


def _coredns_zero(node, value):
    r = cluster.kubectl("-n", "kube-system", "get", "deploy", "coredns", "-o", "jsonpath={.spec.replicas}")
    cluster.kubectl("-n", "kube-system", "scale", "deploy", "coredns", "--replicas=0")
    return r.stdout.strip() or "2"


def _coredns_restore(node, saved):
    cluster.kubectl("-n", "kube-system", "scale", "deploy", "coredns", f"--replicas={saved or 2}")
    cluster._wait("CoreDNS available", cluster._coredns_available, 90, 1)


def _cni_remove(node, value):
    conf = cluster.bind_source(node, "/etc/cni/net.d") / "10-bridge.conflist"
    text = conf.read_text() if conf.exists() else None
    conf.unlink(missing_ok=True)
    return text


def _cni_restore(node, saved):
    conf = cluster.bind_source(node, "/etc/cni/net.d") / "10-bridge.conflist"
    if saved:
        conf.write_text(saved)
    else:
        cidrs = cluster.node_pod_cidrs()
        cluster.write_cni(node, cidrs[node.name])


def _sysctl_set(node, value):
    if not value or "=" not in value:
        raise TestbedError("the sysctl fault needs --value key=value, e.g. net.ipv4.ip_forward=0", code=2)
    key, val = value.split("=", 1)
    old = net.in_ns(node, "sysctl", "-n", key.strip()).stdout.strip()
    net.in_ns(node, "sysctl", "-qw", f"{key.strip()}={val.strip()}")
    return f"{key.strip()}={old}"


def _sysctl_restore(node, saved):
    if saved:
        net.in_ns(node, "sysctl", "-qw", saved)


def _persist_remove(node, value):
    f = cluster.bind_source(node, "/etc/sysctl.d") / "99-kubernetes.conf"
    text = f.read_text() if f.exists() else None
    f.unlink(missing_ok=True)
    return text


def _persist_restore(node, saved):
    from . import configs

    (cluster.bind_source(node, "/etc/sysctl.d") / "99-kubernetes.conf").write_text(saved or configs.SYSCTL_CONF)


SWAP_LINE = "/swap.img none swap sw 0 0  # clusterproof fault\n"


def _fstab_swap(node, value):
    f = cluster.bind_source(node, "/etc/fstab")
    f.write_text(f.read_text() + SWAP_LINE)


def _fstab_restore(node, saved):
    f = cluster.bind_source(node, "/etc/fstab")
    f.write_text(f.read_text().replace(SWAP_LINE, ""))


def _taint(node, value):
    cluster.kubectl("taint", "nodes", node.name, f"{TAINT}=true:NoSchedule", "--overwrite")


def _untaint(node, saved):
    cluster.kubectl("taint", "nodes", node.name, f"{TAINT}:NoSchedule-", check=False)


def start_gpu_plugin(node: net.Node) -> None:
    name = f"{node.name}-gpu-plugin"
    if proc.pid_of(name) is not None:
        return
    plugin_dir = cluster.bind_source(node, "/var/lib/kubelet") / "device-plugins"
    plugin_dir.mkdir(parents=True, exist_ok=True)
    from . import gpu_plugin

    gpu_plugin.ensure_stubs()
    proc.start(name, [sys.executable, "-m", "testbed.gpu_plugin", "--plugin-dir", str(plugin_dir),
                      "--node", node.name, "--kubeconfig", str(cluster.ADMIN_KUBECONFIG)],
               cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))


def _gpu_stop(node, value):
    proc.stop(f"{node.name}-gpu-plugin", timeout=10)


def _gpu_start(node, saved):
    start_gpu_plugin(node)


FAULTS = {
    "runtime-stop": (_runtime_stop, _runtime_start, "stop containerd on a node"),
    "cri-socket-remove": (_socket_remove, _socket_restore, "delete the CRI socket file (runtime keeps running)"),
    "kube-proxy-stop": (_kube_proxy_stop, _kube_proxy_start, "stop kube-proxy on a node and remove its rules"),
    "coredns-scale-zero": (_coredns_zero, _coredns_restore, "scale CoreDNS to 0 replicas"),
    "cni-config-remove": (_cni_remove, _cni_restore, "remove the CNI config from a node"),
    "sysctl": (_sysctl_set, _sysctl_restore, "set a sysctl in a node's namespace (--value key=value)"),
    "sysctl-persist-remove": (_persist_remove, _persist_restore, "remove /etc/sysctl.d/99-kubernetes.conf"),
    "fstab-swap": (_fstab_swap, _fstab_restore, "add an active swap entry to a node's /etc/fstab"),
    "taint": (_taint, _untaint, "taint a node NoSchedule (all nodes without --node)"),
    "gpu-plugin-stop": (_gpu_stop, _gpu_start, "stop the fake GPU device plugin"),
}
ALL_NODES_DEFAULT = {"taint"}
NO_NODE = {"coredns-scale-zero"}
LAST_NODE_DEFAULT = {"gpu-plugin-stop"}


def _targets(name: str, node: str | None) -> list[net.Node | None]:
    if name in NO_NODE:
        return [None]
    if name in ALL_NODES_DEFAULT:
        return list(_nodes(node))
    return [_node(node, default_last=name in LAST_NODE_DEFAULT)]


def inject(name: str, node: str | None = None, value: str | None = None) -> None:
    """Break one part of the testbed; recorded so heal() (or up) restores it."""
    if name not in FAULTS:
        raise TestbedError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}", code=2)
    if not cluster.status()["up"]:
        raise TestbedError("the testbed is not up; run python -m testbed up", code=8)
    entries = active()
    for target in _targets(name, node):
        tname = target.name if target else None
        if any(e["name"] == name and e.get("node") == tname for e in entries):
            continue
        saved = FAULTS[name][0](target, value)
        entries.append({"name": name, "node": tname, "saved": saved, "at": time.time()})
        _save(entries)


def heal(name: str, node: str | None = None, quiet: bool = False) -> None:
    """Undo a fault (all its targets when node is None)."""
    if name not in FAULTS:
        raise TestbedError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}", code=2)
    entries = active()
    keep = []
    for e in entries:
        if e["name"] == name and (node in (None, "all") or e.get("node") == node):
            target = _node(e["node"]) if e.get("node") else None
            FAULTS[name][1](target, e.get("saved"))
        else:
            keep.append(e)
    _save(keep)
