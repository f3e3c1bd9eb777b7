"""What `kubeadm init phase preflight` warns about on a running node: the node's name resolves, the kubelet
starts at boot, cgroup v1 under a kubelet that drops it, and the kubelet and runtime agreeing on a cgroup driver.

Each check gathers over the host transport and applies a `clusterproof.preflight.judge_*` verdict (WARN
severity: reported and listed, failing the sign-off only under --strict).
"""
from __future__ import annotations

import shlex

import pytest

from clusterproof import cri, preflight, timeouts
from clusterproof.checks import apply, evidence
from clusterproof.verdict import Verdict

# The kubelet process that shares this shell's mount namespace (one line per word of its command line).
# The comm of each process is read with the shell's own `read` (a `cat` per process took seconds on a busy host).
KUBELET_CMDLINE = ("me=$(readlink /proc/self/ns/mnt); for d in /proc/[0-9]*; do "
                   "c=; read -r c < $d/comm 2>/dev/null; case \"$c\" in kubelet*) ;; *) continue;; esac; "
                   "[ \"$(readlink $d/ns/mnt 2>/dev/null)\" = \"$me\" ] || continue; "
                   "tr '\\0' '\\n' < $d/cmdline; exit 0; done; exit 3")


@pytest.mark.check("HOST-011")
def test_node_name_resolves(node_host):
    """`getent ahosts` for the node's name (kubeadm's nodeName) and the host's own hostname."""
    own = node_host.run("hostname").stdout.strip()
    names = list(dict.fromkeys(n for n in (node_host.node, own) if n))
    verdicts = []
    for name in names:
        r = node_host.run(f"getent ahosts {shlex.quote(name)}")
        evidence(f"{node_host.id}: getent ahosts {name}", r.evidence())
        verdicts.append(preflight.judge_hostname(node_host.id, name, r.rc, r.stdout))
    bad = [v for v in verdicts if v.status != "pass"]
    apply(bad[0] if bad else verdicts[0])


@pytest.mark.check("HOST-012")
def test_kubelet_enabled_at_boot(node_host):
    booted = node_host.run("[ -d /run/systemd/system ]").rc == 0
    r = node_host.run("systemctl is-enabled kubelet 2>&1") if booted else None
    if r is not None:
        evidence(f"{node_host.id}: systemctl is-enabled kubelet", r.evidence())
    apply(preflight.judge_kubelet_enabled(node_host.id, booted, r.rc if r else 0, r.stdout if r else ""))


@pytest.mark.check("HOST-013")
def test_no_cgroup_v1_under_new_kubelet(node_host, host_node):
    r = node_host.run("stat -fc %T /sys/fs/cgroup; [ -d /sys/fs/cgroup/memory ] && echo memory-hierarchy; true")
    evidence(f"{node_host.id}: stat -fc %T /sys/fs/cgroup; test -d /sys/fs/cgroup/memory", r.evidence())
    lines = r.stdout.split()
    fs_type = lines[0] if lines and r.rc == 0 else ""
    apply(preflight.judge_cgroup_v1(node_host.id, fs_type, "memory-hierarchy" in lines,
                                    host_node.kubelet_version if host_node else None))


def _kubelet_driver(node_host, request) -> preflight.Driver:
    """From the kubelet process in the host's mount namespace (flags, then its --config file); where none is
    there to read, from the kubelet's /configz through the API server."""
    r = node_host.run(KUBELET_CMDLINE)
    evidence(f"{node_host.id}: the kubelet's command line (/proc/PID/cmdline)", r.evidence())
    if r.rc == 0 and r.stdout.strip():
        args = preflight.kubelet_args(r.stdout)
        path = args.get("config") or preflight.KUBELET_CONFIG_DEFAULT
        text = node_host.read(path)
        evidence(f"{node_host.id}: cat {path}", text if text is not None else "(unreadable)")
        try:
            return preflight.kubelet_driver(args, text, path)
        except ValueError as exc:
            apply(Verdict.errored(f"kubelet config on {node_host.id}", str(exc)))
    if not node_host.node:
        return preflight.Driver(None, "no kubelet process on the host and no node name to ask its /configz")
    core_v1 = request.getfixturevalue("core_v1")
    try:
        text = core_v1.connect_get_node_proxy_with_path(node_host.node, "configz",
                                                        _request_timeout=timeouts.get("api"))
    except Exception as exc:  # an API refusal (RBAC: nodes/proxy) or a kubelet that does not answer
        status = getattr(exc, "status", None) or type(exc).__name__
        return preflight.Driver(None, f"no kubelet process on the host, and /configz through the API server "
                                      f"answered {status} (needs get on nodes/proxy)")
    evidence(f"GET /api/v1/nodes/{node_host.node}/proxy/configz", str(text))
    try:
        return preflight.configz_driver(str(text))
    except ValueError as exc:
        return preflight.Driver(None, str(exc))


@pytest.mark.check("HOST-014")
def test_cgroup_drivers_agree(node_host, host_node, request):
    named = host_node.cri_socket if host_node else None
    sock, _ = cri.find_socket(named, node_host.file_types)
    stop = cri.judge_usable(node_host.id, sock, sock.kind == "socket" and node_host.run("command -v crictl").rc == 0)
    if stop is not None:
        apply(stop)
    kubelet = _kubelet_driver(node_host, request)
    crictl = f"crictl --runtime-endpoint unix://{sock.path} --timeout 5s"
    rc = node_host.run(f"{crictl} runtime-config 2>&1")
    evidence(f"{node_host.id}: crictl runtime-config", rc.evidence())
    info = None
    answered = rc.rc == 0 and "cgroup" in rc.stdout.lower()
    if not answered:
        ri = node_host.run(f"{crictl} info -o json")
        evidence(f"{node_host.id}: crictl info -o json", ri.evidence())
        info = ri.stdout if ri.rc == 0 else None
    runtime = preflight.runtime_driver(rc.stdout if answered else None, info)
    # From 1.31 on (KubeletCgroupDriverFromCRI) the kubelet takes the driver the runtime's RuntimeConfig names.
    follows = answered and host_node is not None and host_node.kubelet is not None \
        and host_node.kubelet >= preflight.DRIVER_FROM_CRI
    apply(preflight.judge_cgroup_driver(node_host.id, kubelet, runtime, from_cri=follows))
