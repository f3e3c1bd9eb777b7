"""Which CNI a cluster runs, where its pod addresses come from, and whether those sources agree.

Pure functions over API objects (kubernetes client models or anything shaped like them) and host
file texts, so they are unit-tested without a cluster; `detect_from_api(api_client, nodes)` and
`gather_cidr_sources(api_client, nodes)` are the two thin wrappers that read the API.

- `detect(daemonsets, host_configs=None, nodes=()) -> Detection`: the project's one CNI detector.
  The CNI's name ("calico", "cilium", "flannel", "weave", "kube-router", ..., "bridge" from a
  config file, or "unknown") and display title, the agent DaemonSets that run it, and what told
  us: agent DaemonSets first, then the nodes' annotations, then the hosts' CNI configs. The run's
  snapshot carries its result (`ClusterFacts.cni_detection`; `.cni` is its title).
- `parse_config_dir(files) -> ConfigDir`: the network config the runtime loads from /etc/cni/net.d
  (the first valid file by name, as containerd and CRI-O choose it) and the problems found.
- `cidr_disagreements(sources, node_cidrs)`: rows where kubeadm-config `podSubnet`, the
  controller-manager's `--cluster-cidr`, Calico IPPools and node podCIDRs contradict each other.
- `pod_ip_violations(pods, cni, sources, node_cidrs)`: rows for pod IPs outside the range they must be in.
"""
from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from . import timeouts

# (name, words found in an agent DaemonSet's name, container names or images). Order matters:
# canal ships calico and flannel containers; multus is a meta-plugin and names no network.
KNOWN: list[tuple[str, tuple[str, ...]]] = [
    ("cilium", ("cilium",)),
    ("canal", ("canal",)),
    ("calico", ("calico-node", "calico/node", "calico")),
    ("flannel", ("flannel",)),
    ("weave", ("weave-net", "weaveworks/weave", "weave-kube")),
    ("kube-router", ("kube-router",)),
    ("antrea", ("antrea",)),
    ("kube-ovn", ("kube-ovn",)),
    ("ovn-kubernetes", ("ovnkube",)),
    ("kindnet", ("kindnet",)),
    ("aws-vpc-cni", ("aws-node", "amazon-k8s-cni")),
    ("azure-cni", ("azure-cns", "azure-vnet")),
]
# (name, words in a Node annotation key the CNI writes), for CNIs whose agents we cannot see (no RBAC,
# an unusual DaemonSet name). Calico and flannel annotations together are canal.
NODE_HINTS: list[tuple[str, tuple[str, ...]]] = [
    ("cilium", ("cilium",)),
    ("calico", ("projectcalico.org",)),
    ("flannel", ("flannel.alpha.coreos.com", "flannel")),
    ("weave", ("weave",)),
    ("kube-router", ("kube-router",)),
    ("antrea", ("antrea",)),
    ("kube-ovn", ("ovn.kubernetes.io",)),
    ("ovn-kubernetes", ("k8s.ovn.org",)),
    ("kindnet", ("kindnet",)),
]
# Meta-plugins that delegate to a real CNI: reported among the others, never as the CNI.
META = {"multus": ("multus",)}
# How the report names each CNI.
TITLES = {
    "cilium": "Cilium", "canal": "Canal", "calico": "Calico", "flannel": "Flannel", "weave": "Weave Net",
    "kube-router": "kube-router", "antrea": "Antrea", "kube-ovn": "Kube-OVN", "ovn-kubernetes": "OVN-Kubernetes",
    "kindnet": "kindnet", "aws-vpc-cni": "Amazon VPC CNI", "azure-cni": "Azure CNI", "bridge": "bridge",
    "ptp": "ptp", "macvlan": "macvlan", "ipvlan": "ipvlan", "multus": "Multus",
}
# CNI config plugin types -> the CNI's name.
CONFIG_TYPES = {
    "calico": "calico", "flannel": "flannel", "cilium-cni": "cilium", "weave-net": "weave",
    "antrea": "antrea", "kube-ovn": "kube-ovn", "ovn-k8s-cni-overlay": "ovn-kubernetes",
    "aws-cni": "aws-vpc-cni", "azure-vnet": "azure-cni", "bridge": "bridge", "ptp": "ptp",
    "macvlan": "macvlan", "ipvlan": "ipvlan",
}
# CNIs whose IPAM hands out each node's podCIDR (host-local): a pod's IP lies in its node's podCIDR.
PER_NODE_IPAM = {"bridge", "ptp", "flannel", "canal", "kindnet", "kube-router"}
CONFIG_SUFFIXES = (".conf", ".conflist", ".json")
CONFIG_DIR = "/etc/cni/net.d"

# CNI-006: who enforces NetworkPolicy. A CNI that enforces it on its own (Calico's Felix, Cilium, kube-router's
# firewall, weave-npc, Antrea, Kube-OVN, OVN-Kubernetes; Canal is flannel with Calico's policy), each with where to
# look when its policies do not hold; one that has no policy engine at all (the reference plugins and flannel: a
# policy-only add-on is then needed); and one whose enforcement is an optional part that is off by default or in
# older releases, each with how to turn it on. A CNI in none of them is unknown to CNI-006.
POLICY_ENFORCERS: dict[str, str] = {
    "calico": "check Felix in calico-node on the server's node (kubectl -n calico-system logs ds/calico-node "
              "-c calico-node, or -n kube-system) for policy errors",
    "canal": "check Felix in the canal pod on the server's node (kubectl -n kube-system logs ds/canal -c calico-node)",
    "cilium": "cilium status in the agent on the server's node; policy enforcement must not be off "
              "(cilium config view | grep enable-policy: default or always, not never)",
    "kube-router": "run kube-router with its firewall on (--run-firewall=true) and read its logs for the policy "
                   "sync (kubectl -n kube-system logs ds/kube-router)",
    "weave": "the weave-npc container must run in every weave-net pod (kubectl -n kube-system logs ds/weave-net "
             "-c weave-npc)",
    "antrea": "check antrea-controller and the antrea-agent on the server's node (kubectl -n kube-system logs "
              "deploy/antrea-controller; antctl get networkpolicy)",
    "kube-ovn": "kube-ovn-controller must run with NetworkPolicy support on (--enable-np=true); read its logs",
    "ovn-kubernetes": "check ovnkube-controller on the server's node and its logs for the policy's ACLs",
}
POLICY_NONE = frozenset({"bridge", "ptp", "macvlan", "ipvlan", "host-device", "flannel"})
POLICY_OPTIONAL: dict[str, str] = {
    "aws-vpc-cni": "turn on the VPC CNI's network policy agent (enableNetworkPolicy=true in the aws-node "
                   "configuration, VPC CNI >= 1.14) or install a policy engine such as Calico in policy-only mode",
    "azure-cni": "create the cluster with a network policy engine (--network-policy azure, calico or cilium)",
    "kindnet": "use a kindnet release that runs its network policy controller, or install a policy-capable CNI",
}


def policy_support(name: str) -> str:
    """Whether the CNI enforces NetworkPolicy: "yes", "no" (it has no policy engine), "optional" (an add-on that may
    be off) or "unknown" (CNI-006 does not know it, or the CNI was not detected)."""
    if name in POLICY_ENFORCERS:
        return "yes"
    if name in POLICY_NONE:
        return "no"
    if name in POLICY_OPTIONAL:
        return "optional"
    return "unknown"


def _get(obj: Any, *path: str) -> Any:
    """obj.a.b or obj["a"]["b"], None when missing (API models and plain dicts alike)."""
    for p in path:
        if obj is None:
            return None
        obj = obj.get(p) if isinstance(obj, dict) else getattr(obj, p, None)
    return obj


@dataclass
class Detection:
    """What the cluster's CNI is and what said so."""

    name: str                                            # e.g. "calico", "bridge", "unknown"
    agents: list[str] = field(default_factory=list)      # "namespace/name" of its agent DaemonSets
    evidence: list[str] = field(default_factory=list)    # one line per thing that told us
    others: list[str] = field(default_factory=list)      # other CNIs seen (e.g. a leftover flannel, multus)
    version: str | None = None                           # the agent image's tag ("v3.27.0"), when it has one

    @property
    def known(self) -> bool:
        return self.name != "unknown"

    @property
    def title(self) -> str | None:
        """The CNI's display name and version ("Calico v3.27.0", "Weave Net", ...); None when not detected."""
        if not self.known:
            return None
        return TITLES.get(self.name, self.name) + (f" {self.version}" if self.version else "")

    def text(self) -> str:
        """Evidence text: what was detected and what said so."""
        return f"detected: {self.name}\n" + "\n".join(self.evidence) + \
            (f"\nalso seen: {', '.join(self.others)}" if self.others else "")


def _words(ds: Any) -> str:
    containers = (_get(ds, "spec", "template", "spec", "containers") or []) + \
        (_get(ds, "spec", "template", "spec", "init_containers") or _get(ds, "spec", "template", "spec",
                                                                           "initContainers") or [])
    parts = [_get(ds, "metadata", "name") or ""]
    for c in containers:
        parts += [_get(c, "name") or "", _get(c, "image") or ""]
    return " ".join(parts).lower()


def _annotations(node: Any) -> tuple[str, dict[str, str]]:
    """(name, annotations) of a NodeFacts or a V1Node."""
    ann = getattr(node, "annotations", None)
    if isinstance(ann, dict):
        return str(getattr(node, "name", "")), ann
    return str(_get(node, "metadata", "name") or ""), dict(_get(node, "metadata", "annotations") or {})


def _by_annotations(nodes: Iterable[Any]) -> dict[str, list[str]]:
    """CNI name -> evidence lines ("node n1 annotation projectcalico.org/IPv4Address")."""
    found: dict[str, list[str]] = {}
    for node in nodes:
        name, ann = _annotations(node)
        for key in sorted(ann):
            low = key.lower()
            for cni_name, hints in NODE_HINTS:
                if any(h in low for h in hints):
                    found.setdefault(cni_name, []).append(f"node {name} annotation {key}")
                    break
    if "calico" in found and "flannel" in found:
        found["canal"] = found.pop("calico") + found.pop("flannel")
    return found


def image_tag(image: str) -> str | None:
    """The tag of an image reference ("v2.1.0" of "docker.io/cloudnativelabs/kube-router:v2.1.0"); None for none,
    "latest", or a digest-only reference."""
    ref = image.split("@", 1)[0]
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag or tag in ("", "latest"):
        return None
    return tag


def _agent_version(ds: Any, keys: tuple[str, ...]) -> str | None:
    """The tag of the DaemonSet's first container whose image names the CNI (KNOWN keys)."""
    for c in _get(ds, "spec", "template", "spec", "containers") or []:
        image = str(_get(c, "image") or "")
        if any(k in image.lower() for k in keys):
            return image_tag(image)
    return None


def detect(daemonsets: Iterable[Any] = (), host_configs: dict[str, ConfigDir] | None = None,
           nodes: Iterable[Any] = ()) -> Detection:
    """Name the CNI from agent DaemonSets (all namespaces), else the nodes' annotations, else the hosts' configs."""
    found: dict[str, list[str]] = {}
    versions: dict[str, str] = {}
    meta: set[str] = set()
    for ds in daemonsets:
        words = _words(ds)
        ref = f"{_get(ds, 'metadata', 'namespace')}/{_get(ds, 'metadata', 'name')}"
        for name, keys in KNOWN:
            if any(k in words for k in keys):
                found.setdefault(name, []).append(ref)
                version = _agent_version(ds, keys)
                if version:
                    versions.setdefault(name, version)
                break
        else:
            meta.update(m for m, keys in META.items() if any(k in words for k in keys))
    by_node = _by_annotations(nodes)
    by_config: dict[str, list[str]] = {}
    for node, cfg in sorted((host_configs or {}).items()):
        if cfg.loaded and cfg.cni:
            by_config.setdefault(cfg.cni, []).append(f"{cfg.loaded} on {node}")
    order = [n for n, _ in KNOWN]
    if found:
        name = min(found, key=order.index)
        ev = [f"DaemonSet {ref}" for ref in found[name]] + by_node.get(name, [])[:3] + by_config.get(name, [])
        others = sorted((set(found) | set(by_node) | set(by_config) | meta) - {name})
        return Detection(name, list(found[name]), ev, others, versions.get(name))
    if by_node:
        name = max(by_node, key=lambda n: len(by_node[n]))
        others = sorted((set(by_node) | set(by_config) | meta) - {name})
        return Detection(name, [], by_node[name][:5] + by_config.get(name, []), others)
    if by_config:
        name = max(by_config, key=lambda n: len(by_config[n]))
        return Detection(name, [], by_config[name], sorted((set(by_config) | meta) - {name}))
    return Detection("unknown", [], ["no known CNI agent DaemonSet in any namespace, no CNI annotation on any node"
                                     + ("" if host_configs else "; host CNI configs not read")], sorted(meta))


def detect_from_api(api_client: Any, nodes: Iterable[Any] = ()) -> Detection:
    """`detect` over every DaemonSet in the cluster and the given nodes; an API error is kept as evidence."""
    from kubernetes import client

    try:
        dss = client.AppsV1Api(api_client).list_daemon_set_for_all_namespaces(
            _request_timeout=timeouts.get("api")).items
        err = None
    except Exception as exc:  # RBAC, a flaky API server: detection is best effort, the node hints still count
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        dss, err = [], f"cannot list DaemonSets: {type(exc).__name__}: {first}"
    got = detect(dss, None, nodes)
    if err:
        got.evidence.insert(0, err)
    return got


# ------------------------------------------------------------------ CNI config on a host

@dataclass
class ConfigDir:
    """The CNI config files of one host and the one the runtime loads."""

    files: dict[str, str]                     # path -> text
    loaded: str | None = None                 # the file the runtime uses (first valid by name)
    cni: str | None = None                    # the CNI name its first plugin type maps to
    plugins: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_config_dir(files: dict[str, str]) -> ConfigDir:
    """Which config the runtime loads: the first file by name that parses and names a plugin type."""
    out = ConfigDir(dict(files))
    for path in sorted(files):
        if not path.endswith(CONFIG_SUFFIXES):
            continue
        try:
            doc = json.loads(files[path])
        except ValueError as exc:
            out.problems.append(f"{path}: not valid JSON ({str(exc)[:80]})")
            continue
        plugins = doc.get("plugins") if isinstance(doc, dict) and "plugins" in doc else [doc]
        types: list[str] = [p["type"] for p in plugins or [] if isinstance(p, dict) and p.get("type")]
        if not types:
            out.problems.append(f"{path}: names no plugin type")
            continue
        out.loaded, out.plugins = path, types
        out.cni = CONFIG_TYPES.get(types[0], types[0])
        break
    if not files:
        out.problems.append(f"no files in {CONFIG_DIR}")
    elif out.loaded is None and not out.problems:
        out.problems.append(f"no *.conf, *.conflist or *.json file in {CONFIG_DIR}")
    return out


CONFIG_DIR_SCRIPT = (
    f"if [ ! -d {CONFIG_DIR} ]; then echo '=== MISSING-DIR'; exit 0; fi; "
    f"for f in {CONFIG_DIR}/*; do [ -f \"$f\" ] || continue; echo \"=== $f\"; cat \"$f\"; echo; done"
)


def split_config_dump(text: str) -> dict[str, str] | None:
    """Files from CONFIG_DIR_SCRIPT's output (path -> text); None when the folder does not exist."""
    files: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("=== "):
            current = line[4:].strip()
            if current == "MISSING-DIR":
                return None
            files[current] = ""
        elif current:
            files[current] += line + "\n"
    return files


# ------------------------------------------------------------------ pod CIDR sources

def _nets(values: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if part:
                out.append(ipaddress.ip_network(part, strict=False))
    return out


def kubeadm_pod_subnet(cluster_configuration: str | None) -> list[str]:
    """networking.podSubnet of kubeadm's ClusterConfiguration YAML (comma-separated for dual stack)."""
    import yaml

    if not cluster_configuration:
        return []
    doc = yaml.safe_load(cluster_configuration) or {}
    sub = (doc.get("networking") or {}).get("podSubnet") or ""
    return [s.strip() for s in str(sub).split(",") if s.strip()]


def controller_manager_cidr(pods: Iterable[Any]) -> list[str]:
    """--cluster-cidr of a kube-controller-manager static pod (with --allocate-node-cidrs)."""
    for pod in pods:
        for c in _get(pod, "spec", "containers") or []:
            for arg in (_get(c, "command") or []) + (_get(c, "args") or []):
                if str(arg).startswith("--cluster-cidr="):
                    return [s for s in str(arg).split("=", 1)[1].split(",") if s]
    return []


def calico_pools(pools: Iterable[dict]) -> list[str]:
    """spec.cidr of the enabled Calico IPPools."""
    return [p["spec"]["cidr"] for p in pools if _get(p, "spec", "cidr") and not _get(p, "spec", "disabled")]


def node_pod_cidrs(node: Any) -> list[str]:
    """spec.podCIDRs of a Node (pod_cidrs in newer clients, pod_cid_rs in older ones), else spec.podCIDR."""
    spec = _get(node, "spec")
    many = _get(spec, "pod_cidrs") or _get(spec, "pod_cid_rs") or _get(spec, "podCIDRs")
    one = _get(spec, "pod_cidr") or _get(spec, "podCIDR")
    return list(many or ([one] if one else []))


def pod_ips(pod: Any) -> list[str]:
    """status.podIPs of a Pod (pod_ips in newer clients, pod_i_ps in older ones), else status.podIP."""
    st = _get(pod, "status")
    many = _get(st, "pod_ips") or _get(st, "pod_i_ps") or _get(st, "podIPs") or []
    found = [i.get("ip") if isinstance(i, dict) else getattr(i, "ip", None) for i in many]
    ips: list[str] = [i for i in found if i]
    one = _get(st, "pod_ip") or _get(st, "podIP")
    return ips or ([one] if one else [])


def _within(net, ranges) -> bool:
    return any(net.version == r.version and net.subnet_of(r) for r in ranges)


def cidr_disagreements(sources: dict[str, list[str]], node_cidrs: dict[str, list[str]]) -> list[str]:
    """Rows where the pod-CIDR sources contradict each other.

    sources: cluster-wide ranges by source ("kubeadm-config podSubnet", "kube-controller-manager
    --cluster-cidr", "Calico IPPool"); node_cidrs: node -> its podCIDRs.
    """
    rows = []
    cluster = {k: _nets(v) for k, v in sources.items() if v and k != "Calico IPPool"}
    pools = _nets(sources.get("Calico IPPool", []))
    names = sorted(cluster)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if sorted(map(str, cluster[a])) != sorted(map(str, cluster[b])):
                rows.append(f"{a} {', '.join(map(str, cluster[a]))} differs from {b} "
                            f"{', '.join(map(str, cluster[b]))}")
    for name in names:
        for pool in pools:
            if not _within(pool, cluster[name]):
                rows.append(f"Calico IPPool {pool} is outside {name} {', '.join(map(str, cluster[name]))}")
        for node, cidrs in sorted(node_cidrs.items()):
            for c in _nets(cidrs):
                if not _within(c, cluster[name]):
                    rows.append(f"node {node} podCIDR {c} is outside {name} {', '.join(map(str, cluster[name]))}")
    seen: list[tuple[str, Any]] = []
    for node, cidrs in sorted(node_cidrs.items()):
        for c in _nets(cidrs):
            for other, oc in seen:
                if c.version == oc.version and c.overlaps(oc):
                    rows.append(f"node {node} podCIDR {c} overlaps node {other} podCIDR {oc}")
            seen.append((node, c))
    return rows


def expected_ranges(cni: str, sources: dict[str, list[str]], node_cidrs: dict[str, list[str]]) -> tuple[str, dict]:
    """How pod IPs are judged: ("per-node", {node: nets}) or ("cluster", {"*": nets}); ("", {}) when unknown."""
    nodes = {n: _nets(c) for n, c in node_cidrs.items() if c}
    if cni in PER_NODE_IPAM and nodes:
        return "per-node", nodes
    for key in ("Calico IPPool", "kubeadm-config podSubnet", "kube-controller-manager --cluster-cidr"):
        if sources.get(key):
            return "cluster", {"*": _nets(sources[key]), "source": key}
    if nodes:
        return "cluster", {"*": [c for cs in nodes.values() for c in cs], "source": "node podCIDRs"}
    return "", {}


def pod_ip_violations(pods: Iterable[Any], cni: str, sources: dict[str, list[str]],
                      node_cidrs: dict[str, list[str]]) -> tuple[list[str], str, int]:
    """(rows for pod IPs outside their range, a description of the rule, pods judged). hostNetwork pods skipped."""
    mode, ranges = expected_ranges(cni, sources, node_cidrs)
    if not mode:
        return [], "", 0
    if mode == "per-node":
        rule = "each pod's IP inside its node's podCIDR"
    else:
        rule = f"every pod IP inside {', '.join(map(str, ranges['*']))} ({ranges['source']})"
    rows, judged = [], 0
    for pod in pods:
        if _get(pod, "spec", "host_network") or _get(pod, "spec", "hostNetwork"):
            continue
        ips = pod_ips(pod)
        if not ips:
            continue
        node = _get(pod, "spec", "node_name") or _get(pod, "spec", "nodeName")
        allowed = ranges.get(node, []) if mode == "per-node" else ranges["*"]
        if mode == "per-node" and node not in ranges:
            continue  # a node without podCIDR: nothing to judge against
        judged += 1
        for ip in ips:
            addr = ipaddress.ip_address(ip)
            if not any(addr.version == r.version and addr in r for r in allowed):
                name = f"{_get(pod, 'metadata', 'namespace')}/{_get(pod, 'metadata', 'name')}"
                rows.append(f"pod {name} on {node}: IP {ip} outside {', '.join(map(str, allowed)) or 'any range'}")
    return rows, rule, judged


def gather_cidr_sources(api_client: Any, nodes: Iterable[Any]) -> tuple[dict[str, list[str]], dict[str, list[str]],
                                                                        list[str]]:
    """(cluster-wide sources, node podCIDRs, evidence lines) read from the API; a missing source is left out.

    `nodes` are the run's nodes (NodeFacts, with `name` and `pod_cidrs`): they are not listed again.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    t = timeouts.get("api")
    core = client.CoreV1Api(api_client)
    sources: dict[str, list[str]] = {}
    ev: list[str] = []
    try:
        cm = core.read_namespaced_config_map("kubeadm-config", "kube-system", _request_timeout=t)
        sub = kubeadm_pod_subnet((cm.data or {}).get("ClusterConfiguration"))
        ev.append(f"kube-system/kubeadm-config podSubnet: {sub or 'not set'}")
        if sub:
            sources["kubeadm-config podSubnet"] = sub
    except ApiException as exc:
        if exc.status != 404:  # a 403 or 5xx is not "no such source": the check cannot judge without it
            raise
        ev.append("kube-system/kubeadm-config: 404 Not Found (not a kubeadm cluster)")
    cm_pods = core.list_namespaced_pod("kube-system", label_selector="component=kube-controller-manager",
                                       _request_timeout=t).items
    ccidr = controller_manager_cidr(cm_pods)
    ev.append(f"kube-controller-manager pods: {len(cm_pods)}, --cluster-cidr: {ccidr or 'not seen'}")
    if ccidr:
        sources["kube-controller-manager --cluster-cidr"] = ccidr
    custom = client.CustomObjectsApi(api_client)
    for group, version in (("crd.projectcalico.org", "v1"), ("projectcalico.org", "v3")):
        try:
            # typed as object by the client; a list call returns the decoded JSON body, a dict with "items"
            resp = cast(dict[str, Any], custom.list_cluster_custom_object(group, version, "ippools",
                                                                           _request_timeout=t))
            pools = resp["items"]
        except ApiException as exc:
            if exc.status != 404:  # 404: that API group is not served (no Calico); anything else is an error
                raise
            continue
        cidrs = calico_pools(pools)
        ev.append(f"Calico IPPools ({group}/{version}): {cidrs}")
        if cidrs:
            sources["Calico IPPool"] = cidrs
        break
    node_cidrs = {n.name: list(n.pod_cidrs) for n in nodes}
    ev.append("node podCIDRs: " + ", ".join(f"{k}={v}" for k, v in sorted(node_cidrs.items())))
    return sources, node_cidrs, ev


# ------------------------------------------------------------------ CNI-005: which node pairs to probe

# Every ordered pair up to this many nodes (90 pairs); beyond it a cover that grows linearly with the nodes.
ALL_PAIRS_UP_TO = 10
SAMPLED_PER_NODE = 2


def node_pairs(nodes: list[str], all_up_to: int = ALL_PAIRS_UP_TO,
               per_node: int = SAMPLED_PER_NODE) -> tuple[list[tuple[str, str]], str]:
    """The (source, destination) node pairs CNI-005 probes, and one line that says how they were chosen.

    Up to `all_up_to` nodes: every ordered pair. Beyond: a deterministic cover that every node is the source and
    the destination of, the ring of the sorted names (each node to the next, the last to the first), plus a sample
    of `per_node` x N other pairs drawn with a seed made of the node names (the same cluster gets the same pairs in
    every run, so two runs compare; the line names the seed's count and the sample size)."""
    import hashlib
    import itertools
    import random

    names = sorted(nodes)
    n = len(names)
    if n <= all_up_to:
        return list(itertools.permutations(names, 2)), f"every ordered pair of the {n} Ready nodes ({n * (n - 1)})"
    ring = [(names[i], names[(i + 1) % n]) for i in range(n)]
    seed = int.from_bytes(hashlib.sha256("\n".join(names).encode()).digest()[:8], "big")
    rng = random.Random(seed)
    chosen = set(ring)
    want = len(ring) + per_node * n
    while len(chosen) < want:
        a, b = rng.sample(names, 2)
        chosen.add((a, b))
    pairs = ring + sorted(chosen - set(ring))
    return pairs, (f"{len(pairs)} of the {n * (n - 1)} ordered pairs of the {n} Ready nodes: the ring of the sorted "
                   f"names (every node a source and a destination) and {len(pairs) - n} sampled (seed "
                   f"{seed:016x}, from the node names)")
