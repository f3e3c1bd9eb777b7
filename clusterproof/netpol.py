"""CNI-006, NetworkPolicy enforced: what the clients saw, classified, and the one rule that judges it.

The check (suites/network/test_netpol.py) runs a server probe pod and two client probe pods labelled
`clusterproof.io/netpol-role=server|allowed|denied`, and probes the server's HTTP port from both clients
in rounds: before any policy (the baseline), after a default-deny ingress policy on the server
(manifests/network/netpol-deny-ingress.yaml), and after a policy that lets the allowed client in
(netpol-allow-from-allowed.yaml). Pure functions over those observations, unit-tested without a cluster:

- `classify(outcome, body, detail, want)`: one probe's state, `connected` (the server answered with its own
  text), `blocked` (refused, timed out, no route), `answered` (something answered, not the server's text, or an
  HTTP error: the packet got through) or `inconclusive` (the exec transport or the probe tool failed).
- `judge(setup, baseline, deny, allow)`: the verdict. Deny not enforced is a WARN on a CNI that has no policy
  engine (or an optional one: `cni.policy_support`), a FAIL naming the CNI on one that enforces policy, a FAIL
  on an unknown CNI; an allow rule not honoured is a FAIL; a probe that could not run is an ERROR.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import cni
from .verdict import Verdict

ROLE = "clusterproof.io/netpol-role"
SERVER, ALLOWED, DENIED = "server", "allowed", "denied"
CLIENTS = (ALLOWED, DENIED)
DENY_POLICY = "network/netpol-deny-ingress.yaml"
ALLOW_POLICY = "network/netpol-allow-from-allowed.yaml"

CONNECTED, BLOCKED, ANSWERED, INCONCLUSIVE = "connected", "blocked", "answered", "inconclusive"
# What each step expects of each client (by role).
BASELINE_WANTS = {ALLOWED: CONNECTED, DENIED: CONNECTED}
DENY_WANTS = {ALLOWED: BLOCKED, DENIED: BLOCKED}
ALLOW_WANTS = {ALLOWED: CONNECTED, DENIED: BLOCKED}


@dataclass(frozen=True)
class Seen:
    """One client's probe of the server: its role, its pod, the state and what the probe said."""

    role: str
    pod: str
    state: str
    detail: str

    def line(self) -> str:
        return f"{self.pod} ({self.role}): {self.state}" + (f" ({self.detail})" if self.detail else "")


def classify(outcome: str, body: str, detail: str, want: str) -> tuple[str, str]:
    """(state, detail) of one HTTP probe (clusterproof.pods.HttpResult's outcome, body and detail) of a server
    that answers `want`."""
    if outcome == "ok":
        got = body.strip()
        if got == want:
            return CONNECTED, ""
        return ANSWERED, f"answered {got[:80]!r}, not the server's {want!r}"
    if outcome == "http_error":
        return ANSWERED, f"answered with an error: {detail}"
    if outcome == "unreachable":
        return BLOCKED, detail
    return INCONCLUSIVE, detail


def held(seen: Iterable[Seen], wants: dict[str, str]) -> bool:
    """Every client is in the state the step expects."""
    seen = list(seen)
    return bool(seen) and all(s.state == wants[s.role] for s in seen)


@dataclass(frozen=True)
class Step:
    """One policy step: seconds from the policy's creation until every client was as expected (None: never, within
    `waited` seconds), how many probe rounds ran, and the last round seen."""

    policy: str
    held_after: float | None
    waited: float
    rounds: int
    last: tuple[Seen, ...]


@dataclass(frozen=True)
class Setup:
    """What the check deployed, for the messages: the namespace, the server (pod, node, address), the clients'
    node, whether the clients and the server are on different nodes, the CNI detected and its agent DaemonSets."""

    namespace: str
    server: str
    server_node: str
    client_node: str
    address: str
    cni: str
    agents: tuple[str, ...] = ()
    deadline: float = 10.0

    @property
    def cross_node(self) -> bool:
        return self.server_node != self.client_node

    @property
    def title(self) -> str:
        return cni.TITLES.get(self.cni, self.cni)


def _rows(seen: Iterable[Seen], wants: dict[str, str], server: str) -> list[str]:
    return [f"{s.pod} ({s.role}) -> {server}: {s.state}, expected {wants[s.role]}" + (f" ({s.detail})" if s.detail
                                                                                       else "")
            for s in seen if s.state != wants[s.role]]


def _inconclusive(step: str, seen: Iterable[Seen], setup: Setup) -> Verdict | None:
    """An ERROR when a probe the step relies on could not run and no conclusive probe already tells the answer."""
    bad = [s for s in seen if s.state == INCONCLUSIVE]
    if not bad:
        return None
    return Verdict.errored(f"CNI-006 probes in {setup.namespace}",
                           f"{step}: the probe could not run, so nothing can be judged: "
                           + "; ".join(f"{s.pod}: {s.detail}" for s in bad)
                           + " (kubectl exec into the client pod must work: check the API server's and the kubelet's "
                             "exec path)")


def _agents_down(step: str, rows: list[str], unready_agents: tuple[str, ...]) -> Verdict | None:
    """A skip blaming CNI-001 when a policy did not hold while the CNI's agent on a node involved was not ready: the
    agent that programs the policy is down, and CNI-001 reports that (the skip stands only if it fails)."""
    if not unready_agents:
        return None
    return Verdict.skipped(f"{step} did not hold ({'; '.join(rows)}) while the CNI's agent pods on the nodes involved "
                           f"were not ready ({'; '.join(unready_agents)}): CNI-001's finding", blames="CNI-001")


def judge(setup: Setup, baseline: tuple[Seen, ...], deny: Step | None = None, allow: Step | None = None,
          unready_agents: tuple[str, ...] = ()) -> Verdict:
    """The CNI-006 verdict from the steps run so far (a step not reached is None); `unready_agents` are the CNI's
    agent pods on the server's and the clients' nodes that were not ready when a step did not hold."""
    server = f"{setup.server} ({setup.address})"
    subject = f"NetworkPolicy on pod {setup.namespace}/{setup.server} (CNI {setup.title})"
    # 1. baseline: without a policy both clients must reach the server, or nothing after it means anything
    if not held(baseline, BASELINE_WANTS):
        leaks = [s for s in baseline if s.state not in (CONNECTED, INCONCLUSIVE)]
        if not leaks:
            return _inconclusive("before any policy", baseline, setup) or Verdict.errored(
                subject, "no client probed the server before any policy")
        rows = _rows(baseline, BASELINE_WANTS, server)
        seen = "; ".join(rows)
        if setup.cross_node:
            return Verdict.skipped(
                f"before any NetworkPolicy the clients on {setup.client_node} could not reach the server on "
                f"{setup.server_node} ({seen}): pod-to-pod traffic between nodes is CNI-005's finding, and without it "
                "a policy's effect cannot be told apart", blames="CNI-005")
        return Verdict.failed(
            subject, f"both clients on {setup.client_node} to reach the server before any NetworkPolicy",
            f"{len(rows)} of {len(baseline)} could not", f"check the CNI on node {setup.client_node} (pods on one "
            "node reach each other over its bridge or routes) and any cluster-wide policy that denies traffic in "
            "new namespaces (Calico GlobalNetworkPolicy, CiliumClusterwideNetworkPolicy, AdminNetworkPolicy)", rows)
    if deny is None:
        return Verdict.errored(subject, "the deny-all step did not run")
    # 2. deny-all on the server: every client blocked within the deadline
    expected = (f"both clients blocked within {setup.deadline:.0f}s of the default-deny ingress policy "
                f"{setup.namespace}/{deny.policy}")
    if deny.held_after is None:
        leaks = [s for s in deny.last if s.state in (CONNECTED, ANSWERED)]
        if not leaks:
            return _inconclusive("after the deny-all policy", deny.last, setup) or Verdict.errored(
                subject, "the deny-all step saw no probe")
        observed = (f"{', '.join(s.pod for s in leaks)} still reached the server {deny.waited:.1f}s after the policy "
                    f"was created (none of the {deny.rounds} probe rounds saw both clients blocked)")
        rows = _rows(deny.last, DENY_WANTS, server)
        down = _agents_down("the deny-all policy", rows, unready_agents)
        if down is not None:
            return down
        support = cni.policy_support(setup.cni)
        if support == "no":
            return Verdict.warned(
                f"CNI {setup.title}", expected,
                f"CNI {setup.title} does not enforce NetworkPolicy: {observed}",
                f"install a policy-capable CNI (Calico, Cilium, kube-router with --run-firewall=true, Antrea, ...) or "
                f"a policy engine beside {setup.title} (for flannel: Calico's policy-only mode, i.e. Canal); until "
                "then the API server accepts every NetworkPolicy and nothing enforces it", rows)
        if support == "optional":
            return Verdict.warned(
                f"CNI {setup.title}", expected,
                f"CNI {setup.title} does not enforce NetworkPolicy here (its policy support is optional and off): "
                f"{observed}", cni.POLICY_OPTIONAL[setup.cni], rows)
        if support == "yes":
            return Verdict.failed(
                subject, expected, f"CNI {setup.title} enforces NetworkPolicy, but not here: {observed}",
                _agent_fix(setup), rows)
        which = ("the CNI was not identified (no known agent DaemonSet or node annotation, and the server node's "
                 f"{cni.CONFIG_DIR} not read or naming no plugin)" if setup.cni == "unknown" else
                 f"CNI {setup.cni} is not known to CNI-006 as enforcing NetworkPolicy or not")
        return Verdict.failed(
            subject, expected, f"the API server accepted the policy and nothing enforced it: {observed}; {which}",
            f"find which CNI the nodes run ({cni.CONFIG_DIR} on the server's node {setup.server_node}; pass --ssh-key "
            "or --host-transport=pod to let CNI-006 read it) and turn on its NetworkPolicy enforcement, or install a "
            "policy-capable CNI (Calico, Cilium, kube-router, Antrea)", rows)
    # 3. allow rule beside the deny-all: the allowed client in, the denied one still out
    if allow is None:
        return Verdict.errored(subject, "the allow step did not run")
    if allow.held_after is None:
        wrong = [s for s in allow.last if s.state not in (ALLOW_WANTS[s.role], INCONCLUSIVE)]
        if not wrong:
            return _inconclusive("after the allow policy", allow.last, setup) or Verdict.errored(
                subject, "the allow step saw no probe")
        rows = _rows(allow.last, ALLOW_WANTS, server)
        down = _agents_down("the allow rule", rows, unready_agents)
        if down is not None:
            return down
        what = []
        if any(s.role == ALLOWED for s in wrong):
            what.append(f"the allow rule {allow.policy} was not honoured: the client it selects did not connect")
        if any(s.role == DENIED for s in wrong):
            what.append(f"the allow rule {allow.policy} let in a client it does not select")
        return Verdict.failed(
            subject, f"within {setup.deadline:.0f}s of {setup.namespace}/{allow.policy}: the client labelled "
            f"{ROLE}={ALLOWED} connects and the one labelled {DENIED} stays blocked",
            f"{'; '.join(what)} ({allow.rounds} probe rounds over {allow.waited:.1f}s)", _agent_fix(setup), rows)
    note = ""
    if cni.policy_support(setup.cni) != "yes":
        note = (f"; CNI detected as {setup.title}, which "
                + ("has no policy engine of its own: another component enforces the policies"
                   if cni.policy_support(setup.cni) == "no" else "CNI-006 does not know as a policy enforcer"))
    return Verdict.passed(subject,
                   "a default-deny ingress policy to block both clients and an allow rule to let in only the "
                   "client it selects",
                   f"deny-all enforced {deny.held_after:.1f}s after it was created (both clients blocked); the allow "
                   f"rule {allow.held_after:.1f}s after it was created (the allowed client connected, the denied one "
                   f"still blocked){note}")



def _agent_fix(setup: Setup) -> str:
    """Where to look on a CNI that enforces policy: its own advice, then its agents' logs."""
    fix = cni.POLICY_ENFORCERS.get(setup.cni, "check the CNI's policy controller and its logs")
    logs = [f"kubectl -n {ref.split('/', 1)[0]} logs ds/{ref.split('/', 1)[1]}" for ref in setup.agents
            if "/" in ref]
    return fix + (f"; {'; '.join(logs)}" if logs else "")


def place(nodes: Iterable[tuple[str, bool]]) -> tuple[str, str] | None:
    """(client node, server node) among the Ready nodes given as (name, is control plane): workers first, by name;
    the server on another node than the clients when there are two, so the policy is enforced on the traffic
    between nodes as applications see it. None without a node."""
    order = [n for n, cp in sorted(nodes, key=lambda x: (x[1], x[0]))]
    if not order:
        return None
    return order[0], order[1] if len(order) > 1 else order[0]
