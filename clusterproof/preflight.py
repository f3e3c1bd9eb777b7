"""Pure rules for what `kubeadm init phase preflight` warns about on a running node (HOST-011..014).

The checks in suites/host/test_host_kubeadm.py gather (getent, systemctl, the cgroup mount, the kubelet's
config and the runtime's answer over the host transport; the kubelet version from the Node object) and
apply these verdicts; nothing here reaches a host. `parse_kubeadm` reads kubeadm's own output, so the
project's tests can hold the suite and kubeadm to the same answers.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from .kube import Version, parse_version
from .verdict import Verdict

CGROUP_V1_REFUSED = Version(1, 35, 0)   # from this kubelet on, cgroup v1 needs failCgroupV1: false
DRIVER_FROM_CRI = Version(1, 31, 0)     # from this kubelet on it uses the driver a runtime's RuntimeConfig names
DRIVERS = ("systemd", "cgroupfs")
KUBELET_CONFIG_DEFAULT = "/var/lib/kubelet/config.yaml"
# `systemctl is-enabled` answers that mean the unit starts at boot (exit status 0 in systemctl's terms).
ENABLED_STATES = ("enabled", "enabled-runtime", "static", "alias", "indirect", "generated", "transient")
_KUBEADM_LINE = re.compile(r"^\s*\[(WARNING|ERROR) ([^\]]+)\]:\s*(.*)$")


# ------------------------------------------------------------------ HOST-011: the node's name resolves

def judge_hostname(host: str, name: str, rc: int, output: str) -> Verdict:
    """HOST-011: `getent ahosts NAME` on the node answers with an address.

    `ahosts` asks getaddrinfo for any family, as kubeadm's lookup does; `getent hosts` asks for IPv6 first and, on a
    node whose /etc/hosts has only an IPv4 line, waits out every DNS server's timeout before it answers."""
    addresses = list(dict.fromkeys(line.split()[0] for line in output.splitlines() if line.split()))
    subject = f"node name {name} on {host}"
    if rc == 0 and addresses:
        return Verdict.passed(subject, "resolves (getent ahosts)", ", ".join(addresses))
    return Verdict.warned(subject, "resolves to an address (getent ahosts, as kubeadm's Hostname check looks it up)",
                          f"does not resolve (getent ahosts exit {rc})",
                          f"add '<node IP> {name}' to /etc/hosts on {host} (or a DNS record for {name})")


# ------------------------------------------------------------------ HOST-012: kubelet enabled at boot

def judge_kubelet_enabled(host: str, systemd_booted: bool, rc: int, output: str) -> Verdict:
    """HOST-012: where systemd is the node's init, `systemctl is-enabled kubelet` says it starts at boot."""
    if not systemd_booted:
        return Verdict.skipped(f"systemd does not run {host} (no /run/systemd/system): the kubelet is started by "
                               "something else, so there is no kubelet unit to be enabled; check that starter's "
                               "boot configuration by hand")
    state = (output.strip().splitlines() or [""])[-1].strip() or f"no answer (exit {rc})"
    subject = f"kubelet.service on {host}"
    if rc == 0 and state in ENABLED_STATES:
        return Verdict.passed(subject, "enabled", state)
    if state == "not-found" or "not found" in state or "No such file" in output:
        return Verdict.warned(subject, "installed and enabled (systemctl is-enabled kubelet)",
                              "no kubelet unit installed", f"install the kubelet package on {host}, then "
                              "systemctl enable --now kubelet")
    return Verdict.warned(subject, "enabled (systemctl is-enabled kubelet), so a reboot starts it", state,
                          f"systemctl enable kubelet on {host}" + (" (it is masked: systemctl unmask kubelet first)"
                                                                   if state.startswith("masked") else ""))


# ------------------------------------------------------------------ HOST-013: cgroup v1 under a new kubelet

def cgroup_version(fs_type: str, memory_is_dir: bool) -> int | None:
    """The cgroup version of /sys/fs/cgroup from its filesystem type (`stat -fc %T`), as kubeadm decides it:
    cgroup2fs is v2; tmpfs with a memory hierarchy under it is v1 (hybrid with no v1 memory counts as v2)."""
    fs_type = fs_type.strip()
    if fs_type == "cgroup2fs":
        return 2
    if fs_type == "tmpfs":
        return 1 if memory_is_dir else 2
    return None


def judge_cgroup_v1(host: str, fs_type: str, memory_is_dir: bool, kubelet_version: str | None) -> Verdict:
    """HOST-013: a kubelet >= 1.35 does not run on cgroup v1 (it refuses unless failCgroupV1: false)."""
    version = cgroup_version(fs_type, memory_is_dir)
    subject = f"cgroup hierarchy on {host}"
    if version is None:
        return Verdict.errored(subject, f"/sys/fs/cgroup is a {fs_type.strip() or 'missing'} filesystem, neither "
                                        "cgroup2fs (v2) nor tmpfs (v1): cannot tell the cgroup version")
    kubelet = parse_version(kubelet_version)
    if version == 2:
        return Verdict.passed(subject, "cgroup v2", f"cgroup v2 (/sys/fs/cgroup is {fs_type.strip()})")
    if kubelet is None:
        return Verdict.skipped(f"{host} is on cgroup v1 but its kubelet version is unknown (no Node object for it, "
                               "or no status.nodeInfo.kubeletVersion): run against the cluster to judge it")
    if kubelet < CGROUP_V1_REFUSED:
        return Verdict.passed(subject, f"cgroup v2, or a kubelet older than {CGROUP_V1_REFUSED}",
                              f"cgroup v1 with kubelet {kubelet} (still supported there)")
    return Verdict.warned(subject, f"cgroup v2 for a kubelet >= {CGROUP_V1_REFUSED}",
                          f"cgroup v1 (/sys/fs/cgroup is tmpfs) with kubelet {kubelet}: it runs only with "
                          "failCgroupV1: false, and a later release drops cgroup v1",
                          f"boot {host} with cgroup v2 (systemd.unified_cgroup_hierarchy=1 on the kernel command "
                          "line, or a distribution release that defaults to it)")


# ------------------------------------------------------------------ HOST-014: cgroup drivers agree

@dataclass(frozen=True)
class Driver:
    """A cgroup driver as one side states it (None: not stated) and where that was read."""

    name: str | None
    source: str


def kubelet_args(cmdline: str) -> dict[str, str]:
    """`--flag=value` and `--flag value` pairs of a kubelet command line (one word a line, NUL- or
    space-separated)."""
    sep = next((s for s in ("\0", "\n") if s in cmdline.strip()), None)
    words = [w.strip() for w in (cmdline.split(sep) if sep else shlex.split(cmdline)) if w.strip()]
    out: dict[str, str] = {}
    for i, w in enumerate(words):
        if not w.startswith("--"):
            continue
        key, eq, value = w[2:].partition("=")
        if not eq and i + 1 < len(words) and not words[i + 1].startswith("--"):
            value = words[i + 1]
        out[key] = value
    return out


def kubelet_driver(args: dict[str, str], config_text: str | None, config_path: str) -> Driver:
    """The kubelet's cgroupDriver: its --cgroup-driver flag, else its config file's cgroupDriver, else the
    kubelet default (cgroupfs) when the file sets none. ValueError for a config that is not YAML."""
    if args.get("cgroup-driver"):
        return Driver(args["cgroup-driver"], "the kubelet's --cgroup-driver flag")
    if config_text is None:
        return Driver(None, f"{config_path} (unreadable)")
    try:
        doc = yaml.safe_load(config_text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{config_path} is not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{config_path} is not a KubeletConfiguration mapping")
    return Driver(str(doc.get("cgroupDriver") or "cgroupfs"),
                  f"{config_path} cgroupDriver" + ("" if doc.get("cgroupDriver") else " (unset: cgroupfs)"))


def configz_driver(text: str) -> Driver:
    """The kubelet's cgroupDriver from its /configz answer (through the API server's node proxy)."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise ValueError("the kubelet's /configz answer is not JSON") from None
    cfg = doc.get("kubeletconfig") if isinstance(doc, dict) else None
    if not isinstance(cfg, dict):
        raise ValueError("the kubelet's /configz answer has no kubeletconfig")
    return Driver(str(cfg.get("cgroupDriver") or "cgroupfs"), "the kubelet's /configz (API server node proxy)")


def runtime_driver(runtime_config: str | None, info: str | None) -> Driver:
    """The runtime's cgroup driver: its CRI RuntimeConfig answer (`crictl runtime-config`), else containerd's
    config in `crictl info -o json` (the default runtime's SystemdCgroup option); None when neither says."""
    if runtime_config:
        m = re.search(r"cgroup_?driver\"?\s*:\s*\"?(\w+)", runtime_config, re.I)
        if m:
            name = m.group(1).lower()
            name = {"systemd": "systemd", "cgroupfs": "cgroupfs"}.get(name, name)
            return Driver(name, "the runtime's CRI RuntimeConfig answer")
    if not info:
        return Driver(None, "no RuntimeConfig answer and no crictl info")
    try:
        doc = json.loads(info)
    except ValueError:
        return Driver(None, "crictl info is not JSON")
    cfg: Any = doc.get("config") if isinstance(doc, dict) else None
    ctd = cfg.get("containerd") if isinstance(cfg, dict) else None
    if not isinstance(ctd, dict):
        return Driver(None, "crictl info carries no containerd config (not containerd, and no RuntimeConfig)")
    default = ctd.get("defaultRuntimeName") or "runc"
    runtime = (ctd.get("runtimes") or {}).get(default) or {}
    options = runtime.get("options") or {}
    systemd = bool(options.get("SystemdCgroup") or options.get("systemd_cgroup") or cfg.get("systemdCgroup"))
    return Driver("systemd" if systemd else "cgroupfs",
                  f"containerd runtime {default!r} SystemdCgroup={'true' if systemd else 'false (unset)'} "
                  "(crictl info)")


def judge_cgroup_driver(host: str, kubelet: Driver, runtime: Driver, from_cri: bool = False) -> Verdict:
    """HOST-014: the kubelet and the runtime manage cgroups with the same driver."""
    subject = f"cgroup drivers on {host}"
    if runtime.name is None:
        return Verdict.skipped(f"{host}: the runtime states no cgroup driver ({runtime.source}); ask it by hand "
                               "(crictl runtime-config, or its config file)")
    if kubelet.name is None:
        return Verdict.skipped(f"{host}: the kubelet's cgroup driver could not be read ({kubelet.source})")
    if from_cri:
        return Verdict.passed(subject, "the kubelet uses the runtime's driver",
                              f"{runtime.name} from the CRI RuntimeConfig, which the kubelet follows")
    if kubelet.name == runtime.name:
        return Verdict.passed(subject, "the same driver", f"{kubelet.name} ({kubelet.source}; {runtime.source})")
    other = f"set SystemdCgroup = {'true' if kubelet.name == 'systemd' else 'false'} in containerd's config"
    return Verdict.warned(subject, "the same driver for the kubelet and the runtime",
                          f"kubelet {kubelet.name} ({kubelet.source}), runtime {runtime.name} ({runtime.source})",
                          f"make them one driver (systemd where systemd is init): {other} and restart the runtime, "
                          f"or set cgroupDriver: {runtime.name} in the kubelet config and restart the kubelet")


# ------------------------------------------------------------------ kubeadm's own output

@dataclass(frozen=True)
class KubeadmFinding:
    level: str      # WARNING or ERROR
    check: str      # kubeadm's check name: Hostname, Service-kubelet, SystemVerification, Port-10250, ...
    text: str


def parse_kubeadm(output: str) -> list[KubeadmFinding]:
    """The `[WARNING X]: ...` / `[ERROR X]: ...` lines of `kubeadm init phase preflight` output."""
    found = []
    for line in output.splitlines():
        m = _KUBEADM_LINE.match(line)
        if m:
            found.append(KubeadmFinding(m.group(1), m.group(2).strip(), m.group(3).strip()))
    return found


def kubeadm_flags(findings: list[KubeadmFinding]) -> dict[str, str]:
    """kubeadm check name -> its worst level (ERROR over WARNING)."""
    out: dict[str, str] = {}
    for f in findings:
        if out.get(f.check) != "ERROR":
            out[f.check] = f.level
    return out
