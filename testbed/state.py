"""What the testbed keeps in its state folder, and where each node's files live.

The layer every other part builds on: certificates, kubeconfigs, per-node folders, the running
version and the node list are found here, so a module that needs them does not have to import
the module that starts or stops things (that is how import cycles crept in).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from . import net
from .errors import TestbedError
from .paths import DEFAULT_VERSION, STATE

PKI = STATE / "pki"
ADMIN_KUBECONFIG = STATE / "admin.conf"
SSH_KEY = STATE / "ssh" / "id_ed25519"
# How many nodes a testbed has: `up --nodes N` records it here; before any up, CLUSTERPROOF_TESTBED_NODES or 2.
NODE_COUNT_FILE = STATE / "node-count"
MAX_NODES = 6
# Folders `up` had to create on the machine (bind targets that did not exist); `down` removes them.
CREATED_DIRS = STATE / "created-dirs.json"


def default_node_count() -> int:
    raw = os.environ.get("CLUSTERPROOF_TESTBED_NODES", "2")
    return check_node_count(raw, "CLUSTERPROOF_TESTBED_NODES")


def check_node_count(raw: str | int, what: str = "--nodes") -> int:
    """N for a testbed of N nodes (1..MAX_NODES), or a TestbedError saying what is allowed."""
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_NODES:
        raise TestbedError(f"{what} takes a number of nodes from 1 to {MAX_NODES}, not {raw!r}", code=2)
    return n


def node_count() -> int:
    """The node count of the testbed here (recorded by up), else the default for the next up."""
    try:
        return check_node_count(NODE_COUNT_FILE.read_text().strip(), str(NODE_COUNT_FILE))
    except (OSError, TestbedError):
        return default_node_count()


CNI_FILE = STATE / "cni"
CNIS = ("kube-router", "bridge")  # the agent DaemonSet (testbed/kube_router.py), the config-file bridge


def check_cni(raw: str, what: str = "--cni") -> str:
    """A CNI the testbed runs (CNIS), or a TestbedError saying which."""
    if raw not in CNIS:
        raise TestbedError(f"{what} takes one of {', '.join(CNIS)}, not {raw!r}", code=2)
    return raw


def default_cni() -> str:
    return check_cni(os.environ.get("CLUSTERPROOF_TESTBED_CNI", CNIS[0]), "CLUSTERPROOF_TESTBED_CNI")


def cni_mode() -> str:
    """The CNI of the testbed here (recorded by up), else the default for the next up."""
    try:
        return check_cni(CNI_FILE.read_text().strip(), str(CNI_FILE))
    except OSError:
        # a testbed started before `up --cni` existed ran the bridge CNI
        return "bridge" if (STATE / "version").exists() else default_cni()
    except TestbedError:
        return default_cni()


BOOTSTRAP_FILE = STATE / "bootstrap"
# how the cluster is made: each component started as a process here, or kubeadm init/join (testbed/kubeadm.py)
BOOTSTRAPS = ("kubeadm", "processes")  # the first is the default


def check_bootstrap(raw: str, what: str = "--bootstrap") -> str:
    if raw not in BOOTSTRAPS:
        raise TestbedError(f"{what} takes one of {', '.join(BOOTSTRAPS)}, not {raw!r}", code=2)
    return raw


def bootstrap_mode() -> str:
    """How the testbed here was made (recorded by up; none recorded: processes), else the default for the next up
    (CLUSTERPROOF_TESTBED_BOOTSTRAP or kubeadm, as the course installs)."""
    try:
        return check_bootstrap(BOOTSTRAP_FILE.read_text().strip(), str(BOOTSTRAP_FILE))
    except OSError:
        if (STATE / "version").exists():
            return "processes"
        return check_bootstrap(os.environ.get("CLUSTERPROOF_TESTBED_BOOTSTRAP", BOOTSTRAPS[0]),
                               "CLUSTERPROOF_TESTBED_BOOTSTRAP")
    except TestbedError:
        return "processes"


def api_server_url() -> str:
    """Where the machine reaches the API server: on the machine (processes), or on tb-node-1 (kubeadm)."""
    host = net.nodes(1)[0].ip if bootstrap_mode() == "kubeadm" else "127.0.0.1"
    return f"https://{host}:{net.API_PORT}"


def nodes() -> list[net.Node]:
    """The testbed's nodes, tb-node-1 first."""
    return net.nodes(node_count())


def find_node(name: str | None, default_last: bool = False) -> net.Node:
    """The node called NAME; without a name the first node (or the last one, where the GPU plugin runs)."""
    all_nodes = nodes()
    if name is None:
        return all_nodes[-1] if default_last else all_nodes[0]
    for n in all_nodes:
        if n.name == name:
            return n
    raise TestbedError(f"no node {name!r}; nodes are {', '.join(n.name for n in all_nodes)}", code=2)


def node_dir(node: net.Node) -> Path:
    return STATE / "nodes" / node.name


def bind_source(node: net.Node, target: str) -> Path:
    """The node-private folder (or file) bound over TARGET inside the node's mount namespace."""
    return node_dir(node) / "root" / target.strip("/").replace("/", "-")


def containerd_address(node: net.Node) -> str:
    """The node's containerd socket, as the machine sees it."""
    return str(bind_source(node, "/run/containerd") / "containerd.sock")


def version_file() -> Path:
    return STATE / "version"


def current_version() -> str:
    """The Kubernetes version of the testbed here (the default one before the first up)."""
    try:
        return version_file().read_text().strip()
    except OSError:
        return DEFAULT_VERSION


def created_dirs() -> list[str]:
    try:
        return json.loads(CREATED_DIRS.read_text())
    except (OSError, ValueError):
        return []


def save_created_dirs(dirs: list[str]) -> None:
    CREATED_DIRS.write_text(json.dumps(sorted(set(dirs))))
