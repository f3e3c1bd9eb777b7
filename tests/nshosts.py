"""Real hosts for the host checks: network namespaces with their own sshd, sysctls and /etc.

Each host is a network namespace (own sysctls, own sockets) reached over a veth pair in
198.18.250.0/24, and an sshd running in a private mount namespace where /etc is an overlay
and node-private folders are bound over /etc/sysctl.d, /etc/modules-load.d, /etc/cni/net.d
and /etc/fstab; so faults are injected per host without touching the machine. A small
listener on :10250 stands in for the kubelet.

Everything made is recorded in /tmp/cpt-nshosts/<pid>.json; `sweep()` removes what a killed
run left behind, `NsHosts.close()` what this run made (also on failure).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY = Path("/tmp/cpt-nshosts")
NET_PREFIX = "198.18.250."
SYSCTL_CONF = ("net.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\n"
               "net.ipv4.ip_forward = 1\n")
MODULES_CONF = "overlay\nbr_netfilter\n"
FSTAB = "# <file system> <mount point> <type> <options> <dump> <pass>\n/dev/vda / ext4 defaults 0 1\n"
SWAP_FSTAB_LINE = "/swap.img none swap sw 0 0\n"
CNI_BRIDGE = json.dumps({"cniVersion": "1.0.0", "name": "cpt", "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipam": {"type": "host-local"}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]})
FAKE_SWAPS = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/swap.img  file\t\t1048572\t\t0\t\t-2\n"
LISTENER = ("import socket,time\ns=socket.socket(socket.AF_INET6)\n"
            "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('::',10250));s.listen(8)\ntime.sleep(86400)\n")

# What a host can be made to get wrong: name -> what changes on that host.
FAULTS = {
    "ip_forward_off": "sysctl net.ipv4.ip_forward=0 in the host's namespace",
    "bridge_nf_off": "sysctl net.bridge.bridge-nf-call-iptables=0 in the host's namespace",
    "no_br_netfilter": "hide /proc/sys/net/bridge (as if br_netfilter were not loaded)",
    "sysctl_file_missing": "no file in /etc/sysctl.d",
    "swap_on": "an active area in /proc/swaps",
    "modules_missing": "no br_netfilter in /etc/modules-load.d",
    "fstab_swap": "an active swap entry in /etc/fstab",
    "no_nsenter": "nsenter not executable",
    "no_kubelet": "nothing listens on :10250",
    "no_cni": "no CNI config in /etc/cni/net.d",
    "down": "no sshd (connection refused)",
    "wrong_key": "sshd does not accept the client key",
}


def _run(*cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()[:300]}")
    return r


@dataclass
class NsHost:
    index: int
    fault: str | None
    dir: Path
    pids: list[int] = field(default_factory=list)

    @property
    def netns(self) -> str:
        return f"cpt-{os.getpid()}-{self.index}"

    @property
    def veth(self) -> str:
        return f"cpt{os.getpid() % 100000:05d}x{self.index:02d}"  # 14 chars, under IFNAMSIZ

    @property
    def ip(self) -> str:
        return f"{NET_PREFIX}{4 * self.index + 2}"

    @property
    def gateway(self) -> str:
        return f"{NET_PREFIX}{4 * self.index + 1}"

    @property
    def spec(self) -> str:
        return f"ssh://root@{self.ip}"

    @property
    def id(self) -> str:
        return f"ssh://{self.ip}"


class NsHosts:
    """A set of namespace hosts, one per requested fault (None: healthy); use as a context manager."""

    def __init__(self, faults: list[str | None]):
        if os.geteuid() != 0:
            raise RuntimeError("namespace hosts need root")
        for f in faults:
            if f is not None and f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}")
        REGISTRY.mkdir(exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="cpt-nshosts-"))
        self.hosts = [NsHost(i + 1, f, self.dir / f"h{i + 1}") for i, f in enumerate(faults)]
        self.key = self.dir / "id_ed25519"
        self.other_key = self.dir / "other_ed25519"
        self.ssh_config = self.dir / "ssh_config"
        self._record: dict = {"dir": str(self.dir), "netns": [], "links": [], "pids": []}

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> NsHosts:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _save(self) -> None:
        (REGISTRY / f"{os.getpid()}.json").write_text(json.dumps(self._record))

    def start(self) -> None:
        sweep()
        self._save()
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.other_key))
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / "host_key"))
        self.ssh_config.write_text(
            "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
            )  # no ControlPath: no ssh mux masters outliving the hosts
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        for h in self.hosts:
            self._start_host(h)
        for h in self.hosts:
            if h.fault != "down":
                self._wait_port(h, 22)
            if h.fault != "no_kubelet":
                self._wait_port(h, 10250)

    def _start_host(self, h: NsHost) -> None:
        d = h.dir
        for sub in ("sysctl.d", "modules-load.d", "cni", "ovl", "empty"):
            (d / sub).mkdir(parents=True)
        if h.fault != "sysctl_file_missing":
            (d / "sysctl.d" / "99-kubernetes.conf").write_text(SYSCTL_CONF)
        if h.fault != "modules_missing":
            (d / "modules-load.d" / "k8s.conf").write_text(MODULES_CONF)
        if h.fault != "no_cni":
            (d / "cni" / "10-bridge.conflist").write_text(CNI_BRIDGE)
        (d / "fstab").write_text(FSTAB + (SWAP_FSTAB_LINE if h.fault == "fstab_swap" else ""))
        (d / "swaps").write_text(FAKE_SWAPS)
        (d / "noexec").write_text("")
        os.chmod(d / "noexec", 0o644)
        (d / "authorized_keys").write_text(
            Path(f"{self.other_key if h.fault == 'wrong_key' else self.key}.pub").read_text())
        (d / "sshd_config").write_text(
            f"ListenAddress {h.ip}\nPort 22\nHostKey {self.dir}/host_key\nPidFile none\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "PrintMotd no\nPrintLastLog no\n")

        _run("ip", "netns", "add", h.netns)
        self._record["netns"].append(h.netns)
        self._save()
        _run("ip", "link", "add", h.veth, "type", "veth", "peer", "name", h.veth + "p")
        self._record["links"].append(h.veth)
        self._save()
        _run("ip", "link", "set", h.veth + "p", "netns", h.netns)
        _run("ip", "addr", "add", f"{h.gateway}/30", "dev", h.veth)
        _run("ip", "link", "set", h.veth, "up")
        ns = ["nsenter", f"--net=/run/netns/{h.netns}"]
        _run(*ns, "sh", "-c", f"ip link set lo up && ip addr add {h.ip}/30 dev {h.veth}p && "
                              f"ip link set {h.veth}p up && ip route add default via {h.gateway}")
        sysctls = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1",
                   "net.bridge.bridge-nf-call-ip6tables": "1"}
        if h.fault == "ip_forward_off":
            sysctls["net.ipv4.ip_forward"] = "0"
        if h.fault == "bridge_nf_off":
            sysctls["net.bridge.bridge-nf-call-iptables"] = "0"
        _run(*ns, "sysctl", "-qw", *[f"{k}={v}" for k, v in sysctls.items()])

        if h.fault != "no_kubelet":
            self._spawn(h, [*ns, "python3", "-c", LISTENER], "listener")
        if h.fault == "down":
            return
        mounts = [
            f"mount -t tmpfs tmpfs {d}/ovl", f"mkdir {d}/ovl/upper {d}/ovl/work",
            f"mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/ovl/upper,workdir={d}/ovl/work /etc",
            "mkdir -p /etc/sysctl.d /etc/modules-load.d /etc/cni/net.d",
            f"mount --bind {d}/sysctl.d /etc/sysctl.d", f"mount --bind {d}/modules-load.d /etc/modules-load.d",
            f"mount --bind {d}/cni /etc/cni/net.d", f"mount --bind {d}/fstab /etc/fstab",
        ]
        if h.fault == "swap_on":
            mounts.append(f"mount --bind {d}/swaps /proc/swaps")
        if h.fault == "no_br_netfilter":
            mounts.append(f"mount --bind {d}/empty /proc/sys/net/bridge")
        if h.fault == "no_nsenter":
            mounts.append(f"mount --bind {d}/noexec \"$(command -v nsenter)\"")
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        script = " && ".join([*mounts, f"exec {sshd} -D -e -f {d}/sshd_config"])
        self._spawn(h, [*ns, "unshare", "--mount", "--propagation", "private", "sh", "-c", script], "sshd")

    def _spawn(self, h: NsHost, cmd: list[str], what: str) -> None:
        log = open(h.dir / f"{what}.log", "wb")  # noqa: SIM115 - the child keeps it
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        log.close()
        h.pids.append(p.pid)
        self._record["pids"].append(p.pid)
        self._save()

    def _wait_port(self, h: NsHost, port: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((h.ip, port), timeout=1).close()
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    logs = " ".join(p.read_text()[-300:] for p in h.dir.glob("*.log"))
                    raise RuntimeError(f"host {h.ip} port {port} not up: {exc}; {logs}") from None
                time.sleep(0.1)

    def close(self) -> None:
        _cleanup(self._record)
        (REGISTRY / f"{os.getpid()}.json").unlink(missing_ok=True)

    # -------------------------------------------------------------- for the suite run
    def by_fault(self, fault: str | None) -> NsHost:
        return next(h for h in self.hosts if h.fault == fault)

    def suite_args(self, hosts: list[NsHost] | None = None) -> list[str]:
        """Arguments that point the real suite at these hosts."""
        hs = hosts if hosts is not None else self.hosts
        return ["--hosts", ",".join(h.spec for h in hs), "--ssh-identity-file", str(self.key),
                "--ssh-config", str(self.ssh_config)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_pids(netns: str) -> list[int]:
    r = _run("ip", "netns", "pids", netns, check=False)
    return [int(p) for p in r.stdout.split() if p.isdigit()]


def _cleanup(record: dict) -> None:
    # sshd's per-connection children call setsid(): find them by their network namespace.
    for ns in record.get("netns", []):
        for pid in _netns_pids(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for pid in record.get("pids", []):
        try:
            os.killpg(pid, signal.SIGTERM)  # the sshd (or listener) and the sessions it forked
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 5
    for pid in record.get("pids", []):
        while _alive(pid) and time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for ns in record.get("netns", []):
        _run("ip", "netns", "del", ns, check=False)
    for link in record.get("links", []):
        _run("ip", "link", "del", link, check=False)
    if record.get("dir"):
        shutil.rmtree(record["dir"], ignore_errors=True)


def sweep() -> list[str]:
    """Remove what runs that are gone (killed test sessions) left behind; returns their pids."""
    swept = []
    for f in REGISTRY.glob("*.json") if REGISTRY.exists() else []:
        pid = int(f.stem) if f.stem.isdigit() else -1
        if pid == os.getpid() or (pid > 0 and _alive(pid)):
            continue
        try:
            _cleanup(json.loads(f.read_text()))
        except (OSError, ValueError):
            pass
        f.unlink(missing_ok=True)
        swept.append(f.stem)
    return swept


def leftovers() -> list[str]:
    """netns, links and processes of this process's hosts still present (for the cleanup test)."""
    mine = f"cpt-{os.getpid()}-"
    out = [n for n in _run("ip", "netns", "list", check=False).stdout.split() if n.startswith(mine)]
    out += [ln.split()[0] for ln in _run("ip", "-br", "link", check=False).stdout.splitlines()
            if ln.startswith(f"cpt{os.getpid() % 100000:05d}")]
    return out


# ------------------------------------------------------------------ running the real suite

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Verdict:
    outcome: str   # passed, failed, error, skipped
    message: str


@dataclass
class SuiteRun:
    rc: int
    stdout: str
    stderr: str
    verdicts: dict[str, Verdict]  # "test_name[param]" -> verdict

    def of_host(self, host_id: str) -> dict[str, Verdict]:
        return {k: v for k, v in self.verdicts.items() if f"[{host_id}" in k}

    def outcomes(self, host_id: str) -> dict[str, str]:
        return {k: v.outcome for k, v in self.of_host(host_id).items()}


def suite_cmd(*args: str, report_dir: Path) -> list[str]:
    """`python -m pytest` on the real suite, writing its reports under report_dir (not reports/)."""
    import sys

    cmd = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pytest.ini"), "--rootdir", str(ROOT),
           "-p", "no:cacheprovider", "--report-dir", str(report_dir), "--junitxml", str(report_dir / "junit.xml")]
    for plugin in ("workloads", "reporting"):  # modules other engineers add; tolerate their absence
        if not (ROOT / "fixtures" / f"{plugin}.py").exists():
            cmd += ["-p", f"no:fixtures.{plugin}"]
    return cmd + list(args)


def run_suite(*args: str, report_dir: Path, timeout: float = 300) -> SuiteRun:
    import xml.etree.ElementTree as ET

    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "junit.xml").unlink(missing_ok=True)
    p = subprocess.run(suite_cmd(*args, report_dir=report_dir), cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, check=False)
    verdicts: dict[str, Verdict] = {}
    junit = report_dir / "junit.xml"
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    outcome = {"failure": "failed"}.get(tag, tag)
                    message = (el.get("message") or "") + "\n" + (el.text or "")
                    break
            verdicts[case.get("name", "")] = Verdict(outcome, message)
    return SuiteRun(p.returncode, p.stdout, p.stderr, verdicts)
