"""Reading a Linux node's files: sysctl.d, modules-load.d, fstab, /proc/swaps, /proc/net/tcp, CNI configs.

Pure functions over text, so both transports and the project's tests share one parser. The CNI
config files are read by `cni.parse_config_dir` (the project's one reader of /etc/cni/net.d); this
module only asks whether the config it picks puts pods on a Linux bridge.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

from . import cni

# systemd-sysctl's search path, highest precedence first; /etc/sysctl.conf is read last (procps).
SYSCTL_DIRS = ["/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d"]
SYSCTL_CONF = "/etc/sysctl.conf"
MODULES_DIRS = ["/etc/modules-load.d", "/run/modules-load.d", "/usr/local/lib/modules-load.d",
                "/usr/lib/modules-load.d", "/lib/modules-load.d"]
MODULES_FILE = "/etc/modules"  # Debian's own list, read by systemd-modules-load through a symlink
FILE_MARK = "### clusterproof-file "
# The CNI plugin types that put pods on a Linux bridge (so bridged traffic must pass iptables and
# br_netfilter matters): the reference `bridge` plugin (also what kube-router's and kubenet-style
# configs name, on kube-bridge/cbr0), `flannel` (delegates to bridge, cni0), and Weave Net's
# `weave-net` (pods on the `weave` bridge). Calico, Cilium, kindnet (ptp), Antrea/OVN (Open vSwitch),
# macvlan and ipvlan put no Linux bridge between pods.
BRIDGE_CNI_TYPES = ("bridge", "flannel", "weave-net")
BRIDGE_CNI_TEXT = "bridge-based CNI (bridge, flannel), kube-router or Weave Net"
CNI_CONFIG_GLOBS = [f"{cni.CONFIG_DIR}/*{ext}" for ext in cni.CONFIG_SUFFIXES]


def dump_files_script(globs: list[str]) -> str:
    """Shell text printing every file matching the globs, each after a marker line with its path."""
    pats = " ".join(globs)
    return (f"for f in {pats}; do if [ -f \"$f\" ]; then echo \"{FILE_MARK}$f\"; cat \"$f\"; echo; fi; done; true")


def split_dump(text: str) -> dict[str, str]:
    """Parse dump_files_script output into {path: content}."""
    files: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith(FILE_MARK):
            current = line[len(FILE_MARK):]
            files[current] = ""
        elif current is not None:
            files[current] += line + "\n"
    return files


def sysctl_globs() -> list[str]:
    return [f"{d}/*.conf" for d in SYSCTL_DIRS] + [SYSCTL_CONF]


def config_order(files: dict[str, str], dirs: list[str], last: str | None = None) -> list[str]:
    """Files in the order systemd applies them: by basename, a name in an earlier dir masks later ones."""
    chosen: dict[str, str] = {}
    for d in dirs:
        for path in files:
            if posixpath.dirname(path) == d and path.endswith(".conf"):
                chosen.setdefault(posixpath.basename(path), path)
    order = [chosen[name] for name in sorted(chosen)]
    if last and last in files:
        order.append(last)
    return order


def norm_key(key: str) -> str:
    return key.strip().lstrip("-").strip().replace("/", ".")


@dataclass
class Setting:
    value: str
    path: str


def persisted_sysctls(files: dict[str, str]) -> dict[str, Setting]:
    """The value each sysctl gets at boot, and the file that sets it (the last assignment wins)."""
    result: dict[str, Setting] = {}
    for path in config_order(files, SYSCTL_DIRS, SYSCTL_CONF):
        for raw in files[path].splitlines():
            line = raw.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            key, _, value = line.partition("=")
            result[norm_key(key)] = Setting(value.strip(), path)
    return result


def modules_globs() -> list[str]:
    return [f"{d}/*.conf" for d in MODULES_DIRS] + [MODULES_FILE]


def persisted_modules(files: dict[str, str]) -> dict[str, str]:
    """{module: file that loads it at boot} from modules-load.d (and Debian's /etc/modules)."""
    result: dict[str, str] = {}
    for path in config_order(files, MODULES_DIRS, MODULES_FILE):
        for raw in files[path].splitlines():
            line = raw.split("#", 1)[0].split(";", 1)[0].strip()
            if line:
                result.setdefault(line.split()[0].replace("-", "_"), path)
    return result


def active_swap_entries(fstab: str) -> list[str]:
    """fstab lines that turn swap on at boot (type swap, not commented, not noauto)."""
    found = []
    for raw in fstab.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "swap":
            opts = fields[3].split(",") if len(fields) > 3 else []
            if "noauto" not in opts:
                found.append(line)
    return found


def swaps_in_use(proc_swaps: str) -> list[str]:
    """Active swap areas from /proc/swaps (the first line is a header)."""
    return [ln.strip() for ln in proc_swaps.splitlines()[1:] if ln.strip()]


def listening_ports(proc_net_tcp: str) -> set[int]:
    """TCP ports in state LISTEN (0A) from /proc/net/tcp and /proc/net/tcp6 text."""
    ports = set()
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] == "sl" or ":" not in fields[1]:
            continue
        if fields[3] == "0A":
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def cni_uses_bridge(files: dict[str, str]) -> tuple[bool | None, str]:
    """(True/False, why) for whether pods sit on a Linux bridge; (None, why) when no CNI config can be loaded.

    Judged on the config the runtime loads, as `cni.parse_config_dir` picks it: the first valid file in
    lexical order (as the kubelet/containerd, CRI-O and CNI-002 do); a bridge config after it is unused.
    """
    cfg = cni.parse_config_dir(files)
    if cfg.loaded is None:
        why = f"no CNI config in {cni.CONFIG_DIR}"
        return None, why + (f" that the runtime can load ({'; '.join(cfg.problems)})" if files else "")
    skipped = f"; skipped {'; '.join(cfg.problems)}" if cfg.problems else ""
    bridged = [t for t in BRIDGE_CNI_TYPES if t in cfg.plugins]
    if bridged:
        return True, f"{cfg.loaded} uses the {'/'.join(bridged)} plugin (a Linux bridge){skipped}"
    return False, f"{cfg.loaded} uses {', '.join(cfg.plugins)} (no Linux bridge){skipped}"


# ------------------------------------------------------------------ asking a Host (either transport)

def read_sysctl(host, key: str) -> str | None:
    """The live value of a sysctl on the host (its own network namespace), None when it does not exist."""
    from .checks import evidence

    path = "/proc/sys/" + key.replace(".", "/")
    r = host.run(f"cat {path}")
    evidence(f"{host.id}: cat {path}", r.evidence())
    return r.stdout.strip() if r.rc == 0 else None


def read_files(host, globs: list[str], what: str) -> dict[str, str]:
    """{path: text} of the host's files matching the globs (evidence: every file shown)."""
    from .checks import evidence

    r = host.run(dump_files_script(globs))
    evidence(f"{host.id}: {what} ({' '.join(globs)})", r.evidence())
    return split_dump(r.stdout)


def bridge_cni(host) -> tuple[bool | None, str]:
    """Whether the host's CNI puts pods on a Linux bridge, and why (see cni_uses_bridge)."""
    return cni_uses_bridge(read_files(host, CNI_CONFIG_GLOBS, "CNI configs"))
