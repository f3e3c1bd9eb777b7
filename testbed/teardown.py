"""Take the testbed down: stop every process it started and remove what it made on the machine."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from . import net, proc
from .node import holder_pid
from .paths import RUN, STATE
from .state import MAX_NODES, created_dirs, node_dir


def down() -> float:
    """Processes, mounts, namespaces, links, routes, iptables rules, cgroups and state; returns seconds spent."""
    t0 = time.monotonic()
    all_nodes = net.nodes(MAX_NODES)   # whatever count the last up had (its record may be gone)
    for node in all_nodes:
        for comp in ("gpu-plugin", "kube-proxy", "kubelet", "sshd"):
            proc.stop(f"{node.name}-{comp}", timeout=5)
    for node in all_nodes:
        # iptables rules live in the node namespace and vanish with it; containers go with their runtime.
        path = f"/run/netns/{node.netns}"
        pids = proc.pids_in_netns(path)
        if pids:
            proc.kill_wait(pids, timeout=5)
        holder = holder_pid(node)
        if holder:
            proc.kill_wait([holder], timeout=5)
        # container processes that live in pod network namespaces but under this node's mount namespace
        _kill_node_leftovers(node)
    for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
        # the API server drains for --shutdown-delay-duration on SIGTERM: nothing is left to drain for
        proc.stop(name, timeout=0 if name == "kube-apiserver" else 10)
    net.teardown(all_nodes)
    for node in all_nodes:
        _remove_cgroups(node.name)
    for target in reversed(created_dirs()):
        try:
            Path(target).rmdir()
        except OSError:
            pass
    if STATE.exists():
        _umount_under(STATE)
        shutil.rmtree(STATE, ignore_errors=True)
    shutil.rmtree(RUN, ignore_errors=True)
    return time.monotonic() - t0


def _kill_node_leftovers(node: net.Node) -> None:
    """Processes (shims, containers) in the node's namespaces or under its cgroup root."""
    mark = f"/{node.name}/"
    try:
        ns = json.loads((node_dir(node) / "ns.json").read_text())
    except (OSError, ValueError):
        ns = {}
    victims = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cg = Path(f"/proc/{entry}/cgroup").read_text()
            mine = any(os.stat(f"/proc/{entry}/ns/{kind}").st_ino == ino for kind, ino in ns.items())
        except OSError:
            continue
        if mark in cg or mine:
            victims.append(int(entry))
    if victims:
        proc.kill_wait(victims, timeout=5)


def _remove_cgroups(root_name: str) -> None:
    for hier in Path("/sys/fs/cgroup").iterdir():
        top = hier / root_name
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass


def _umount_under(root: Path) -> None:
    """Unmount what lies under the state folder, or is a bind of something in it, in this mount namespace."""
    try:
        rows = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    except OSError:
        return
    targets = [r[4] for r in rows if r[4].startswith(str(root)) or r[3].startswith(str(root))]
    for m in sorted(set(targets), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True, timeout=10, check=False)
