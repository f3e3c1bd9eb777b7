"""Linux namespaces of a pod's containers: read inside the pod, or from the node through the runtime.

Pure parsing plus the shell text the checks run, so the rules are unit-tested without a cluster.
A namespace is identified by its link text (`net:[4026532516]`), as `ls -l /proc/<pid>/ns` shows.
"""
from __future__ import annotations

import re
import shlex

from .verdict import Verdict

KINDS = ("net", "ipc", "uts", "mnt", "pid")
SHARED = ("net", "ipc", "uts")           # always shared by a pod's containers (and its pause container)
_LINK = re.compile(r"\b(net|ipc|uts|mnt|pid|user|cgroup|time):\[(\d+)\]")

# Run inside a container: one link per line, e.g. net:[4026532516] (busybox readlink takes one path).
IN_POD_ARGV = ["sh", "-c", f"for n in {' '.join(KINDS)}; do readlink /proc/self/ns/$n || ls -l /proc/self/ns/$n; done"]


def parse_links(text: str) -> dict[str, str]:
    """{kind: inode} from readlink / `ls -l /proc/PID/ns` output."""
    return {m.group(1): m.group(2) for m in _LINK.finditer(text or "")}


def compare(a: dict[str, str], b: dict[str, str], kinds: tuple[str, ...]) -> list[str]:
    """Kinds among `kinds` whose inodes differ (or are missing) between a and b."""
    return [k for k in kinds if not a.get(k) or a.get(k) != b.get(k)]


def node_script(namespace: str, pod: str, endpoint: str) -> str:
    """sh text for the node: the pod's sandbox (pause) and containers via crictl, with their namespaces.

    Every crictl call asks `endpoint`, the CRI socket CRI-001 found on the node (`cri.choose_socket`: the node's
    cri-socket annotation, else the runtime socket detected at a known path), never crictl's own default.
    Prints `pause PID LINKS...` and `container NAME PID LINKS...` lines, then `ls -l /proc/PID/ns` of each
    (the course's view). Exit 3: crictl missing; exit 4: no ready sandbox for the pod on this node.
    """
    ns_re, pod_re = shlex.quote(f"^{re.escape(namespace)}$"), shlex.quote(f"^{re.escape(pod)}$")
    crictl = f"crictl --runtime-endpoint {shlex.quote('unix://' + endpoint.removeprefix('unix://'))} --timeout 10s"
    links = f"$(for n in {' '.join(KINDS)}; do readlink /proc/$pid/ns/$n; done)"
    pid_of = ("sed -n 's/.*\"pid\": *\\([0-9][0-9]*\\).*/\\1/p' | head -1")
    return (
        "command -v crictl >/dev/null 2>&1 || { echo 'crictl not found'; exit 3; }; "
        f"sb=$({crictl} pods -q --state ready --namespace {ns_re} --name {pod_re} 2>/dev/null | head -1); "
        "[ -n \"$sb\" ] || { echo 'no ready sandbox'; exit 4; }; echo \"sandbox $sb\"; "
        f"pid=$({crictl} inspectp -o go-template --template '{{{{.info.pid}}}}' \"$sb\" 2>/dev/null); "
        f"case \"$pid\" in ''|*[!0-9]*) pid=$({crictl} inspectp \"$sb\" 2>/dev/null | {pid_of});; esac; "
        f"echo \"pause $pid \"{links}; all=\"$pid\"; "
        f"for c in $({crictl} ps -q --pod \"$sb\" 2>/dev/null); do "
        f"name=$({crictl} inspect -o go-template --template '{{{{.status.metadata.name}}}}' \"$c\" 2>/dev/null); "
        f"pid=$({crictl} inspect -o go-template --template '{{{{.info.pid}}}}' \"$c\" 2>/dev/null); "
        f"case \"$pid\" in ''|*[!0-9]*) pid=$({crictl} inspect \"$c\" 2>/dev/null | {pid_of});; esac; "
        f"echo \"container ${{name:-$c}} $pid \"{links}; all=\"$all $pid\"; done; "
        "for p in $all; do echo \"# ls -l /proc/$p/ns\"; ls -l /proc/$p/ns; done"
    )


def parse_node_output(text: str) -> tuple[dict[str, str] | None, dict[str, dict[str, str]], dict[str, str]]:
    """(pause links, {container name: links}, {name: pid}) from node_script's output."""
    pause, containers, pids = None, {}, {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "pause":
            pause = parse_links(line)
            pids["pause"] = parts[1]
        elif len(parts) >= 3 and parts[0] == "container":
            containers[parts[1]] = parse_links(line)
            pids[parts[1]] = parts[2]
    return pause, containers, pids


def judge_pause(subject: str, pause: dict[str, str] | None, containers: dict[str, dict[str, str]],
                pids: dict[str, str], names: tuple[str, ...]) -> Verdict:
    """POD-003 on node_script's parsed output: the pause process and every container in `names` found, and each
    container's net, ipc, uts equal to the pause process's."""
    missing = [n for n in names if n not in containers]
    if not pause or missing:
        return Verdict.failed(subject, f"the pause process and the containers {', '.join(names)} with their namespaces",
                              f"pause {'found' if pause else 'not found'}, containers {sorted(containers) or 'none'}"
                              + (f" ({', '.join(missing)} missing)" if missing else ""),
                              "check crictl inspectp/inspect print info.pid and crictl ps lists the pod's running "
                              "containers (crictl --version; the runtime's CRI debug info)")
    rows = [f"{k}: pause (pid {pids.get('pause')}) {pause.get(k)} vs {name} (pid {pids.get(name)}) {links.get(k)}"
            for name, links in sorted(containers.items()) for k in compare(pause, links, SHARED)]
    expected = "net, ipc, uts of every container equal to the pause container's"
    if rows:
        return Verdict.failed(subject, expected, "; ".join(rows[:3]), "the runtime must start containers in the "
                              "sandbox's namespaces; check the runtime's sandbox (pause) image setting and version",
                              rows=rows)
    return Verdict.passed(subject, expected, f"{len(containers)} containers share the pause process's "
                          f"{', '.join(SHARED)}")
