"""The control plane: certificates and kubeconfigs, etcd, the API server, controller manager, scheduler,
and the cluster add-ons (CoreDNS)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from . import configs, net, pki, proc
from .kube import http_ok, https_ok, kubectl, wait
from .paths import CACHE, STATE, bin_dir
from .state import ADMIN_KUBECONFIG, PKI, SSH_KEY, nodes


def ensure_pki() -> None:
    """CA, component certificates and kubeconfigs, and the SSH keys (each made only when missing)."""
    pki.ensure_ca(PKI)
    pki.ensure_sa_keys(PKI)
    pki.ensure_cert(PKI, "apiserver", "kube-apiserver", server=True,
                    sans=(net.BRIDGE_IP, "127.0.0.1", net.KUBERNETES_SVC_IP, "localhost", "kubernetes",
                          "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"))
    pki.ensure_cert(PKI, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))
    pki.ensure_cert(PKI, "admin", "kubernetes-admin", ("system:masters",))
    pki.ensure_cert(PKI, "controller-manager", "system:kube-controller-manager")
    pki.ensure_cert(PKI, "scheduler", "system:kube-scheduler")
    pki.ensure_cert(PKI, "kube-proxy", "system:kube-proxy")
    server = f"https://{net.BRIDGE_IP}:{net.API_PORT}"
    pki.write_kubeconfig(ADMIN_KUBECONFIG, PKI, "admin", server, "kubernetes-admin")
    for name in ("controller-manager", "scheduler", "kube-proxy"):
        pki.write_kubeconfig(STATE / f"{name}.conf", PKI, name, server, f"system:{name}")
    for node in nodes():
        pki.ensure_cert(PKI, f"kubelet-{node.name}", f"system:node:{node.name}", ("system:nodes",))
        pki.write_kubeconfig(STATE / f"kubelet-{node.name}.conf", PKI, f"kubelet-{node.name}", server,
                             f"system:node:{node.name}")
    ensure_ssh()


def ensure_ssh() -> None:
    """The SSH client key and the nodes' host key (kept in the cache), and the nodes' authorized_keys."""
    ssh = STATE / "ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    # SSH keys outlive down/up (kept with the build cache): a node's host key that changed on every up
    # would fail host-key verification against the user's known_hosts.
    keep = CACHE / "testbed-ssh"
    keep.mkdir(parents=True, exist_ok=True)
    for key in (SSH_KEY, ssh / "ssh_host_ed25519_key"):
        kept = keep / key.name
        if not kept.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "clusterproof-testbed", "-f",
                            str(kept)], check=True, timeout=30)
        for suffix in ("", ".pub"):
            shutil.copy2(f"{kept}{suffix}", f"{key}{suffix}")
    (ssh / "authorized_keys").write_text(Path(f"{SSH_KEY}.pub").read_text())


def start_control_plane(version: str) -> None:
    """etcd and the API server (each waited on until healthy), then the controller manager and scheduler."""
    b = bin_dir(version)
    if proc.pid_of("etcd") is None:
        (STATE / "etcd").mkdir(parents=True, exist_ok=True)
        proc.start("etcd", [str(b / "etcd"), "--name", "testbed", "--data-dir", str(STATE / "etcd"),
                            "--listen-client-urls", "http://127.0.0.1:2379",
                            "--advertise-client-urls", "http://127.0.0.1:2379",
                            "--listen-peer-urls", "http://127.0.0.1:2380",
                            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                            "--initial-cluster", "testbed=http://127.0.0.1:2380",
                            "--unsafe-no-fsync", "--log-level", "warn"])
    wait("etcd health", lambda: http_ok("http://127.0.0.1:2379/health"), 60, logs=("etcd",))
    start_apiserver(version)
    start_controller_manager(version)
    start_scheduler(version)


SHUTDOWN_DELAY = 900


def start_apiserver(version: str, extra: tuple[str, ...] = (), ready: str = "/readyz") -> None:
    """The API server unless it runs, waited on until READY answers 200; extra flags and another READY path
    (a health path that excludes the checks a fault breaks) are for faults."""
    if proc.pid_of("kube-apiserver") is None:
        proc.start("kube-apiserver", [
            str(bin_dir(version) / "kube-apiserver"), "--etcd-servers=http://127.0.0.1:2379",
            f"--advertise-address={net.BRIDGE_IP}", "--bind-address=0.0.0.0", f"--secure-port={net.API_PORT}",
            f"--service-cluster-ip-range={net.SERVICE_CIDR}", "--service-node-port-range=30000-32767",
            f"--client-ca-file={PKI}/ca.crt", f"--tls-cert-file={PKI}/apiserver.crt",
            f"--tls-private-key-file={PKI}/apiserver.key",
            f"--kubelet-client-certificate={PKI}/apiserver-kubelet-client.crt",
            f"--kubelet-client-key={PKI}/apiserver-kubelet-client.key",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={PKI}/sa.pub", f"--service-account-signing-key-file={PKI}/sa.key",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true", "--anonymous-auth=true", "--profiling=false",
            # as an API server behind a load balancer runs: on SIGTERM it serves on this long while /readyz says it
            # is going (the apiserver-shutting-down fault; the testbed itself stops it with SIGKILL)
            f"--shutdown-delay-duration={SHUTDOWN_DELAY}s", "--v=1", *extra])
    wait(f"kube-apiserver {ready}", lambda: https_ok(f"https://127.0.0.1:{net.API_PORT}{ready}"), 90,
         logs=("kube-apiserver",))


# As kubeadm runs them: leader election on, so each holds a Lease in kube-system that it renews every 2 s (what the
# control-plane checks read); a restarted one takes the lease over once the old holder's 15 s have passed.
_COMMON = ["--authentication-kubeconfig={c}", "--authorization-kubeconfig={c}", "--kubeconfig={c}",
           "--leader-elect=true", "--bind-address=127.0.0.1", "--v=1"]


def start_controller_manager(version: str) -> None:
    if proc.pid_of("kube-controller-manager") is None:
        c = STATE / "controller-manager.conf"
        proc.start("kube-controller-manager", [
            str(bin_dir(version) / "kube-controller-manager"), *[a.format(c=c) for a in _COMMON],
            f"--service-account-private-key-file={PKI}/sa.key", f"--root-ca-file={PKI}/ca.crt",
            f"--cluster-signing-cert-file={PKI}/ca.crt", f"--cluster-signing-key-file={PKI}/ca.key",
            "--use-service-account-credentials=true", "--allocate-node-cidrs=true",
            f"--cluster-cidr={net.CLUSTER_CIDR}", "--node-cidr-mask-size=24",
            f"--service-cluster-ip-range={net.SERVICE_CIDR}", "--node-monitor-grace-period=20s"])


def start_scheduler(version: str) -> None:
    if proc.pid_of("kube-scheduler") is None:
        c = STATE / "scheduler.conf"
        proc.start("kube-scheduler", [str(bin_dir(version) / "kube-scheduler"), *[a.format(c=c) for a in _COMMON]])


def apply_addons() -> None:
    kubectl("apply", "-f", "-", input=configs.coredns_manifest())
