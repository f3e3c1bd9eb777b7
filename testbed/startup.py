"""Bring the testbed up: preflight, build (cached), control plane and nodes, then wait until it is healthy."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from . import build, faults, kube_router, kubeadm, net, proc, storage
from .controlplane import apply_addons, ensure_pki, ensure_ssh, start_control_plane
from .errors import TestbedError
from .health import Status, status
from .kube import CONTROL_LEASES, coredns_available, http_ok, lease_fresh, node_pod_cidrs, nodes_ready, wait
from .node import (
    ensure_binds,
    import_archives,
    import_images,
    prepare_node_fs,
    start_containerd,
    start_gpu_plugin,
    start_kube_proxy,
    start_kubelet,
    start_node_holder,
    start_sshd,
    write_cni,
)
from .paths import CACHE, DEFAULT_VERSION, RUN, STATE
from .state import (
    ADMIN_KUBECONFIG,
    BOOTSTRAP_FILE,
    CNI_FILE,
    NODE_COUNT_FILE,
    bootstrap_mode,
    check_bootstrap,
    check_cni,
    check_node_count,
    cni_mode,
    current_version,
    node_count,
    nodes,
    version_file,
)
from .teardown import down

CONTROL_PORTS = {2379: "etcd", 2380: "etcd peer", 6443: "kube-apiserver", 10257: "kube-controller-manager",
                 10259: "kube-scheduler"}
REQUIRED = {  # command -> Debian package
    "containerd": "containerd", "runc": "runc", "ctr": "containerd", "iptables": "iptables",
    "nsenter": "util-linux", "unshare": "util-linux", "sshd": "openssh-server", "ssh-keygen": "openssh-client",
    "conntrack": "conntrack", "ip": "iproute2", "mount": "mount", "busybox": "busybox-static",
}
CNI_PLUGINS = Path("/usr/lib/cni")


def say(msg: str) -> None:
    print(f"testbed: {msg}", flush=True)


def preflight(version: str) -> None:
    """Refuse what cannot work (not root, a bad version) and install missing Debian packages."""
    if os.geteuid() != 0:
        raise TestbedError("the testbed needs root (network namespaces, mounts, iptables); run it with sudo", code=2)
    if not build.VERSION_RE.match(version):
        raise TestbedError(f"version {version!r} is not a Kubernetes release like {DEFAULT_VERSION}", code=3)
    if build.missing(version):
        build.check_available(version)
    missing = sorted({pkg for cmd, pkg in REQUIRED.items() if shutil.which(cmd) is None
                      and not Path(f"/usr/sbin/{cmd}").exists()})
    if not (CNI_PLUGINS / "bridge").exists():
        missing.append("containernetworking-plugins")
    if missing:
        say(f"installing Debian packages: {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        r = subprocess.run(["apt-get", "install", "-y", "-qq", *missing], capture_output=True, text=True, env=env,
                           timeout=900, check=False)
        lists = Path("/var/lib/apt/lists")
        stale = not lists.exists() or time.time() - lists.stat().st_mtime > 86400
        if r.returncode != 0 and stale:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600, check=False)
            r = subprocess.run(["apt-get", "install", "-y", "-qq", *missing], capture_output=True, text=True,
                               env=env, timeout=900, check=False)
        if r.returncode != 0:
            raise TestbedError(f"missing Debian packages {' '.join(missing)} and apt-get could not install them "
                               f"({r.stderr.strip().splitlines()[-1:]}); install them and retry", code=4)


def ports_in_use(ports: dict[int, str] = CONTROL_PORTS) -> list[str]:
    """Control-plane ports held by something that is not this testbed."""
    busy = []
    for port, what in ports.items():
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
        except OSError:
            busy.append(f"{port} ({what})")
        finally:
            s.close()
    return busy


def up(version: str = DEFAULT_VERSION, count: int | None = None, cni: str | None = None,
       boot: str | None = None) -> Status:
    """Start whatever is not running (about 1 s when all is) and heal recorded faults; the final status.

    COUNT nodes (1..6; default: the count of the testbed here, else CLUSTERPROOF_TESTBED_NODES or 2) and CNI
    (kube-router or bridge; default: the testbed's here, else CLUSTERPROOF_TESTBED_CNI or kube-router). A testbed
    with another count or CNI is taken down first."""
    t0 = time.monotonic()
    want = check_node_count(count) if count is not None else node_count()
    want_cni = check_cni(cni) if cni is not None else cni_mode()
    want_boot = check_bootstrap(boot) if boot is not None else bootstrap_mode()
    preflight(version)
    if STATE.exists() and version_file().exists() and current_version() != version:
        raise TestbedError(f"a testbed of {current_version()} is already here; run python -m testbed down first",
                           code=9)
    if STATE.exists() and NODE_COUNT_FILE.exists() and node_count() != want:
        say(f"the testbed here has {node_count()} node(s): taking it down to bring up {want}")
        down()
    if STATE.exists() and version_file().exists() and cni_mode() != want_cni:
        say(f"the testbed here runs the {cni_mode()} CNI: taking it down to bring up {want_cni}")
        down()
    if STATE.exists() and version_file().exists() and bootstrap_mode() != want_boot:
        say(f"the testbed here was made by {bootstrap_mode()}: taking it down to bring one up by {want_boot}")
        down()
    st = status()
    if st.healthy:  # an active fault makes the status unhealthy: up heals it below
        _refresh_extras(version)
        say("already up and healthy")
        return st
    if not STATE.exists() or proc.pid_of("kube-apiserver") is None:
        busy = ports_in_use()
        if busy and proc.pid_of("etcd") is None and proc.pid_of("kube-apiserver") is None:
            raise TestbedError(f"port {', '.join(busy)} already in use by another program; stop it "
                               "(ss -ltnp shows which) and run up again", code=10)
    took = build.build(version, CACHE / "logs" / f"build-{version}.log", echo=say)
    if took:
        say(f"built binaries in {took:.0f}s")
    STATE.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    version_file().write_text(version)
    NODE_COUNT_FILE.write_text(f"{want}\n")
    CNI_FILE.write_text(f"{want_cni}\n")
    BOOTSTRAP_FILE.write_text(f"{want_boot}\n")
    if want_boot == "kubeadm":
        return _up_kubeadm(version, want_cni, t0)
    ensure_pki()
    all_nodes = nodes()
    net.setup_bridge()
    for node in all_nodes:
        net.setup_node(node, "cni0" if want_cni == "bridge" else kube_router.BRIDGE)
        prepare_node_fs(node)
        start_node_holder(node)

    _stop_outdated_control_plane()
    with ThreadPoolExecutor(2) as pool:
        cp = pool.submit(start_control_plane, version)
        imgs = pool.submit(_start_runtimes_and_images, all_nodes, version)
        cp.result()
        imgs.result()
    for node in all_nodes:
        start_kubelet(node, version)
        start_kube_proxy(node, version)
        start_sshd(node)
    _heal_recorded_faults()
    return _network_addons_and_wait(all_nodes, want_cni, t0)


def _network_addons_and_wait(all_nodes: list[net.Node], want_cni: str, t0: float) -> Status:
    """Once every kubelet runs: the pod network, CoreDNS, storage and the GPU plugin; then wait until healthy."""
    wait("every node registered with a podCIDR", lambda: len(node_pod_cidrs()) == len(all_nodes), 90,
         logs=tuple(f"{n.name}-kubelet" for n in all_nodes))
    cidrs = node_pod_cidrs()
    if want_cni == "bridge":
        for node in all_nodes:
            write_cni(node, cidrs[node.name])
        net.set_pod_routes(all_nodes, cidrs)
    else:  # kube-router routes the pod ranges between the nodes (BGP); the machine is no peer: it gets static ones
        net.set_pod_routes(all_nodes, cidrs, between_nodes=False)
        kube_router.deploy()
        # before any pod needs a pod network: until kube-router has written the node's podCIDR into the CNI config
        # its init container installed, the bridge plugin fails with "no IP ranges specified"
        wait("kube-router ready on every node", lambda: not kube_router.not_ready([n.name for n in all_nodes]),
             120, 1)
    apply_addons()
    storage.deploy()
    start_gpu_plugin(all_nodes[-1])
    wait("every node Ready", nodes_ready, 120, 1, logs=tuple(f"{n.name}-kubelet" for n in all_nodes))
    wait("CoreDNS available", coredns_available, 120, 1)
    # after a restart on kept etcd data, the old holders' Leases must expire (15 s) before the new processes lead
    wait("the scheduler and the controller manager leading", lambda: all(lease_fresh(n) for n in CONTROL_LEASES),
         60, 1, logs=tuple(CONTROL_LEASES))
    st = status()
    if not st.healthy:
        bad = [f"{c.name}: {c.detail}" for c in st.unhealthy()]
        raise TestbedError(f"testbed started but unhealthy: {'; '.join(bad)}", code=7)
    say(f"up in {time.monotonic() - t0:.1f}s; kubeconfig: {ADMIN_KUBECONFIG}")
    return st


def _up_kubeadm(version: str, want_cni: str, t0: float) -> Status:
    """kubeadm init on tb-node-1, join on the others (testbed/kubeadm.py); kube-proxy, sshd and the rest as with
    processes."""
    ensure_ssh()
    all_nodes = nodes()
    control, workers = all_nodes[0], all_nodes[1:]
    net.setup_bridge()
    for node in all_nodes:
        net.setup_node(node, "cni0" if want_cni == "bridge" else kube_router.BRIDGE)
        prepare_node_fs(node)
        start_node_holder(node)
    for node in all_nodes:
        start_containerd(node)
    import_images(all_nodes, version, echo=say)
    # every node: kubeadm's preflight on a joining node asks for the pause image too
    import_archives(all_nodes, kubeadm.image_archives(version, kubeadm.init_config_file(control, version)))
    for node in all_nodes:
        kubeadm.start_kubelet_unit(node, version)
    kubeadm.init(control, version)
    say(f"kubeadm init on {control.name} done")
    kubeadm.join(workers, control, version)
    if workers:
        say(f"kubeadm join on {', '.join(n.name for n in workers)} done")
    else:
        kubeadm.untaint_single(control)
    for node in all_nodes:
        start_kube_proxy(node, version)
        start_sshd(node)
    kubeadm.wait_static_pods(control)
    return _network_addons_and_wait(all_nodes, want_cni, t0)


def _stop_outdated_control_plane() -> None:
    """A scheduler or controller manager an older testbed started without leader election holds no Lease (what the
    control-plane checks read): stop it, so that start_control_plane starts it as this testbed does."""
    for name in CONTROL_LEASES:
        pid = proc.pid_of(name)
        if pid is None:
            continue
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--leader-elect=true" not in args:
            say(f"restarting {name} with leader election (started by an older testbed)")
            proc.stop(name, timeout=10)


def _refresh_extras(version: str) -> None:
    """On a running testbed: the suite image (when the checkout changed), the local-path provisioner (when this
    testbed predates it), each a no-op when current; about a second in all."""
    took = build.build(version, CACHE / "logs" / f"build-{version}.log", echo=say)
    if took:
        say(f"built binaries in {took:.0f}s")
    all_nodes = nodes()
    for node in all_nodes:
        for target in ensure_binds(node):
            say(f"{node.name}: bound {target}")
    import_images(all_nodes, version, echo=say, extras_only=True)
    for node in all_nodes:
        if start_kube_proxy(node, version):
            say(f"{node.name}: restarted kube-proxy (its config changed)")
            wait(f"kube-proxy on {node.name}", partial(http_ok, f"http://{node.ip}:10256/healthz"), 30)
    if cni_mode() == "kube-router" and kube_router.deploy():
        say(f"applied kube-router {kube_router.KUBE_ROUTER_VERSION}")
    if storage.deploy():
        say(f"deployed local-path-provisioner {storage.LOCAL_PATH} (default StorageClass {storage.STORAGE_CLASS})")


def _start_runtimes_and_images(all_nodes: list[net.Node], version: str) -> None:
    for node in all_nodes:
        start_containerd(node)
    import_images(all_nodes, version, echo=say)


def _heal_recorded_faults() -> None:
    """Undo every fault still recorded (e.g. a test killed before its heal); one that fails is reported."""
    for entry in faults.active():
        try:
            faults.heal(entry.name, entry.node)
        except TestbedError as exc:
            say(f"could not heal {entry.name}: {exc}")
