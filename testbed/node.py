"""Bringing up one node: its private folders, namespaces holder, containerd, kubelet, kube-proxy, sshd,
CNI config, images, and the fake GPU device plugin.

Every start_* function is idempotent (a running process is left alone), so `up` and a fault's heal
share them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import configs, gpu_plugin, images, kube_router, net, proc, storage, suite_image
from .errors import TestbedError
from .kube import wait
from .paths import STATE, bin_dir
from .state import (
    ADMIN_KUBECONFIG,
    PKI,
    bind_source,
    bootstrap_mode,
    containerd_address,
    created_dirs,
    current_version,
    node_dir,
    nodes,
    save_created_dirs,
)

# What the node sees at the usual paths: node-private folders bound over them in its mount namespace.
NODE_BINDS = ["/etc/cni/net.d", "/etc/sysctl.d", "/etc/modules-load.d", "/var/lib/kubelet", "/var/lib/containerd",
              "/run/containerd", "/var/log/pods", "/var/log/containers", "/run/netns", "/run/sshd", "/usr/local/bin",
              "/var/lib/cni",  # host-local IPAM state: shared, both nodes' allocators reused IPs at once
              storage.VOLUME_ROOT]  # local-path-provisioner's volumes: on the node's own "disk"
NODE_TOOLS = ["crictl", "kubelet", "kubectl"]  # on the node's PATH, as a kubeadm install leaves them
KUBEADM_BINDS = ["/etc/kubernetes", "/var/lib/etcd"]  # what kubeadm writes into a node (bootstrap kubeadm only)
NODE_FILE_BINDS = ["/etc/fstab", "/etc/hosts"]  # /etc/hosts: the machine's, plus the node's own name (node_hosts)
# The checkout holding this package: the GPU plugin runs as `python -m testbed.gpu_plugin` from there.
ROOT = Path(__file__).resolve().parent.parent


def node_binds() -> list[str]:
    """The node-private folders of this testbed's bootstrap."""
    return NODE_BINDS + (KUBEADM_BINDS if bootstrap_mode() == "kubeadm" else [])


def _holder_script(node: net.Node) -> str:
    # Cut this mount namespace off from the machine's peer groups first (e.g. /run/netns is shared there),
    # so the binds below stay inside the node.
    lines = ["set -e", "mount --make-rprivate /", "mount --make-rshared /", f"hostname {node.name}"]
    for target in node_binds() + NODE_FILE_BINDS:
        lines.append(f"mount --bind {bind_source(node, target)} {target}")
    lines += [f"touch {node_dir(node)}/holder.ready", "exec sleep infinity"]
    return "\n".join(lines) + "\n"


def prepare_node_fs(node: net.Node) -> None:
    """The node's private folders and config files, and its cgroup roots."""
    d = node_dir(node)
    created = created_dirs()
    for target in node_binds():
        src = bind_source(node, target)
        src.mkdir(parents=True, exist_ok=True)
        if not Path(target).exists():
            Path(target).mkdir(parents=True)
            created.append(target)
    fstab = bind_source(node, "/etc/fstab")
    if not fstab.exists():
        fstab.write_text(Path("/etc/fstab").read_text() if Path("/etc/fstab").exists() else "")
    _write_file_binds(node)
    sysctl = bind_source(node, "/etc/sysctl.d") / "99-kubernetes.conf"
    if not sysctl.exists():
        sysctl.write_text(configs.SYSCTL_CONF)
    mods = bind_source(node, "/etc/modules-load.d") / "k8s.conf"
    if not mods.exists():
        mods.write_text(configs.MODULES_CONF)
    save_created_dirs(created)
    tools = bind_source(node, "/usr/local/bin")
    for tool in NODE_TOOLS:
        if not (tools / tool).exists():
            try:
                os.link(bin_dir(current_version()) / tool, tools / tool)
            except OSError:
                shutil.copy2(bin_dir(current_version()) / tool, tools / tool)
    (d / "containerd.toml").write_text(configs.containerd_toml())
    (d / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (d / "kubelet.yaml").write_text(configs.kubelet_yaml(node, PKI, d / "resolv.conf"))
    (d / "sshd_config").write_text(configs.sshd_config(node, STATE))
    (d / "holder.sh").write_text(_holder_script(node))
    for hier in Path("/sys/fs/cgroup").iterdir():
        if hier.is_dir() and not hier.is_symlink() and (hier / "cgroup.procs").exists():
            (hier / node.name).mkdir(exist_ok=True)


def ensure_binds(node: net.Node) -> list[str]:
    """Bind what NODE_BINDS gained since the node's holder started (a running testbed, updated); returns those."""
    pid = holder_pid(node)
    if pid is None:
        return []
    try:
        mounted = {line.split()[4] for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()}
    except OSError:
        return []
    added = []
    created = created_dirs()
    _write_file_binds(node)
    dirs = node_binds()
    for target in dirs + NODE_FILE_BINDS:
        if target in mounted:
            continue
        src = bind_source(node, target)
        if target in dirs:
            src.mkdir(parents=True, exist_ok=True)
            if not Path(target).exists():
                Path(target).mkdir(parents=True)
                created.append(target)
        elif not Path(target).exists():
            continue  # a file bind needs the machine's file to bind over
        subprocess.run([*node_exec(node), "mount", "--bind", str(src), target], check=True, capture_output=True,
                       timeout=10)
        added.append(target)
    save_created_dirs(created)
    return added


def node_hosts(node: net.Node, with_name: bool = True) -> str:
    """The node's /etc/hosts: the machine's without the node names, then (with_name) `IP NAME` for this node, so
    the node resolves its own name as a kubeadm-installed node does (kubeadm's Hostname check, HOST-011)."""
    names = {n.name for n in nodes()}
    machine = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else "127.0.0.1 localhost\n"
    keep = [ln for ln in machine.splitlines() if not names & set(ln.split("#", 1)[0].split()[1:])]
    return "\n".join(keep) + "\n" + (f"{node.ip}\t{node.name}\n" if with_name else "")


def _write_file_binds(node: net.Node) -> None:
    hosts = bind_source(node, "/etc/hosts")
    if not hosts.exists():
        hosts.write_text(node_hosts(node))


def holder_pid(node: net.Node) -> int | None:
    """The process that holds the node's mount and UTS namespaces open."""
    return proc.pid_of(f"{node.name}-holder")


def node_exec(node: net.Node) -> list[str]:
    """Prefix that runs a command inside the node (its mount, UTS and network namespaces)."""
    pid = holder_pid(node)
    if pid is None:
        raise TestbedError(f"node {node.name} is not running; run python -m testbed up", code=8)
    return ["nsenter", "-t", str(pid), "-m", "-u", "-n", "--"]


def start_node_holder(node: net.Node) -> None:
    if holder_pid(node) is not None:
        return
    ready = node_dir(node) / "holder.ready"
    ready.unlink(missing_ok=True)
    proc.start(f"{node.name}-holder", ["nsenter", f"--net=/run/netns/{node.netns}", "unshare", "--mount", "--uts",
                                       "--propagation", "shared", "--", "/bin/sh", str(node_dir(node) / "holder.sh")])
    wait(f"node {node.name} namespaces", ready.exists, 20, 0.1, logs=(f"{node.name}-holder",))
    pid = holder_pid(node)
    # Recorded so `down` finds what lives in these namespaces even after the holder is gone.
    ns = {kind: os.stat(f"/proc/{pid}/ns/{kind}").st_ino for kind in ("net", "mnt")}
    (node_dir(node) / "ns.json").write_text(json.dumps(ns))


def start_containerd(node: net.Node) -> None:
    name = f"{node.name}-containerd"
    sock = Path(containerd_address(node))
    if proc.pid_of(name) is None:
        sock.unlink(missing_ok=True)
        proc.start(name, [*node_exec(node), "containerd", "--config", str(node_dir(node) / "containerd.toml")])
    wait(f"containerd on {node.name}", lambda: sock.is_socket() and subprocess.run(
        ["ctr", "--address", str(sock), "version"], capture_output=True, timeout=5).returncode == 0, 30,
        logs=(name,))


def start_kubelet(node: net.Node, version: str, exe: Path | None = None, extra: tuple[str, ...] = ()) -> None:
    """Start the node's kubelet unless it runs; exe and extra flags are for faults (another build, other flags)."""
    name = f"{node.name}-kubelet"
    if proc.pid_of(name) is None:
        proc.start(name, [*node_exec(node), str(exe or bin_dir(version) / "kubelet"),
                          f"--config={node_dir(node) / 'kubelet.yaml'}",
                          f"--kubeconfig={STATE / f'kubelet-{node.name}.conf'}",
                          f"--hostname-override={node.name}", f"--node-ip={node.ip}", "--v=1", *extra])


def start_kube_proxy(node: net.Node, version: str) -> bool:
    """Start the node's kube-proxy, or restart it when its config changed since it started; True when started."""
    name = f"{node.name}-kube-proxy"
    conf = node_dir(node) / "kube-proxy.yaml"
    want = configs.kube_proxy_yaml(node, STATE / "kube-proxy.conf")
    if not conf.exists() or conf.read_text() != want:  # kube-proxy exits on any write to its config file
        conf.write_text(want)
    started_with = conf.with_name("kube-proxy.yaml.started")
    if proc.pid_of(name) is not None:
        if started_with.exists() and started_with.read_text() == conf.read_text():
            return False
        proc.stop(name, timeout=10)
    proc.start(name, [*node_exec(node), str(bin_dir(version) / "kube-proxy"), f"--config={conf}", "--v=1"])
    started_with.write_text(conf.read_text())
    return True


def start_sshd(node: net.Node) -> None:
    name = f"{node.name}-sshd"
    if proc.pid_of(name) is None:
        proc.start(name, [*node_exec(node), shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e",
                          "-f", str(node_dir(node) / "sshd_config")])


def start_gpu_plugin(node: net.Node) -> None:
    """The fake GPU device plugin, registering with this node's kubelet."""
    name = f"{node.name}-gpu-plugin"
    if proc.pid_of(name) is not None:
        return
    plugin_dir = bind_source(node, "/var/lib/kubelet") / "device-plugins"
    plugin_dir.mkdir(parents=True, exist_ok=True)
    gpu_plugin.ensure_stubs()  # generated here, so a failure shows in up's error, not only in the plugin's log
    proc.start(name, [sys.executable, "-m", "testbed.gpu_plugin", "--plugin-dir", str(plugin_dir),
                      "--node", node.name, "--kubeconfig", str(ADMIN_KUBECONFIG)], cwd=str(ROOT))


def write_cni(node: net.Node, cidr: str) -> None:
    """The bridge CNI config for the node's pod range (rewritten only when it differs)."""
    conf = bind_source(node, "/etc/cni/net.d") / configs.BRIDGE_CONF
    text = configs.cni_conflist(cidr)
    if not conf.exists() or conf.read_text() != text:
        conf.write_text(text)


def import_images(nodes: list[net.Node], version: str, echo: Callable[[str], None], extras_only: bool = False) -> None:
    """Build the testbed's images (cached) and import them into every node's containerd.

    extras_only: only the suite image and the local-path provisioner's (what `up` on a running testbed
    refreshes: both are cheap to check when nothing changed).
    """
    tars = {} if extras_only else images.build_images(bin_dir(version), echo=echo)
    tars |= extra_images(version, echo)
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(lambda n: images.import_images(containerd_address(n), tars), nodes))


def _stamped_image(name: str, binary: Path, spec: Callable[[], images.ImageSpec], revision: str = "") -> Path:
    """The archive of an image made around one built binary, assembled again only when that binary (or the
    REVISION of the rest) changed."""
    archive = images.IMAGES_DIR / images._archive_name(name)
    stamp = archive.with_name(archive.name + ".src")
    st = binary.stat()
    src = f"{binary}:{st.st_size}:{st.st_mtime_ns}:{revision}"
    if not (archive.exists() and stamp.exists() and stamp.read_text() == src):
        archive = images.assemble(spec())
        stamp.write_text(src)
    return archive


def import_archives(targets: list[net.Node], tars: dict[str, Path]) -> None:
    """Import image archives into the containerd of each of TARGETS (at once; each skips what it has)."""
    with ThreadPoolExecutor(len(targets)) as pool:
        list(pool.map(lambda n: images.import_images(containerd_address(n), tars), targets))


def extra_images(version: str, echo: Callable[[str], None]) -> dict[str, Path]:
    """The suite image (keyed by content), the local-path provisioner's and kube-router's (keyed by binary)."""
    bins = bin_dir(version)
    return {storage.LOCAL_PATH: _stamped_image(storage.LOCAL_PATH, bins / "local-path-provisioner",
                                               lambda: storage.image_spec(bins)),
            kube_router.IMAGE: _stamped_image(kube_router.IMAGE, bins / "kube-router",
                                              lambda: kube_router.image_spec(bins), kube_router.image_revision()),
            suite_image.SUITE: suite_image.build(echo)}
