"""Bring the testbed up, report its status, take it down."""
from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import build, configs, net, pki, proc
from .errors import TestbedError
from .paths import CACHE, DEFAULT_VERSION, RUN, STATE, bin_dir

PKI = STATE / "pki"
ADMIN_KUBECONFIG = STATE / "admin.conf"
SSH_KEY = STATE / "ssh" / "id_ed25519"
NODE_COUNT = int(os.environ.get("CLUSTERPROOF_TESTBED_NODES", "2"))
CONTROL_PORTS = {2379: "etcd", 2380: "etcd peer", 6443: "kube-apiserver", 10257: "kube-controller-manager",
                 10259: "kube-scheduler"}
# What the node sees at the usual paths: node-private folders bound over them in its mount namespace.
NODE_BINDS = ["/etc/cni/net.d", "/etc/sysctl.d", "/etc/modules-load.d", "/var/lib/kubelet", "/var/lib/containerd",
              "/run/containerd", "/var/log/pods", "/var/log/containers", "/run/netns", "/run/sshd", "/usr/local/bin",
              "/var/lib/cni"]  # host-local IPAM state: shared, both nodes' allocators reused IPs at once
NODE_TOOLS = ["crictl", "kubelet", "kubectl"]  # on the node's PATH, as a kubeadm install leaves them
NODE_FILE_BINDS = ["/etc/fstab"]
REQUIRED = {  # command -> Debian package
    "containerd": "containerd", "runc": "runc", "ctr": "containerd", "iptables": "iptables",
    "nsenter": "util-linux", "unshare": "util-linux", "sshd": "openssh-server", "ssh-keygen": "openssh-client",
    "conntrack": "conntrack", "ip": "iproute2", "mount": "mount", "busybox": "busybox-static",
}
CNI_PLUGINS = Path("/usr/lib/cni")


def say(msg: str) -> None:
    print(f"testbed: {msg}", flush=True)


def node_dir(node: net.Node) -> Path:
    return STATE / "nodes" / node.name


def bind_source(node: net.Node, target: str) -> Path:
    return node_dir(node) / "root" / target.strip("/").replace("/", "-")


def version_file() -> Path:
    return STATE / "version"


def current_version() -> str:
    try:
        return version_file().read_text().strip()
    except OSError:
        return DEFAULT_VERSION


def kubectl(*args: str, timeout: float = 60, check: bool = True, input: str | None = None,
            version: str | None = None) -> subprocess.CompletedProcess:
    exe = bin_dir(version or current_version()) / "kubectl"
    r = subprocess.run([str(exe), "--kubeconfig", str(ADMIN_KUBECONFIG), "--request-timeout=20s", *args],
                       capture_output=True, text=True, timeout=timeout, input=input, check=False)
    if check and r.returncode != 0:
        raise TestbedError(f"kubectl {' '.join(args)}: {r.stderr.strip()[:300]}", code=6)
    return r


# ---------------------------------------------------------------- preflight

def preflight(version: str) -> None:
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


# ---------------------------------------------------------------- pieces

def ensure_pki() -> None:
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
    for node in net.nodes(NODE_COUNT):
        pki.ensure_cert(PKI, f"kubelet-{node.name}", f"system:node:{node.name}", ("system:nodes",))
        pki.write_kubeconfig(STATE / f"kubelet-{node.name}.conf", PKI, f"kubelet-{node.name}", server,
                             f"system:node:{node.name}")
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


def _wait(what: str, cond, timeout: float, interval: float = 0.5, logs: tuple[str, ...] = ()) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception as exc:
            last = exc
        time.sleep(interval)
    tails = "; ".join(f"{n}: {proc.log_tail(n, 3)}" for n in logs)
    raise TestbedError(f"timed out after {timeout:.0f}s waiting for {what}"
                       f"{f' (last error: {last})' if last else ''}{'; ' + tails if tails else ''}", code=7)


def _https_ok(url: str) -> bool:
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    ctx.load_cert_chain(str(PKI / "admin.crt"), str(PKI / "admin.key"))
    with urllib.request.urlopen(url, context=ctx, timeout=3) as r:
        return r.status == 200


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=3) as r:
        return r.status == 200


def start_control_plane(version: str) -> None:
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
    _wait("etcd health", lambda: _http_ok("http://127.0.0.1:2379/health"), 60, logs=("etcd",))
    if proc.pid_of("kube-apiserver") is None:
        proc.start("kube-apiserver", [
            str(b / "kube-apiserver"), "--etcd-servers=http://127.0.0.1:2379",
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
            "--allow-privileged=true", "--anonymous-auth=true", "--profiling=false", "--v=1"])
    _wait("kube-apiserver /readyz", lambda: _https_ok(f"https://127.0.0.1:{net.API_PORT}/readyz"), 90,
          logs=("kube-apiserver",))
    common = ["--authentication-kubeconfig={c}", "--authorization-kubeconfig={c}", "--kubeconfig={c}",
              "--leader-elect=false", "--bind-address=127.0.0.1", "--v=1"]
    if proc.pid_of("kube-controller-manager") is None:
        c = STATE / "controller-manager.conf"
        proc.start("kube-controller-manager", [
            str(b / "kube-controller-manager"), *[a.format(c=c) for a in common],
            f"--service-account-private-key-file={PKI}/sa.key", f"--root-ca-file={PKI}/ca.crt",
            f"--cluster-signing-cert-file={PKI}/ca.crt", f"--cluster-signing-key-file={PKI}/ca.key",
            "--use-service-account-credentials=true", "--allocate-node-cidrs=true",
            f"--cluster-cidr={net.CLUSTER_CIDR}", "--node-cidr-mask-size=24",
            f"--service-cluster-ip-range={net.SERVICE_CIDR}", "--node-monitor-grace-period=20s"])
    if proc.pid_of("kube-scheduler") is None:
        c = STATE / "scheduler.conf"
        proc.start("kube-scheduler", [str(b / "kube-scheduler"), *[a.format(c=c) for a in common]])


def _holder_script(node: net.Node) -> str:
    # Cut this mount namespace off from the machine's peer groups first (e.g. /run/netns is shared there),
    # so the binds below stay inside the node.
    lines = ["set -e", "mount --make-rprivate /", "mount --make-rshared /", f"hostname {node.name}"]
    for target in NODE_BINDS + NODE_FILE_BINDS:
        lines.append(f"mount --bind {bind_source(node, target)} {target}")
    lines += [f"touch {node_dir(node)}/holder.ready", "exec sleep infinity"]
    return "\n".join(lines) + "\n"


def _created_dirs() -> list[str]:
    try:
        return json.loads((STATE / "created-dirs.json").read_text())
    except (OSError, ValueError):
        return []


def prepare_node_fs(node: net.Node) -> None:
    d = node_dir(node)
    created = _created_dirs()
    for target in NODE_BINDS:
        src = bind_source(node, target)
        src.mkdir(parents=True, exist_ok=True)
        if not Path(target).exists():
            Path(target).mkdir(parents=True)
            created.append(target)
    fstab = bind_source(node, "/etc/fstab")
    if not fstab.exists():
        fstab.write_text(Path("/etc/fstab").read_text() if Path("/etc/fstab").exists() else "")
    sysctl = bind_source(node, "/etc/sysctl.d") / "99-kubernetes.conf"
    if not sysctl.exists():
        sysctl.write_text(configs.SYSCTL_CONF)
    mods = bind_source(node, "/etc/modules-load.d") / "k8s.conf"
    if not mods.exists():
        mods.write_text(configs.MODULES_CONF)
    (STATE / "created-dirs.json").write_text(json.dumps(sorted(set(created))))
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
    (d / "kube-proxy.yaml").write_text(configs.kube_proxy_yaml(node, STATE / "kube-proxy.conf"))
    (d / "sshd_config").write_text(configs.sshd_config(node, STATE))
    (d / "holder.sh").write_text(_holder_script(node))
    for hier in Path("/sys/fs/cgroup").iterdir():
        if hier.is_dir() and not hier.is_symlink() and (hier / "cgroup.procs").exists():
            (hier / node.name).mkdir(exist_ok=True)


def holder_pid(node: net.Node) -> int | None:
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
    _wait(f"node {node.name} namespaces", ready.exists, 20, 0.1, logs=(f"{node.name}-holder",))
    pid = holder_pid(node)
    ns = {kind: os.stat(f"/proc/{pid}/ns/{kind}").st_ino for kind in ("net", "mnt")}
    (node_dir(node) / "ns.json").write_text(json.dumps(ns))


def start_containerd(node: net.Node) -> None:
    name = f"{node.name}-containerd"
    sock = bind_source(node, "/run/containerd") / "containerd.sock"
    if proc.pid_of(name) is None:
        sock.unlink(missing_ok=True)
        proc.start(name, [*node_exec(node), "containerd", "--config", str(node_dir(node) / "containerd.toml")])
    _wait(f"containerd on {node.name}", lambda: sock.is_socket() and subprocess.run(
        ["ctr", "--address", str(sock), "version"], capture_output=True, timeout=5).returncode == 0, 30,
        logs=(name,))


def containerd_address(node: net.Node) -> str:
    return str(bind_source(node, "/run/containerd") / "containerd.sock")


def start_kubelet(node: net.Node, version: str) -> None:
    name = f"{node.name}-kubelet"
    if proc.pid_of(name) is None:
        proc.start(name, [*node_exec(node), str(bin_dir(version) / "kubelet"),
                          f"--config={node_dir(node) / 'kubelet.yaml'}",
                          f"--kubeconfig={STATE / f'kubelet-{node.name}.conf'}",
                          f"--hostname-override={node.name}", f"--node-ip={node.ip}", "--v=1"])


def start_kube_proxy(node: net.Node, version: str) -> None:
    name = f"{node.name}-kube-proxy"
    if proc.pid_of(name) is None:
        proc.start(name, [*node_exec(node), str(bin_dir(version) / "kube-proxy"),
                          f"--config={node_dir(node) / 'kube-proxy.yaml'}", "--v=1"])


def start_sshd(node: net.Node) -> None:
    name = f"{node.name}-sshd"
    if proc.pid_of(name) is None:
        proc.start(name, [*node_exec(node), shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e",
                          "-f", str(node_dir(node) / "sshd_config")])


def node_pod_cidrs() -> dict[str, str]:
    r = kubectl("get", "nodes", "-o", "json", check=False)
    if r.returncode != 0:
        return {}
    return {n["metadata"]["name"]: n["spec"].get("podCIDR") for n in json.loads(r.stdout)["items"]
            if n["spec"].get("podCIDR")}


def write_cni(node: net.Node, cidr: str) -> None:
    conf = bind_source(node, "/etc/cni/net.d") / "10-bridge.conflist"
    text = configs.cni_conflist(cidr)
    if not conf.exists() or conf.read_text() != text:
        conf.write_text(text)


def apply_addons() -> None:
    kubectl("apply", "-f", "-", input=configs.coredns_manifest())


def import_images(nodes: list[net.Node], version: str) -> None:
    from . import images

    tars = images.build_images(bin_dir(version), echo=say)
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(lambda n: images.import_images(containerd_address(n), tars), nodes))


# ---------------------------------------------------------------- up / down / status

def up(version: str = DEFAULT_VERSION, quiet_if_healthy: bool = True) -> dict:
    t0 = time.monotonic()
    preflight(version)
    if STATE.exists() and version_file().exists() and current_version() != version:
        raise TestbedError(f"a testbed of {current_version()} is already here; run python -m testbed down first",
                           code=9)
    st = status()
    if st["healthy"] and not _faults_left():
        if not quiet_if_healthy:
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
    ensure_pki()
    nodes = net.nodes(NODE_COUNT)
    net.setup_bridge()
    for node in nodes:
        net.setup_node(node)
        prepare_node_fs(node)
        start_node_holder(node)

    with ThreadPoolExecutor(2) as pool:
        cp = pool.submit(start_control_plane, version)
        imgs = pool.submit(_start_runtimes_and_images, nodes, version)
        cp.result()
        imgs.result()
    for node in nodes:
        start_kubelet(node, version)
        start_kube_proxy(node, version)
        start_sshd(node)
    _faults_heal_all()
    _wait("every node registered with a podCIDR", lambda: len(node_pod_cidrs()) == len(nodes), 90,
          logs=tuple(f"{n.name}-kubelet" for n in nodes))
    cidrs = node_pod_cidrs()
    for node in nodes:
        write_cni(node, cidrs[node.name])
    net.set_pod_routes(nodes, cidrs)
    apply_addons()
    _start_extras(nodes)
    _wait("every node Ready", _nodes_ready, 120, 1, logs=tuple(f"{n.name}-kubelet" for n in nodes))
    _wait("CoreDNS available", _coredns_available, 120, 1)
    st = status()
    if not st["healthy"]:
        bad = [f"{c['name']}: {c['detail']}" for c in st["components"] if not c["healthy"]]
        raise TestbedError(f"testbed started but unhealthy: {'; '.join(bad)}", code=7)
    say(f"up in {time.monotonic() - t0:.1f}s; kubeconfig: {ADMIN_KUBECONFIG}")
    return st


def _start_runtimes_and_images(nodes: list[net.Node], version: str) -> None:
    for node in nodes:
        start_containerd(node)
    import_images(nodes, version)


def _start_extras(nodes: list[net.Node]) -> None:
    """Optional parts: the fake GPU device plugin on the last node."""
    try:
        from . import gpu_plugin  # noqa: F401
    except ImportError:
        return
    from . import faults

    faults.start_gpu_plugin(nodes[-1])


def _nodes_ready() -> bool:
    r = kubectl("get", "nodes", "-o", "json", check=False)
    if r.returncode != 0:
        return False
    items = json.loads(r.stdout)["items"]
    return len(items) == NODE_COUNT and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
        for n in items)


def _coredns_available() -> bool:
    r = kubectl("-n", "kube-system", "get", "deploy", "coredns", "-o", "json", check=False)
    if r.returncode != 0:
        return False
    d = json.loads(r.stdout)
    return d["status"].get("availableReplicas", 0) >= 1 and d["spec"]["replicas"] >= 1


def _faults_left() -> bool:
    from . import faults

    return bool(faults.active())


def _faults_heal_all() -> None:
    from . import faults

    for entry in list(faults.active()):
        try:
            faults.heal(entry["name"], entry.get("node"), quiet=True)
        except TestbedError as exc:
            say(f"could not heal {entry['name']}: {exc}")


def _component(name: str, node: str | None, healthy: bool, detail: str) -> dict:
    return {"name": name, "node": node, "healthy": healthy, "detail": detail}


def _check(fn) -> tuple[bool, str]:
    try:
        return (True, "ok") if fn() else (False, "not ready")
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"[:200]


def status() -> dict:
    nodes = net.nodes(NODE_COUNT)
    comps = []
    if not STATE.exists():
        return {"healthy": False, "up": False, "components": [], "kubeconfig": str(ADMIN_KUBECONFIG),
                "ssh_key": str(SSH_KEY), "version": None, "nodes": []}
    for name, fn in (("etcd", lambda: _http_ok("http://127.0.0.1:2379/health")),
                     ("kube-apiserver", lambda: _https_ok(f"https://127.0.0.1:{net.API_PORT}/readyz")),
                     ("kube-controller-manager", lambda: proc.pid_of("kube-controller-manager") is not None),
                     ("kube-scheduler", lambda: proc.pid_of("kube-scheduler") is not None)):
        ok, detail = _check(fn)
        if not ok and proc.pid_of(name) is None:
            detail = "not running"
        comps.append(_component(name, None, ok, detail))
    api_up = comps[1]["healthy"]
    node_objs = {}
    if api_up:
        r = kubectl("get", "nodes", "-o", "json", check=False)
        if r.returncode == 0:
            node_objs = {n["metadata"]["name"]: n for n in json.loads(r.stdout)["items"]}
    for node in nodes:
        sock = Path(containerd_address(node))
        checks = [
            ("containerd", lambda sock=sock, node=node: proc.pid_of(f"{node.name}-containerd") is not None
             and sock.is_socket()),
            ("kubelet", lambda node=node: _http_ok(f"http://{node.ip}:10248/healthz")),
            ("kube-proxy", lambda node=node: _http_ok(f"http://{node.ip}:10256/healthz")),
            ("sshd", lambda node=node: socket.create_connection((node.ip, 22), timeout=2).close() is None),
        ]
        for cname, fn in checks:
            ok, detail = _check(fn)
            comps.append(_component(cname, node.name, ok, detail))
        obj = node_objs.get(node.name)
        ready = bool(obj) and any(c["type"] == "Ready" and c["status"] == "True"
                                  for c in obj["status"].get("conditions", []))
        comps.append(_component("node-ready", node.name, ready, "Ready" if ready else
                                 ("not registered" if not obj else "NotReady")))
    if api_up:
        ok, detail = _check(_coredns_available)
        comps.append(_component("coredns", None, ok, detail))
    from . import faults

    active = faults.active()
    if active:
        comps.append(_component("faults", None, False, ", ".join(
            f"{f['name']}{'@' + f['node'] if f.get('node') else ''}" for f in active)))
    healthy = bool(comps) and all(c["healthy"] for c in comps)
    return {"healthy": healthy, "up": api_up, "components": comps, "kubeconfig": str(ADMIN_KUBECONFIG),
            "ssh_key": str(SSH_KEY), "version": current_version(),
            "nodes": [{"name": n.name, "ip": n.ip, "netns": n.netns} for n in nodes]}


def down() -> float:
    t0 = time.monotonic()
    nodes = net.nodes(max(NODE_COUNT, 2))
    for node in nodes:
        for comp in ("gpu-plugin", "kube-proxy", "kubelet", "sshd"):
            proc.stop(f"{node.name}-{comp}", timeout=5)
    for node in nodes:
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
        proc.stop(name, timeout=10)
    net.teardown(nodes)
    for node in nodes:
        _remove_cgroups(node.name)
    for target in reversed(_created_dirs()):
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
